"""Headline figures of a benchmark run, handed to ``benchmarks/run_all.py``.

Each ``bench_*.py`` calls :func:`record` for its headline ratio(s) after printing them. When the
environment variable ``MMREWARD_BENCH_HEADLINES`` names a file (run_all sets it), one JSON object
a line is appended there, with what was compared, both figures, the ratio, and the conditions of
the run (command line, UTC time, load average, torch threads), so that ``benchmarks/RESULTS.md``
quotes only ratios measured in one run and says under what load. Without the variable it does
nothing: a benchmark run by hand prints what it always printed.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import sys
from pathlib import Path

ENV = "MMREWARD_BENCH_HEADLINES"
ROOT = Path(__file__).resolve().parents[1]


def command_line() -> str:
    """This process's command line, the script relative to the repository root when it is inside it."""
    script = Path(sys.argv[0]).resolve()
    shown = str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else sys.argv[0]
    return shlex.join(["python", shown, *sys.argv[1:]])


def record(
    name: str,
    measurement: str,
    ratio: float,
    *,
    ours: float,
    baseline: float,
    unit: str,
    details: str | None = None,
    threads: int | None = None,
    extra: dict | None = None,
) -> None:
    """Append one headline to the file named by ``MMREWARD_BENCH_HEADLINES``; nothing when it is unset.

    ``name`` is the headline's stable key within its script (run_all replaces rows by script and
    name); ``measurement`` says in one line what is compared with what, on which model and data;
    ``ratio`` is how many times ours is better than the baseline (the script knows which way round
    its unit reads); ``details`` is the file under ``benchmarks/`` with setups and caveats;
    ``threads`` the torch threads of the measured process when it is not this one.
    """
    path = os.environ.get(ENV)
    if not path:
        return
    if threads is None and "torch" in sys.modules:
        threads = sys.modules["torch"].get_num_threads()
    row = {
        "script": Path(sys.argv[0]).name,
        "name": name,
        "measurement": measurement,
        "ours": float(ours),
        "baseline": float(baseline),
        "unit": unit,
        "ratio": float(ratio),
        "details": details,
        "command": command_line(),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load": [round(x, 2) for x in os.getloadavg()],
        "threads": threads,
        "extra": extra or {},
    }
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
