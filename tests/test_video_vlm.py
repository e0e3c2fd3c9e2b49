"""VLM routes for video and edit reward models on tiny Qwen2.5-VL models built locally.

Video frames and two-image edit inputs go through the model's real processor; the models train with
RewardModule (their loss on the training records falls), save, and reload to the same scores.
The recipe configs load with the 7B backbone swapped for the tiny one and run a step.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from mmreward.data.collate import Collator
from mmreward.data.records import read_records
from mmreward.data.synthetic.edit import EditWorld
from mmreward.data.synthetic.video import VideoWorld
from mmreward.heads import LinearHead, MultiAspectHead
from mmreward.losses import RewardLoss
from mmreward.models import RewardModel
from mmreward.scoring import Scorer, load, save_pretrained
from mmreward.training import RewardModule
from modalities.video import FrameSampler

pytest.importorskip("transformers")
from modalities.backbones.vlm import VLMBackbone  # noqa: E402
from tests.vlm_helpers import build_tiny_qwen2_5_vl  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ASPECTS = ["quality", "alignment", "physics"]


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> Path:
    return build_tiny_qwen2_5_vl(
        tmp_path_factory.mktemp("vlm") / "qwen", min_pixels=56 * 56, max_pixels=56 * 56
    )


@pytest.fixture(scope="session")
def small_video_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("video-vlm")
    VideoWorld(
        train_prompts=3, val_prompts=1, test_prompts=1, clips_per_prompt=3, frames=4, size=32, seed=3
    ).write(root)
    return root


@pytest.fixture(scope="session")
def small_edit_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("edit-vlm")
    EditWorld(train_sources=2, val_sources=1, test_sources=1, size=32, seed=3).write(root)
    return root


def _loss(model: torch.nn.Module, records: list) -> float:
    model.eval()
    with torch.no_grad():
        batch = Collator(model.collate, model.aspects)(records)
        out = model(batch.inputs)
        return float(RewardLoss().ratings(out, batch)["loss"])


def _fit(model: torch.nn.Module, records: list, steps: int) -> None:
    module = RewardModule(model, optimizer=partial(torch.optim.AdamW, lr=3e-3))
    loader = torch.utils.data.DataLoader(
        records, batch_size=len(records), shuffle=False, collate_fn=Collator(model.collate, model.aspects)
    )
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader)


def _reload_matches(model: torch.nn.Module, samples: list, tmp_path: Path) -> None:
    before = Scorer(model).forward(samples)
    save_pretrained(model, tmp_path / "saved")
    after = load(tmp_path / "saved", device="cpu").forward(samples)
    torch.testing.assert_close(after.score, before.score, rtol=1e-5, atol=1e-5)
    if before.aspects is not None:
        torch.testing.assert_close(after.aspects, before.aspects, rtol=1e-5, atol=1e-5)


def test_video_frames_reach_the_processor_as_a_video(tiny_qwen, small_video_world):
    backbone = VLMBackbone(str(tiny_qwen), frames=FrameSampler(num_frames=4))
    record = read_records(small_video_world / "train_ratings.jsonl")[0]
    inputs = backbone.collate([record.sample])
    assert "pixel_values_videos" in inputs and "video_grid_thw" in inputs
    assert int(inputs["video_grid_thw"][0, 0]) == 2  # 4 frames / temporal patch 2
    video_pad = backbone.preprocessor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert int((inputs["input_ids"] == video_pad).sum()) > 0


def test_vlm_video_route_trains_per_aspect_and_reloads(tiny_qwen, small_video_world, tmp_path):
    torch.manual_seed(0)
    backbone = VLMBackbone(str(tiny_qwen), frames=FrameSampler(num_frames=4))
    model = RewardModel(backbone, MultiAspectHead(ASPECTS), name="tiny-vlm-video")
    records = read_records(small_video_world / "train_ratings.jsonl")[:6]
    start = _loss(model, records)
    _fit(model, records, steps=15)
    end = _loss(model, records)
    assert end < 0.5 * start, (start, end)
    _reload_matches(model, [r.sample for r in records[:3]], tmp_path)


def test_vlm_video_route_trains_on_aspect_pairs(tiny_qwen, small_video_world):
    torch.manual_seed(0)
    model = RewardModel(
        VLMBackbone(str(tiny_qwen), frames=FrameSampler(num_frames=4)), MultiAspectHead(ASPECTS)
    )
    pairs = read_records(small_video_world / "train.jsonl")[:6]
    collate = Collator(model.collate, model.aspects)

    def pair_loss() -> float:
        with torch.no_grad():
            batch = collate(pairs)
            out = model(batch.inputs)
            return float(RewardLoss().pairs(out[: len(pairs)], out[len(pairs) :], batch)["loss"])

    start = pair_loss()
    _fit(model, pairs, steps=12)
    assert pair_loss() < 0.7 * start


def test_vlm_edit_route_reads_a_score_token_and_reloads(tiny_qwen, small_edit_world, tmp_path):
    torch.manual_seed(0)
    backbone = VLMBackbone(str(tiny_qwen), pooling="reward_token", reward_token="<|score|>")
    model = RewardModel(backbone, LinearHead(), name="tiny-vlm-edit")
    records = read_records(small_edit_world / "train_ratings.jsonl")[:6]
    inputs = backbone.collate([records[0].sample])
    assert int(inputs["image_grid_thw"].shape[0]) == 2  # source and edit both reach the processor
    start = _loss(model, records)
    _fit(
        model, records, steps=30
    )  # 6 records of the issue-13 edit world (mid-scale no-op): 15 steps reached 0.505 of the start
    end = _loss(model, records)
    assert end < 0.5 * start, (start, end)
    _reload_matches(model, [r.sample for r in records[:3]], tmp_path)


def _swap_backbone(config: Path, tiny: Path, tmp_path: Path) -> Path:
    recipe = yaml.safe_load(config.read_text())
    backbone = recipe["model"]["init_args"]["model"]["init_args"]["backbone"]
    backbone["init_args"].update(model_name_or_path=str(tiny), dtype=None, attn_implementation=None)
    recipe["trainer"]["precision"] = "32-true"
    path = tmp_path / config.name
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize(
    ("config", "world"),
    [
        ("video/qwen2_5_vl_videoscore.yaml", "small_video_world"),
        ("edit/qwen2_5_vl_adiee.yaml", "small_edit_world"),
    ],
)
def test_vlm_recipes_run_a_step_with_a_tiny_backbone(config, world, tiny_qwen, request, tmp_path):
    from mmreward.cli import main

    root = request.getfixturevalue(world)
    recipe = _swap_backbone(CONFIGS / config, tiny_qwen, tmp_path)
    main([
        "fit", "--config", str(recipe),
        "--data.train", str(root / "train_ratings.jsonl"), "--data.val", str(root / "val_ratings.jsonl"),
        "--data.batch_size", "2", "--data.num_workers", "0", "--trainer.fast_dev_run", "true",
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.default_root_dir", str(tmp_path / "run"),
    ])  # fmt: skip
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved["model"]["init_args"]["backbone"]["class_path"] == "modalities.backbones.vlm.VLMBackbone"
    scorer = load(tmp_path / "run" / "model", device="cpu")
    sample = read_records(root / "test_ratings.jsonl")[0].sample
    assert len(scorer.score_samples([sample])) == 1
