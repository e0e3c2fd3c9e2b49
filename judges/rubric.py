"""Principle and rubric judges: check a response against criteria the user supplies at inference.

Each principle is asked as its own yes/no question, and P(yes) is read from the answer token's
probabilities. The per-principle probabilities are aggregated with the user's weights. Binary
checks against principles chosen at inference time are the shape of RLBFF (Wang et al., 2025,
binary flexible feedback), OpenRubrics (Liu et al., 2025, rubrics as reward criteria) and
SALMON (Sun et al., 2024, a reward model that follows principles it is given).

Example:
    >>> judge = RubricJudge(backend, principles={"The answer names the colour": 2.0, "It is one sentence": 1.0})
    >>> [r] = judge.evaluate([Sample(prompt="what colour?", response="Red.")])
    >>> r.score, r.principles["It is one sentence"].score
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from judges.backends import Backend, Generation, Messages
from judges.base import GenerativeJudge, fill, sample_images, user_request
from judges.parsing import Judgement, parse_yes_no
from mmreward.types import RewardOutput, Sample

Rubric = dict[str, float]
"""``{principle: weight}``."""


@dataclass
class RubricJudgement:
    """One response checked against a rubric.

    Attributes:
        score: Weighted mean of P(yes) over the principles that parsed; None when none did.
        principles: Each principle's judgement (its ``score`` is P(yes)).
        passed: ``{principle: P(yes) > 0.5}`` for the principles that parsed.
        failures: Principles with no readable answer.
    """

    score: float | None
    principles: dict[str, Judgement]
    passed: dict[str, bool]
    failures: list[str]


def as_rubric(principles: Rubric | list[str]) -> Rubric:
    """A list of principles weighs each 1; weights must be positive."""
    rubric = dict.fromkeys(principles, 1.0) if isinstance(principles, list) else dict(principles)
    bad = {p: w for p, w in rubric.items() if not w > 0}
    if not rubric or bad:
        raise ValueError(
            f"A rubric needs principles with positive weights; got {rubric or 'none'}. Pass {{principle: weight > 0}}."
        )
    return rubric


def aggregate(judgements: dict[str, Judgement], rubric: Rubric) -> RubricJudgement:
    """Weight each principle's P(yes) by the rubric."""
    scored = {p: j.score for p, j in judgements.items() if j.score is not None}
    total = sum(rubric[p] for p in scored)
    score = sum(rubric[p] * s for p, s in scored.items()) / total if total else None
    return RubricJudgement(
        score, judgements, {p: s > 0.5 for p, s in scored.items()}, [p for p in judgements if p not in scored]
    )


class RubricJudge(GenerativeJudge):
    """Check responses against weighted principles, one yes/no question per principle.

    Args:
        backend: Where the text comes from.
        principles: The default rubric (``{principle: weight}`` or a list, weight 1 each);
            ``evaluate`` may pass another per call.
        template: Template with ``{principle}``, ``{prompt}``, ``{response}``; None uses
            ``judges/templates/principle.txt``.
        system: An optional system message.
        max_new_tokens: Most tokens per answer.
        top_logprobs: Alternatives read at each position.
    """

    default_template = "principle"

    def __init__(
        self,
        backend: Backend,
        principles: Rubric | list[str] | None = None,
        template: str | None = None,
        system: str | None = None,
        max_new_tokens: int = 64,
        top_logprobs: int = 10,
    ) -> None:
        super().__init__(backend, template, system, max_new_tokens, top_logprobs)
        self.principles = as_rubric(principles) if principles is not None else None

    def requests(self, items: list[tuple[Sample, str]]) -> list[Messages]:
        """One request per (sample, principle)."""
        return [
            user_request(
                fill(
                    self.template,
                    principle=principle,
                    prompt=sample.prompt,
                    response=sample.response or "(the image above)",
                ),
                sample_images(sample),
                self.system,
            )
            for sample, principle in items
        ]

    def parse(self, item: tuple[Sample, str], generation: Generation) -> Judgement:
        """P(yes) for one (sample, principle)."""
        return parse_yes_no(generation)

    def evaluate(
        self, samples: list[Sample], principles: Rubric | list[str] | None = None, temperature: float = 0.0
    ) -> list[RubricJudgement]:
        """Check every sample against every principle (one backend batch) and aggregate.

        Args:
            samples: The responses.
            principles: The rubric for this call; None uses the judge's default.
            temperature: 0 for greedy answers.
        """
        if principles is None and self.principles is None:
            raise ValueError(
                "RubricJudge.evaluate got no principles; pass principles=... here or to the constructor."
            )
        rubric = as_rubric(principles) if principles is not None else self.principles
        items = [(s, p) for s in samples for p in rubric]
        judgements = self.judge(items, temperature)
        n = len(rubric)
        return [
            aggregate(dict(zip(rubric, judgements[i * n : (i + 1) * n])), rubric) for i in range(len(samples))
        ]

    def score_samples(self, samples: Sequence[Sample]) -> list[RewardOutput]:
        """The reward contract: the weighted P(yes) as the score, each principle's P(yes) as an aspect."""
        provenance = self.provenance()
        outputs = []
        for result in self.evaluate(list(samples)):
            prov = dict(provenance)
            if result.score is None:
                prov["failure"] = f"no principle gave a readable answer ({len(result.failures)} tried)"
            aspects = {p: j.score for p, j in result.principles.items() if j.score is not None}
            outputs.append(
                RewardOutput(
                    score=float("nan") if result.score is None else result.score,
                    aspects=aspects or None,
                    provenance=prov,
                )
            )
        return outputs
