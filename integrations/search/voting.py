"""Voting over final answers: plain majority, and majority weighted by a reward (PRM-weighted voting).

Each candidate's answer is extracted by a user callable (``answer(sample) -> hashable``, e.g. the
number after "The answer is"); candidates whose answer is None abstain. Weighted voting sums each
answer's candidate values (a PRM's ``min`` step score by default, as in Wang et al., 2024,
"Math-Shepherd", and Lightman et al., 2023), so many weak chains that agree on a wrong answer can
lose to a few chains the PRM trusts.

Example:
    >>> votes = weighted_vote(prm, chains, answer=lambda s: s.steps[-1].split()[-1])
    >>> votes[0].answer, votes[0].tally
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch

from integrations.search.best_of_n import check_groups
from integrations.search.selection import candidate_values
from mmreward.protocols import Reward, check_reward, score_outputs
from mmreward.transforms import StepAggregate
from mmreward.types import Sample

AnswerFn = Callable[[Sample], Hashable | None]
"""Extracts a candidate's final answer; None when it has none (the candidate abstains)."""


@dataclass
class Vote:
    """The winning answer of one group.

    Attributes:
        answer: The answer with the largest tally (None when every candidate abstained).
        index: A candidate that gave it: the one with the highest weight.
        tally: ``{answer: summed weight}`` over the group.
        weights: Each candidate's weight (1 in a plain majority vote; NaN counts as 0).
    """

    answer: Hashable | None
    index: int | None
    tally: dict[Hashable, float]
    weights: list[float]


def _vote(group: Sequence[Sample], weights: torch.Tensor, answer: AnswerFn) -> Vote:
    answers = [answer(sample) for sample in group]
    weights = weights.nan_to_num(0.0)
    tally: dict[Hashable, float] = {}
    for a, w in zip(answers, weights.tolist(), strict=True):
        if a is not None:
            tally[a] = tally.get(a, 0.0) + w
    if not tally:
        return Vote(None, None, tally, weights.tolist())
    winner = max(tally, key=tally.__getitem__)  # ties: the answer seen first
    members = [i for i, a in enumerate(answers) if a == winner]
    index = max(members, key=lambda i: float(weights[i]))
    return Vote(winner, index, tally, weights.tolist())


def majority_vote(candidates: Sequence[Sequence[Sample]], answer: AnswerFn) -> list[Vote]:
    """Per group, the most frequent answer (self-consistency, Wang et al., 2023); no reward needed."""
    check_groups(candidates)
    return [_vote(group, torch.ones(len(group)), answer) for group in candidates]


def weighted_vote(
    reward: Reward,
    candidates: Sequence[Sequence[Sample]],
    answer: AnswerFn,
    aggregate: StepAggregate | None = "min",
    weight: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[Vote]:
    """Per group, the answer with the largest summed reward; every candidate scored in one call.

    Args:
        reward: Any reward; a process reward model for the default ``aggregate="min"``.
        candidates: One group of candidate samples per prompt.
        answer: Extracts each candidate's final answer (see ``AnswerFn``).
        aggregate: How a PRM's step scores become a candidate's weight; None uses the outcome score.
        weight: Maps values to non-negative weights (e.g. ``torch.sigmoid`` for logit-scale
            rewards); by default values are used as they are and must not be negative.

    Raises:
        ValueError: A negative weight (votes would subtract); pass ``weight=torch.sigmoid`` or similar.
    """
    check_reward(reward, "weighted_vote")
    check_groups(candidates)
    outputs = score_outputs(reward, [s for group in candidates for s in group])
    values = candidate_values(outputs, aggregate)
    values = values if weight is None else weight(values)
    if (values.nan_to_num(0.0) < 0).any():
        raise ValueError(
            f"weighted_vote got negative weights (lowest {float(values.nan_to_num(0.0).min()):.3g}); a negative "
            "weight would count against its answer. Pass weight=torch.sigmoid (or exp) for unbounded rewards."
        )
    votes, start = [], 0
    for group in candidates:
        votes.append(_vote(group, values[start : start + len(group)], answer))
        start += len(group)
    return votes
