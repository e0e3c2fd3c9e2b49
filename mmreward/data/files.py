"""Data files as raw dicts: the one reader of every layout, and the JSONL writer.

It knows nothing of the canonical schema, so ``records`` (the schema) and ``formats`` (public
formats mapped onto it) both build on it without importing each other in a circle.

Layouts are chosen by suffix: ``.jsonl``, ``.json``, ``.csv``, ``.tsv`` and ``.parquet``, each
optionally gzip-compressed (``.jsonl.gz``, ``.json.gz``, ``.csv.gz``, ``.tsv.gz``, as hh-rlhf ships).
Parsing is the standard library's (``gzip``, ``json``, ``csv``) or pyarrow's; nothing is hand-rolled.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

LAYOUTS = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


class RecordError(ValueError):
    """A record that does not fit the canonical schema; the message names file, line and field."""


def layout(path: Path) -> tuple[str, bool]:
    """The layout suffix of ``path`` and whether it is gzip-compressed (``a.jsonl.gz`` -> ``.jsonl``, True)."""
    suffixes = [s.lower() for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    if compressed:
        suffixes = suffixes[:-1]
    return (suffixes[-1] if suffixes else ""), compressed


def _open_binary(path: Path, compressed: bool) -> IO[bytes]:
    return gzip.open(path, "rb") if compressed else path.open("rb")


def iter_raw(path: str | Path, errors: Literal["raise", "yield"] = "raise") -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, raw dict)`` from a data file, whatever its layout.

    Reads ``.jsonl``, ``.json`` (a list of records, or an object keyed by record id as GenAI-Bench
    ships: the key becomes ``id`` unless the record has one), ``.csv`` and ``.tsv`` (a header row;
    the row number becomes ``id`` unless a column has that name, as in VideoAlign; cells stay
    strings) and ``.parquet`` (pyarrow, the ``parquet`` extra). The text layouts may be gzipped
    (``.jsonl.gz`` and so on). "Line numbers" count records for the layouts without lines (JSON,
    CSV/TSV rows, Parquet rows). Any other suffix is read as JSONL.

    A JSONL line that is not UTF-8 or not JSON raises a ``RecordError`` naming the line; with
    ``errors="yield"`` it is yielded in place of the record instead, and reading goes on (``--skip-bad``).
    The values are what the file holds: checking that each is an object is the caller's part.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Data file {str(path)!r} does not exist.")
    suffix, compressed = layout(path)
    try:
        if suffix == ".parquet":
            yield from _iter_parquet(path, compressed)
        elif suffix in (".csv", ".tsv"):
            yield from _iter_table(path, compressed, "\t" if suffix == ".tsv" else ",")
        elif suffix == ".json":
            yield from _iter_json(path, compressed)
        else:
            yield from _iter_jsonl(path, compressed, errors)
    except (gzip.BadGzipFile, EOFError) as err:
        raise RecordError(
            f"{path}: the file is named as gzip-compressed but cannot be decompressed ({err}). "
            "Check that the download is complete, or drop the .gz suffix if the file is plain text."
        ) from err


def _iter_parquet(path: Path, compressed: bool) -> Iterator[tuple[int, Any]]:
    from mmreward.optional import require

    if compressed:
        raise RecordError(
            f"{path}: Parquet compresses its own columns; unzip the file (gunzip) and read the .parquet."
        )
    table = require("pyarrow.parquet", "parquet").read_table(path)
    yield from enumerate(table.to_pylist(), start=1)


def _iter_table(path: Path, compressed: bool, delimiter: str) -> Iterator[tuple[int, Any]]:
    kind = "TSV" if delimiter == "\t" else "CSV"
    try:
        with io.TextIOWrapper(_open_binary(path, compressed), encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter=delimiter))
    except UnicodeDecodeError as err:
        raise RecordError(f"{path}: the {kind} file is not UTF-8 ({err}); re-encode it as UTF-8.") from err
    for number, row in enumerate(rows, start=1):
        if None in row:  # csv puts the cells beyond the header under the key None
            raise RecordError(
                f"{path}:{number + 1}: the row has {len(row) - 1 + len(row[None])} cells but the header names "
                f"{len(row) - 1}. Fix the row, or check the delimiter ({kind} files are split on "
                f"{'tabs' if delimiter == chr(9) else 'commas'})."
            )
        yield number, {"id": number - 1, **row} if "id" not in row else row


def _iter_json(path: Path, compressed: bool) -> Iterator[tuple[int, Any]]:
    try:
        with _open_binary(path, compressed) as handle:
            data = json.loads(handle.read().decode("utf-8"))
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


def _iter_jsonl(path: Path, compressed: bool, errors: str) -> Iterator[tuple[int, Any]]:
    with _open_binary(path, compressed) as handle:
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
        if data[:2] == b"\x1f\x8b":  # the gzip magic number: a compressed file under a plain name
            raise RecordError(
                f"{path}:{number}: the file is gzip-compressed; name it with a .gz suffix (e.g. "
                f"{path.name}.gz) to have it read as such, or gunzip it."
            ) from err
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
