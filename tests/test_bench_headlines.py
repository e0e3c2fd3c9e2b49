"""The benchmark headline plumbing (``benchmarks/headline.py``, ``benchmarks/run_all.py``), no benchmark run:
``record`` writes only when run_all asks it to, the merge keeps the rows of scripts that did not run,
and the RESULTS.md rewrite touches only the generated section."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import headline  # noqa: E402
import run_all  # noqa: E402


def row(script: str, name: str, ratio: float = 2.0, time: str = "2026-12-01T10:00:00+00:00") -> dict:
    return {"script": script, "name": name, "measurement": f"{name} vs baseline", "ours": 1.0,
            "baseline": ratio, "unit": "s", "ratio": ratio, "details": None, "command": f"python {script}",
            "time": time, "load": [1.0, 1.0, 1.0], "threads": 1, "extra": {}}  # fmt: skip


def test_record_writes_nothing_without_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(headline.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    headline.record("x", "a vs b", 2.0, ours=1.0, baseline=2.0, unit="s")
    assert list(tmp_path.iterdir()) == []


def test_record_appends_a_well_formed_row(monkeypatch, tmp_path):
    out = tmp_path / "headlines.jsonl"
    monkeypatch.setenv(headline.ENV, str(out))
    monkeypatch.setattr(sys, "argv", [str(headline.ROOT / "benchmarks" / "bench_x.py"), "--repeats", "1"])
    headline.record("first", "a vs b, tiny", 2.5, ours=4.0, baseline=10.0, unit="ms", details="results/x.md")
    headline.record(
        "second", "c vs d", 1.5, ours=3, baseline=2, unit="pairs/s", threads=4, extra={"acc": 0.9}
    )
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert first["script"] == "bench_x.py" and first["name"] == "first"
    assert (first["ours"], first["baseline"], first["ratio"], first["unit"]) == (4.0, 10.0, 2.5, "ms")
    assert first["command"] == "python benchmarks/bench_x.py --repeats 1"
    assert first["time"].endswith("+00:00") and len(first["load"]) == 3
    assert first["details"] == "results/x.md" and first["extra"] == {}
    assert second["threads"] == 4 and second["extra"] == {"acc": 0.9}


def test_merge_replaces_the_scripts_that_ran_and_keeps_the_others():
    table = run_all.merge({}, "bench_a.py", [row("bench_a.py", "one"), row("bench_a.py", "two")], "t0")
    table = run_all.merge(table, "bench_b.py", [row("bench_b.py", "one", 3.0)], "t0")
    later = "2026-12-02T10:00:00+00:00"
    table = run_all.merge(table, "bench_a.py", [row("bench_a.py", "one", 5.0, time=later)], "t1")
    rows = {(r["script"], r["name"]): r for r in table["rows"]}
    assert set(rows) == {("bench_a.py", "one"), ("bench_b.py", "one")}  # a's "two" went with its old run
    assert rows["bench_a.py", "one"]["ratio"] == 5.0 and rows["bench_a.py", "one"]["time"] == later
    assert rows["bench_b.py", "one"]["ratio"] == 3.0 and rows["bench_b.py", "one"]["time"].startswith(
        "2026-12-01"
    )
    assert table["failed"] == {}


def test_a_failed_script_keeps_its_rows_marked_stale_until_it_runs_again():
    table = run_all.merge({}, "bench_a.py", [row("bench_a.py", "one")], "t0")
    table = run_all.merge(table, "bench_b.py", [row("bench_b.py", "one")], "t0")
    table = run_all.merge(table, "bench_a.py", None, "2026-12-03T09:00:00+00:00")
    rows = {r["script"]: r for r in table["rows"]}
    assert rows["bench_a.py"].get("stale") and not rows["bench_b.py"].get("stale")
    assert table["failed"] == {"bench_a.py": "2026-12-03T09:00:00+00:00"}
    text = run_all.render(table)
    assert "**stale**" in text and "bench_a.py" in text.split("Failed in their last run")[1]
    table = run_all.merge(table, "bench_a.py", [row("bench_a.py", "one")], "t2")
    assert table["failed"] == {} and not any(r.get("stale") for r in table["rows"])


def test_render_gives_one_table_row_per_headline():
    table = run_all.merge({}, "bench_a.py", [row("bench_a.py", "one"), row("bench_a.py", "two", 7.25)], "t0")
    lines = run_all.render(table).splitlines()
    assert len(lines) == 4 and all(line.count("|") == 8 for line in lines)
    assert "**7.25x**" in lines[3] and "`python bench_a.py`" in lines[3]


def test_rewrite_changes_only_the_text_between_the_markers(tmp_path):
    path = tmp_path / "RESULTS.md"
    before, after = "# Results\n\nintro\n\n", "\n\n## Details\n\nhand-written prose\n"
    path.write_text(f"{before}{run_all.BEGIN}\nold table\n{run_all.END}{after}")
    run_all.rewrite_section(path, "| new | table |")
    assert path.read_text() == f"{before}{run_all.BEGIN}\n| new | table |\n{run_all.END}{after}"
    run_all.rewrite_section(path, "again")  # idempotent layout: the markers stay, once each
    assert path.read_text() == f"{before}{run_all.BEGIN}\nagain\n{run_all.END}{after}"


def test_rewrite_refuses_a_file_without_markers(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\nno markers here\n")
    with pytest.raises(ValueError, match="RESULTS.md"):
        run_all.rewrite_section(path, "table")
    assert path.read_text() == "# Results\n\nno markers here\n"


def test_the_real_results_file_has_its_markers():
    text, start, end = run_all.section(run_all.RESULTS)
    table = text[start:end]
    assert "| area / script |" in table and "bench_scoring.py" in table  # the generated table sits there
