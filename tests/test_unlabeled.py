"""Unlabelled candidates: `mmreward score` and `Scorer` take a prompt and media with no labels.

For each kind a generation loop writes (image, video, edit, point cloud + action) a tiny model is
saved and loaded back as a user's would be, and the command's scores equal ``Scorer.score`` on the
same inputs. Labelled records are scored too, their labels echoed; reasoning steps are refused
by name by a model that does not read them (process reward models: tests/test_prm.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import mmreward as mr
from mmreward.cli import main
from mmreward.data.records import RecordError, read_records
from mmreward.types import Candidate, Preference, Rating
from tests.core_helpers import tiny_reward_model
from tests.robotics_helpers import one_thread, tiny_action_model

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY_RESNET_CLIP = {  # as tests/test_video_backbones.py builds its video and edit models
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1},
}
PICK = {"primitive": "pick_place", "pick": [0.05, 0.1], "place": [-0.1, 0.2]}
FOLD = {"primitive": "pick_place", "pick": [-0.2, -0.1], "place": [0.2, 0.15]}


def video_model():
    from mmreward.heads import LinearHead
    from modalities.backbones.clip_video import ClipVideoBackbone
    from modalities.video import FrameSampler

    torch.manual_seed(0)
    backbone = ClipVideoBackbone(model_config=TINY_RESNET_CLIP, sampler=FrameSampler(num_frames=4))
    return mr.RewardModel(backbone, LinearHead())


def edit_model():
    from mmreward.heads import LinearHead
    from modalities.backbones.clip_edit import ClipEditBackbone

    torch.manual_seed(0)
    return mr.RewardModel(ClipEditBackbone(model_config=TINY_RESNET_CLIP), LinearHead())


# kind -> (model builder, the candidate records, the Scorer.score keywords naming the same media)
CASES = {
    "image": (
        tiny_reward_model,
        [
            {"id": "img-0", "prompt": "an astronaut", "image": "media/astronaut.png"},
            {"id": "img-1", "prompt": "a man with a camera", "image": "media/camera.png"},
        ],
        {"images": ["media/astronaut.png", "media/camera.png"]},
    ),
    "video": (
        video_model,
        [
            {"id": "vid-0", "prompt": "a person walks", "video": "media/video1.mp4"},
            {"id": "vid-1", "prompt": "a rotated clip", "video": "media/video_90.mov"},
        ],
        {"videos": ["media/video1.mp4", "media/video_90.mov"]},
    ),
    "edit": (
        edit_model,
        [
            {"id": "edit-0", "prompt": "make it grey", "source_image": "media/astronaut.png", "image": "media/camera.png"},
            {"id": "edit-1", "prompt": "add colour", "source_image": "media/camera.png", "image": "media/astronaut.png"},
        ],
        {
            "source_images": ["media/astronaut.png", "media/camera.png"],
            "images": ["media/camera.png", "media/astronaut.png"],
        },
    ),
    "point cloud": (
        lambda: tiny_action_model(num_points=64),
        [
            {"id": "act-0", "prompt": "flatten the cloth", "point_cloud": "media/bunny.ply", "action": PICK},
            {"id": "act-1", "prompt": "flatten the cloth", "point_cloud": "media/bunny.ply", "action": FOLD},
        ],
        {"point_clouds": ["media/bunny.ply"] * 2, "actions": [PICK, FOLD]},
    ),
}  # fmt: skip
MEDIA = ["images/astronaut.png", "images/camera.png", "video/video1.mp4", "video/video_90.mov"]
MEDIA += ["pointcloud/bunny.ply"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("unlabeled")
    (root / "media").mkdir()
    for name in MEDIA:
        shutil.copy(FIXTURES / name, root / "media" / Path(name).name)
    return root


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def saved(root: Path, name: str, build) -> Path:
    directory = root / "models" / name.replace(" ", "_")
    if not directory.exists():
        mr.Scorer(build(), device="cpu").save_pretrained(directory)
    return directory


@pytest.mark.parametrize("kind", list(CASES))
def test_score_command_on_unlabelled_records_equals_scorer_score(workdir: Path, kind: str, capsys):
    build, records, media = CASES[kind]
    model_dir = saved(workdir, kind, build)
    data = write_jsonl(workdir / f"{kind.replace(' ', '_')}.jsonl", records)
    out = workdir / "out" / f"{kind.replace(' ', '_')}.jsonl"
    with one_thread():
        args = ["score", "--model", str(model_dir), "--input", str(data), "--output", str(out)]
        assert main([*args, "--device", "cpu", "--no-progress"]) == 0
        scorer = mr.load(model_dir, device="cpu")
        absolute = {k: [str(workdir / v) if isinstance(v, str) else v for v in vs] for k, vs in media.items()}
        expected = scorer.score(prompts=[r["prompt"] for r in records], **absolute)
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [w["id"] for w in written] == [r["id"] for r in records]
    assert [w["line"] for w in written] == [1, 2]
    assert [w["score"] for w in written] == pytest.approx(expected, abs=1e-5)
    assert abs(expected[0] - expected[1]) > 1e-4, "two inputs, two scores: the equality means something"
    assert all("labels" not in w for w in written)
    assert "2 records scored, 0 skipped" in capsys.readouterr().err


def test_labelled_records_are_scored_with_their_labels_echoed(workdir: Path):
    model_dir = saved(workdir, "image", tiny_reward_model)
    records = [
        {"id": "c", "prompt": "an astronaut", "image": "media/astronaut.png"},
        {"id": "r", "prompt": "an astronaut", "image": "media/camera.png", "score": 0.25, "subset": "x"},
        {"id": "p", "prompt": "an astronaut", "chosen": {"image": "media/astronaut.png"},
         "rejected": {"image": "media/camera.png"}, "margin": 2.0},
        {"id": "k", "prompt": "an astronaut", "candidates": [{"image": "media/camera.png"},
         {"image": "media/astronaut.png"}], "ranking": [1, 0]},
    ]  # fmt: skip
    data = write_jsonl(workdir / "mixed.jsonl", records)
    scorer = mr.load(model_dir, device="cpu")
    with one_thread():
        results = scorer.score_records(data)
        astronaut, camera = scorer.score(
            prompts="an astronaut",
            images=[str(workdir / "media" / m) for m in ("astronaut.png", "camera.png")],
        )
    c, r, p, k = results
    assert c["score"] == pytest.approx(astronaut, abs=1e-5) and "labels" not in c
    assert r["score"] == pytest.approx(camera, abs=1e-5)
    assert r["labels"] == {"score": 0.25} and r["subset"] == "x"
    assert [p["chosen"]["score"], p["rejected"]["score"]] == pytest.approx([astronaut, camera], abs=1e-5)
    assert p["labels"] == {"label": 1.0, "margin": 2.0}
    assert [o["score"] for o in k["candidates"]] == pytest.approx([camera, astronaut], abs=1e-5)
    assert k["labels"] == {"ranking": [1, 0]}
    assert [x["id"] for x in results] == ["c", "r", "p", "k"]


def test_candidates_are_read_only_for_scoring(workdir: Path):
    data = write_jsonl(
        workdir / "gen.jsonl", [{"id": "g1", "prompt": "an astronaut", "image": "media/astronaut.png"}]
    )
    (record,) = read_records(data, unlabeled=True)
    assert isinstance(record, Candidate) and record.id == "g1"
    assert record.sample.image == str(workdir / "media" / "astronaut.png")
    with pytest.raises(
        RecordError, match=r"gen\.jsonl:1 \(id g1\) field '<record>': the record has no labels"
    ):
        read_records(data)  # training and eval need labels
    model = str(saved(workdir, "image", tiny_reward_model))
    with pytest.raises(RecordError, match="the record has no labels"):
        main(["eval", "--model", model, "--data", str(data), "--device", "cpu"])
    rated = write_jsonl(
        workdir / "rated.jsonl", [{"prompt": "p", "image": "media/astronaut.png", "score": 1}]
    )
    assert isinstance(read_records(rated, unlabeled=True)[0], Rating)
    pair = {"prompt": "p", "chosen": "yes", "rejected": "no"}
    assert isinstance(
        read_records(write_jsonl(workdir / "pair.jsonl", [pair]), unlabeled=True)[0], Preference
    )


def test_a_record_with_nothing_to_score_or_a_typo_is_named(workdir: Path):
    empty = write_jsonl(workdir / "empty.jsonl", [{"id": "e", "prompt": "p"}])
    with pytest.raises(RecordError, match=r"empty\.jsonl:1 \(id e\) field '<record>': .*nothing to score"):
        read_records(empty, unlabeled=True)
    typo = write_jsonl(workdir / "typo.jsonl", [{"id": "t", "prompt": "p", "vdeo": "media/video1.mp4"}])
    with pytest.raises(RecordError, match=r"field 'vdeo': unknown field. Did you mean 'video'"):
        read_records(typo, unlabeled=True)


def test_reasoning_steps_are_refused_by_a_model_that_does_not_read_them(workdir: Path):
    scorer = mr.load(saved(workdir, "image", tiny_reward_model), device="cpu")
    data = write_jsonl(
        workdir / "steps.jsonl",
        [{"id": "s1", "prompt": "2 + 2?", "image": "media/astronaut.png", "steps": ["2 + 2 = 4", "so 4"]}],
    )
    with pytest.raises(
        ValueError, match=r"steps\.jsonl:1 \(id s1\) field 'steps': this model does not read reasoning steps"
    ):
        scorer.score_records(data)
