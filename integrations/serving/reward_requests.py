"""The reward server's request bodies, checked where they arrive, before any reaches the model.

Three shapes (pydantic models, so FastAPI answers a malformed body with a 422 that names the field):

- ``ScoreRequest``: ``{"samples": [{"prompt", "response", "image", "images", "video", "source_image"}]}``
  for ``POST /score``; or OpenRLHF's remote reward-model body ``{"query": [...], "prompts": [...],
  "labels": [...]}`` (``metas`` and other keys OpenRLHF adds are ignored), where each query is the
  prompt followed by the response.
- ``RankRequest``: ``{"prompt": ..., "candidates": [{"image": ...}, ...]}`` for ``POST /rank``.

Media values are strings: a ``data:<mime>;base64,...`` URL travels inline; anything else is a path
under the server's media root (relative to it, or absolute inside it) and is refused when it resolves
outside it, or when the server has no media root. Images are decoded here (the pixel cap before
decoding, as for a file), so the model's worker only ever receives decoded images, confined paths
and video bytes.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mmreward.data.validation import check_media_file, media_policy
from mmreward.types import Sample

MAX_SAMPLES = 256
"""The most samples one request may carry (``--max-samples`` lowers it; the body cap bounds it too)."""
_limits = {"max_samples": MAX_SAMPLES}


def set_max_samples(count: int) -> None:
    """The most samples (or candidates) one request may carry; the server sets it from ``--max-samples``."""
    if count < 1:
        raise ValueError(f"--max-samples must be at least 1; got {count}.")
    _limits["max_samples"] = count


@dataclass
class VideoBytes:
    """A video sent inline: its bytes and a file suffix (the worker writes it to a temporary file)."""

    data: bytes
    suffix: str


def _inline(value: str, field: str) -> tuple[str, bytes]:
    """The MIME type and bytes of a ``data:<mime>;base64,<data>`` URL."""
    head, sep, payload = value.partition(",")
    if not sep or not head.endswith(";base64"):
        raise ValueError(f"{field}: an inline value must be a data URL, data:<mime>;base64,<data>.")
    try:
        return head[5:].removesuffix(";base64"), base64.b64decode(payload, validate=True)
    except binascii.Error as err:
        raise ValueError(f"{field}: the base64 data does not decode ({err}).") from None


def _confined(value: str, field: str, kind: str) -> Path:
    """A media path, relative to the media root or absolute inside it; refused outside it."""
    root = media_policy().media_root
    if root is None:
        raise ValueError(
            f"{field}: {value[:80]!r} is a file path, but this server reads no files (it was started "
            "without --media-root); send the media inline as a data:...;base64, URL."
        )
    path = Path(root) / value  # an absolute value replaces the root, and is then confined
    try:
        checked = check_media_file(path, field, kind, root)
    except PermissionError:
        raise ValueError(
            f"{field}: {kind} path {value!r} resolves outside the media root (links followed); this server "
            "reads files under its --media-root only. Send the file inline as a data URL instead."
        ) from None
    except OSError as err:
        raise ValueError(str(err)) from None
    return checked.resolve()


def decode_image(value: str, field: str) -> Any:
    """A PIL image from a data URL, or a confined path (decoded now, so a bad file is this request's 422)."""
    from PIL import Image

    from modalities.image import load_image

    if not value.startswith("data:"):
        return load_image(str(_confined(value, field, "image")), field=field)
    _, data = _inline(value, field)
    try:
        with Image.open(io.BytesIO(data)) as image:
            return load_image(image, field=field)
    except Image.DecompressionBombError as err:
        raise ValueError(f"{field}: the image is too large to decode safely ({err}).") from None
    except OSError as err:
        raise ValueError(f"{field}: cannot read the image ({err}); send a PNG or JPEG.") from None


def decode_video(value: str, field: str) -> Path | VideoBytes:
    """A confined path, or the bytes of an inline video (``data:video/mp4;base64,...``)."""
    if not value.startswith("data:"):
        return _confined(value, field, "video")
    mime, data = _inline(value, field)
    if not mime.startswith("video/") or not data:
        raise ValueError(f"{field}: expected a video data URL (data:video/mp4;base64,...); got {mime!r}.")
    return VideoBytes(data, "." + mime.split("/", 1)[1].split(";")[0])


class SampleIn(BaseModel):
    """One candidate: a prompt and any of a response, an image, images, a video, a source image."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    prompt: str = ""
    response: str | None = None
    image: str | None = None
    images: list[str] | None = None
    video: str | None = None
    source_image: str | None = None

    @field_validator("image", "source_image")
    @classmethod
    def _image(cls, value: str | None, info: Any) -> Any:
        return None if value is None else decode_image(value, info.field_name)

    @field_validator("images")
    @classmethod
    def _images(cls, value: list[str] | None) -> Any:
        return None if value is None else [decode_image(v, f"images[{i}]") for i, v in enumerate(value)]

    @field_validator("video")
    @classmethod
    def _video(cls, value: str | None) -> Any:
        return None if value is None else decode_video(value, "video")

    def to_sample(self, prompt: str | None = None, line: int = 0) -> Sample:
        """The ``mmreward.Sample`` (video bytes stay ``VideoBytes`` until the worker writes them)."""
        fields = {k: getattr(self, k) for k in ("response", "image", "images", "video", "source_image")}
        meta = {"source": "request", "line": line}
        return Sample(prompt=self.prompt if prompt is None else prompt, meta=meta, **fields)


def _count(items: list[Any] | None, name: str) -> None:
    limit = _limits["max_samples"]
    if items is not None and not 1 <= len(items) <= limit:
        raise ValueError(f"{name} must hold 1 to {limit} items on this server; got {len(items)}.")


class ScoreRequest(BaseModel):
    """``POST /score``: ``samples``, or OpenRLHF's ``query`` (+ ``prompts``, ``labels``); see the module."""

    model_config = ConfigDict(extra="allow")  # OpenRLHF adds keys (metas); our own shape forbids them

    samples: list[SampleIn] | None = None
    query: list[str] | None = None
    prompts: list[str] | None = None
    labels: list[Any] | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> ScoreRequest:
        if (self.samples is None) == (self.query is None):
            raise ValueError(
                'send either "samples": [{"prompt": ..., "image": ...}] or OpenRLHF\'s "query": [...]'
            )
        if self.samples is not None and self.model_extra:
            raise ValueError(f"unknown field(s) {sorted(self.model_extra)} beside samples.")
        _count(self.samples, "samples")
        _count(self.query, "query")
        if self.prompts is not None and len(self.prompts) != len(self.query or []):
            raise ValueError(f"prompts has {len(self.prompts)} items but query has {len(self.query or [])}.")
        return self

    def to_samples(self) -> list[Sample]:
        """Samples to score; an OpenRLHF query that starts with its prompt is split into prompt + response."""
        if self.samples is not None:
            return [s.to_sample(line=i) for i, s in enumerate(self.samples)]
        prompts = self.prompts or [""] * len(self.query)
        return [
            Sample(
                prompt=p,
                response=q[len(p) :] if p and q.startswith(p) else q,
                meta={"source": "request", "line": i},
            )
            for i, (q, p) in enumerate(zip(self.query, prompts))
        ]


class RankRequest(BaseModel):
    """``POST /rank``: one ``prompt`` and its ``candidates`` (media only: the prompt is shared)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    candidates: list[SampleIn] = Field(min_length=1)

    @model_validator(mode="after")
    def _shared_prompt(self) -> RankRequest:
        _count(self.candidates, "candidates")
        if any(c.prompt for c in self.candidates):
            raise ValueError("candidates carry no prompt of their own; the request's prompt is shared.")
        return self

    def to_samples(self) -> list[Sample]:
        return [c.to_sample(self.prompt, i) for i, c in enumerate(self.candidates)]
