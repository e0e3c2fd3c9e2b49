"""Benchmarks for integrations.diffusers, each against its baseline in the same process.

1. Best-of-N scoring: P prompts x N images scored by ``RewardFn.score`` (one batch, each prompt
   encoded once, differentiable preprocessing in torch) vs a per-image loop that calls
   ``Scorer.score`` once per image (the shape of HPSv2's scoring loop), vs ``Scorer.score`` on the
   whole list (batched, but PIL preprocessing per image).
2. Reward backprop memory: bytes that the forward pass keeps for the backward pass (counted with
   ``torch.autograd.graph.saved_tensors_hooks``), and seconds a step, for DRaFT-K with and
   without gradient checkpointing on the tiny pipeline. On CUDA the peak allocated memory
   (``torch.cuda.max_memory_allocated``) is reported too.

Run: ``HF_HUB_OFFLINE=1 python benchmarks/bench_diffusers.py [--model ViT-B-32] [--n 16]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from headline import record

from integrations.diffusers.adapters import TrainSettings
from integrations.diffusers.backprop import BackpropConfig, RewardBackpropTrainer
from integrations.diffusers.reward import RewardFn
from integrations.diffusers.tiny import build_tiny_pipeline
from integrations.diffusers.toy_rewards import ColourReward
from mmreward.heads import LinearHead
from mmreward.models import RewardModel
from mmreward.scoring import Scorer
from modalities.backbones.clip import ClipBackbone

PROMPTS = ["a red cube on a table", "two dogs in the snow", "a lighthouse at dusk", "a bowl of fruit"]


def _timed(fn, repeats: int) -> float:  # noqa: ANN001
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def bench_best_of_n_scoring(model_name: str, n: int, size: int, repeats: int) -> None:
    """Seconds per image: batched RewardFn vs a per-image Scorer loop vs Scorer on the list."""
    from PIL import Image

    torch.manual_seed(0)
    scorer = Scorer(
        RewardModel(ClipBackbone(model_name=model_name), LinearHead()), device="cpu", batch_size=64
    )
    prompts = [p for p in PROMPTS for _ in range(n)]
    images = torch.rand(len(prompts), 3, size, size) * 2 - 1  # what a VAE decodes to
    pil = [Image.fromarray(((im / 2 + 0.5) * 255).round().byte().permute(1, 2, 0).numpy()) for im in images]
    reward = RewardFn(scorer, batch_size=64)
    ours = _timed(lambda: reward.score(images, prompts), repeats)
    loop = _timed(lambda: [scorer.score(prompts=[p], images=[im]) for p, im in zip(prompts, pil)], repeats)
    listed = _timed(lambda: scorer.score(prompts=prompts, images=pil), repeats)
    count = len(prompts)
    print(
        f"best-of-N scoring, {model_name}, {len(PROMPTS)} prompts x {n} images at {size}px, {torch.get_num_threads()} threads"
    )
    print(f"  RewardFn.score (one batch, prompt once): {1000 * ours / count:7.1f} ms/image")
    print(
        f"  per-image Scorer.score loop (baseline):  {1000 * loop / count:7.1f} ms/image  -> {loop / ours:.2f}x slower"
    )
    print(
        f"  Scorer.score on the list (PIL path):     {1000 * listed / count:7.1f} ms/image  -> {listed / ours:.2f}x slower"
    )
    record(
        "best_of_n_scoring",
        f"best-of-N scoring per image, `RewardFn.score` (one batch, prompt once) vs a per-image "
        f"`Scorer.score` loop, {model_name}, {len(PROMPTS)} prompts x {n} images at {size} px",
        loop / ours,
        ours=1000 * ours / count,
        baseline=1000 * loop / count,
        unit="ms/image",
        details="results/diffusers.md",
        extra={"Scorer.score on the list": f"{listed / ours:.2f}x slower"},
    )


def _saved_bytes(trainer: RewardBackpropTrainer, prompts: list[str]) -> tuple[int, float]:
    """Bytes saved for backward during one training step, and the step's seconds."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        trainer.step(prompts)
    return total, time.perf_counter() - start


def bench_backprop_memory(truncation: int, batch: int) -> None:
    """Memory kept for backward by DRaFT-K, with and without gradient checkpointing."""
    from diffusers import StableDiffusionPipeline

    folder = build_tiny_pipeline(Path(tempfile.mkdtemp()) / "tiny-sd")
    results = {}
    for checkpointing in (False, True):
        pipe = StableDiffusionPipeline.from_pretrained(folder)
        config = BackpropConfig(
            num_inference_steps=truncation,
            truncation=truncation,
            guidance_scale=3.0,
            batch_size=batch,
            gradient_checkpointing=checkpointing,
        )
        trainer = RewardBackpropTrainer(pipe, RewardFn(ColourReward()), config, TrainSettings())
        prompts = (["red cube", "two dogs", "lighthouse", "fruit"] * batch)[:batch]  # fit the tiny tokenizer
        _saved_bytes(trainer, prompts)  # warm-up
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        saved, seconds = _saved_bytes(trainer, prompts)
        peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
        results[checkpointing] = (saved, seconds, peak)
    print(
        f"reward backprop on the tiny pipeline (32px, K={truncation} steps, batch {batch}), bytes saved for backward:"
    )
    for checkpointing, (saved, seconds, peak) in results.items():
        cuda = f", CUDA peak {peak / 2**20:.1f} MiB" if peak is not None else ""
        print(f"  checkpointing={checkpointing!s:5}: {saved / 2**20:7.2f} MiB, {seconds:.2f} s/step{cuda}")
    print(
        f"  saved memory ratio (off / on): {results[False][0] / results[True][0]:.1f}x, time ratio (on / off): {results[True][1] / results[False][1]:.2f}x"
    )
    record(
        "backprop_saved_memory",
        f"memory saved for backward in reward backprop (DRaFT-K, K={truncation}, batch {batch}, tiny "
        "pipeline at 32 px), gradient checkpointing on vs off",
        results[False][0] / results[True][0],
        ours=results[True][0] / 2**20,
        baseline=results[False][0] / 2**20,
        unit="MiB",
        details="results/diffusers.md",
        extra={"step time on / off": f"{results[True][1] / results[False][1]:.2f}x"},
    )


def main() -> None:
    """Parse the options and run both benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture (random weights)")
    parser.add_argument("--n", type=int, default=16, help="images per prompt")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--truncation", type=int, default=4, help="K of DRaFT-K for the memory benchmark")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench_best_of_n_scoring(args.model, args.n, args.size, args.repeats)
    bench_backprop_memory(args.truncation, args.batch)


if __name__ == "__main__":
    main()
