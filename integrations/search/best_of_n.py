"""Best-of-N with any reward: every candidate of every group scored in one call, the best one kept.

The candidates can be anything a reward scores (responses, reasoning chains, images, videos,
edits, actions); the reward is any ``mmreward.protocols.Reward`` (a ``Scorer``, a judge, a process
reward model, a user's class). Select by the outcome score or by an aggregate of a PRM's step
scores (``aggregate="min"``), and by a lower confidence bound (``select="lcb"``) to prefer
candidates the reward is sure about. ``integrations.diffusers.best_of_n`` draws candidates from a
diffusion pipeline and selects with the same rules (``integrations.search.selection``).

Example:
    >>> picks = best_of_n(mr.load("runs/t2i/model"), [[Sample(prompt=p, image=im) for im in images]])
    >>> picks[0].index, picks[0].sample.image
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from integrations.search.selection import Selection, best_index, candidate_values
from mmreward.protocols import Reward, check_reward, score_outputs
from mmreward.transforms import StepAggregate
from mmreward.types import RewardOutput, Sample


@dataclass
class Pick:
    """The chosen candidate of one group.

    Attributes:
        index: Its position in the group.
        sample: The candidate itself.
        values: The value the choice maximised, per candidate (NaN where the reward gave no score,
            or where a cascade stage filtered the candidate out).
        outputs: The reward's output for every candidate of the group (None where not scored).
    """

    index: int
    sample: Sample
    values: list[float]
    outputs: list[RewardOutput | None]


def check_groups(candidates: Sequence[Sequence[Sample]]) -> None:
    """Raise a ``ValueError`` naming the first empty group."""
    for g, group in enumerate(candidates):
        if not group:
            raise ValueError(f"Group {g} has no candidates; pass at least one sample per group.")


def pick_from(
    g: int, group: Sequence[Sample], values: torch.Tensor, outputs: Sequence[RewardOutput | None]
) -> Pick:
    """The best candidate of group ``g`` by ``values``; a clear error when none has a value."""
    if torch.isnan(values).all():
        scored = [o for o in outputs if o is not None]
        reason = scored[0].provenance.get("failure", "no score") if scored else "not scored"
        raise ValueError(
            f"Group {g}: the reward scored none of its {len(group)} candidates (first: {reason}); "
            "nothing to choose. Check the inputs or the reward."
        )
    best = int(best_index(values))
    return Pick(best, group[best], values.tolist(), list(outputs))


def best_of_n(
    reward: Reward,
    candidates: Sequence[Sequence[Sample]],
    select: Selection = "mean",
    k: float = 1.0,
    aggregate: StepAggregate | None = None,
) -> list[Pick]:
    """Score every candidate of every group in one ``score_samples`` call and keep each group's best.

    Args:
        reward: Any reward.
        candidates: One group of candidate samples per prompt (or scene, or source image).
        select: Selection rule (see ``Selection``).
        k: Width of the lower confidence bound, in standard deviations.
        aggregate: None selects by the outcome score; ``"min"``, ``"last"``, ``"mean"`` or
            ``"product"`` by that aggregate of a process reward model's step scores.

    Raises:
        ValueError: A group is empty, or the reward scored none of a group's candidates (the
            message gives the reward's reason).
    """
    check_reward(reward, "best_of_n")
    check_groups(candidates)
    flat = [sample for group in candidates for sample in group]
    outputs = score_outputs(reward, flat)
    values = candidate_values(outputs, aggregate, select, k)
    picks, start = [], 0
    for g, group in enumerate(candidates):
        end = start + len(group)
        picks.append(pick_from(g, group, values[start:end], outputs[start:end]))
        start = end
    return picks
