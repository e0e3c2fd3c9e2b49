"""Run the benchmark scripts and rewrite the headline table of ``benchmarks/RESULTS.md`` from this run.

Each ``bench_*.py`` runs in its own subprocess, with its default arguments, one after another,
with ``MMREWARD_BENCH_HEADLINES`` naming a temp file where it records its headline ratios
(``benchmarks/headline.py``). The rows are merged into ``benchmarks/results/headlines.json``: the
rows of a script that ran replace its old ones, the rows of scripts that did not run stay with
their own dates, and a script that failed (or recorded nothing) keeps its old rows marked stale.
The table between the ``run_all`` markers of RESULTS.md is then generated from that file, so every
ratio in it was measured with its baseline in one run, under the load it names.

Run: .venv/bin/python benchmarks/run_all.py [--only scoring trl_training ...] [--dry-run]
(or `make bench`). Short names are the script names without ``bench_`` and ``.py``, or their
unique start (``trl`` for ``trl_training``). Scripts run with ``HF_HUB_OFFLINE=1`` unless it is set:
every model they use is built locally.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from headline import ENV

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HEADLINES = HERE / "results" / "headlines.json"
RESULTS = HERE / "RESULTS.md"
BEGIN, END = "<!-- run_all: begin -->", "<!-- run_all: end -->"


def merge(table: dict, script: str, rows: list[dict] | None, when: str) -> dict:
    """``table`` (headlines.json's content) after a run of ``script`` at ``when``.

    ``rows`` replace every old row of the script; ``None`` (the run failed) keeps its old rows,
    marked stale, and lists the script as failed. Rows are keyed by script and headline name.
    """
    old = table.get("rows", [])
    failed = {k: v for k, v in table.get("failed", {}).items() if k != script}
    if rows is None:
        failed[script] = when
        kept = [{**r, "stale": True} if r["script"] == script else r for r in old]
    else:
        fresh = {(r["script"], r["name"]): r for r in rows}  # a name recorded twice: the last wins
        kept = [r for r in old if r["script"] != script] + list(fresh.values())
    kept.sort(key=lambda r: (r["script"], r["name"]))
    return {"rows": kept, "failed": dict(sorted(failed.items()))}


def _number(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render(table: dict) -> str:
    """The markdown table of headlines.json, and the scripts whose last run failed."""
    lines = [
        "| area / script | measurement | ours | baseline | ratio | measured (UTC, load average) | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table.get("rows", []):
        area = f"`{r['script']}`"
        if r.get("details"):
            area += f" ([{Path(r['details']).name}]({r['details']}))"
        what = r["measurement"]
        if r.get("extra"):
            what += "; " + ", ".join(f"{k} {_number(v)}" for k, v in r["extra"].items())
        load = r["load"][0]
        before = r.get("load_before")
        loads = f"{before:.1f} before, {load:.1f} after" if before is not None else f"{load:.1f} after"
        threads = f", {r['threads']} torch threads" if r.get("threads") else ""
        measured = f"{r['time'][:16].replace('T', ' ')}, load {loads}{threads}"
        if r.get("stale"):
            failed = table["failed"].get(r["script"], "?")[:16].replace("T", " ")
            measured += f" (**stale**: the run of {failed} failed)"
        lines.append(
            f"| {area} | {what} | {r['ours']:.4g} {r['unit']} | {r['baseline']:.4g} {r['unit']} | "
            f"**{r['ratio']:.2f}x** | {measured} | `{r['command']}` |"
        )
    if table.get("failed"):
        failed = ", ".join(f"`{s}` ({when[:16].replace('T', ' ')})" for s, when in table["failed"].items())
        lines.append(f"\nFailed in their last run (see their output): {failed}.")
    return "\n".join(lines)


def section(path: Path) -> tuple[str, int, int]:
    """``path``'s text and where its generated section starts and ends; an error naming it without markers."""
    text = path.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(
            f"{path}: no '{BEGIN}' ... '{END}' markers (in that order) to write the table between"
        )
    return text, start + len(BEGIN), end


def rewrite_section(path: Path, body: str) -> None:
    """Replace the text between the run_all markers of ``path`` with ``body``, leaving the rest as is."""
    text, start, end = section(path)
    path.write_text(text[:start] + "\n" + body + "\n" + text[end:])


def run_one(script: Path) -> list[dict] | None:
    """Run one script with the headline file set; its rows, or None when it failed or recorded none."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "headlines.jsonl"
        env = {**os.environ, ENV: str(out)}
        env.setdefault("HF_HUB_OFFLINE", "1")  # every model is built locally; no hub calls
        before = os.getloadavg()
        print(f"\n=== {script.name} (load average {before[0]:.2f})", flush=True)
        code = subprocess.run([sys.executable, str(script.relative_to(ROOT))], cwd=ROOT, env=env).returncode
        after = os.getloadavg()
        rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    print(f"=== {script.name}: exit status {code}, {len(rows)} headline(s), load average {after[0]:.2f}")
    if code != 0 or not rows:
        return None
    return [{**r, "load_before": round(before[0], 2)} for r in rows]


def main() -> int:
    scripts = {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="+", help=f"scripts to run, by short name or its start: {', '.join(scripts)}"
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would run, run nothing")
    args = parser.parse_args()
    chosen = list(scripts.values())
    if args.only:
        chosen = []
        for name in args.only:
            found = [k for k in scripts if k == name] or [k for k in scripts if k.startswith(name)]
            if len(found) != 1:
                parser.error(f"--only {name!r} names {len(found)} scripts; short names: {', '.join(scripts)}")
            chosen.append(scripts[found[0]])
    if args.dry_run:
        for script in chosen:
            print(f"{ENV}=<temp file> {sys.executable} {script.relative_to(ROOT)}")
        print(
            f"then: merge into {HEADLINES.relative_to(ROOT)}, rewrite the table in {RESULTS.relative_to(ROOT)}"
        )
        return 0
    section(RESULTS)  # no markers: stop before the first run, not after it
    failed = []
    for script in chosen:
        rows = run_one(script)
        if rows is None:
            failed.append(script.name)
        when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        table = json.loads(HEADLINES.read_text()) if HEADLINES.exists() else {}
        table = merge(table, script.name, rows, when)
        HEADLINES.write_text(json.dumps(table, indent=1) + "\n")  # after each script: a crash loses one
        rewrite_section(RESULTS, render(table))
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
