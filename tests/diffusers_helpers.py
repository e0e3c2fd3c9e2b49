"""Shared pieces for the diffusers tests: a tiny pipeline saved once a session, and tiny rewards.

Import the fixtures into a test module with
``from diffusers_helpers import tiny_sd_dir  # noqa: F401``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from integrations.diffusers.tiny import build_tiny_pipeline
from mmreward.heads import LinearHead
from mmreward.models import RewardModel
from mmreward.scoring import Scorer

# huggingface_hub reads this once, when first imported: set it before any test imports diffusers
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TRAIN_PROMPTS = ["red apple", "green tree", "a house", "two circles", "ocean", "mountain"]
HELD_OUT_PROMPTS = ["a cat", "a dog on grass", "sunset", "a blue car"]

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Stable Diffusion pipeline written once per session with ``save_pretrained``."""
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd") / "pipe")


def load_pipe(directory: Path) -> Any:
    """A fresh pipeline from ``directory`` through ``from_pretrained`` (the path a user takes)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(directory)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_clip_scorer(seed: int = 0) -> Scorer:
    """A ``Scorer`` around a tiny (random) CLIP reward model on the CPU."""
    from modalities.backbones.clip import ClipBackbone

    torch.manual_seed(seed)
    model = RewardModel(ClipBackbone(model_name="tiny", model_config=TINY_CLIP), LinearHead())
    return Scorer(model, device="cpu")


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    """Run each test on one thread: the tiny models' ops are too small to split, and extra
    threads only wait on each other (a 20x slowdown measured on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
