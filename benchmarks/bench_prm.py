"""Process reward model speed: every step's score in one forward vs one forward per prefix.

A discriminative PRM (``mmreward.prm.ProcessRewardModel`` on ``StepBackbone(LMBackbone)``) reads
each step's score at the separator after it, so one forward over the whole chain scores all its
steps. The baseline scores each prefix (steps 1..k) on its own, one forward per prefix, reading the
last separator: the shape of scoring loops that call a PRM or an ORM once per partial solution.
A second baseline batches all the prefixes of all chains into one forward (same work, better
batching). Scores are checked equal (atol 1e-4) before timing; times include collate (chat
template and tokenizer).

Run: ``HF_HUB_OFFLINE=1 python benchmarks/bench_prm.py [--threads 1] [--repeats 3] [--steps 6]``.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from headline import record  # noqa: E402

from mmreward.heads import LinearHead  # noqa: E402
from mmreward.prm import ProcessRewardModel  # noqa: E402
from mmreward.scoring import Scorer  # noqa: E402
from mmreward.types import Sample  # noqa: E402
from modalities.backbones.lm import LMBackbone  # noqa: E402
from modalities.backbones.steps import StepBackbone  # noqa: E402
from tests.vlm_helpers import WORDS, build_tiny_causal_lm  # noqa: E402

CONFIGS = {"tiny": {"hidden_size": 64, "num_layers": 2}, "mid": {"hidden_size": 384, "num_layers": 6}}


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def chains(n: int, steps: int, rng: np.random.Generator) -> list[Sample]:
    words = [w for w in WORDS if w.isalpha()]

    def text(k: int) -> str:
        return " ".join(rng.choice(words, size=k))

    return [
        Sample(prompt=text(20), steps=[text(int(rng.integers(12, 20))) for _ in range(steps)])
        for _ in range(n)
    ]


def run(name: str, config: dict, args: argparse.Namespace, root: Path) -> list[str]:
    path = build_tiny_causal_lm(root / name, **config)
    torch.manual_seed(0)
    model = ProcessRewardModel(StepBackbone(LMBackbone(str(path))), LinearHead())
    one_forward = Scorer(model, device="cpu", batch_size=args.chains)
    per_prefix = Scorer(model, device="cpu", batch_size=1)
    all_prefixes = Scorer(model, device="cpu", batch_size=args.chains * args.steps)
    data = chains(args.chains, args.steps, np.random.default_rng(0))
    prefixes = [Sample(prompt=c.prompt, steps=c.steps[:k]) for c in data for k in range(1, args.steps + 1)]

    ours = torch.stack([torch.tensor(o.steps) for o in one_forward.score_samples(data)])
    theirs = torch.tensor([o.steps[-1] for o in per_prefix.score_samples(prefixes)]).reshape(ours.shape)
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()

    t_ours = median_time(lambda: one_forward.forward(data), args.repeats)
    t_loop = median_time(lambda: [per_prefix.forward([p]) for p in prefixes], args.repeats)
    t_batch = median_time(lambda: all_prefixes.forward(prefixes), args.repeats)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    what = f"{args.chains} chains x {args.steps} steps, {name} ({params:.1f} M params)"
    record(
        f"one_forward_vs_per_prefix_{name}",
        f"every step's score in one forward vs one forward per prefix, {what}",
        t_loop / t_ours,
        ours=t_ours * 1e3,
        baseline=t_loop * 1e3,
        unit="ms",
        details="results/prm.md",
        extra={"vs all prefixes in one batched forward": f"{t_batch / t_ours:.2f}x"},
    )
    return [
        f"| {what} | one forward per batch: {t_ours * 1e3:.1f} ms | one forward per prefix: "
        f"{t_loop * 1e3:.1f} ms | x{t_loop / t_ours:.2f} |",
        f"| {what} | one forward per batch: {t_ours * 1e3:.1f} ms | all prefixes in one batched forward: "
        f"{t_batch * 1e3:.1f} ms | x{t_batch / t_ours:.2f} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--sizes", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = ["| What | Ours | Baseline | Ratio |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        for name in args.sizes:
            rows += run(name, CONFIGS[name], args, Path(tmp))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
