"""How good is a critique judge on the synthetic critique set: ranking, critiques and parsing.

Example:
    >>> result = evaluate_critique_judge(CritiqueJudge(backend), read_examples("data/test.jsonl"))
    >>> result.spearman, result.hit_rate, result.parse_failure_rate
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from judges.critique import CritiqueJudge
from judges.critique_data import CritiqueExample, critique_hit, names_problem
from judges.parsing import Judgement
from mmreward.metrics import correlations


@dataclass
class CritiqueEvaluation:
    """A critique judge's figures on held-out examples.

    Attributes:
        spearman: Spearman correlation of the judge's expected scores with the ground-truth ratings
            (outputs with no score count as the scale's midpoint); NaN when the scores are constant.
        hit_rate: Share of examples whose critique names every attribute the reference names.
        problem_rate: Share of examples whose critique opens with the right kind of problem
            (``"Wrong color"``, ``"No problem"``, ...).
        parse_failure_rate: Share of outputs with no readable score.
        hit_rate_by_corruption: ``hit_rate`` per corruption kind (``"none"`` for faithful images).
        n: Examples judged.
        judgements: The judgements, in example order.
    """

    spearman: float
    hit_rate: float
    problem_rate: float
    parse_failure_rate: float
    n: int
    hit_rate_by_corruption: dict[str, float] = field(default_factory=dict)
    judgements: list[Judgement] = field(repr=False, default_factory=list)

    def metrics(self) -> dict[str, Any]:
        """The figures as a dict (for metrics.json)."""
        return {
            "spearman": self.spearman,
            "critique_hit_rate": self.hit_rate,
            "problem_named_rate": self.problem_rate,
            "parse_failure_rate": self.parse_failure_rate,
            "n": self.n,
            "critique_hit_rate_by_corruption": self.hit_rate_by_corruption,
        }


def rates_by_kind(flags: list[bool], kinds: list[str]) -> dict[str, float]:
    """The share of true ``flags`` among the examples of each kind, kinds sorted."""
    groups: dict[str, list[bool]] = {}
    for flag, kind in zip(flags, kinds):
        groups.setdefault(kind, []).append(flag)
    return {k: float(np.mean(v)) for k, v in sorted(groups.items())}


def evaluate_critique_judge(
    judge: CritiqueJudge, examples: list[CritiqueExample], judgements: list[Judgement] | None = None
) -> CritiqueEvaluation:
    """Judge ``examples`` (greedy) and score the result; pass ``judgements`` to score ones already made."""
    if not examples:
        raise ValueError("evaluate_critique_judge got no examples; pass a non-empty test split.")
    if judgements is None:
        judgements = judge.judge([e.sample() for e in examples])
    middle = (judge.min_score + judge.max_score) / 2
    predicted = np.array([j.score if j.score is not None else middle for j in judgements])
    truth = np.array([e.score for e in examples])
    spearman = correlations(predicted, truth)["spearman"]
    hits = [critique_hit(j.critique, e.critique) for j, e in zip(judgements, examples)]
    return CritiqueEvaluation(
        spearman=spearman,
        hit_rate=float(np.mean(hits)),
        problem_rate=float(
            np.mean([names_problem(j.critique, e.corruption) for j, e in zip(judgements, examples)])
        ),
        parse_failure_rate=float(np.mean([j.score is None for j in judgements])),
        n=len(examples),
        hit_rate_by_corruption=rates_by_kind(hits, [e.corruption for e in examples]),
        judgements=judgements,
    )
