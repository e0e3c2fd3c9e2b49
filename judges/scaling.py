"""Test-time scaling: sample k verdicts per input and aggregate them.

Spending more compute at inference for a better verdict is J1's test-time scaling (Whitehouse et
al., 2025, "J1: Incentivizing Thinking in LLM-as-a-Judge via Reinforcement Learning"): sample
several judgements at a temperature above zero and take the majority vote or the mean score.
``"confidence"`` weights each sample by its own confidence (the Confidence-as-a-Reward idea).
Each result reports the agreement of its samples: the share that voted for the majority label.

When the backend samples several outputs per request (``SamplingParams.n``: ``TransformersBackend``,
``OpenAIBackend``, or any backend with ``supports_n = True``), the k samples of an input come from one
request with ``n=k``; other backends get k copies of each request. The samples and their aggregate are
the same either way.

Example:
    >>> scaled = ScaledJudge(CritiqueJudge(backend), k=8, temperature=0.7, aggregate="mean")
    >>> [r] = scaled.judge([sample])
    >>> r.score, r.agreement
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from judges.backends import TransformersBackend
from judges.base import GenerativeJudge, judge_provenance
from judges.openai_backend import OpenAIBackend
from judges.parsing import Judgement
from mmreward.configurable import Configurable
from mmreward.types import RewardOutput, Sample

Aggregate = Literal["majority", "mean", "confidence"]


@dataclass
class ScaledJudgement:
    """The aggregate of k sampled judgements of one input.

    Attributes:
        score: The aggregate score; None when no sample parsed.
        agreement: Share of parsed samples whose rounded score equals the majority label.
        samples: The k judgements.
        failures: Samples with no score.
    """

    score: float | None
    agreement: float | None
    samples: list[Judgement]
    failures: int


def supports_n(backend: Any) -> bool:
    """Whether ``backend`` returns ``SamplingParams.n`` outputs per request in ``Generation.samples``.

    A backend says so with a ``supports_n`` attribute; our two backends (and their subclasses) do.
    """
    flag = getattr(backend, "supports_n", None)
    return bool(flag) if flag is not None else isinstance(backend, (TransformersBackend, OpenAIBackend))


def aggregate_scores(judgements: list[Judgement], how: Aggregate) -> ScaledJudgement:
    """Aggregate sampled judgements: majority vote of rounded scores, mean, or confidence-weighted mean."""
    scored = [j for j in judgements if j.score is not None]
    failures = len(judgements) - len(scored)
    if not scored:
        return ScaledJudgement(None, None, judgements, failures)
    votes = Counter(round(j.score) for j in scored)
    top = max(votes.values())
    majority = sorted(label for label, n in votes.items() if n == top)  # ties: the mean of the tied labels
    agreement = top / len(scored)
    if how == "majority":
        score = sum(majority) / len(majority)
    elif how == "mean":
        score = sum(j.score for j in scored) / len(scored)
    elif how == "confidence":
        weights = [j.confidence if j.confidence is not None else 1.0 for j in scored]
        score = sum(w * j.score for w, j in zip(weights, scored)) / sum(weights)
    else:
        raise ValueError(f"Unknown aggregate {how!r}; use 'majority', 'mean' or 'confidence'.")
    return ScaledJudgement(score, agreement, judgements, failures)


class ScaledJudge(Configurable):
    """Ask a judge k times per input at ``temperature`` and aggregate (see the module docstring).

    All N requests go to the backend in one batch, each asking for k samples (``SamplingParams.n``)
    where the backend supports it, else k copies of each request (see the module docstring). Like every judge it is a reward
    (``score_samples``), for judges whose inputs are samples (critique, video); the spread of the
    k scores is the output's ``sigma``.

    Args:
        judge: Any ``GenerativeJudge`` (critique, video, ...).
        k: Samples per input.
        temperature: Sampling temperature (must be above 0, or the k samples are identical).
        aggregate: ``"majority"``, ``"mean"`` or ``"confidence"``.
        seed: Seed of the sampling.
    """

    def __init__(
        self,
        judge: GenerativeJudge,
        k: int = 8,
        temperature: float = 0.7,
        aggregate: Aggregate = "mean",
        seed: int | None = 0,
    ) -> None:
        if k < 1 or temperature <= 0:
            raise ValueError(
                f"ScaledJudge needs k >= 1 and temperature > 0; got k={k}, temperature={temperature}."
            )
        self.judge_, self.k, self.temperature, self.aggregate, self.seed = (
            judge,
            k,
            temperature,
            aggregate,
            seed,
        )

    def judge(self, items: list[Any]) -> list[ScaledJudgement]:
        """k samples per item, aggregated; results in item order."""
        inner = self.judge_
        if self.k > 1 and supports_n(inner.backend) and type(inner).judge is GenerativeJudge.judge:
            params = dataclasses.replace(inner.params(self.temperature, self.seed), n=self.k)
            generations = inner.backend.generate(inner.requests(items), params)
            results = []
            for item, gen in zip(items, generations):
                samples = gen.samples or [gen] * (
                    self.k if gen.error else 1
                )  # a failed request fails k times
                if len(samples) != self.k:
                    raise ValueError(
                        f"{type(inner.backend).__name__} returned {len(samples)} samples for a request "
                        f"with n={self.k}; set supports_n = False on the backend to send k copies instead."
                    )
                judgements = [inner.safe_parse(item, s) for s in samples]
                results.append(aggregate_scores(judgements, self.aggregate))
            return results
        repeated = [item for item in items for _ in range(self.k)]
        judgements = self.judge_.judge(repeated, self.temperature, self.seed)
        return [
            aggregate_scores(judgements[i * self.k : (i + 1) * self.k], self.aggregate)
            for i in range(len(items))
        ]

    def score_samples(self, samples: Sequence[Sample]) -> list[RewardOutput]:
        """The reward contract: the aggregate as the score, the k scores' standard deviation as sigma."""
        inner = self.judge_
        provenance = {
            **judge_provenance(inner, inner.backend, inner.template),
            "judge": f"ScaledJudge({type(inner).__name__})",
            "k": self.k,
            "aggregate": self.aggregate,
        }
        outputs = []
        for result in self.judge(list(samples)):
            scores = [j.score for j in result.samples if j.score is not None]
            prov = {**provenance, "agreement": result.agreement, "failures": result.failures}
            if result.score is None:
                prov["failure"] = f"none of the {self.k} samples gave a readable score"
            critique = next((j.critique for j in result.samples if j.score is not None and j.critique), None)
            outputs.append(
                RewardOutput(
                    score=float("nan") if result.score is None else float(result.score),
                    sigma=statistics.pstdev(scores) if len(scores) > 1 else None,
                    text=critique,
                    provenance=prov,
                )
            )
        return outputs
