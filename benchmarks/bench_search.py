"""Steps and tokens saved by early rejection in step-by-step best-of-N, at equal accuracy.

Measures, in one process on the same problems (``integrations.search.synthetic``: chains that go
wrong at a known step, a noisy but informative toy PRM; no model, so generation cost is counted in
steps and tokens, not seconds):

1. full best-of-N: ``n`` chains per problem generated to the end, scored once, PRM-min selection;
2. early rejection: the same generator and PRM, partial chains scored after every step and the
   doubtful ones stopped (an absolute threshold, a quantile of the alive chains, or both).

For each rule it prints accuracy (with its standard error) next to full best-of-N's, the steps
and tokens generated, the ratio of tokens saved, and the reward calls and samples scored (what
early rejection pays for its savings). A rule counts as "equal accuracy" when it is within 2
points of full best-of-N. Majority voting and a single chain are printed for scale.

Run: ``.venv/bin/python benchmarks/bench_search.py [--problems 500] [--n 8 16] [--length 4 8]``
"""

from __future__ import annotations

import argparse
import math
import random
import time

from headline import record

from integrations.search import EarlyRejection, majority_vote, sample_best_of_n, total_stats
from integrations.search.synthetic import ToyPRM, ToyReasoningWorld

RULES = {
    "threshold 0.5": EarlyRejection(threshold=0.5),
    "threshold 0.5 from step 2": EarlyRejection(threshold=0.5, min_steps=2),
    "quantile 0.25": EarlyRejection(quantile=0.25),
    "threshold 0.5 + quantile 0.25": EarlyRejection(threshold=0.5, quantile=0.25),
    "threshold 0.5 + quantile 0.5": EarlyRejection(threshold=0.5, quantile=0.5),
    "threshold 0.5 + quantile 0.5 once, after step 1": EarlyRejection(
        threshold=0.5, quantile=0.5, quantile_at=(1,)
    ),
    "threshold 0.5 + quantile 0.5 once, after step 2": EarlyRejection(
        threshold=0.5, quantile=0.5, quantile_at=(2,)
    ),
    "threshold 0.5 + quantile 0.25 after steps 1, 2": EarlyRejection(
        threshold=0.5, quantile=0.25, quantile_at=(1, 2)
    ),
}


def accuracy(world: ToyReasoningWorld, results) -> float:
    return world.accuracy([r.sample for r in results])


def stderr(p: float, count: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / count)


def run(world: ToyReasoningWorld, problems, n: int) -> None:
    """One table: full best-of-N and every rule on the same problems."""
    start = time.perf_counter()
    full = sample_best_of_n(world.generator, ToyPRM(), problems, n=n)
    full_seconds = time.perf_counter() - start
    full_acc, full_cost = accuracy(world, full), total_stats(full)
    pools = [[c.sample for c in r.chains] for r in full]
    majority = sum(
        v.answer == world.truth(p) for v, p in zip(majority_vote(pools, world.answer), problems, strict=True)
    )
    single = world.accuracy([pool[0] for pool in pools])
    rng = random.Random(0)
    chance = world.accuracy([rng.choice(pool) for pool in pools])
    print(
        f"\n### length {world.length}, N = {n}, {len(problems)} problems "
        f"(single chain {single:.3f}, random pick {chance:.3f}, majority vote {majority / len(problems):.3f})\n"
    )
    print(
        "| rule | accuracy | vs full | steps | tokens | tokens saved | reward calls | samples scored | equal acc. |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    se = stderr(full_acc, len(problems))
    print(
        f"| full best-of-N (PRM-min) | {full_acc:.3f} ± {se:.3f} | | {full_cost.steps_generated} | "
        f"{full_cost.tokens_generated} | 1.00x | {full_cost.reward_calls} | {full_cost.samples_scored} | |"
    )
    best = None  # (tokens saved, rule, accuracy, tokens) of the rule that saves most at equal accuracy
    for name, rule in RULES.items():
        early = sample_best_of_n(world.generator, ToyPRM(), problems, n=n, early_rejection=rule)
        acc, cost = accuracy(world, early), total_stats(early)
        saved = full_cost.tokens_generated / max(1, cost.tokens_generated)
        equal = "yes" if acc >= full_acc - 0.02 else "no"
        if equal == "yes" and (best is None or saved > best[0]):
            best = (saved, name, acc, cost.tokens_generated)
        print(
            f"| {name} | {acc:.3f} ± {stderr(acc, len(problems)):.3f} | {100 * (acc - full_acc):+.1f} pt | "
            f"{cost.steps_generated} | {cost.tokens_generated} | **{saved:.2f}x** | {cost.reward_calls} | "
            f"{cost.samples_scored} | {equal} |"
        )
    print(f"\n(full best-of-N search loop: {full_seconds:.2f} s of Python on the toy world)")
    if best is not None:  # no rule at equal accuracy: no headline for this setting
        saved, name, acc, tokens = best
        record(
            f"early_rejection_length{world.length}_n{n}",
            f"tokens generated, step-wise best-of-N with early rejection ({name}) vs full best-of-N at "
            f"equal accuracy (within 2 pt), toy PRM world, {world.length}-step chains, N = {n}, "
            f"{len(problems)} problems",
            saved,
            ours=tokens,
            baseline=full_cost.tokens_generated,
            unit="tokens",
            details="results/search.md",
            extra={"accuracy": f"{acc:.3f} vs {full_acc:.3f}"},
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--n", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--length", type=int, nargs="+", default=[4, 8])
    args = parser.parse_args()
    for length in args.length:
        # Longer chains get a lower per-step error rate, so that a chain is right about as often.
        scale = 4 / length
        world = ToyReasoningWorld(length=length, error_rates=(0.1 * scale, 0.35 * scale))
        problems = world.problems(args.problems)
        for n in args.n:
            run(world, problems, n)


if __name__ == "__main__":
    main()
