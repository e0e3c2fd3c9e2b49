"""Critique-then-score: the judge explains what is wrong, then gives a score.

The judge writes a critique of one response (text, image, or video frames) and ends with a
``Score: N`` line; the score is read from the probabilities at the score token
(``judges.parsing``). Writing the critique first is MM-RLHF's critique-based reward model
(Zhang et al., 2025): the explanation conditions the score and makes it inspectable.

Example:
    >>> judge = CritiqueJudge(TransformersBackend("runs/judge/model"))
    >>> [j] = judge.judge([Sample(prompt="two red circles", response="an image of two blue circles")])
    >>> j.score, j.confidence, j.critique
"""

from __future__ import annotations

from typing import Any

from judges.backends import Backend, Generation, Messages
from judges.base import GenerativeJudge, fill, load_template, sample_images, user_request
from judges.parsing import Judgement, parse_score
from judges.video import video_frames
from mmreward.types import Sample


def critique_request(
    sample: Sample,
    template: str | None = None,
    min_score: int = 1,
    max_score: int = 5,
    num_frames: int = 8,
    system: str | None = None,
) -> Messages:
    """The chat request a critique judge sends for ``sample`` (SFT data is built with it too).

    Args:
        sample: The response to judge: its images, or video frames, go before the text.
        template: Template text; None uses ``judges/templates/critique.txt``.
        min_score: Lowest score.
        max_score: Highest score.
        num_frames: Frames sampled from a video.
        system: An optional system message.
    """
    media: list[Any] = sample_images(sample)
    if sample.video is not None:
        media += video_frames(sample.video, num_frames)
    text = fill(
        template if template is not None else load_template("critique"),
        prompt=sample.prompt,
        response=sample.response if sample.response is not None else "(the image or video above)",
        min_score=min_score,
        max_score=max_score,
    )
    return user_request(text, media, system)


class CritiqueJudge(GenerativeJudge):
    """Score single responses on an integer scale, critique first.

    Args:
        backend: Where the text comes from.
        template: Prompt template with ``{prompt}``, ``{response}``, ``{min_score}``, ``{max_score}``;
            None uses ``judges/templates/critique.txt``.
        min_score: Lowest score.
        max_score: Highest score (keep each label one token, e.g. 1-5 or 0-9, so its probability
            can be read; longer labels fall back to text parsing).
        num_frames: Frames sampled from a video input.
        system: An optional system message.
        max_new_tokens: Most tokens per answer.
        top_logprobs: Alternatives read at each position.
    """

    default_template = "critique"

    def __init__(
        self,
        backend: Backend,
        template: str | None = None,
        min_score: int = 1,
        max_score: int = 5,
        num_frames: int = 8,
        system: str | None = None,
        max_new_tokens: int = 256,
        top_logprobs: int = 10,
    ) -> None:
        super().__init__(backend, template, system, max_new_tokens, top_logprobs)
        if max_score <= min_score:
            raise ValueError(f"CritiqueJudge needs min_score < max_score; got {min_score} and {max_score}.")
        self.min_score, self.max_score, self.num_frames = min_score, max_score, num_frames

    def requests(self, items: list[Sample]) -> list[Messages]:
        """One request per sample: its images (or video frames) and the filled template."""
        return [
            critique_request(s, self.template, self.min_score, self.max_score, self.num_frames, self.system)
            for s in items
        ]

    def parse(self, item: Sample, generation: Generation) -> Judgement:
        """The critique and the expected score of one output."""
        return parse_score(generation, self.min_score, self.max_score)
