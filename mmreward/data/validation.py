"""The one validation layer for records and media that every reader, the scorer and the servers use.

- Lines: UTF-8 and valid JSON (``mmreward.data.files.decode_line``), a JSON object (``require_object``).
- Media paths: a real regular file (not missing, a directory, a broken link, a link loop, a FIFO or
  a device), and with a ``media_root`` inside that root (``check_media_file``).
- Images: a pixel cap and the background alpha is composited on (``MediaPolicy``; the decoding
  itself is ``modalities.image.load_image``).
- Records: field-name suggestions (``did_you_mean``), duplicate ids (``warn_duplicate_ids``), and a
  ``BadRecord`` for each record a ``--skip-bad`` run leaves out.

Every error names the file, the line, the id and the field, as ``_Where``/``Sample.where`` give them.
"""

from __future__ import annotations

import difflib
import errno
import json
import logging
import os
import stat
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from mmreward.data.files import RecordError

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
"""64 Mpx (8192 x 8192): above any generator's output, below PIL's own bomb limit (89 Mpx)."""


@dataclass
class MediaPolicy:
    """Limits on the media a run reads.

    Attributes:
        max_pixels: Refuse images with more pixels than this (width x height), before decoding them.
        background: The RGB colour that images with an alpha channel are composited on.
        media_root: When set, media paths must resolve (links followed) to a file inside this folder.
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    background: tuple[int, int, int] = (255, 255, 255)
    media_root: str | None = None


_policy = MediaPolicy()


def media_policy() -> MediaPolicy:
    """The policy in force (``set_media_policy`` changes it; the CLI sets it from its flags)."""
    return _policy


def set_media_policy(**changes: Any) -> MediaPolicy:
    """Change the process-wide media policy (``max_pixels``, ``background``, ``media_root``).

    PIL's own decompression-bomb limit follows ``max_pixels`` so that a raised cap is honoured.
    """
    global _policy
    policy = replace(_policy, **changes)
    if not isinstance(policy.max_pixels, int) or policy.max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer; got {policy.max_pixels!r}.")
    background = tuple(policy.background)
    if len(background) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in background):
        raise ValueError(f"background must be three integers in 0..255 (R, G, B); got {policy.background!r}.")
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max(policy.max_pixels, Image.MAX_IMAGE_PIXELS or 0)
    _policy = replace(policy, background=background)
    return _policy


def require_object(raw: Any, path: Path, number: int) -> dict[str, Any]:
    """A record must be a JSON object; say what it was instead."""
    if isinstance(raw, dict):
        return raw
    names = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    what = "null" if raw is None else names.get(type(raw), f"a {type(raw).__name__}")
    shown = json.dumps(raw, default=str)[:60]
    raise RecordError(
        f'{path}:{number}: expected a JSON object {{"prompt": ..., ...}}, got {what} ({shown}). '
        "Write one object per line."
    )


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for a close match among ``known``, else an empty string."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_media_file(
    path: str | Path, where: str, kind: str = "media", media_root: str | None = None
) -> Path:
    """Check that ``path`` is a readable regular file (inside ``media_root`` when one is set).

    Raises:
        PermissionError: the path leaves ``media_root``.
        FileNotFoundError: missing, or a link to nothing.
        IsADirectoryError: a directory.
        ValueError: a link loop, or not a regular file (FIFO, socket, device).
    """
    path = Path(path)
    if media_root is not None:
        confine(path, where, kind, media_root)
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise FileNotFoundError(
                f"{where}: {kind} file {str(path)!r} is a broken symbolic link (to {os.readlink(path)!r}, "
                "which does not exist). Point it at a real file."
            ) from None
        raise FileNotFoundError(f"{where}: {kind} file {str(path)!r} does not exist.") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(
                f"{where}: {kind} path {str(path)!r} is a symbolic link loop. Point the link at a real file."
            ) from None
        raise ValueError(f"{where}: cannot read {kind} path {str(path)!r} ({err.strerror}).") from None
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(
            f"{where}: {kind} path {str(path)!r} is a directory, not a file. Name the file inside it."
        )
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(
            f"{where}: {kind} path {str(path)!r} is not a regular file (a FIFO, socket or device). "
            "Copy the data into a file."
        )
    return path


def confine(path: str | Path, where: str, kind: str, media_root: str | Path) -> None:
    """Refuse ``path`` when it resolves (links followed) outside ``media_root``; raises ``PermissionError``."""
    path = Path(path)
    root = Path(media_root).resolve()
    try:
        resolved = path.resolve()
    except (RuntimeError, OSError):  # a link loop; check_media_file names it after confinement
        resolved = Path(os.path.abspath(path))
    if not resolved.is_relative_to(root):
        raise PermissionError(
            f"{where}: {kind} path {str(path)!r} resolves to {str(resolved)!r}, outside the media root "
            f"{str(root)!r}. Keep media under the root, or run without --media-root / media_root."
        )


def check_pixels(size: tuple[int, int], where: str, max_pixels: int) -> None:
    """Refuse an image whose header claims more than ``max_pixels`` pixels, before it is decoded."""
    width, height = size
    if width * height > max_pixels:
        raise ValueError(
            f"{where}: the image is {width}x{height} = {width * height} pixels, over the cap of {max_pixels}. "
            "Shrink it, or raise the cap (--max-pixels, or set_media_policy(max_pixels=...)) if you trust it."
        )


@dataclass
class BadRecord:
    """A record a ``--skip-bad`` run left out, as one line of ``<output>.bad.jsonl``."""

    source: str
    line: int
    id: str | None
    error: str
    type: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def bad_record(source: Path | str, line: int, record_id: Any, err: BaseException) -> BadRecord:
    """A ``BadRecord`` from the exception that rejected the record."""
    rid = None if record_id is None else str(record_id)
    return BadRecord(str(source), int(line), rid, str(err), type(err).__name__)


def warn_duplicate_ids(ids: Iterable[tuple[Any, int]], path: Path) -> dict[str, int]:
    """Warn when record ids repeat; ``ids`` holds ``(id, line)``. Returns ``{id: copies}`` of the repeats."""
    lines: dict[str, list[int]] = {}
    for rid, line in ids:
        if rid is not None:
            lines.setdefault(str(rid), []).append(line)
    repeated = {rid: sorted(set(ls)) for rid, ls in lines.items() if len(set(ls)) > 1}
    if repeated:
        first, where = next(iter(repeated.items()))
        logger.warning(
            "%s: %d record id(s) appear on more than one line (id %r on lines %s); each copy is scored "
            "separately. Give each record its own id, or drop the copies.",
            path,
            len(repeated),
            first,
            ", ".join(map(str, where)),
        )
    return dict(Counter({rid: len(ls) for rid, ls in repeated.items()}))
