"""Step-level beam search guided by a process reward model.

Each round every unfinished beam is expanded into ``expand`` children (one next step each, from the
step generator), all children of all problems are scored in one reward call, and each problem keeps
its ``beam_width`` best chains (finished beams compete with the new children). Ends when every kept
beam is complete; the best complete chain is the answer (Snell et al., 2024, "Scaling LLM Test-Time
Compute Optimally", PRM beam search).

Example:
    >>> results = beam_search(policy_steps, prm, problems, beam_width=4, expand=4)
    >>> results[0].sample.steps
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from integrations.search.chains import (
    Chain,
    SearchResult,
    SearchStats,
    StepGenerator,
    advance,
    check_max_steps,
    choose,
    pool_stats,
    score_chains,
    start,
)
from integrations.search.selection import Selection
from mmreward.protocols import Reward, check_reward
from mmreward.transforms import StepAggregate
from mmreward.types import Sample


def _children(beams: Sequence[Chain], expand: int) -> list[Chain]:
    """``expand`` copies of each unfinished beam, tagged ``candidate`` (beam) and ``branch`` (copy)."""
    out = []
    for i, beam in enumerate(b for b in beams if not b.done):
        for branch in range(expand):
            sample = replace(beam.sample, meta={**beam.sample.meta, "candidate": i, "branch": branch})
            out.append(Chain(sample))
    return out


def _prune(beams: list[Chain], beam_width: int) -> tuple[list[Chain], int]:
    """The ``beam_width`` best chains (by value, NaN worst) and how many were pruned."""
    values = torch.tensor([c.value for c in beams]).nan_to_num(float("-inf"))
    keep = values.argsort(descending=True, stable=True)[:beam_width].tolist()
    for i, chain in enumerate(beams):
        chain.alive = i in keep
    return [beams[i] for i in sorted(keep)], len(beams) - len(keep)


def beam_search(
    generator: StepGenerator,
    reward: Reward,
    problems: Sequence[Sample],
    beam_width: int = 4,
    expand: int = 4,
    max_steps: int = 16,
    aggregate: StepAggregate | None = "min",
    select: Selection = "mean",
    k: float = 1.0,
) -> list[SearchResult]:
    """Search each problem's chains step by step, keeping the ``beam_width`` best partial chains.

    Args:
        generator: The step generator (``integrations.search.chains``).
        reward: A process reward model (any reward that scores partial chains).
        problems: One sample per problem.
        beam_width: Chains kept per problem after each round.
        expand: Children per unfinished beam per round.
        max_steps: A chain is complete after this many steps.
        aggregate: How step scores become a chain's value (``"min"`` by default; ``"last"`` is
            the other common choice for beam search).
        select: Selection rule (``lcb`` needs a reward with sigma).
        k: Width of the lower confidence bound, in standard deviations.

    Returns:
        Per problem, the best complete chain; ``chains`` are the final beams, ``stats.rejected``
        the children pruned along the way.
    """
    check_reward(reward, "beam_search")
    check_max_steps(max_steps)
    if beam_width < 1 or expand < 1:
        raise ValueError(f"beam_width and expand must be >= 1; got {beam_width} and {expand}.")
    beams = [[Chain(start(p, problem=j, candidate=0))] for j, p in enumerate(problems)]
    history: list[list[Chain]] = [[] for _ in problems]
    pruned = [0] * len(problems)
    stats = SearchStats()
    while any(not c.done for pool in beams for c in pool):
        children = [_children(pool, expand) for pool in beams]
        flat = [c for group in children for c in group]
        advance(generator, flat, max_steps, stats)
        score_chains(reward, flat, stats, aggregate, select, k)
        for j, group in enumerate(children):
            history[j].extend(group)
            beams[j], dropped = _prune([c for c in beams[j] if c.done] + group, beam_width)
            pruned[j] += dropped
    results = []
    for j, pool in enumerate(beams):
        result = choose(pool, stats.reward_calls, "beam_search")
        result.stats = replace(pool_stats(history[j], stats.reward_calls), rejected=pruned[j])
        results.append(result)
    return results
