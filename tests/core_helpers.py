"""Tiny models and a small colour world for the core tests (no hub, seconds on a CPU)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}


def tiny_reward_model(head: str = "linear", seed: int = 0):
    """A RewardModel on a random-init tiny open_clip model."""
    import torch

    from mmreward.heads import LinearHead, MLPHead, MultiAspectHead
    from mmreward.models import RewardModel
    from modalities.backbones.clip import ClipBackbone

    torch.manual_seed(seed)
    heads = {
        "linear": LinearHead,
        "mlp": lambda: MLPHead(hidden_size=16),
        "aspects": lambda: MultiAspectHead(["alignment", "quality"]),
    }
    return RewardModel(
        ClipBackbone(model_name="tiny", model_config=TINY_CLIP), heads[head](), name="tiny-test"
    )


def colour_image(colour: str, seed: int, size: int = 32) -> Image.Image:
    """A noisy patch of one colour."""
    base = np.array(COLOURS[colour], dtype=float)
    pixels = base + np.random.default_rng(seed).normal(0, 25, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_colour_world(root: Path, n: int, seed: int, name: str) -> Path:
    """Pairs "a <colour> picture": the chosen image has that colour, the rejected one another.

    A world unlike the synthetic shapes world, for testing that users can bring their own data.
    """
    root = Path(root)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        good, bad = rng.sample(sorted(COLOURS), 2)
        for tag, colour in (("c", good), ("r", bad)):
            colour_image(colour, seed * 100_000 + i * 2 + (tag == "r")).save(
                root / "img" / f"{name}_{i}_{tag}.png"
            )
        lines.append(
            {
                "id": f"{name}-{i}",
                "prompt": f"a {good} picture",
                "chosen": {"image": f"img/{name}_{i}_c.png"},
                "rejected": {"image": f"img/{name}_{i}_r.png"},
                "subset": good,
            }
        )
    path = root / f"{name}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path
