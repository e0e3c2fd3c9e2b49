"""VLM reward-model speed: shared-prefix scoring, and one forward per training pair.

1. Scoring N=16 responses to one (image, question): ``VLMBackbone`` with ``shared_prefix=True``
   (the image and question run once; the 16 responses reuse their key/value cache) against the
   same model re-encoding the full chat for every response, on a tiny and a mid-size (~100 M)
   Qwen2.5-VL built from configs. Scores are checked equal before timing.
2. Training throughput (pairs/s): chosen and rejected collated into one batch and one forward
   (what ``mmreward.data.collate`` does) against two forwards (chosen, then rejected), with the
   backward pass and optimizer step included.

Both sides run in this process on the same data; the script prints each median time and the
ratio. Run: ``HF_HUB_OFFLINE=1 python benchmarks/bench_vlm.py [--threads 2] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from headline import record  # noqa: E402

from mmreward.heads import MLPHead  # noqa: E402
from mmreward.models import RewardModel  # noqa: E402
from mmreward.types import Sample  # noqa: E402
from modalities.backbones.vlm import VLMBackbone  # noqa: E402
from tests.vlm_helpers import build_tiny_qwen2_5_vl  # noqa: E402

CONFIGS = {
    "tiny": {"hidden_size": 64, "num_layers": 2, "vision_hidden_size": 32, "vision_depth": 2},
    "mid": {"hidden_size": 768, "num_layers": 12, "vision_hidden_size": 256, "vision_depth": 4},
}
PIXELS = 224 * 224  # 64 visual tokens per image after the 2 x 2 merge


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def responses(n: int, rng: np.random.Generator) -> list[str]:
    words = [
        "the",
        "red",
        "circle",
        "is",
        "left",
        "of",
        "two",
        "blue",
        "squares",
        "and",
        "a",
        "small",
        "star",
    ]
    return [" ".join(rng.choice(words, size=int(rng.integers(12, 24)))) for _ in range(n)]


def bench_shared_prefix(path: Path, repeats: int) -> dict[str, float]:
    backbone = VLMBackbone(str(path)).eval()
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8))
    question = "describe the picture in one sentence and say how many objects there are"
    samples = [Sample(prompt=question, image=image, response=r) for r in responses(16, rng)]

    def score(shared: bool) -> torch.Tensor:
        backbone.shared_prefix = shared
        with torch.inference_mode():
            return backbone(backbone.collate(samples))

    assert torch.allclose(score(True), score(False), atol=1e-4), (
        "shared-prefix features differ from full ones"
    )
    shared = median_time(lambda: score(True), repeats)
    full = median_time(lambda: score(False), repeats)
    params = sum(p.numel() for p in backbone.parameters()) / 1e6
    return {"params_m": params, "shared_s": shared, "full_s": full, "speedup": full / shared}


def bench_pair_forward(path: Path, steps: int, batch: int = 8) -> dict[str, float]:
    torch.manual_seed(0)
    model = RewardModel(VLMBackbone(str(path), shared_prefix=False), MLPHead(hidden_size=64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(1)
    pictures = [
        Image.fromarray(rng.integers(0, 256, size=(112, 112, 3), dtype=np.uint8)) for _ in range(2 * batch)
    ]
    chosen = [Sample(prompt=f"caption {i}", image=pictures[i]) for i in range(batch)]
    rejected = [Sample(prompt=f"caption {i}", image=pictures[batch + i]) for i in range(batch)]

    def step(one_forward: bool) -> None:
        if one_forward:
            out = model(model.collate(chosen + rejected))
            c, r = out.score[:batch], out.score[batch:]
        else:
            c, r = model(model.collate(chosen)).score, model(model.collate(rejected)).score
        loss = -torch.nn.functional.logsigmoid(c - r).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    one = median_time(lambda: step(True), steps)
    two = median_time(lambda: step(False), steps)
    return {"one_forward_pairs_s": batch / one, "two_forwards_pairs_s": batch / two, "speedup": two / one}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "mid"], choices=sorted(CONFIGS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            path = build_tiny_qwen2_5_vl(
                Path(tmp) / size, min_pixels=PIXELS, max_pixels=PIXELS, **CONFIGS[size]
            )
            r = bench_shared_prefix(path, args.repeats)
            print(
                f"shared-prefix scoring, N=16, {size} ({r['params_m']:.1f} M params): "
                f"shared {r['shared_s'] * 1e3:.1f} ms, full {r['full_s'] * 1e3:.1f} ms, speedup x{r['speedup']:.2f}"
            )
            record(
                f"shared_prefix_{size}",
                f"scoring N=16 responses to one (image, question), shared prefix vs full re-encoding, "
                f"{size} Qwen2.5-VL ({r['params_m']:.1f} M params)",
                r["speedup"],
                ours=r["shared_s"] * 1e3,
                baseline=r["full_s"] * 1e3,
                unit="ms",
                details="results/vlm.md",
            )
        path = build_tiny_qwen2_5_vl(Path(tmp) / "train", max_pixels=112 * 112)
        t = bench_pair_forward(path, args.repeats * 2)
        print(
            f"training pairs/s, tiny, batch 8: one forward {t['one_forward_pairs_s']:.1f}, "
            f"two forwards {t['two_forwards_pairs_s']:.1f}, speedup x{t['speedup']:.2f}"
        )
        record(
            "pair_one_forward",
            "training pairs/s (forward, backward, AdamW step), chosen and rejected in one forward vs two "
            "forwards, tiny Qwen2.5-VL, batch 8 pairs",
            t["speedup"],
            ours=t["one_forward_pairs_s"],
            baseline=t["two_forwards_pairs_s"],
            unit="pairs/s",
            details="results/vlm.md",
        )


if __name__ == "__main__":
    main()
