"""benchmarks/gpu_check.py, the one prepared run for a lent GPU machine, stays runnable: its CPU dry
run goes through every check at tiny size (DDP on gloo) and writes a JSON of what it measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_dry_run_passes_every_check_and_writes_its_results(tmp_path):
    out = tmp_path / "gpu_check.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu-dry-run", "--output", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["sdpa"]["agree"], results["sdpa"]
    assert results["ddp"]["ran"] and results["ddp"]["weights_equal_across_ranks"], results["ddp"]
    assert results["train_lm"]["tokens_per_s"] > 0, results["train_lm"]
