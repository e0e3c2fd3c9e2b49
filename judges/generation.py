"""What a backend takes and gives: chat requests, sampling parameters and generations.

These types live apart from the backends so that ``judges.backends`` (local generation) and
``judges.openai_backend`` (HTTP) can both use them without importing each other;
``judges.backends`` re-exports every name here, and that is where users import them from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Messages = list[dict[str, Any]]
"""One chat request: ``[{"role": "user", "content": ...}, ...]``."""


@dataclass
class SamplingParams:
    """How to generate.

    Attributes:
        max_new_tokens: Most tokens to generate.
        temperature: 0 for greedy decoding; above 0 samples.
        top_p: Nucleus sampling threshold (sampling only).
        top_logprobs: Alternatives to report at each position (OpenAI servers allow up to 20).
        seed: Seed for sampling, when reproducibility matters.
        n: Outputs to sample per request (OpenAI's ``n``); the extra ones come back in
            ``Generation.samples``. A judge that votes over k verdicts can ask for them in one request.
        guided_choice: When set, the output must be exactly one of these strings (a verdict's labels).
            Only a server with constrained decoding enforces it; ``OpenAIBackend(guided=...)`` names
            the field the server reads. Other backends warn and generate freely.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_logprobs: int = 5
    seed: int | None = None
    n: int = 1
    guided_choice: list[str] | None = None


@dataclass
class Generation:
    """One generated output.

    Attributes:
        text: The output text (without the end-of-turn token).
        tokens: The output tokens as strings; ``"".join(tokens) == text`` when the backend can say so.
        logprobs: Log-probability of each chosen token, under the model's unmodified distribution.
        top_logprobs: ``{token string: log-probability}`` of the top alternatives at each position.
        finish_reason: ``"stop"`` (end of turn), ``"length"`` (cut at ``max_new_tokens``) or ``"error"``.
        error: What went wrong when no output could be had (``finish_reason="error"``).
        samples: All ``n`` outputs of the request when ``SamplingParams.n > 1`` (``samples[0]``
            holds the same output as this one); empty when ``n == 1``.
    """

    text: str
    tokens: list[str] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    finish_reason: Literal["stop", "length", "error"] = "stop"
    error: str | None = None
    samples: list[Generation] = field(default_factory=list)


class Backend(Protocol):
    """Anything that turns chat requests into generations."""

    def generate(self, requests: list[Messages], params: SamplingParams) -> list[Generation]: ...


def merge_logprob(existing: float | None, new: float) -> float:
    """``log(exp(existing) + exp(new))``: two token ids that spell the same string add up."""
    if existing is None:
        return new
    hi, lo = max(existing, new), min(existing, new)
    return hi + math.log1p(math.exp(lo - hi)) if lo > -math.inf else hi
