"""Refined best-of-N (GM-PRM, Zhang et al., 2025): the PRM's correction of a chain's first wrong
step seeds a new attempt.

Half the budget (``initial``) goes to ordinary chains. Each is scored by the process reward
model; in a chain with a step scored below ``threshold``, the first such step is handed, with the
chain, to ``correct`` (a generative PRM's corrected step, or any callable), and the chain's prefix
up to that step plus the correction is generated to the end by the policy. The best of all chains,
initial and refined, is kept. Refinements go to the flawed chains with the highest values first,
up to ``n - initial``.

Example:
    >>> results = refined_best_of_n(policy_steps, prm, problems, n=8, correct=gen_prm.correct_first_error)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from integrations.search.chains import (
    Chain,
    Correction,
    SearchResult,
    SearchStats,
    StepGenerator,
    as_step,
    check_max_steps,
    choose,
    rollout,
    score_chains,
    start,
)
from integrations.search.selection import Selection
from mmreward.protocols import Reward, check_reward
from mmreward.transforms import StepAggregate
from mmreward.types import Sample


def first_wrong_step(step_scores: Sequence[float] | None, threshold: float) -> int | None:
    """The index of the first step scored below ``threshold``, or None when every step passes.

    Raises:
        ValueError: No per-step scores (the reward is not a process reward model).
    """
    if step_scores is None:
        raise ValueError(
            "Refined best-of-N needs per-step scores to find the first wrong step, but the reward gave "
            "none (RewardOutput.steps is None). Use a process reward model."
        )
    return next((i for i, s in enumerate(step_scores) if s < threshold), None)


def _refine(
    pool: Sequence[Chain], correct: Correction, threshold: float, budget: int, max_steps: int
) -> list[Chain]:
    """New chains seeded from the corrections of up to ``budget`` flawed chains (best first)."""
    flawed = [
        c for c in pool if c.value == c.value and first_wrong_step(c.step_scores, threshold) is not None
    ]
    flawed.sort(key=lambda c: c.value, reverse=True)
    seeded = []
    for chain in flawed[:budget]:
        index = first_wrong_step(chain.step_scores, threshold)
        fix = correct(chain.sample, index)
        if fix is None:
            continue
        step = as_step(fix)
        steps = [*chain.sample.steps[:index], step.text]
        sample = replace(chain.sample, steps=steps, meta={**chain.sample.meta, "attempt": 1})
        seeded.append(Chain(sample, done=step.final or len(steps) >= max_steps))
    return seeded


def refined_best_of_n(
    generator: StepGenerator,
    reward: Reward,
    problems: Sequence[Sample],
    correct: Correction,
    n: int = 8,
    initial: int | None = None,
    threshold: float = 0.5,
    max_steps: int = 16,
    aggregate: StepAggregate | None = "min",
    select: Selection = "mean",
    k: float = 1.0,
) -> list[SearchResult]:
    """Best-of-N whose flawed chains are repaired from their first wrong step and generated again.

    Args:
        generator: The step generator (``integrations.search.chains``).
        reward: A process reward model.
        problems: One sample per problem.
        correct: ``correct(chain, index) -> Step | str | None``: the corrected step for the
            chain's first wrong step (see ``integrations.search.chains.Correction``).
        n: Chains per problem in all, initial and refined.
        initial: Initial chains per problem; default ``ceil(n / 2)`` as in GM-PRM.
        threshold: A step scored below this is wrong.
        max_steps: A chain is complete after this many steps.
        aggregate: How step scores become a chain's value.
        select: Selection rule.
        k: Width of the lower confidence bound, in standard deviations.
    """
    check_reward(reward, "refined_best_of_n")
    check_max_steps(max_steps)
    initial = math.ceil(n / 2) if initial is None else initial
    if not 1 <= initial <= n:
        raise ValueError(f"refined_best_of_n needs 1 <= initial <= n; got initial={initial}, n={n}.")
    stats = SearchStats()
    pools = [
        [Chain(start(p, problem=j, candidate=i, attempt=0)) for i in range(initial)]
        for j, p in enumerate(problems)
    ]
    flat = [c for pool in pools for c in pool]
    rollout(generator, flat, max_steps, stats)
    score_chains(reward, flat, stats, aggregate, select, k)
    seeded = [_refine(pool, correct, threshold, n - initial, max_steps) for pool in pools]
    new = [c for group in seeded for c in group]
    rollout(generator, new, max_steps, stats)
    score_chains(reward, new, stats, aggregate, select, k)
    return [
        choose([*pool, *group], stats.reward_calls, "refined_best_of_n")
        for pool, group in zip(pools, seeded, strict=True)
    ]
