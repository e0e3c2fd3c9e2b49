"""Judge speed and test-time scaling, measured in one process on the same data.

1. Throughput: judgements per second with batched local generation (left padding, one
   ``generate`` per batch) against the same judge one request at a time.
2. Scaling: the cost of k sampled judgements per input (J1-style test-time scaling) against the
   gain in Spearman correlation with the ground truth, for each aggregation, relative to greedy.

Usage:
    python benchmarks/bench_judges.py [--run DIR] [--n 64] [--threads 2]

The judge measured is the scene-text ablation (``judges.scene_text_ablation``: a tiny LM judge that
reads a caption of the scene, not the image), a plain ``TransformersBackend`` folder. The speed
figures are those of batched generation, whatever the judge reads; its Spearman figures measure text
comparison against a caption that holds the answer, not judging images (the pixel judge of
``mmreward demo --task judge`` is docs/judges.md's).

``--run`` is a folder from ``train_scene_text_judge`` (``model/`` and ``data/test.jsonl``); without
it that judge is trained first.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from headline import record

from judges.backends import TransformersBackend
from judges.critique import CritiqueJudge
from judges.critique_data import read_examples
from judges.evaluation import evaluate_critique_judge
from judges.scaling import ScaledJudge
from mmreward.metrics import correlations

MAX_NEW_TOKENS = 96  # the scene-text judge's seen line, critique and score line (as the former quick start)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def throughput(model: Path, samples: list, batch_size: int) -> float:
    judge = CritiqueJudge(
        TransformersBackend(str(model), batch_size=batch_size), max_new_tokens=MAX_NEW_TOKENS
    )
    judge.judge(samples[:2])  # warm-up
    _, seconds = timed(lambda: judge.judge(samples))
    return len(samples) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = args.run
    if run is None:
        from judges.scene_text_ablation import train_scene_text_judge

        run = train_scene_text_judge(Path("benchmarks/out/judge-run"))
    examples = read_examples(run / "data" / "test.jsonl")[: args.n]
    samples = [e.sample() for e in examples]

    batched = throughput(run / "model", samples, batch_size=32)
    single = throughput(run / "model", samples, batch_size=1)
    print(
        f"throughput on {len(samples)} judgements: batched {batched:.1f}/s, one at a time {single:.1f}/s, ratio {batched / single:.2f}x"
    )
    record(
        "batched_generation",
        f"judgements/s on {len(samples)} judgements, batched local generation (batch 32) vs one at a "
        "time, the scene-text tiny LM judge",
        batched / single,
        ours=batched,
        baseline=single,
        unit="judgements/s",
        details="results/judges.md",
    )

    judge = CritiqueJudge(
        TransformersBackend(str(run / "model"), batch_size=32), max_new_tokens=MAX_NEW_TOKENS
    )
    greedy, greedy_s = timed(lambda: evaluate_critique_judge(judge, examples))
    truth = [e.score for e in examples]
    print(f"greedy: spearman {greedy.spearman:.3f}, {greedy_s:.1f} s")
    print("| k | aggregate | spearman | gain vs greedy | mean agreement | cost vs greedy |")
    print("|---|---|---|---|---|---|")
    for k in (4, 8):
        results, seconds = timed(
            lambda k=k: ScaledJudge(judge, k=k, temperature=1.0, aggregate="mean", seed=0).judge(samples)
        )
        for how in ("majority", "mean", "confidence"):
            from judges.scaling import aggregate_scores

            merged = [aggregate_scores(r.samples, how) for r in results]
            scores = [m.score if m.score is not None else 3.0 for m in merged]
            rho = correlations(scores, truth)["spearman"]
            agreement = sum(m.agreement or 0 for m in merged) / len(merged)
            print(
                f"| {k} | {how} | {rho:.3f} | {rho - greedy.spearman:+.3f} | {agreement:.2f} | {seconds / greedy_s:.1f}x |"
            )


if __name__ == "__main__":
    main()
