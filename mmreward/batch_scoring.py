"""Score a data file into a JSONL file: batched, written as it goes, resumable, bad records skipped on request.

Across workers, each scores one ``Shard`` of the input into its own file, and ``merge_shards`` joins
them into the file one process would have written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass
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
    shard: Shard | None = None,
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

    With ``shard``, only that shard's records are scored, into ``shard.path(output_path)`` (its bad
    records into that file's ``bad_path``); ``resume`` resumes that file. A shard that finishes writes
    ``shard.done_path(output_path)``, which ``merge_shards`` checks for.

    Returns:
        Counts: ``scored``, ``skipped_done`` (resume) and ``bad``.
    """
    from tqdm.auto import tqdm

    input_path, final_path = Path(input_path), Path(output_path)
    output_path = final_path if shard is None else shard.path(final_path)
    if shard is not None:  # not finished until this run finishes; a stale bad file would repeat lines
        shard.done_path(final_path).unlink(missing_ok=True)
        bad_path(output_path).unlink(missing_ok=True)
    done = _done_lines(output_path) if resume else set()
    if not resume and output_path.exists():
        output_path.unlink()
    bad: list[BadRecord] = []
    records = read_records(
        input_path, field_map, skip_bad=skip_bad, media_root=media_root, bad_records=bad, unlabeled=True
    )
    if shard is not None:
        records, marker = _select_shard(shard, records, bad, input_path)
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
    if shard is not None:
        shard.done_path(final_path).write_text(json.dumps(marker) + "\n")
    return counts


def _select_shard(shard: Shard, records: list[Record], bad: list[BadRecord], input_path: Path):
    """The shard's records (``bad`` keeps only the shard's), and what its ``done_path`` will hold: the
    input, how many lines it has (records or bad) and the lines this shard was given."""
    total = len({r_line(r) for r in records} | {b.line for b in bad})
    records = [r for r in records if shard.holds(r_line(r))]
    bad[:] = [b for b in bad if shard.holds(b.line)]
    lines = sorted({r_line(r) for r in records} | {b.line for b in bad})
    return records, {"input": str(input_path), "input_lines": total, **asdict(shard), "lines": lines}


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


@dataclass(frozen=True)
class Shard:
    """One worker's part of an input file: the records whose input line number is ``index`` mod ``count``.

    Interleaved rather than contiguous, so that each worker gets a like share of a file whose records
    grow costlier along it (longer videos, more candidates), and every record of a line stays in one
    shard. Each shard writes ``OUTPUT.shard-I-of-N.jsonl``; ``merge_shards`` puts them back in input order.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(
                f"A shard index runs from 0 to the number of shards - 1; got --shard-index {self.index} "
                f"of --num-shards {self.count}. Give each of the N workers its own index 0..N-1."
            )

    def holds(self, line: int) -> bool:
        """Whether input line ``line`` is this shard's to score."""
        return line % self.count == self.index

    def path(self, output: str | Path) -> Path:
        """This shard's output file: ``scores.jsonl`` -> ``scores.shard-0-of-2.jsonl``."""
        output = Path(output)
        return output.with_name(f"{output.stem}.shard-{self.index}-of-{self.count}{output.suffix}")

    def done_path(self, output: str | Path) -> Path:
        """Written when the shard has finished: its input and the input lines it was given."""
        output = Path(output)
        return output.with_name(f"{output.stem}.shard-{self.index}-of-{self.count}.done.json")

    def __str__(self) -> str:
        return f"shard {self.index} of {self.count}"


def merge_shards(output_path: str | Path, num_shards: int) -> dict[str, int]:
    """Join the ``num_shards`` shard files of ``output_path`` into it, in input order, and their bad files.

    Every shard must have finished (its ``done_path`` exists) and hold each input line it was given
    exactly once, scored or named as bad; shards must agree on the input and the model. The merged
    file is what one process would have written (``provenance`` on the first line only); the shard
    files are left in place. The merge holds the output's text in memory.

    Raises:
        ValueError naming the shard (and the lines) that is missing, unfinished or does not fit.

    Returns:
        Counts: ``merged`` (records written), ``bad`` and ``shards``.
    """
    output_path = Path(output_path)
    shards = [Shard(i, num_shards) for i in range(num_shards)]
    markers = [_finished_marker(shard, output_path) for shard in shards]
    _check_same_input(shards, markers)
    rows: list[tuple[int, str]] = []
    bad_rows: list[tuple[int, str]] = []
    provenance: dict[str, Any] | None = None
    for shard, marker in zip(shards, markers):
        scored, shard_provenance = _read_shard_lines(shard.path(output_path))
        named_bad, _ = _read_shard_lines(bad_path(shard.path(output_path)))
        _check_shard_lines(shard, output_path, marker["lines"], scored + named_bad)
        if provenance is not None and shard_provenance not in (None, provenance):
            raise ValueError(
                f"{shard} ({shard.path(output_path)}) was scored by another model than the shards before "
                f"it ({shard_provenance} vs {provenance}); rerun it with the same --model."
            )
        provenance = provenance or shard_provenance
        rows += [(line, text) for line, _, text in scored]
        bad_rows += [(line, text) for line, _, text in named_bad]
    rows.sort(key=lambda row: row[0])  # stable: a line's records keep their order
    bad_rows.sort(key=lambda row: row[0])
    if rows and provenance is not None:
        rows[0] = (rows[0][0], json.dumps({**json.loads(rows[0][1]), "provenance": provenance}) + "\n")
    _write_atomically(output_path, [text for _, text in rows])
    if any(bad_path(shard.path(output_path)).exists() for shard in shards):
        _write_atomically(bad_path(output_path), [text for _, text in bad_rows])
    return {"merged": len(rows), "bad": len(bad_rows), "shards": num_shards}


