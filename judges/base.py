"""What every generative judge shares: a template, a backend, requests out and judgements back.

A judge turns its inputs into chat requests (``requests``), sends them to a backend in one batch,
and reads each output (``parse``). Parsing errors are caught per output, so a malformed answer
becomes a ``Judgement`` with ``score=None`` and a reason instead of an exception for the batch.
``judges.scaling.ScaledJudge`` reuses ``requests`` and ``parse`` to sample k answers per input.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from judges.backends import Backend, Generation, Messages, SamplingParams
from judges.parsing import Judgement
from mmreward.configurable import Configurable
from mmreward.types import Sample


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

    def params(self, temperature: float = 0.0, seed: int | None = None) -> SamplingParams:
        """Sampling parameters for one call."""
        return SamplingParams(self.max_new_tokens, temperature, top_logprobs=self.top_logprobs, seed=seed)

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
        generations = self.backend.generate(self.requests(items), self.params(temperature, seed))
        return [self.safe_parse(item, gen) for item, gen in zip(items, generations)]
