"""Data files as raw dicts: the one reader of every layout, and the JSONL writer.

It knows nothing of the canonical schema, so ``records`` (the schema) and ``formats`` (public
formats mapped onto it) both build on it without importing each other in a circle.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class RecordError(ValueError):
    """A record that does not fit the canonical schema; the message names file, line and field."""


def iter_raw(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, raw dict)`` from a data file, whatever its layout.

    Reads ``.jsonl``, ``.json`` (a list of records, or an object keyed by record id as GenAI-Bench
    ships: the key becomes ``id`` unless the record has one), ``.csv`` (a header row; the row
    number becomes ``id`` unless a column has that name, as in VideoAlign) and ``.parquet``.
    "Line numbers" count records for the layouts without lines (JSON, CSV rows, Parquet rows).
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
        with path.open(newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=1):
                yield number, {"id": number - 1, **row} if "id" not in row else row
    elif suffix == ".json":
        data = json.loads(path.read_text())
        if isinstance(data, dict):  # keyed by id (GenAI-Bench): keep the key as the id
            data = [value if "id" in value else {"id": key, **value} for key, value in data.items()]
        if not isinstance(data, list):
            raise RecordError(
                f"{path}: a .json data file must hold a list of records or an object keyed by id; "
                f"got a {type(data).__name__}."
            )
        yield from enumerate(data, start=1)
    else:
        with path.open() as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as err:
                    raise RecordError(
                        f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})."
                    ) from err


def write_jsonl(path: str | Path, records: list[dict[str, Any]]) -> Path:
    """Write dicts as JSON lines (creating the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return path
