"""Readers for public video, image and edit rating formats, on cuts of the real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmreward.data.formats_video import convert_file, merge_aspect_ratings, videofeedback
from mmreward.data.records import iter_raw, read_records
from mmreward.types import Preference, Rating

FIXTURES = Path(__file__).parent / "fixtures" / "video"


def _read(tmp_path: Path, source: str, fmt: str) -> list:
    out = convert_file(FIXTURES / source, fmt, tmp_path / f"{fmt}.jsonl")
    records = read_records(tmp_path / f"{fmt}.jsonl", check_media=False)
    assert len(records) == len(out)
    return records


def test_genai_bench_image_averages_raters_per_model(tmp_path):
    records = _read(tmp_path, "genai_image_head20.json", "genai-bench-image")
    assert len(records) == 20 * 6 and all(isinstance(r, Rating) for r in records)
    first = {r.subset: r for r in records if r.id.startswith("00001-")}
    # "DALLE_3": [5, 5, 5] and "SDXL_Turbo": [2, 4, 3] in the file
    assert first["DALLE_3"].score == 5.0 and first["SDXL_Turbo"].score == 3.0
    assert first["DALLE_3"].sample.image.endswith("DALLE_3/00001.jpeg")
    assert first["DALLE_3"].sample.prompt.startswith("A baker pulling freshly baked bread")


def test_genai_bench_video_reads_string_human_scores(tmp_path):
    records = _read(tmp_path, "genai_video_teaser_head20.json", "genai-bench-video")
    assert len(records) == 20 * 4
    by_id = {r.id: r for r in records}
    # the teaser's record "00507": Pika_v1 human "3.33", Modelscope "2.00"
    assert by_id["00507-Pika_v1"].score == pytest.approx(3.33)
    assert by_id["00507-Modelscope"].score == pytest.approx(2.0)
    assert by_id["00507-Pika_v1"].sample.video.endswith("Pika_v1/00507.mp4")


def test_t2vscore_alignment_and_quality_merge_into_aspects():
    alignment = convert_file(FIXTURES / "t2vscore_alignment_head30.json", "t2vscore")
    quality = convert_file(FIXTURES / "t2vscore_quality_head30.json", "t2vscore")
    merged = merge_aspect_ratings({"alignment": alignment, "quality": quality})
    assert len(merged) == 30 * 5
    raw_a = json.loads((FIXTURES / "t2vscore_alignment_head30.json").read_text())["0"]["models"]["gen2"][0]
    raw_q = json.loads((FIXTURES / "t2vscore_quality_head30.json").read_text())["0"]["models"]["gen2"][0]
    gen2 = next(r for r in merged if r["id"] == "00000-gen2")
    assert gen2["scores"] == {"alignment": raw_a, "quality": raw_q}
    assert gen2["score"] == pytest.approx((raw_a + raw_q) / 2)


def test_arena_votes_keep_ties_and_both_bad_as_half_labels(tmp_path):
    records = _read(tmp_path, "genai_bench_video_arena_head60.json", "genai-bench-video-arena")
    raw = json.loads((FIXTURES / "genai_bench_video_arena_head60.json").read_text())
    assert all(isinstance(r, Preference) for r in records)
    for record, source in zip(records, raw):
        vote = source["vote_type"]
        assert record.subset == vote
        if vote == "rightvote":
            assert record.chosen.video.endswith(source["video_right"]) and record.label == 1.0
        elif vote == "leftvote":
            assert record.chosen.video.endswith(source["video_left"]) and record.label == 1.0
        else:
            assert record.label == 0.5
    assert sum(r.label == 0.5 for r in records) == 20  # 7 ties + 13 "both bad" in the first 60 votes


def test_editreward_pairs_carry_source_and_prefer_higher_rating(tmp_path):
    records = _read(tmp_path, "editreward_valid_head40.json", "editreward")
    raw = json.loads((FIXTURES / "editreward_valid_head40.json").read_text())
    first = records[0]
    assert first.chosen.source_image == first.rejected.source_image
    assert first.chosen.source_image.endswith(raw[0]["path_src"])
    assert first.chosen.image.endswith(raw[0]["path1"])  # MagicBrush rated 4 against Pix2PixZero's 2
    assert (first.chosen_score, first.rejected_score) == (4.0, 2.0)
    assert all(r.chosen_score >= r.rejected_score for r in records)
    assert first.chosen.prompt == "let a herd of sheep block the taxi"


def test_videoalign_csv_gives_per_aspect_pair_labels(tmp_path):
    records = _read(tmp_path, "videoalign_example.csv", "videoalign")
    assert len(records) == 12
    first = records[0]  # VQ=B, MQ=B, TA=A
    assert first.aspects == {"visual_quality": 0.0, "motion_quality": 0.0, "alignment": 1.0}
    assert first.chosen.video.endswith("videos/example_1_A.mp4")
    assert first.rejected.video.endswith("videos/example_1_B.mp4")  # "./" prefix dropped
    second = records[1]  # same, same, A
    assert second.aspects["visual_quality"] == 0.5


def test_videofeedback_record_maps_five_aspects():
    raw = {"id": "x1", "text prompt": "a dog runs", "video link": "v/x1.mp4", "visual quality": 3, "temporal consistency": 2,
           "dynamic degree": 4, "text-to-video alignment": 1, "factual consistency": 2}  # fmt: skip
    (record,) = videofeedback(raw)
    assert record["scores"] == {"visual_quality": 3.0, "temporal_consistency": 2.0, "dynamic_degree": 4.0,
                                "alignment": 1.0, "factual_consistency": 2.0}  # fmt: skip
    assert record["video"] == "v/x1.mp4" and record["prompt"] == "a dog runs"


def test_bad_record_names_file_line_and_field(tmp_path):
    path = tmp_path / "votes.json"
    path.write_text(
        json.dumps(
            [{"id": 0, "prompt": "p", "video_left": "a.mp4", "video_right": "b.mp4", "vote_type": "maybe"}]
        )
    )
    with pytest.raises(ValueError, match=r"votes\.json:1.*vote_type.*'maybe'"):
        convert_file(path, "genai-bench-video-arena")


def test_unknown_format_suggests_the_close_name():
    with pytest.raises(ValueError, match="Did you mean 'editreward'"):
        convert_file(FIXTURES / "editreward_valid_head40.json", "edit-reward")


def test_keyed_json_keeps_keys_as_ids():
    raw = [record for _, record in iter_raw(FIXTURES / "t2vscore_quality_head30.json")]
    assert [r["id"] for r in raw[:3]] == ["0", "1", "2"]


@pytest.mark.parametrize(
    ("source", "fmt"),
    [("genai_image_head20.json", "genai-bench-image"), ("videoalign_example.csv", "videoalign")],
)
def test_read_records_takes_the_files_as_they_ship(tmp_path, source, fmt):
    """A GenAI-Bench file (a JSON object keyed by id) and a VideoAlign CSV read without conversion."""
    direct = read_records(FIXTURES / source, field_map=fmt, check_media=False)
    converted = _read(tmp_path, source, fmt)
    assert direct and [r.id for r in direct] == [r.id for r in converted]

    def key(r):  # media paths differ: each resolves against its own file's folder
        sample = r.sample if isinstance(r, Rating) else r.chosen
        return (
            sample.prompt,
            getattr(r, "score", None),
            getattr(r, "label", None),
            r.aspects if isinstance(r, Preference) else r.scores,
        )

    assert [key(r) for r in direct] == [key(r) for r in converted]