def _finished_marker(shard: Shard, output_path: Path) -> dict[str, Any]:
    done = shard.done_path(output_path)
    if done.exists():
        return json.loads(done.read_text())
    state = "was started but has not finished" if shard.path(output_path).exists() else "has no output"
    raise ValueError(
        f"Cannot merge {output_path}: {shard} ({shard.path(output_path)}) {state} (no {done.name}). "
        f"Run it, or rerun it with --resume: mmreward score ... --output {output_path} "
        f"--num-shards {shard.count} --shard-index {shard.index} --resume"
    )


def _check_same_input(shards: list[Shard], markers: list[dict[str, Any]]) -> None:
    first = markers[0]
    for shard, marker in zip(shards, markers):
        if (
            marker["input_lines"] != first["input_lines"]
            or Path(marker["input"]).name != Path(first["input"]).name
        ):
            raise ValueError(
                f"{shard} scored another input than shard 0: {marker['input']} ({marker['input_lines']} "
                f"lines) vs {first['input']} ({first['input_lines']} lines). Rerun {shard} on shard 0's input."
            )
    given = sum(len(marker["lines"]) for marker in markers)
    if given != first["input_lines"]:
        raise ValueError(
            f"The {len(shards)} shards were given {given} input lines, the input has {first['input_lines']}; "
            "rerun the shards with the same --input and --format."
        )


def _read_shard_lines(path: Path) -> tuple[list[tuple[int, str | None, str]], dict[str, Any] | None]:
    """``(line, id, text)`` of each JSON line of a shard's file (none if it is absent), and the provenance
    its lines carry, taken off them (a resumed shard carries it once per run)."""
    if not path.exists():
        return [], None
    rows, provenance = [], None
    for number, text in enumerate(path.read_text().splitlines(keepends=True), 1):
        try:
            row = json.loads(text)
            line = int(row["line"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{path}:{number} is not a scored line ({type(err).__name__}: {err}); rerun that shard with --resume."
            ) from err
        if "provenance" in row:
            provenance = row.pop("provenance")
            text = json.dumps(row) + "\n"
        rows.append((line, None if row.get("id") is None else str(row["id"]), text))
    return rows, provenance


def _check_shard_lines(shard: Shard, output_path: Path, expected: list[int], rows: list[tuple]) -> None:
    """Each line the shard was given appears (scored or bad) and no line is repeated or foreign."""
    where = f"{shard} ({shard.path(output_path)})"
    foreign = sorted({line for line, _, _ in rows if not shard.holds(line)})
    if foreign:
        raise ValueError(
            f"Cannot merge: {where} holds input line {foreign[0]}, which is shard {foreign[0] % shard.count}'s: the shard "
            f"files come from different --num-shards. Rerun {shard} with --num-shards {shard.count}."
        )
    repeated = [key for key, n in Counter((line, rid) for line, rid, _ in rows).items() if n > 1]
    missing = sorted(set(expected) - {line for line, _, _ in rows})
    unknown = sorted({line for line, _, _ in rows} - set(expected))
    problems = (
        ("repeats input line(s)", [line for line, _ in repeated], "Rerun it without --resume."),
        ("is missing input line(s)", missing, "Rerun it with --resume to score them."),
        ("holds line(s) its input did not have:", unknown, "Rerun it without --resume."),
    )
    for problem, lines, fix in problems:
        if lines:
            more = f" (and {len(lines) - 5} more)" if len(lines) > 5 else ""
            shown = ", ".join(map(str, sorted(lines)[:5]))
            raise ValueError(f"Cannot merge: {where} {problem} {shown}{more}. {fix}")


def _write_atomically(path: Path, lines: list[str]) -> None:
    """Write ``lines`` to ``path`` through a temporary file, so that a reader never sees half of it."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(lines))
    os.replace(partial, path)
