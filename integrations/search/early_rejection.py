"""Best-of-N over step-by-step generation, with early rejection of partial chains the PRM doubts.

Full best-of-N generates ``n`` complete chains per problem and keeps the best by a process reward
model's aggregate. Early rejection scores the partial chains after each step (one reward call for
all problems) and stops generating those whose partial value falls below a threshold, or below a
quantile of the problem's alive chains, never leaving fewer than ``keep`` alive. A wrong step
usually keeps its low score, so the chains that would lose anyway stop early; what it saves is
counted in ``SearchStats`` (steps and tokens generated), at the cost of more reward calls on
shorter samples.

Example:
    >>> results = sample_best_of_n(policy_steps, prm, problems, n=8,
    ...                            early_rejection=EarlyRejection(threshold=0.4, min_steps=1))
    >>> results[0].sample.steps, results[0].stats.tokens_generated
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from integrations.search.chains import (
    Chain,
    SearchResult,
    SearchStats,
    StepGenerator,
    advance,
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


@dataclass
class EarlyRejection:
    """When to stop generating a partial chain.

    Attributes:
        threshold: Reject a partial chain whose value is below this (None: no absolute cut).
        quantile: Reject partial chains below this quantile of the values of the problem's alive
            chains (e.g. 0.25 drops the worst quarter each round; None: no relative cut).
        min_steps: Steps a chain must have before it may be rejected.
        keep: The fewest alive chains a problem keeps (the best ones).
        quantile_at: Chain lengths (in steps) at which the quantile cut applies, e.g. ``(1,)`` to
            cut once after the first step as speculative rejection does (Sun et al., 2024, "Fast
            Best-of-N Decoding via Speculative Rejection"); None applies it after every step
            from ``min_steps`` on, which compounds: a 0.25 cut over 8 steps leaves 0.75^8 = 10%.
    """

    threshold: float | None = None
    quantile: float | None = None
    min_steps: int = 1
    keep: int = 1
    quantile_at: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.threshold is None and self.quantile is None:
            raise ValueError(
                "EarlyRejection needs a threshold, a quantile or both, e.g. EarlyRejection(threshold=0.4)."
            )
        if self.quantile is not None and not 0.0 < self.quantile < 1.0:
            raise ValueError(f"EarlyRejection.quantile must be in (0, 1); got {self.quantile}.")
        if self.keep < 1 or self.min_steps < 1:
            raise ValueError(
                f"EarlyRejection keep and min_steps must be >= 1; got {self.keep}, {self.min_steps}."
            )

    def reject(self, chains: Sequence[Chain]) -> None:
        """Mark the unfinished chains of one problem that this rule stops (``alive = False``)."""
        alive = [c for c in chains if c.alive]
        values = torch.tensor([c.value for c in alive]).nan_to_num(float("-inf"))
        threshold = float("-inf") if self.threshold is None else self.threshold
        relative = float("-inf")
        finite = values[torch.isfinite(values)]
        if self.quantile is not None and finite.numel() > 1:
            relative = float(torch.quantile(finite, self.quantile))
        order = values.argsort(descending=True).tolist()
        protected = {id(alive[i]) for i in order[: self.keep]}
        for chain, value in zip(alive, values.tolist(), strict=True):
            length = len(chain.sample.steps)
            if chain.done or length < self.min_steps or id(chain) in protected:
                continue
            cut = threshold
            if self.quantile_at is None or length in self.quantile_at:
                cut = max(cut, relative)
            if value < cut:
                chain.alive = False


def sample_best_of_n(
    generator: StepGenerator,
    reward: Reward,
    problems: Sequence[Sample],
    n: int = 8,
    max_steps: int = 16,
    aggregate: StepAggregate | None = "min",
    select: Selection = "mean",
    k: float = 1.0,
    early_rejection: EarlyRejection | None = None,
) -> list[SearchResult]:
    """Generate ``n`` chains per problem step by step and keep each problem's best.

    Args:
        generator: The step generator (``integrations.search.chains``).
        reward: Any reward; a process reward model for step aggregates and early rejection.
        problems: One sample per problem (prompt and media; ``steps`` empty or a given prefix).
        n: Chains per problem.
        max_steps: A chain is complete after this many steps even without a final step.
        aggregate: How step scores become a chain's value (None: the outcome score).
        select: Selection rule (``lcb`` needs a reward with sigma).
        k: Width of the lower confidence bound, in standard deviations.
        early_rejection: Score partial chains after each step and stop the doubtful ones; None
            generates every chain to the end and scores once.
    """
    check_reward(reward, "sample_best_of_n")
    check_max_steps(max_steps)
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}.")
    pools = [[Chain(start(p, problem=j, candidate=i)) for i in range(n)] for j, p in enumerate(problems)]
    flat = [c for pool in pools for c in pool]
    stats = SearchStats()
    if early_rejection is None:
        rollout(generator, flat, max_steps, stats)
        score_chains(reward, flat, stats, aggregate, select, k)
    else:
        while advanced := advance(generator, flat, max_steps, stats):
            score_chains(reward, advanced, stats, aggregate, select, k)
            for pool in pools:
                early_rejection.reject(pool)
    return [choose(pool, stats.reward_calls, "sample_best_of_n") for pool in pools]
