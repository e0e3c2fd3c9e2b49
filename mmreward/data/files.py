"""Data files as raw dicts: the one reader of every layout, and the JSONL writer.

It knows nothing of the canonical schema, so ``records`` (the schema) and ``formats`` (public
formats mapped onto it) both build on it without importing each other in a circle.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal


class RecordError(ValueError):
    """A record that does not fit the canonical schema; the message names file, line and field."""


def iter_raw(path: str | Path, errors: Literal["raise", "yield"] = "raise") -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, raw dict)`` from a data file, whatever its layout.

    Reads ``.jsonl``, ``.json`` (a list of records, or an object keyed by record id as GenAI-Bench
    ships: the key becomes ``id`` unless the record has one), ``.csv`` (a header row; the row
    number becomes ``id`` unless a column has that name, as in VideoAlign) and ``.parquet``.
    "Line numbers" count records for the layouts without lines (JSON, CSV rows, Parquet rows).

    A JSONL line that is not UTF-8 or not JSON raises a ``RecordError`` naming the line; with
    ``errors="yield"`` it is yielded in place of the record instead, and reading goes on (``--skip-bad``).
    The values are what the file holds: checking that each is an object is the caller's part.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Data file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        from mmreward.optional import require

        table = require("pyarrow.parquet", "parquet").read_table(path)
        yield from enumerate(table.to_pylist(), start=1)
    elif suffix == ".csv":
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        except UnicodeDecodeError as err:
            raise RecordError(f"{path}: the CSV file is not UTF-8 ({err}); re-encode it as UTF-8.") from err
        for number, row in enumerate(rows, start=1):
            yield number, {"id": number - 1, **row} if "id" not in row else row
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RecordError(f"{path}: not a readable UTF-8 JSON file ({err}).") from err
        if isinstance(data, dict):  # keyed by id (GenAI-Bench): keep the key as the id
            data = [
                value if not isinstance(value, dict) or "id" in value else {"id": key, **value}
                for key, value in data.items()
            ]
        if not isinstance(data, list):
            raise RecordError(
                f"{path}: a .json data file must hold a list of records or an object keyed by id; "
                f"got a {type(data).__name__}."
            )
        yield from enumerate(data, start=1)
    else:
        with path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, decode_line(line, path, number)
                except RecordError as err:
                    if errors == "raise":
                        raise
                    yield number, err


def decode_line(data: bytes, path: Path, number: int) -> Any:
    """One JSONL line: UTF-8, then JSON. Raises ``RecordError`` naming the file and line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RecordError(
            f"{path}:{number}: the line is not UTF-8 (byte {data[err.start]:#04x} at column {err.start + 1}). "
            "Re-encode the file as UTF-8."
        ) from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno}).") from err


def write_jsonl(path: str | Path, records: list[dict[str, Any]]) -> Path:
    """Write dicts as JSON lines (creating the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return path
