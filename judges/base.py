"""What every generative judge shares: a template, a backend, requests out and judgements back.

A judge turns its inputs into chat requests (``requests``), sends them to a backend in one batch,
and reads each output (``parse``). Parsing errors are caught per output, so a malformed answer
becomes a ``Judgement`` with ``score=None`` and a reason instead of an exception for the batch.
``judges.scaling.ScaledJudge`` reuses ``requests`` and ``parse`` to sample k answers per input.

Every judge is a reward (``mmreward.protocols.Reward``): ``score_samples(samples)`` returns one
``RewardOutput`` per sample, with the critique as ``text`` and per-aspect scores where the judge
has them. A judgement that could not be read scores NaN, with the reason in
``provenance["failure"]``, so one bad output does not sink the batch and no consumer mistakes it
for a score (best-of-N passes over it; the robot selector refuses it).

A verdict-only judge, whose whole answer is one of a fixed set (the principle check's
``Answer: yes`` / ``Answer: no``), sends that set as ``SamplingParams.guided_choice`` when its
backend sends it on (``OpenAIBackend(guided=...)``), so a served model can be constrained to it.
Critique-then-score judges (critique, pairwise, video) keep free text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

from judges.backends import Backend, Generation, Messages, SamplingParams
from judges.parsing import Judgement
from mmreward.configurable import Configurable
from mmreward.types import RewardOutput, Sample

VERDICT_CHOICES: dict[str, list[str]] = {"principle": ["Answer: yes", "Answer: no"]}
"""The whole answer of each packaged verdict-only template, by template name (see the module)."""


def load_template(name: str) -> str:
    """The text of a packaged template, ``judges/templates/<name>.txt``.

    Raises:
        FileNotFoundError: naming the templates that exist.
    """
    folder = resources.files("judges") / "templates"
    path = folder / f"{name}.txt"
    if not path.is_file():
        names = sorted(p.name.removesuffix(".txt") for p in folder.iterdir() if p.name.endswith(".txt"))
        raise FileNotFoundError(
            f"No judge template {name!r}; packaged templates: {', '.join(names)}. Or pass the text itself."
        )
    return path.read_text()


@contextmanager
def naming_records(items: Sequence[Any]) -> Iterator[None]:
    """Re-raise a backend's image error (a missing or undecodable file) under the record it came from.

    A backend sees chat requests, not samples, so its error names only the request's image part. On
    such an error each sample's images are loaded with its name (``modalities.image.load_image``)
    and the first that fails raises, naming the record and field; the happy path costs nothing.
    """
    try:
        yield
    except (FileNotFoundError, ValueError):
        from modalities.image import load_image

        for item in items:
            if not isinstance(item, Sample):
                continue
            named = [(item.source_image, "source_image"), (item.image, "image")]
            named += [(img, f"images[{i}]") for i, img in enumerate(item.images or [])]
            for image, field in named:
                if image is not None:
                    load_image(image, item, field)
        raise


def user_request(text: str, media: list[Any] | None = None, system: str | None = None) -> Messages:
    """A one-turn chat request: images first (as most VLM chat templates expect), then the text."""
    content: Any = text
    if media:
        content = [*({"type": "image", "image": m} for m in media), {"type": "text", "text": text}]
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": content}]


def sample_images(sample: Sample) -> list[Any]:
    """The still images of a sample: ``source_image``, then ``image``, then ``images``."""
    return [m for m in (sample.source_image, sample.image, *(sample.images or [])) if m is not None]


def fill(template: str, **values: Any) -> str:
    """``template.format(**values)``, with an error that names a missing placeholder."""
    try:
        return template.format(**values)
    except KeyError as err:
        raise ValueError(
            f"The judge template has a placeholder {{{err.args[0]}}} that this judge does not fill; "
            f"it fills {', '.join('{' + k + '}' for k in values)}. Edit the template (double braces escape one)."
        ) from err


def judge_provenance(judge: Any, backend: Any, template: str | None) -> dict[str, Any]:
    """Provenance of a judge's rewards: the backend's model, the judge class, and the template's digest."""
    model = backend.init_args.get("model") if isinstance(backend, Configurable) else None
    digest = hashlib.sha256((template or "").encode()).hexdigest()[:12]
    return {"model": str(model or type(backend).__name__), "judge": type(judge).__name__, "revision": digest}


