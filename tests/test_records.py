"""Reading canonical records and public formats; bad records give errors naming file, line and field."""

import json
from pathlib import Path

import pytest

from mmreward.data.records import RecordError, read_records
from mmreward.types import Preference, Ranking, Rating

FIXTURES = Path(__file__).parent / "fixtures"


def write(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture()
def image_dir(tmp_path: Path) -> Path:
    (tmp_path / "a.png").write_bytes((FIXTURES / "images" / "camera.png").read_bytes())
    return tmp_path


def test_reads_every_kind_with_paths_relative_to_the_file(image_dir: Path):
    path = write(
        image_dir / "data.jsonl",
        [
            {
                "id": "p1",
                "prompt": "a cat",
                "chosen": {"image": "a.png"},
                "rejected": {"image": "a.png"},
                "label": 0.5,
                "margin": 1.0,
                "aspects": {"quality": 1},
                "subset": "s",
            },
            {"prompt": "a cat", "image": "a.png", "scores": {"quality": 0.3}, "score": 2},
            {"prompt": "q", "candidates": ["x", "y", "z"], "ranking": [2, 0, 1]},
            {"prompt": "q", "chosen": "yes", "rejected": {"response": "no", "score": 1}},
        ],
    )
    pref, rating, ranking, text = read_records(path)
    assert (
        isinstance(pref, Preference)
        and pref.label == 0.5
        and pref.margin == 1.0
        and pref.aspects == {"quality": 1.0}
    )
    assert pref.chosen.image == str(image_dir / "a.png") and pref.subset == "s" and pref.id == "p1"
    assert isinstance(rating, Rating) and rating.score == 2.0 and rating.scores == {"quality": 0.3}
    assert (
        isinstance(ranking, Ranking) and ranking.order == [2, 0, 1] and ranking.candidates[2].response == "z"
    )
    assert text.chosen.response == "yes" and text.rejected_score == 1.0


@pytest.mark.parametrize(
    ("record", "field", "error"),
    [
        ({"prompt": "x", "rejected": "b"}, "chosen", RecordError),
        ({"prompt": "", "chosen": "a", "rejected": "b"}, "prompt", RecordError),
        ({"prompt": "x", "image": "a.png", "score": float("nan")}, "score", RecordError),
        (
            {"prompt": "x", "chosen": {"image": "missing.png"}, "rejected": "b"},
            "chosen.image",
            FileNotFoundError,
        ),
        ({"prompt": "x", "chosen": {"imag": "a.png"}, "rejected": "b"}, "chosen.imag", RecordError),
        ({"prompt": "x", "chosen": "a", "rejected": "b", "label": 2}, "label", RecordError),
        ({"prompt": "x", "candidates": ["a", "b"], "ranking": [0, 0]}, "ranking", RecordError),
        ({"prompt": "x"}, "<record>", RecordError),
    ],
)
def test_bad_records_name_file_line_and_field(image_dir: Path, record: dict, field: str, error: type):
    good = {"prompt": "ok", "chosen": "a", "rejected": "b"}
    path = write(image_dir / "bad.jsonl", [good, json.dumps(record).replace("NaN", "NaN")])
    with pytest.raises(error) as info:
        read_records(path)
    message = str(info.value)
    assert f"{path}:2" in message and repr(field) in message


def test_typo_gets_a_close_match_hint(image_dir: Path):
    path = write(image_dir / "typo.jsonl", [{"prompt": "x", "chosen": {"imag": "a.png"}, "rejected": "b"}])
    with pytest.raises(RecordError, match="Did you mean 'image'"):
        read_records(path)


def test_invalid_json_names_the_line(tmp_path: Path):
    path = write(
        tmp_path / "broken.jsonl", ['{"prompt": "x", "chosen": "a", "rejected": "b"}', '{"prompt": ']
    )
    with pytest.raises(RecordError, match=r"broken.jsonl:2: not valid JSON"):
        read_records(path)


def test_skip_bad_keeps_the_good_records(image_dir: Path, caplog: pytest.LogCaptureFixture):
    path = write(
        image_dir / "mixed.jsonl",
        [
            {"prompt": "ok", "chosen": "a", "rejected": "b"},
            {"prompt": "x", "rejected": "b"},
            {"prompt": "ok2", "chosen": "c", "rejected": "d"},
        ],
    )
    records = read_records(path, skip_bad=True)
    assert [r.chosen.response for r in records] == ["a", "c"]
    assert "Skipped 1 bad record" in caplog.text


def test_field_map_renames_dotted_fields(image_dir: Path):
    path = write(
        image_dir / "pick.jsonl", [{"caption": "a cat", "img0": "a.png", "img1": "a.png", "best": 1}]
    )
    (record,) = read_records(path, {"prompt": "caption", "chosen.image": "img0", "rejected.image": "img1"})
    assert record.chosen.prompt == "a cat" and record.rejected.image.endswith("a.png")


def test_unknown_format_suggests_a_close_name(tmp_path: Path):
    path = write(tmp_path / "x.jsonl", [{"prompt": "x", "chosen": "a", "rejected": "b"}])
    with pytest.raises(ValueError, match="Did you mean 'hh-rlhf'"):
        read_records(path, "hh-rlfh")


def test_real_hh_rlhf_records_split_prompt_from_responses():
    records = read_records(FIXTURES / "formats" / "hh-rlhf_harmless-base_test_first5.jsonl", "hh-rlhf")
    assert len(records) == 5
    for r in records:
        assert r.chosen.prompt.startswith("Human:") and r.chosen.prompt.endswith("Assistant:")
        assert "Human:" not in r.chosen.response.split("\n")[0]
        assert r.chosen.response != r.rejected.response


def test_real_mm_rlhf_records_keep_their_media_paths():
    records = read_records(
        FIXTURES / "formats" / "mm_reward_bench_first5.jsonl", "mm-rlhf", check_media=False
    )
    assert len(records) == 5
    assert all(r.chosen.image or r.chosen.video for r in records)
    assert all(r.chosen.response and r.rejected.response for r in records)


def test_real_imagereward_rankings_order_by_expert_rank():
    raw = json.loads((FIXTURES / "formats" / "imagereward_test_first3.json").read_text())
    records = read_records(
        FIXTURES / "formats" / "imagereward_test_first3.json", "imagereward", check_media=False
    )
    for entry, record in zip(raw, records):
        ranks = [entry["ranking"][i] for i in record.order]
        assert ranks == sorted(ranks)  # best (rank 1) first
        assert len(record.candidates) == len(entry["generations"])
