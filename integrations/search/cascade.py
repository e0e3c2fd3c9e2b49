"""Cascades: cheap rewards filter the candidates, the expensive one ranks the survivors.

Each ``Stage`` scores the candidates still in the running with its (cheaper) reward, in one call
for all groups, and keeps each group's best ``keep``; the final reward scores only the survivors
and picks the best. Cost falls with each stage's ``keep`` (the final reward sees
``sum(min(keep, len(group)))`` samples instead of every candidate). ``integrations.diffusers``
runs the same stages on a pipeline's images.

Example:
    >>> picks = cascade(groups, [Stage(clip_score, keep=4)], judge)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from integrations.search.best_of_n import Pick, check_groups, pick_from
from integrations.search.selection import Selection, candidate_values, top_k_mask
from mmreward.protocols import Reward, check_reward, score_outputs
from mmreward.transforms import StepAggregate
from mmreward.types import RewardOutput, Sample


@dataclass
class Stage:
    """A cascade stage: score the remaining candidates with ``reward`` and keep the best ``keep``.

    Attributes:
        reward: The stage's (usually cheaper) reward: any ``Reward`` (``integrations.diffusers.best_of_n``
            also takes a ``RewardFn``/``MultiReward`` here).
        keep: Candidates per group that go on to the next stage (>= 1).
        aggregate: How a PRM's step scores become the stage's value (None: the outcome score).
    """

    reward: Any
    keep: int
    aggregate: StepAggregate | None = None

    def __post_init__(self) -> None:
        if self.keep < 1:
            raise ValueError(f"Stage.keep must be >= 1; got {self.keep}.")


def _score_alive(
    reward: Reward,
    flat: Sequence[Sample],
    alive: torch.Tensor,
    aggregate: StepAggregate | None,
    select: Selection = "mean",
    k: float = 1.0,
) -> tuple[torch.Tensor, list[RewardOutput | None]]:
    """(P, N) values of the alive candidates (NaN elsewhere) from one call, and the outputs by slot."""
    rows = alive.flatten().nonzero().squeeze(1).tolist()
    outputs = score_outputs(reward, [flat[r] for r in rows])
    values = torch.full((alive.numel(),), float("nan"))
    values[rows] = candidate_values(outputs, aggregate, select, k)
    by_slot: list[RewardOutput | None] = [None] * alive.numel()
    for r, out in zip(rows, outputs, strict=True):
        by_slot[r] = out
    return values.view(alive.shape), by_slot


def cascade(
    candidates: Sequence[Sequence[Sample]],
    stages: Sequence[Stage],
    reward: Reward,
    select: Selection = "mean",
    k: float = 1.0,
    aggregate: StepAggregate | None = None,
) -> list[Pick]:
    """Filter each group through ``stages`` in order, then pick its best by ``reward``.

    Args:
        candidates: One group of candidate samples per prompt.
        stages: Cheaper rewards, run in order, each keeping its ``keep`` best per group.
        reward: The final (most trusted, most expensive) reward.
        select: Final selection rule (``lcb`` needs sigma from ``reward``).
        k: Width of the lower confidence bound, in standard deviations.
        aggregate: Final value from a PRM's step scores (None: the outcome score).

    Returns:
        Per group, the pick; ``values`` are NaN (and ``outputs`` None) for candidates filtered out.
    """
    check_reward(reward, "cascade")
    for i, stage in enumerate(stages):
        check_reward(stage.reward, f"cascade stage {i}")
    check_groups(candidates)
    width = max(len(g) for g in candidates)
    alive = torch.tensor([[i < len(g) for i in range(width)] for g in candidates])
    flat = [g[i] if i < len(g) else None for g in candidates for i in range(width)]
    for stage in stages:
        values, _ = _score_alive(stage.reward, flat, alive, stage.aggregate)
        alive = top_k_mask(values, alive, stage.keep)
    values, outputs = _score_alive(reward, flat, alive, aggregate, select, k)
    return [
        pick_from(g, group, values[g, : len(group)], outputs[g * width : g * width + len(group)])
        for g, group in enumerate(candidates)
    ]