def judgement_output(judgement: Judgement, provenance: dict[str, Any]) -> RewardOutput:
    """A ``RewardOutput`` from a ``Judgement``: NaN with the reason when no score was read."""
    prov = {**provenance, "method": judgement.method}
    if judgement.confidence is not None:
        prov["confidence"] = judgement.confidence
    if judgement.score is None:
        prov["failure"] = judgement.reason or "no score was read"
    aspects = {name: j.score for name, j in judgement.aspects.items() if j.score is not None}
    return RewardOutput(
        score=float("nan") if judgement.score is None else float(judgement.score),
        aspects=aspects or None,
        text=judgement.critique or judgement.text or None,
        provenance=prov,
    )


class GenerativeJudge(Configurable):
    """Base class: a backend, a template, and the ``requests``/``parse`` pair subclasses define.

    Args:
        backend: Where the text comes from (``TransformersBackend``, ``OpenAIBackend``).
        template: The prompt template text; None uses the judge's packaged default.
        system: An optional system message.
        max_new_tokens: Most tokens per answer.
        top_logprobs: Alternatives read at each position (the verdict's distribution comes from them).
    """

    default_template = "critique"

    def __init__(
        self,
        backend: Backend,
        template: str | None = None,
        system: str | None = None,
        max_new_tokens: int = 256,
        top_logprobs: int = 10,
    ) -> None:
        self.backend = backend
        self.template = template if template is not None else load_template(self.default_template)
        self.system, self.max_new_tokens, self.top_logprobs = system, max_new_tokens, top_logprobs

    def verdict_choices(self) -> list[str] | None:
        """Every answer this judge accepts, when its answer is only a verdict; None for free text.

        The packaged template's ``VERDICT_CHOICES``; a custom template may ask for reasoning, so it
        gets None (override this method for a custom verdict-only template).
        """
        choices = VERDICT_CHOICES.get(self.default_template)
        if choices is None or self.template != load_template(self.default_template):
            return None
        return list(choices)

    def params(self, temperature: float = 0.0, seed: int | None = None) -> SamplingParams:
        """Sampling parameters for one call; ``guided_choice`` when the judge and backend allow it."""
        sends = getattr(self.backend, "guided", "none") != "none"  # others would warn and ignore it
        choices = self.verdict_choices() if sends else None
        return SamplingParams(
            self.max_new_tokens, temperature, top_logprobs=self.top_logprobs, seed=seed, guided_choice=choices
        )

    def requests(self, items: list[Any]) -> list[Messages]:
        """One chat request per item."""
        raise TypeError(
            f"{type(self).__name__} must define requests(items); GenerativeJudge is a base class."
        )

    def parse(self, item: Any, generation: Generation) -> Judgement:
        """Read one output."""
        raise TypeError(
            f"{type(self).__name__} must define parse(item, generation); GenerativeJudge is a base class."
        )

    def safe_parse(self, item: Any, generation: Generation) -> Judgement:
        """``parse``, turning any exception into a failed ``Judgement`` that says why."""
        try:
            return self.parse(item, generation)
        except Exception as err:  # one bad output must not sink the batch
            return Judgement(None, text=generation.text, reason=f"parser error: {type(err).__name__}: {err}")

    def judge(self, items: list[Any], temperature: float = 0.0, seed: int | None = None) -> list[Judgement]:
        """Judge every item in one backend batch; failures come back as ``score=None`` with a reason."""
        with naming_records(items):
            generations = self.backend.generate(self.requests(items), self.params(temperature, seed))
        return [self.safe_parse(item, gen) for item, gen in zip(items, generations)]

    def provenance(self) -> dict[str, Any]:
        """The backend's model, this judge's class and its template's digest."""
        return judge_provenance(self, self.backend, self.template)

    def score_samples(self, samples: Sequence[Sample]) -> list[RewardOutput]:
        """The reward contract: judge the samples greedily, one ``RewardOutput`` each (see the module)."""
        provenance = self.provenance()
        return [judgement_output(j, provenance) for j in self.judge(list(samples))]
