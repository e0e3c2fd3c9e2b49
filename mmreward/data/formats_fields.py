"""The top-level fields each public format needs, and the hint that names the format a record fits.

A converter that meets a record without one of its fields raises ``MissingFieldsError`` (a
``KeyError``) that names the format, the fields missing, the fields the record has, and the
formats whose fields it does have: GenAI-Bench's video-arena ``data.json`` read as
``genai-bench-video`` says it looks like ``genai-bench-video-arena``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "hh-rlhf": ("chosen", "rejected"),
    "mm-rlhf": ("prompt", "chosen", "rejected"),
    "imagereward": ("prompt", "generations", "ranking"),
    "pick-a-pic": ("caption", "jpg_0", "jpg_1", "label_0"),
    "rewardbench": ("prompt", "chosen", "rejected"),
    "prm800k": ("question", "label"),
    "math-shepherd": ("input", "label"),
    "processbench": ("problem", "steps", "label"),
    "visualprocessbench": ("question", "response"),
    "genai-bench-image": ("prompt", "models"),
    "genai-bench-video": ("prompt", "models"),
    "t2vscore": ("prompt", "models"),
    "genai-bench-video-arena": ("prompt", "video_left", "video_right", "vote_type"),
    "editreward": (
        "prompt",
        "path_src",
        "path1",
        "path2",
        "model1",
        "model2",
        "model1_dim1_score",
        "model2_dim1_score",
    ),
    "videoalign": ("prompt", "path_A", "path_B", "VQ", "MQ", "TA"),
}
"""Format name -> the top-level fields its converter cannot do without (optional ones are left out;
``videofeedback`` takes ``text prompt`` or ``prompt``, so it is not listed)."""


class MissingFieldsError(KeyError):
    """A record without a field its format needs; ``str()`` is the whole message, not a quoted key."""

    def __str__(self) -> str:
        return str(self.args[0])


def matching_formats(raw: dict[str, Any], exclude: str | None = None) -> list[str]:
    """Formats whose needed fields ``raw`` all has, the most specific (most fields) first."""
    fits = [name for name, fields in FORMAT_FIELDS.items() if name != exclude and set(fields) <= raw.keys()]
    return sorted(fits, key=lambda name: -len(FORMAT_FIELDS[name]))


def check_fields(format: str, raw: Any) -> None:
    """Raise ``MissingFieldsError`` if ``raw`` (a dict) lacks a field that ``format`` needs."""
    if not isinstance(raw, dict) or format not in FORMAT_FIELDS:
        return
    missing = [f for f in FORMAT_FIELDS[format] if f not in raw]
    if not missing:
        return
    fits = matching_formats(raw, exclude=format)
    hint = (
        f"This file looks like {fits[0]!r}: pass --format {fits[0]}"
        if fits
        else "No known format has these fields; map them with a field_map"
    )
    raise MissingFieldsError(
        f"the {format!r} format needs field(s) {', '.join(map(repr, missing))}, and this record has "
        f"{', '.join(map(repr, raw))}. {hint}"
    )


def checked(format: str, convert: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> Callable:
    """``convert`` preceded by ``check_fields(format, raw)``."""

    @functools.wraps(convert)
    def wrapper(raw: dict[str, Any]) -> list[dict[str, Any]]:
        check_fields(format, raw)
        return convert(raw)

    return wrapper
