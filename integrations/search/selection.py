"""The selection rules every search method shares: what value a candidate has, and which survive.

A candidate's value comes from its ``RewardOutput``: the outcome score (``aggregate=None``), or an
aggregate of the per-step scores of a process reward model (``"min"``, ``"last"``, ``"mean"``,
``"product"``; ``mmreward.transforms.aggregate_steps``), optionally lowered by ``k`` standard
deviations (``select="lcb"``). ``top_k_mask`` keeps the best ``keep`` of each row; the generic
search methods and ``integrations.diffusers.best_of_n`` both select with these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from mmreward.protocols import scores_of, sigmas_of
from mmreward.transforms import StepAggregate, aggregate_steps
from mmreward.types import RewardOutput

Selection = Literal["mean", "lcb"]
"""``mean``: the highest value; ``lcb``: the highest lower confidence bound ``value - k * sigma``
(needs a reward that reports ``sigma``)."""


def selection_values(
    scores: torch.Tensor, sigmas: torch.Tensor | None, select: Selection = "mean", k: float = 1.0
) -> torch.Tensor:
    """The values a search maximises: the scores, or ``scores - k * sigmas`` for ``select="lcb"``.

    Raises:
        ValueError: ``lcb`` without sigmas, or an unknown rule.
    """
    if select == "mean":
        return scores.clone()
    if select != "lcb":
        raise ValueError(f"Unknown selection {select!r}; use 'mean' or 'lcb'.")
    if sigmas is None:
        raise ValueError(
            "select='lcb' needs the reward's standard deviation, but the reward reports none (sigma). "
            "Use select='mean' or a reward with an uncertainty head."
        )
    return scores - k * sigmas


def step_values(outputs: Sequence[RewardOutput], aggregate: StepAggregate) -> torch.Tensor:
    """(N,) the aggregate of each output's per-step scores (NaN where the reward gave no score).

    Raises:
        ValueError: An output that has a score but no per-step scores (an outcome reward).
    """
    values = []
    for i, out in enumerate(outputs):
        if out.steps is None:
            if out.score is None or out.score != out.score:  # NaN: the reward's failure, passed over
                values.append(float("nan"))
                continue
            raise ValueError(
                f"aggregate={aggregate!r} needs per-step scores, but output {i} has none (RewardOutput.steps "
                "is None). Use a process reward model, or aggregate=None to select by the outcome score."
            )
        values.append(aggregate_steps(out.steps, aggregate))
    return torch.tensor(values, dtype=torch.float32)


def candidate_values(
    outputs: Sequence[RewardOutput],
    aggregate: StepAggregate | None = None,
    select: Selection = "mean",
    k: float = 1.0,
) -> torch.Tensor:
    """(N,) the value of each candidate: outcome score or step aggregate, then the selection rule."""
    scores = scores_of(outputs) if aggregate is None else step_values(outputs, aggregate)
    return selection_values(scores, sigmas_of(outputs), select, k)


def top_k_mask(values: torch.Tensor, alive: torch.Tensor, keep: int) -> torch.Tensor:
    """A (P, N) mask of the ``keep`` best among the ``alive`` candidates of each row (NaN is worst)."""
    masked = values.nan_to_num(float("-inf")).masked_fill(~alive, float("-inf"))
    top = masked.topk(min(keep, values.shape[1]), dim=1).indices
    return torch.zeros_like(alive).scatter(1, top, True) & alive


def best_index(values: torch.Tensor) -> torch.Tensor:
    """Per row (or for a 1-D tensor), the index of the highest value; NaN never wins over a number."""
    return values.nan_to_num(float("-inf")).argmax(dim=-1)
