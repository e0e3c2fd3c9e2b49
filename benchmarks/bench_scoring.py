"""Scoring 64 images against one prompt with an open_clip ViT-B/32 (random weights, 512 px images).

Compares, in one process on the same images:
- per-image loop: preprocess, encode the image, encode the prompt again, score — the shape of the
  scoring loops in ImageReward's and HPSv2's inference code;
- mmreward: ``Scorer.score(prompts=p, images=paths)`` — batched, the prompt encoded once;
- floor: the bare batched image forward on already-preprocessed pixels (no decoding, no text);
and the same with bf16 autocast. Also training: one forward over a chosen+rejected batch vs two.

Run: .venv/bin/python benchmarks/bench_scoring.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import mmreward as mr
from mmreward.heads import LinearHead
from mmreward.losses import bradley_terry_loss
from mmreward.models import RewardModel
from modalities.backbones.clip import ClipBackbone
from modalities.image import load_image, pil_to_tensor


def timed(fn, repeats: int = 3) -> float:
    """Best of ``repeats`` wall times after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def write_images(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def per_image_loop(backbone: ClipBackbone, head: LinearHead, prompt: str, paths: list[Path]) -> list[float]:
    """One image at a time, the prompt re-encoded for each (the peers' loop shape)."""
    scores = []
    with torch.inference_mode():
        for path in paths:
            pixels = backbone.pixels_from_tensor(pil_to_tensor(load_image(path))[None])
            image = backbone.encode_image(pixels)
            text = backbone.encode_text(backbone.tokenizer([prompt]))
            scores.append(float(head(backbone.join(image, text)).score))
    return scores


def bench_scoring(n: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = RewardModel(ClipBackbone("ViT-B-32"), LinearHead())
    prompt = "two red circles above a blue square"
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), n)
        scorer = mr.Scorer(model, batch_size=n, device="cpu")
        scorer_bf16 = mr.Scorer(model, batch_size=n, device="cpu", dtype=torch.bfloat16)
        ours = scorer.score(prompts=prompt, images=paths)
        naive = per_image_loop(model.backbone, model.head, prompt, paths)
        assert np.allclose(ours, naive, atol=1e-3), "the two paths must give the same scores"
        pixels = model.collate([mr.Sample(prompt=prompt, image=p) for p in paths])["pixel_values"]

        def floor() -> None:
            with torch.inference_mode():
                model.backbone.model.encode_image(pixels)

        times = {
            "per_image_loop": timed(
                lambda: per_image_loop(model.backbone, model.head, prompt, paths), repeats
            ),
            "mmreward_fp32": timed(lambda: scorer.score(prompts=prompt, images=paths), repeats),
            "mmreward_bf16": timed(lambda: scorer_bf16.score(prompts=prompt, images=paths), repeats),
            "floor_image_forward": timed(floor, repeats),
        }
    return times


def bench_pair_step(batch: int, repeats: int) -> dict[str, float]:
    """A training step on B pairs: one forward of 2B samples vs two forwards of B."""
    torch.manual_seed(0)
    model = RewardModel(ClipBackbone("ViT-B-32"), LinearHead())
    rng = np.random.default_rng(1)
    samples = [
        mr.Sample(
            prompt=f"prompt {i % batch}",
            image=Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)),
        )
        for i in range(2 * batch)
    ]
    joint = model.collate(samples)
    chosen, rejected = model.collate(samples[:batch]), model.collate(samples[batch:])

    def one_forward() -> None:
        out = model(joint).score
        bradley_terry_loss(out[:batch], out[batch:]).backward()

    def two_forwards() -> None:
        bradley_terry_loss(model(chosen).score, model(rejected).score).backward()

    return {
        "pair_one_forward": timed(one_forward, repeats),
        "pair_two_forwards": timed(two_forwards, repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    t = bench_scoring(args.images, args.repeats)
    for name, value in t.items():
        print(f"{name:>22}: {value:7.3f} s  ({args.images / value:6.1f} images/s)")
    print(
        f"speed-up vs per-image loop: fp32 {t['per_image_loop'] / t['mmreward_fp32']:.2f}x, bf16 {t['per_image_loop'] / t['mmreward_bf16']:.2f}x"
    )
    print(f"overhead over the floor (fp32): {t['mmreward_fp32'] / t['floor_image_forward']:.2f}x")
    p = bench_pair_step(args.pairs, args.repeats)
    print(
        f"train step, {args.pairs} pairs: one forward {p['pair_one_forward']:.3f} s, two forwards {p['pair_two_forwards']:.3f} s "
        f"({p['pair_two_forwards'] / p['pair_one_forward']:.2f}x)"
    )


if __name__ == "__main__":
    main()
