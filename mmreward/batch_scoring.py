"""Score a data file into a JSONL file: batched, written as it goes, resumable, bad records skipped on request."""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmreward.data.records import FieldMap, Record, RecordError, read_records
from mmreward.data.validation import BadRecord, bad_record
from mmreward.evaluation import flatten
from mmreward.types import Preference, Process, Ranking, Rating, RewardOutput

logger = logging.getLogger(__name__)


def _done_lines(output: Path) -> set[int]:
    """Line numbers of the input already scored in ``output`` (a cut-off last line is dropped)."""
    if not output.exists():
        return set()
    done, lines = set(), output.read_text().splitlines(keepends=True)
    keep = []
    for text in lines:
        try:
            done.add(int(json.loads(text)["line"]))
            keep.append(text)
        except (json.JSONDecodeError, KeyError, ValueError):
            break  # an interrupted write: keep what came before it
    output.write_text("".join(keep))
    return done


def _plain(output: RewardOutput) -> dict[str, Any]:
    return {k: v for k, v in asdict(output).items() if v is not None and k != "provenance"}


def _labels(record: Record) -> dict[str, Any]:
    """The labels a record came with, echoed beside its scores (none for a candidate)."""
    if isinstance(record, Preference):
        names = ("label", "margin", "aspects", "chosen_score", "rejected_score")
    elif isinstance(record, Rating):
        names = ("score", "scores")
    elif isinstance(record, Ranking):
        return {"ranking": list(record.order)}
    elif isinstance(record, Process):
        return {"labels": list(record.labels)}
    else:
        return {}
    return {name: getattr(record, name) for name in names if getattr(record, name) is not None}


def record_result(record: Record, outputs: list[RewardOutput]) -> dict[str, Any]:
    """One record's scores in the output schema (docs/scoring.md), without ``line`` and ``provenance``.

    A candidate or a rating gives the ``RewardOutput`` fields (``score``, ``raw``, ...) at the top
    level, a preference ``chosen`` and ``rejected``, a ranking ``candidates`` (input order); a labelled
    record's labels come back under ``labels``, its ``subset`` under ``subset``.
    """
    if isinstance(record, Preference):
        result = {"chosen": _plain(outputs[0]), "rejected": _plain(outputs[1])}
    elif isinstance(record, Ranking):
        result = {"candidates": [_plain(o) for o in outputs]}
    else:
        result = _plain(outputs[0])
    labels = _labels(record)
    if labels:
        result["labels"] = labels
    if record.subset is not None:
        result["subset"] = record.subset
    return result


def score_records(reward, records: list[Record], batch_size: int = 32) -> list[dict[str, Any]]:
    """Score records of any kind (candidates, preferences, ratings, rankings) with ``reward``.

    Returns:
        One dict per record: ``id`` and ``record_result``'s fields, as ``mmreward score`` writes them.
    """
    results = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        samples, spans = flatten(chunk)
        outputs = reward.score_samples(samples)
        results += [{"id": r.id, **record_result(r, outputs[s])} for r, s in zip(chunk, spans)]
    return results


def score_file(
    scorer,
    input_path: str | Path,
    output_path: str | Path,
    resume: bool = False,
    skip_bad: bool = False,
    field_map: FieldMap = None,
    progress: bool = True,
    media_root: str | Path | None = None,
    batch_size: int = 32,
) -> dict[str, int]:
    """Score every record of ``input_path`` and append one JSON line per record to ``output_path``.

    ``scorer`` is any reward (``mmreward.protocols.Reward``): a ``Scorer``, a judge, a user's class;
    ``batch_size`` records go to its ``score_samples`` at a time, and are written after each call.

    Records may be unlabelled candidates (a prompt and media) or labelled records of any kind.
    Each output line holds the input ``line`` and ``id`` and the ``RewardOutput`` fields (for a
    preference, ``chosen`` and ``rejected``; for a ranking, ``candidates``), and a labelled record's
    labels under ``labels`` (``record_result``; docs/scoring.md). Lines are flushed per
    batch, so an interrupted run keeps what it scored; ``resume`` skips input lines already there.
    With ``skip_bad``, every record left out (a bad line, field or media file) is counted and named,
    with its error, in ``bad_path(output_path)``, rewritten on each run.

    Returns:
        Counts: ``scored``, ``skipped_done`` (resume) and ``bad``.
    """
    from tqdm.auto import tqdm

    input_path, output_path = Path(input_path), Path(output_path)
    done = _done_lines(output_path) if resume else set()
    if not resume and output_path.exists():
        output_path.unlink()
    bad: list[BadRecord] = []
    records = read_records(
        input_path, field_map, skip_bad=skip_bad, media_root=media_root, bad_records=bad, unlabeled=True
    )
    todo = [r for r in records if r_line(r) not in done]
    counts = {"scored": 0, "skipped_done": len(records) - len(todo), "bad": len(bad)}
    output_path.parent.mkdir(parents=True, exist_ok=True)
    provenance_written = False
    with (
        output_path.open("a") as handle,
        bad_path(output_path).open("w") if skip_bad else contextlib.nullcontext() as bad_handle,
        tqdm(total=len(todo), disable=not progress, desc="scoring", unit="rec") as bar,
    ):
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            _write_bad(bad_handle, bad)
            for record, outputs in _score_chunk(scorer, chunk, skip_bad, counts, bad):
                line = {"line": r_line(record), "id": record.id, **record_result(record, outputs)}
                if not provenance_written:
                    line["provenance"] = outputs[0].provenance
                    provenance_written = True
                handle.write(json.dumps(line) + "\n")
                counts["scored"] += 1
            handle.flush()
            bar.update(len(chunk))
        _write_bad(bad_handle, bad)
    return counts


def _write_bad(handle: Any, bad: list[BadRecord]) -> None:
    if handle is not None:
        handle.writelines(item.to_json() + "\n" for item in bad)
        handle.flush()
    bad.clear()


def bad_path(output_path: str | Path) -> Path:
    """Where a ``--skip-bad`` run names the records it left out: ``scores.jsonl`` -> ``scores.bad.jsonl``."""
    output_path = Path(output_path)
    return output_path.with_name(output_path.stem + ".bad.jsonl")


def r_line(record: Record) -> int:
    """The input line number a record came from."""
    sample = (
        record.chosen
        if isinstance(record, Preference)
        else record.candidates[0]
        if isinstance(record, Ranking)
        else record.sample
    )
    return int(sample.meta.get("line", -1))


def _score_chunk(scorer, chunk: list[Record], skip_bad: bool, counts: dict[str, int], bad: list[BadRecord]):
    """Score a chunk in one batch; when it fails and ``skip_bad`` is on, find the bad records one by one."""
    samples, spans = flatten(chunk)
    try:
        outputs = scorer.score_samples(samples)
        return [(r, outputs[s]) for r, s in zip(chunk, spans)]
    except (FileNotFoundError, ValueError, TypeError, OSError, RecordError) as err:
        if not skip_bad:
            raise
        logger.debug("batch failed (%s); scoring its records one by one", err)
    good = []
    for record, span in zip(chunk, spans):
        try:
            good.append((record, scorer.score_samples(samples[span])))
        except (FileNotFoundError, ValueError, TypeError, OSError) as err:
            counts["bad"] += 1
            first = samples[span][0].meta
            bad.append(bad_record(first.get("source", "?"), r_line(record), record.id, err))
            logger.warning("Skipped a bad record: %s", err)
    return good
