"""Best-of-N with any reward: every candidate of every prompt scored in one call, the best one kept.

The candidates can be anything a reward scores (responses, images, videos, edits, actions); the
reward is any ``mmreward.protocols.Reward`` (a ``Scorer``, a judge, a user's class). Selecting by a
lower confidence bound (``select="lcb"``: ``score - k * sigma``) prefers candidates the reward is
sure about, when it reports an uncertainty. ``integrations.diffusers.best_of_n`` draws the
candidates from a diffusion pipeline and selects with the same rule.

Example:
    >>> picks = best_of_n(mr.load("runs/t2i/model"), [[Sample(prompt=p, image=im) for im in images]])
    >>> picks[0].index, picks[0].sample.image
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from mmreward.protocols import Reward, check_reward, score_outputs, scores_of, sigmas_of
from mmreward.types import RewardOutput, Sample

Selection = Literal["mean", "lcb"]
"""``mean``: the highest score; ``lcb``: the highest lower confidence bound ``score - k * sigma``
(needs a reward that reports ``sigma``)."""


@dataclass
class Pick:
    """The chosen candidate of one group.

    Attributes:
        index: Its position in the group.
        sample: The candidate itself.
        values: The value the choice maximised, per candidate (NaN where the reward gave no score).
        outputs: The reward's output for every candidate of the group.
    """

    index: int
    sample: Sample
    values: list[float]
    outputs: list[RewardOutput]


def selection_values(
    scores: torch.Tensor, sigmas: torch.Tensor | None, select: Selection = "mean", k: float = 1.0
) -> torch.Tensor:
    """The values best-of-N maximises: the scores, or ``scores - k * sigmas`` for ``select="lcb"``.

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


def best_of_n(
    reward: Reward, candidates: Sequence[Sequence[Sample]], select: Selection = "mean", k: float = 1.0
) -> list[Pick]:
    """Score every candidate of every group in one ``score_samples`` call and keep each group's best.

    Args:
        reward: Any reward.
        candidates: One group of candidate samples per prompt (or scene, or source image).
        select: Selection rule (see ``Selection``).
        k: Width of the lower confidence bound, in standard deviations.

    Raises:
        ValueError: A group is empty, or the reward scored none of a group's candidates (the
            message gives the reward's reason).
    """
    check_reward(reward, "best_of_n")
    for g, group in enumerate(candidates):
        if not group:
            raise ValueError(f"Group {g} has no candidates; pass at least one sample per group.")
    flat = [sample for group in candidates for sample in group]
    outputs = score_outputs(reward, flat)
    values = selection_values(scores_of(outputs), sigmas_of(outputs), select, k)
    picks, start = [], 0
    for g, group in enumerate(candidates):
        own, own_outputs = values[start : start + len(group)], outputs[start : start + len(group)]
        start += len(group)
        if torch.isnan(own).all():
            reason = own_outputs[0].provenance.get("failure", "no score")
            raise ValueError(
                f"Group {g}: the reward scored none of its {len(group)} candidates (first: {reason}); "
                "nothing to choose. Check the inputs or the reward."
            )
        best = int(own.nan_to_num(float("-inf")).argmax())
        picks.append(Pick(best, group[best], own.tolist(), own_outputs))
    return picks
