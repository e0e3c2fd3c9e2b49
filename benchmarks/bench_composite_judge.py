"""Pixel (composite) judge speed, measured in one process on the same requests (issue 12).

1. Batched generation: judgements/s of ``CompositeBackend`` with ``batch_size`` 32 (left padding,
   one ``generate`` per batch) against the same backend one request at a time.
2. The image encoded once: k sampled copies of each request (``SamplingParams(n=k)``) and both
   orders of a pairwise swap, with each distinct image of a batch loaded and encoded once (as
   shipped) against a backend that loads and encodes every image part again (the former path).
   Measured at the critique's length and at a one-token verdict, where encoding weighs most.

The judge is the quick start's architecture (``integrations.demos.judge``, as
``configs/composite/judge_caption.yaml`` builds it: open_clip's ResNet tower at 64 px, base width
16, its ``layer2`` and ``layer3`` maps read as 64 image tokens, an MLP projector, a two-layer LM of
width 64) with random weights: speed does not depend on what it learned. Random weights rarely stop early, so every
request generates ``--max-new-tokens`` tokens on both paths. The requests are the t2i world's
held-out renders with their prompts (``critique_request``), as the demo sends them.

Usage:
    python benchmarks/bench_composite_judge.py [--n 64] [--k 8] [--threads 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from headline import record

from integrations.demos.judge import QUICKSTART, VISION_CONFIG
from judges.backends import SamplingParams, message_media
from judges.composite_backend import REQUEST, CompositeBackend
from judges.critique import critique_request
from judges.critique_data import CritiqueWorld
from judges.pairwise import PairwiseJudge
from judges.pixel_training import PixelJudgeDataModule, TinyPixelJudge, pixel_sample
from mmreward.data.synthetic.t2i import T2IWorld


class ReEncodingBackend(CompositeBackend):
    """The baseline: every image part of a batch loaded and encoded, shared or not."""

    def unique_pixels(self, requests):
        pixels = [
            self.composite.encoder.pixels(image, REQUEST, f"image part {j}")
            for request in requests
            for j, image in enumerate(message_media(request))
        ]
        return {"pixel_values": self.composite._stack(pixels)}


def best_seconds(rounds: int, fn, *args) -> float:
    """The fastest of ``rounds`` timed calls of ``fn(*args)`` (after one untimed call)."""
    fn(*args)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def build(root: Path, n: int):
    data = PixelJudgeDataModule(
        CritiqueWorld(T2IWorld(100, 10, n, seed=0), images=["train", "val", "test"]),
        data_root=str(root / "data"),
    )
    data.setup()
    judge = TinyPixelJudge(VISION_CONFIG, QUICKSTART["hidden_size"], read_out=QUICKSTART["read_out"])
    model = judge.build(root / "lm", data.corpus()).eval()
    samples = [pixel_sample(e, data.root) for e in data.examples["test"][:n]]
    return model, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="held-out requests")
    parser.add_argument("--k", type=int, default=8, help="sampled copies per request")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (the model is tiny: a second thread buys little and suffers most from a shared machine)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model, samples = build(Path(tmp), args.n)
        requests = [critique_request(s) for s in samples]
        greedy = SamplingParams(max_new_tokens=args.max_new_tokens)

        batched = CompositeBackend(model, device="cpu", batch_size=32)
        single = CompositeBackend(model, device="cpu", batch_size=1)
        ours = len(requests) / best_seconds(args.rounds, batched.generate, requests, greedy)
        base = len(requests) / best_seconds(args.rounds, single.generate, requests, greedy)
        print(
            f"{len(requests)} critiques of {args.max_new_tokens} tokens: batched {ours:.1f}/s, one at a time {base:.1f}/s, {ours / base:.2f}x"
        )
        record(
            "batched_generation",
            f"judgements/s on {len(requests)} held-out t2i renders, critiques of {args.max_new_tokens} tokens, "
            "batched generation (batch 32) vs one request at a time, the quick start's composite judge "
            "architecture (random weights)",
            ours / base, ours=ours, baseline=base, unit="judgements/s", details="results/judges.md",
        )  # fmt: skip

        # each pair next to its swap, as PairwiseJudge.compare sends them (the sort by length keeps them together)
        pairs = PairwiseJudge(batched).requests(
            [order for a, b in zip(samples[::2], samples[1::2]) for order in ((a, b), (b, a))]
        )
        reencoding = ReEncodingBackend(model, device="cpu", batch_size=32)
        cases = {
            f"k={args.k} sampled critiques": (requests, args.max_new_tokens, args.k),
            f"k={args.k} sampled one-token verdicts": (requests, 1, args.k),
            "pairwise, both orders, one-token verdicts": (pairs, 1, 1),
        }
        for name, (batch, tokens, k) in cases.items():
            # seeded: both paths sample the same tokens, so they generate the same lengths
            params = SamplingParams(max_new_tokens=tokens, temperature=1.0 if k > 1 else 0.0, n=k, seed=0)
            once = best_seconds(args.rounds, batched.generate, batch, params)
            again = best_seconds(args.rounds, reencoding.generate, batch, params)
            count = len(batch) * k
            print(
                f"{name}: {count} generations, image once {once * 1000:.0f} ms, re-encoded {again * 1000:.0f} ms, {again / once:.2f}x"
            )
            record(
                "image_once_" + name.split(",")[0].replace(" ", "_").replace("=", ""),
                f"{name} on {len(batch)} requests ({count} generations), each distinct image encoded once "
                "vs every image part encoded again, composite judge (random weights), batch 32",
                again / once, ours=once * 1000, baseline=again * 1000, unit="ms", details="results/judges.md",
            )  # fmt: skip


if __name__ == "__main__":
    main()
