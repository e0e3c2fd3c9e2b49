"""Writing a synthetic world once: shared by the text-to-image, edit, video and text worlds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from mmreward.configurable import to_config

SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}
"""Each split draws from its own seed stream, so held-out prompts and scenes never reach training."""


def split_sizes(world: str, train: int, val: int, test: int) -> dict[str, int]:
    """``{"train": train, "val": val, "test": test}``, each checked to be >= 0."""
    sizes = {"train": train, "val": val, "test": test}
    for split, value in sizes.items():
        if value < 0:
            raise ValueError(f"{world} {split} size must be >= 0; got {value}.")
    return sizes


def write_once(
    root: str | Path,
    world: Any,
    format_version: int,
    write_split: Callable[[Path, str, Path], None],
    records: Literal["pairs", "ratings"] = "pairs",
) -> dict[str, Path]:
    """Write ``root/<split>.jsonl`` for every split, unless ``root/world.json`` already records this world.

    ``world.json`` holds what the files depend on: the world's class path and init args (less
    ``records``: a world that rates candidates writes pairs and ratings alike) and ``format_version``.

    Args:
        root: The world's folder.
        world: The world (a ``Configurable``).
        format_version: The world module's file-format version.
        write_split: ``write_split(root, split, jsonl_path)`` writes one split (its pairs, the
            ``<split>_ratings.jsonl`` of a world that rates candidates, and its media).
        records: Which files to return: the pairs or the ratings.

    Returns:
        ``{"train": root/train.jsonl, "val": ..., "test": ...}``, or the ``<split>_ratings.jsonl`` files.
    """
    root = Path(root)
    config = {**to_config(world), "format": format_version}
    config["init_args"].pop("records", None)
    paths = {split: root / f"{split}.jsonl" for split in SPLIT_STREAMS}
    chosen = paths if records == "pairs" else {split: root / f"{split}_ratings.jsonl" for split in paths}
    marker = root / "world.json"
    if (
        marker.is_file()
        and json.loads(marker.read_text()) == config
        and all(p.is_file() for p in paths.values())
    ):
        return chosen
    marker.unlink(missing_ok=True)  # a half-written world must not pass for a finished one
    for split, path in paths.items():
        write_split(root, split, path)
    marker.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return chosen
