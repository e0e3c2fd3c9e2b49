"""How good is a critique judge on the synthetic critique set: ranking, critiques and parsing.

Example:
    >>> result = evaluate_critique_judge(CritiqueJudge(backend), read_examples("data/test.jsonl"))
    >>> result.spearman, result.hit_rate, result.parse_failure_rate
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from judges.critique import CritiqueJudge
from judges.critique_data import CritiqueExample, critique_hit
from judges.parsing import Judgement
from mmreward.metrics import correlations


@dataclass
class CritiqueEvaluation:
    """A critique judge's figures on held-out examples.

    Attributes:
        spearman: Spearman correlation of the judge's expected scores with the ground-truth ratings
            (outputs with no score count as the scale's midpoint); NaN when the scores are constant.
        hit_rate: Share of examples whose critique names every attribute the reference names.
        parse_failure_rate: Share of outputs with no readable score.
        n: Examples judged.
        judgements: The judgements, in example order.
    """

    spearman: float
    hit_rate: float
    parse_failure_rate: float
    n: int
    judgements: list[Judgement] = field(repr=False, default_factory=list)

    def metrics(self) -> dict[str, float]:
        """The figures as a flat dict (for metrics.json)."""
        return {
            "spearman": self.spearman,
            "critique_hit_rate": self.hit_rate,
            "parse_failure_rate": self.parse_failure_rate,
            "n": self.n,
        }


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
        parse_failure_rate=float(np.mean([j.score is None for j in judgements])),
        n=len(examples),
        judgements=judgements,
    )
