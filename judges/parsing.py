"""Read a judge's verdict from its output: the probabilities at the verdict token first, text second.

A judge writes a critique and ends with a line such as ``Score: 4`` (or ``[[A]]``, or
``Answer: yes``). Rather than trusting the one digit it sampled, ``read_choice`` finds the token
that carries the verdict and reads the probability the model gave every allowed label there: the
expected score is the probability-weighted mean of the labels and the confidence is the
probability of the most likely one (the Confidence-as-a-Reward idea: the judge's own token
probability is a usable reward signal). When the output has no token probabilities, or the
verdict spans several tokens (``10`` as ``1`` ``0``), the label is parsed from the text instead.

Nothing here raises on a bad output: a missing, malformed or truncated verdict gives a result
with ``score=None`` and a ``reason``, so one bad generation never sinks a batch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

from judges.backends import Generation

Method = Literal["logprobs", "text", "none"]


@dataclass
class Judgement:
    """A judge's verdict on one input.

    Attributes:
        score: The expected score under the label distribution (``method="logprobs"``), the parsed
            label (``"text"``), or None when no verdict could be read.
        confidence: Probability of the most likely label, renormalised over the labels.
        distribution: ``{label: probability}`` over the allowed labels, renormalised.
        label_mass: The probability the model put on allowed labels at the verdict position
            before renormalising (low values flag a confused judge).
        critique: The judge's reasoning (the output before the verdict).
        text: The full output.
        method: How the score was read.
        reason: Why ``score`` is None, or why the text fallback was used.
        aspects: Per-aspect judgements (multi-aspect judges).
    """

    score: float | None
    confidence: float | None = None
    distribution: dict[str, float] | None = None
    label_mass: float | None = None
    critique: str = ""
    text: str = ""
    method: Method = "none"
    reason: str | None = None
    aspects: dict[str, Judgement] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether a score was read."""
        return self.score is not None


def score_labels(min_score: int, max_score: int) -> dict[str, float]:
    """``{"1": 1.0, ..., "5": 5.0}`` for an integer scale."""
    if max_score <= min_score:
        raise ValueError(f"A score scale needs min_score < max_score; got {min_score} and {max_score}.")
    return {str(v): float(v) for v in range(min_score, max_score + 1)}


def token_offsets(generation: Generation) -> list[int] | None:
    """Start offsets of each token in ``generation.text``, or None when the tokens do not spell it."""
    offsets, position = [], 0
    for token in generation.tokens:
        offsets.append(position)
        position += len(token)
    return offsets if "".join(generation.tokens) == generation.text else None


def label_distribution(
    alternatives: dict[str, float], labels: dict[str, float]
) -> tuple[dict[str, float], float]:
    """Probabilities of ``labels`` among one position's top log-probabilities.

    Token strings are compared stripped and case-folded, so ``" 4"`` and ``"4"`` both count for
    ``"4"`` (their probabilities add up).

    Returns:
        The renormalised ``{label: p}`` and the raw probability mass on labels.
    """
    keys = {k.lower(): k for k in labels}
    probs: dict[str, float] = {}
    for token, logprob in alternatives.items():
        key = keys.get(token.strip().lower())
        if key is not None and math.isfinite(logprob):
            probs[key] = probs.get(key, 0.0) + math.exp(logprob)
    mass = sum(probs.values())
    return ({k: p / mass for k, p in probs.items()} if mass > 0 else {}), mass


@dataclass
class Choice:
    """What ``read_choice`` found: the value, how it was read, and where the verdict starts."""

    value: float | None
    method: Method
    start: int | None = None
    confidence: float | None = None
    distribution: dict[str, float] | None = None
    label_mass: float | None = None
    reason: str | None = None


def read_choice(generation: Generation, marker: str, labels: dict[str, float]) -> Choice:
    """Read the label that follows the last match of ``marker`` in a judge's output.

    Args:
        generation: The judge's output, with token log-probabilities when the backend gave them.
        marker: A regular expression (case-insensitive) for what precedes the verdict, e.g. ``score\\s*:``.
        labels: The allowed labels and their values, e.g. ``{"yes": 1.0, "no": 0.0}``.
    """
    if generation.error:
        return Choice(None, "none", reason=f"the backend failed: {generation.error}")
    alternation = "|".join(re.escape(k) for k in sorted(labels, key=len, reverse=True))
    pattern = re.compile(rf"(?:{marker})\s*\**\s*({alternation})(?![A-Za-z0-9])", re.IGNORECASE)
    matches = list(pattern.finditer(generation.text))
    if not matches:
        truncated = (
            " (the output was cut off at the token limit)" if generation.finish_reason == "length" else ""
        )
        return Choice(
            None,
            "none",
            reason=f"no verdict of the form {marker!r} + one of {list(labels)} in the output{truncated}",
        )
    match = matches[-1]
    label = next(k for k in labels if k.lower() == match.group(1).lower())
    start = match.start(1)
    offsets = token_offsets(generation)
    index = None if offsets is None else max(i for i, off in enumerate(offsets) if off <= start)
    if (
        index is None
        or not generation.top_logprobs
        or generation.tokens[index].strip().lower() != label.lower()
    ):
        why = (
            "no token log-probabilities"
            if not generation.top_logprobs
            else "the verdict is not a single token"
        )
        return Choice(labels[label], "text", match.start(), reason=f"parsed from text ({why})")
    distribution, mass = label_distribution(generation.top_logprobs[index], labels)
    if not distribution:  # the top-k list missed every label: only the chosen one is known
        distribution, mass = {label: 1.0}, math.exp(generation.logprobs[index])
    value = sum(labels[k] * p for k, p in distribution.items())
    return Choice(value, "logprobs", match.start(), max(distribution.values()), distribution, mass)


def judgement_from_choice(
    generation: Generation, choice: Choice, critique_prefix: str = "critique:"
) -> Judgement:
    """A ``Judgement`` from a read choice; the critique is the text before the verdict's marker."""
    before = generation.text if choice.start is None else generation.text[: choice.start]
    critique = before.strip()
    if critique.lower().startswith(critique_prefix):
        critique = critique[len(critique_prefix) :].strip()
    return Judgement(
        score=choice.value,
        confidence=choice.confidence,
        distribution=choice.distribution,
        label_mass=choice.label_mass,
        critique=critique,
        text=generation.text,
        method=choice.method,
        reason=choice.reason,
    )


def parse_score(
    generation: Generation, min_score: int = 1, max_score: int = 5, marker: str = r"score\s*:"
) -> Judgement:
    """A critique-then-score output (``"... Score: 4"``) as a ``Judgement``; never raises on bad text."""
    return judgement_from_choice(
        generation, read_choice(generation, marker, score_labels(min_score, max_score))
    )


def parse_verdict(
    generation: Generation, labels: tuple[str, str] = ("A", "B"), marker: str = r"\[\["
) -> Judgement:
    """A pairwise output ending in ``[[A]]`` or ``[[B]]``: ``score`` is P(the first label wins)."""
    return judgement_from_choice(
        generation, read_choice(generation, marker, {labels[0]: 1.0, labels[1]: 0.0})
    )


def parse_yes_no(generation: Generation, marker: str = r"answer\s*:") -> Judgement:
    """A principle check ending in ``Answer: yes`` or ``Answer: no``: ``score`` is P(yes)."""
    return judgement_from_choice(generation, read_choice(generation, marker, {"yes": 1.0, "no": 0.0}))
