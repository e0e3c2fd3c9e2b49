"""Read canonical records (JSONL, JSON arrays, Parquet) into ``Preference``, ``Rating``, ``Ranking``
and, for scoring, unlabelled ``Candidate`` records.

Every error names the file, the record (line number and id) and the field. Media paths are
resolved relative to the file that names them, and checked to exist when the file is read, so a
run fails before training starts rather than an hour in.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmreward.data.files import RecordError, iter_raw, write_jsonl  # noqa: F401 (public here too)
from mmreward.data.process import check_labels, check_steps
from mmreward.data.validation import (
    BadRecord,
    bad_record,
    check_media_file,
    confine,
    did_you_mean,
    media_policy,
    require_object,
    warn_duplicate_ids,
)
from mmreward.types import MEDIA_FIELDS, Candidate, Preference, Process, Ranking, Rating, Sample

logger = logging.getLogger(__name__)

Record = Preference | Rating | Ranking | Process | Candidate
FieldMap = dict[str, str] | str | None
PATH_FIELDS = ("image", "images", "video", "source_image", "point_cloud")
SIDE_FIELDS = set(MEDIA_FIELDS) | {"score"}
SINGLE_PATH_FIELDS = ("image", "video", "source_image")
LABEL_FIELDS = {"chosen", "rejected", "candidates", "ranking", "score", "scores", "labels"}
RECORD_FIELDS = set(MEDIA_FIELDS) | {
    "prompt", "chosen", "rejected", "label", "margin", "aspects", "subset", "id",
    "candidates", "ranking", "score", "scores", "labels",
}  # fmt: skip


def _get(record: dict[str, Any], dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _set(record: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        record = record.setdefault(part, {})
    record[last] = value


def apply_field_map(raw: dict[str, Any], field_map: dict[str, str]) -> dict[str, Any]:
    """Rename fields: ``{"prompt": "caption", "chosen.image": "jpg_0"}`` (canonical <- source, dotted)."""
    sources = {src.split(".")[0] for src in field_map.values()}
    out = {k: v for k, v in raw.items() if k not in sources}
    for canonical, source in field_map.items():
        value = _get(raw, source)
        if value is not None:
            _set(out, canonical, value)
    return out


def _converter(field_map: FieldMap) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    if field_map is None:
        return lambda raw: [raw]
    if isinstance(field_map, dict):
        return lambda raw: [apply_field_map(raw, field_map)]
    from mmreward.data.formats import FORMATS

    if field_map not in FORMATS:
        close = difflib.get_close_matches(field_map, FORMATS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown data format {field_map!r}.{hint} Available: {', '.join(sorted(FORMATS))}.")
    return FORMATS[field_map]


class _Where:
    """File, line and id of the record being parsed, for error messages."""

    def __init__(self, path: Path, line: int, record_id: Any) -> None:
        self.path, self.line, self.id = path, line, record_id

    def __call__(self, field: str) -> str:
        rid = f" (id {self.id})" if self.id is not None else ""
        return f"{self.path}:{self.line}{rid} field {field!r}"

    def meta(self, field: str) -> dict[str, Any]:
        return {"source": str(self.path), "line": self.line, "id": self.id, "field": field}


def _number(value: Any, where: str, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(f"{where}: expected a number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise RecordError(f"{where}: the value is {value}; scores and labels must be finite numbers.")
    if (low is not None and value < low) or (high is not None and value > high):
        raise RecordError(f"{where}: {value} is outside [{low}, {high}].")
    return value


def _resolve_media(value: Any, base: Path, where: str, check: bool, media_root: str | None) -> Any:
    if isinstance(value, list):
        return [_resolve_media(v, base, where, check, media_root) for v in value]
    if not isinstance(value, str):
        return value
    path = Path(value) if Path(value).is_absolute() else base / value
    if check:
        check_media_file(path, where, "media", media_root)
    elif media_root is not None:
        confine(path, where, "media", media_root)
    return str(path)


def _check_path_types(kwargs: dict[str, Any], where: _Where, field: str) -> None:
    for name in SINGLE_PATH_FIELDS:
        value = kwargs.get(name)
        if value is not None and not isinstance(value, str):
            raise RecordError(
                f"{where(_join(field, name))}: expected a file path string, got {type(value).__name__} {value!r}."
            )
    images = kwargs.get("images")
    if images is not None and (not isinstance(images, list) or not all(isinstance(i, str) for i in images)):
        raise RecordError(
            f"{where(_join(field, 'images'))}: expected a list of file path strings, got {images!r}."
        )


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def parse_sample(
    obj: Any,
    prompt: str,
    base: Path,
    where: _Where,
    field: str,
    check_media: bool = True,
    media_root: str | None = None,
) -> Sample:
    """One candidate: a string (a text response) or an object of media fields."""
    if isinstance(obj, str):
        return Sample(prompt=prompt, response=obj, meta=where.meta(field))
    if not isinstance(obj, dict):
        raise RecordError(
            f"{where(field)}: expected a string or an object of media fields, got {type(obj).__name__}."
        )
    unknown = set(obj) - SIDE_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        close = difflib.get_close_matches(name, SIDE_FIELDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise RecordError(
            f"{where(field + '.' + name)}: unknown field.{hint} Known: {', '.join(sorted(SIDE_FIELDS))}."
        )
    kwargs = {k: v for k, v in obj.items() if k in MEDIA_FIELDS}
    if not any(v is not None for v in kwargs.values()):
        raise RecordError(f"{where(field)}: the candidate has no response and no media.")
    _check_path_types(kwargs, where, field)
    if kwargs.get("steps") is not None:
        check_steps(kwargs["steps"], where, _join(field, "steps"))
    for name in PATH_FIELDS:
        if name in kwargs:
            kwargs[name] = _resolve_media(
                kwargs[name], base, where(_join(field, name)), check_media, media_root
            )
    return Sample(prompt=prompt, meta=where.meta(field), **kwargs)


def _prompt(raw: dict[str, Any], where: _Where) -> str:
    prompt = raw.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RecordError(f"{where('prompt')}: every record needs a non-empty prompt string; got {prompt!r}.")
    return prompt


def _aspects(
    raw: dict[str, Any], where: _Where, key: str, low: float | None, high: float | None
) -> dict[str, float] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RecordError(f"{where(key)}: expected an object {{aspect: value}}, got {value!r}.")
    return {str(k): _number(v, where(f"{key}.{k}"), low, high) for k, v in value.items()}


def _unknown_field_error(raw: dict[str, Any], where: _Where, known: set[str]) -> RecordError | None:
    """An error naming the first unknown top-level field that is close to a known one (a typo)."""
    for name in sorted(set(raw) - RECORD_FIELDS):
        hint = did_you_mean(name, known)
        if hint:
            return RecordError(f"{where(name)}: unknown field.{hint}")
    return None


def parse_record(
    raw: dict[str, Any],
    base: Path,
    where: _Where,
    check_media: bool = True,
    media_root: str | None = None,
    unlabeled: bool = False,
) -> Record:
    """One canonical record: preference (``chosen``), process (``steps`` + ``labels``), ranking
    (``candidates``), rating (``score(s)``)
    or, with ``unlabeled``, a candidate (``prompt`` and media fields, no labels)."""
    if not isinstance(raw, dict):
        raise RecordError(f"{where('<record>')}: expected a JSON object, got {type(raw).__name__}.")
    prompt = _prompt(raw, where)
    common = {"subset": raw.get("subset"), "id": None if raw.get("id") is None else str(raw["id"])}
    if "chosen" in raw or "rejected" in raw:
        for side in ("chosen", "rejected"):
            if raw.get(side) is None:
                raise RecordError(f"{where(side)}: a preference record needs both 'chosen' and 'rejected'.")
        chosen = parse_sample(raw["chosen"], prompt, base, where, "chosen", check_media, media_root)
        rejected = parse_sample(raw["rejected"], prompt, base, where, "rejected", check_media, media_root)
        side_score = {
            s: raw[s].get("score") if isinstance(raw[s], dict) else None for s in ("chosen", "rejected")
        }
        return Preference(
            chosen=chosen,
            rejected=rejected,
            label=_number(raw.get("label", 1.0), where("label"), 0.0, 1.0),
            margin=None if raw.get("margin") is None else _number(raw["margin"], where("margin")),
            aspects=_aspects(raw, where, "aspects", 0.0, 1.0),
            chosen_score=None
            if side_score["chosen"] is None
            else _number(side_score["chosen"], where("chosen.score")),
            rejected_score=None
            if side_score["rejected"] is None
            else _number(side_score["rejected"], where("rejected.score")),
            **common,
        )
    if "labels" in raw:  # a process record: steps with a 0/1 label each
        sample_obj = {k: v for k, v in raw.items() if k in MEDIA_FIELDS}
        labels = check_labels(raw["labels"], sample_obj.get("steps"), where)
        sample = parse_sample(sample_obj, prompt, base, where, "", check_media, media_root)
        return Process(sample=sample, labels=labels, **common)
    if "candidates" in raw:
        return _parse_ranking(raw, prompt, base, where, (check_media, media_root), common)
    if "score" in raw or "scores" in raw:
        sample_obj = {k: v for k, v in raw.items() if k in MEDIA_FIELDS}
        if not any(v is not None for v in sample_obj.values()):
            typo = _unknown_field_error(raw, where, set(MEDIA_FIELDS))
            if typo is not None:
                raise typo
        score = raw.get("score")
        return Rating(
            sample=parse_sample(sample_obj, prompt, base, where, "", check_media, media_root),
            score=None if score is None else _number(score, where("score")),
            scores=_aspects(raw, where, "scores", None, None),
            **common,
        )
    return _parse_candidate(raw, prompt, base, where, (check_media, media_root), common, unlabeled)


def _parse_candidate(
    raw: dict[str, Any], prompt: str, base: Path, where: _Where, media: tuple, common: dict, unlabeled: bool
) -> Candidate:
    """A record with no labels: a prompt and media fields, as a generation loop writes them."""
    typo = _unknown_field_error(raw, where, LABEL_FIELDS | set(MEDIA_FIELDS))
    if typo is not None:
        raise typo
    sample_obj = {k: v for k, v in raw.items() if k in MEDIA_FIELDS and v is not None}
    if not sample_obj:
        raise RecordError(
            f"{where('<record>')}: cannot tell the record's kind: it has a prompt but nothing to score. "
            f"A candidate needs a response or media ({', '.join(MEDIA_FIELDS)}); a preference needs "
            "'chosen' and 'rejected', a rating 'score' or 'scores', a ranking 'candidates' and 'ranking'."
        )
    if not unlabeled:
        raise RecordError(
            f"{where('<record>')}: the record has no labels (a candidate: prompt + "
            f"{', '.join(sorted(sample_obj))}); training and evaluation need a preference, a rating or a "
            "ranking (docs/data.md). Score unlabelled records with `mmreward score` or Scorer.score_records."
        )
    return Candidate(sample=parse_sample(sample_obj, prompt, base, where, "", *media), **common)


def _parse_ranking(
    raw: dict[str, Any], prompt: str, base: Path, where: _Where, media: tuple, common: dict
) -> Ranking:
    candidates = raw["candidates"]
    if not isinstance(candidates, list) or len(candidates) < 2:
        raise RecordError(f"{where('candidates')}: a ranking needs a list of at least 2 candidates.")
    order = raw.get("ranking")
    if not isinstance(order, list) or sorted(order) != list(range(len(candidates))):
        raise RecordError(
            f"{where('ranking')}: expected a permutation of 0..{len(candidates) - 1} (best first); got {order!r}."
        )
    samples = [
        parse_sample(c, prompt, base, where, f"candidates.{i}", *media) for i, c in enumerate(candidates)
    ]
    return Ranking(candidates=samples, order=[int(i) for i in order], **common)


def read_records(
    path: str | Path,
    field_map: FieldMap = None,
    skip_bad: bool = False,
    check_media: bool = True,
    media_root: str | Path | None = None,
    bad_records: list[BadRecord] | None = None,
    unlabeled: bool = False,
) -> list[Record]:
    """Read every record of a data file.

    Args:
        path: A ``.jsonl``, ``.json``, ``.csv`` or ``.parquet`` file (layouts: ``iter_raw``) in the
            canonical schema (DESIGN.md), or in a public format that ``field_map`` names.
        field_map: Renames ``{canonical: source}`` (dotted), or the name of a public format in
            ``mmreward.data.formats.FORMATS``.
        skip_bad: Log and skip records that do not parse (bad lines included), instead of raising
            on the first.
        check_media: Check that media paths are regular files while reading.
        media_root: Refuse media paths that resolve outside this folder; default the media policy's
            (``mmreward.data.validation.set_media_policy``).
        bad_records: With ``skip_bad``, one ``BadRecord`` per skipped record is appended here.
        unlabeled: Also accept records with no labels, read as ``Candidate`` (for scoring). Off by
            default, so that a training or evaluation file without labels is refused by name.

    Raises:
        RecordError / FileNotFoundError naming the file, line, id and field (unless ``skip_bad``).
    """
    path = Path(path)
    convert, base = _converter(field_map), path.parent
    root = media_policy().media_root if media_root is None else str(media_root)
    records: list[Record] = []
    bad: list[BadRecord] = []
    ids: list[tuple[Any, int]] = []
    for line, raw in iter_raw(path, errors="yield" if skip_bad else "raise"):
        record_id = raw.get("id") if isinstance(raw, dict) else None
        try:
            if isinstance(raw, Exception):
                raise raw
            for converted in _convert(
                convert, require_object(raw, path, line), _Where(path, line, record_id)
            ):
                where = _Where(path, line, converted.get("id", record_id))
                records.append(parse_record(converted, base, where, check_media, root, unlabeled))
                ids.append((records[-1].id, line))
        except (RecordError, OSError, ValueError, TypeError) as err:
            if not skip_bad:
                raise
            bad.append(bad_record(path, line, record_id, err))
    if bad:
        logger.warning("Skipped %d bad record(s) of %s; the first: %s", len(bad), path, bad[0].error)
    if bad_records is not None:
        bad_records.extend(bad)
    warn_duplicate_ids(ids, path)
    if not records:
        raise RecordError(f"{path}: no usable records" + (f" ({len(bad)} skipped as bad)." if bad else "."))
    return records


def _convert(convert: Callable, raw: dict[str, Any], where: _Where) -> list[dict[str, Any]]:
    """Map a raw record onto the canonical names; a format that chokes on it names the record."""
    try:
        converted = convert(raw)
    except (KeyError, IndexError, AttributeError, TypeError) as err:
        raise RecordError(
            f"{where('<record>')}: the data format could not read this record ({type(err).__name__}: {err}). "
            "Check it against the format, or pass --format canonical."
        ) from err
    for item in converted:
        require_object(item, where.path, where.line)
    return converted
