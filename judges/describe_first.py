"""Describe, then judge: a critique judge that reads an image only through its own description of it.

Two passes through one backend. First the judge describes each image from its pixels (``describe``,
the stage-1 instruction of ``judges.pixel_training``); then it critiques and scores that description
against the prompt, as a text judge critiques a response (``CritiqueJudge``'s request, with the
description as the response and no image). The verdict therefore rests on what the judge wrote it
saw, which a reader can check, and the comparison of prompt and image is the text judge's
comparison, which a small judge learns in minutes (the scene-text ablation, docs/judges.md); the
image itself reaches the verdict only through the description. The judgement's text holds both
passes: ``"Image: <description> Seen: ... Critique: ...\\nScore: N"``.

Samples without an image (text responses, videos) are judged in one pass, as ``CritiqueJudge`` does.

Example:
    >>> judge = DescribeFirstJudge(CompositeBackend("runs/judge-quickstart/model"))
    >>> [j] = judge.judge([Sample(prompt="two red circles", image="render.png")])
    >>> j.score, j.text
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from judges.backends import Backend, Messages, SamplingParams
from judges.base import naming_records, sample_images, user_request
from judges.critique import CritiqueJudge
from judges.parsing import Judgement
from mmreward.types import Sample

DESCRIBE_REQUEST = "Describe the image."
"""The instruction of the first pass (and of the pixel judge's stage-1 training)."""


class DescribeFirstJudge(CritiqueJudge):
    """Critique-then-score of images in two passes: describe the image, then judge the description.

    Args:
        backend: Where the text comes from; it must take images (``CompositeBackend``, a VLM).
        describe: The first pass's instruction.
        max_description_tokens: Most tokens of a description.
        **kwargs: ``CritiqueJudge``'s arguments (template, score range, ``max_new_tokens``, ...).
    """

    def __init__(
        self,
        backend: Backend,
        describe: str = DESCRIBE_REQUEST,
        max_description_tokens: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(backend, **kwargs)
        self.describe, self.max_description_tokens = describe, max_description_tokens

    def descriptions(
        self, items: list[Sample], temperature: float = 0.0, seed: int | None = None
    ) -> list[str | None]:
        """The first pass: each sample's images described (None for a sample with no image)."""
        rows = [i for i, s in enumerate(items) if sample_images(s)]
        out: list[str | None] = [None] * len(items)
        if rows:
            requests = [user_request(self.describe, sample_images(items[i]), self.system) for i in rows]
            params = SamplingParams(self.max_description_tokens, temperature, top_logprobs=1, seed=seed)
            with naming_records([items[i] for i in rows]):
                generations = self.backend.generate(requests, params)
            for i, generation in zip(rows, generations):
                out[i] = generation.text.strip()
        return out

    def as_text(self, items: list[Sample], described: list[str | None]) -> list[Sample]:
        """Each image sample with its description as the response and no image (the second pass's input)."""
        for s in items:
            if s.response is not None and sample_images(s):
                raise ValueError(
                    f"DescribeFirstJudge judges an image as the response, but {s.where('response')} also has a "
                    "text response; judge image-and-text answers with CritiqueJudge on a VLM backend."
                )
        return [
            s if d is None else replace(s, response=d, image=None, images=None, source_image=None)
            for s, d in zip(items, described)
        ]

    def requests(self, items: list[Sample]) -> list[Messages]:
        """The second pass's requests (the first pass runs here, greedily): what ``ScaledJudge`` samples."""
        return super().requests(self.as_text(items, self.descriptions(items)))

    def judge_pass(
        self, items: list[Sample], temperature: float = 0.0, seed: int | None = None
    ) -> tuple[list[Messages], list[Judgement]]:
        """The second pass alone, on text samples (``as_text``'s output): its requests and judgements,
        whose text is the judge pass's own (``"Seen: ... Critique: ...\\nScore: N"``)."""
        requests = super().requests(items)
        generations = self.backend.generate(requests, self.params(temperature, seed))
        return requests, [self.safe_parse(item, gen) for item, gen in zip(items, generations)]

    def judge(
        self, items: list[Sample], temperature: float = 0.0, seed: int | None = None
    ) -> list[Judgement]:
        """Describe the images, then judge every sample in one batch, each image by its description."""
        described = self.descriptions(items, temperature, seed)
        _, judgements = self.judge_pass(self.as_text(items, described), temperature, seed)
        for judgement, description in zip(judgements, described):
            if description is not None:
                judgement.text = f"Image: {description} {judgement.text}"
                judgement.critique = f"Image: {description} {judgement.critique}"
        return judgements
