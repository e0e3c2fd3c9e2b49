"""Think-before-score video judging on several aspects, and the frame sampling it needs.

The judge reasons inside ``<think> ... </think>``, then writes one ``aspect: N`` line per aspect;
each aspect's score is read from the probabilities at its score token. The default aspects are
VideoScore2's three (He et al., 2025, "VideoScore2: Think before You Score in Generative Video
Evaluation"): visual quality, text alignment and physical (common-sense) consistency.

Example:
    >>> judge = VideoJudge(OpenAIBackend("http://127.0.0.1:8000/v1", model="judge"))
    >>> [j] = judge.judge([Sample(prompt="a dog runs on the beach", video="clip.mp4")])
    >>> j.aspects["visual quality"].score, j.score
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from judges.backends import Backend, Generation, Messages
from judges.base import GenerativeJudge, fill, user_request
from judges.parsing import Judgement, judgement_from_choice, read_choice, score_labels
from mmreward.optional import require
from mmreward.types import Sample

VIDEOSCORE2_ASPECTS = ("visual quality", "text alignment", "physical consistency")
"""The three dimensions of VideoScore2 (He et al., 2025)."""


def video_frames(video: Any, num_frames: int) -> list[Any]:
    """``num_frames`` frames spread evenly over a video: a file (decoded with PyAV) or a list of frames.

    ``modalities.video`` holds the full reader (fps and keyframe sampling); this is the small
    uniform sampler a judge needs, kept here so judges run with PyAV alone.
    """
    if isinstance(video, (list, tuple)):
        frames = list(video)
    elif isinstance(video, (str, Path)):
        if not Path(video).is_file():
            raise FileNotFoundError(
                f"Video {str(video)!r} does not exist; pass a file path or a list of frames."
            )
        av = require("av", "video")
        with av.open(str(video)) as container:
            frames = [f.to_image() for f in container.decode(video=0)]
    else:
        raise TypeError(f"A video must be a file path or a list of frames; got {type(video).__name__}.")
    if not frames:
        raise ValueError(f"Video {video!r} has no frames; check the file decodes (e.g. with ffprobe).")
    count = min(num_frames, len(frames))
    return [frames[round(i * (len(frames) - 1) / max(count - 1, 1))] for i in range(count)]


class VideoJudge(GenerativeJudge):
    """Rate a video (or any sample) on several aspects after thinking; ``score`` is their mean.

    Args:
        backend: Where the text comes from (a vision-language model for real videos).
        aspects: The aspect names, as the judge must write them before each score.
        template: Template with ``{prompt}``, ``{aspects}``, ``{min_score}``, ``{max_score}``;
            None uses ``judges/templates/video.txt``.
        min_score: Lowest score.
        max_score: Highest score.
        num_frames: Frames sampled from the video.
        system: An optional system message.
        max_new_tokens: Most tokens per answer (thinking included).
        top_logprobs: Alternatives read at each position.
    """

    default_template = "video"

    def __init__(
        self,
        backend: Backend,
        aspects: tuple[str, ...] | list[str] = VIDEOSCORE2_ASPECTS,
        template: str | None = None,
        min_score: int = 1,
        max_score: int = 5,
        num_frames: int = 8,
        system: str | None = None,
        max_new_tokens: int = 512,
        top_logprobs: int = 10,
    ) -> None:
        super().__init__(backend, template, system, max_new_tokens, top_logprobs)
        if not aspects:
            raise ValueError("VideoJudge needs at least one aspect; got none. Pass e.g. VIDEOSCORE2_ASPECTS.")
        self.aspects, self.min_score, self.max_score, self.num_frames = (
            list(aspects),
            min_score,
            max_score,
            num_frames,
        )

    def requests(self, items: list[Sample]) -> list[Messages]:
        """One request per sample: its frames (or images) and the filled template."""
        out = []
        for sample in items:
            media = video_frames(sample.video, self.num_frames) if sample.video is not None else []
            media += [m for m in (sample.image, *(sample.images or [])) if m is not None]
            text = fill(
                self.template,
                prompt=sample.prompt,
                aspects=", ".join(self.aspects),
                min_score=self.min_score,
                max_score=self.max_score,
            )
            out.append(user_request(text, media, self.system))
        return out

    def parse(self, item: Sample, generation: Generation) -> Judgement:
        """Each aspect's score, the thinking as the critique, and the mean of the aspects that parsed."""
        labels = score_labels(self.min_score, self.max_score)
        aspects = {
            a: judgement_from_choice(generation, read_choice(generation, re.escape(a) + r"\s*:", labels))
            for a in self.aspects
        }
        think = re.search(r"<think>(.*?)(</think>|$)", generation.text, re.DOTALL)
        scores = [j.score for j in aspects.values() if j.score is not None]
        failed = [a for a, j in aspects.items() if j.score is None]
        reason = f"no score for {', '.join(failed)}: {aspects[failed[0]].reason}" if failed else None
        return Judgement(
            score=sum(scores) / len(scores) if scores else None,
            critique=think.group(1).strip() if think else generation.text.strip(),
            text=generation.text,
            method="logprobs"
            if all(j.method == "logprobs" for j in aspects.values())
            else "text"
            if scores
            else "none",
            reason=reason,
            aspects=aspects,
        )
