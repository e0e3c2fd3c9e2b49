"""The quick-start edit model learns: Spearman on graded edits, the correct edit beats each other
kind, the model beats its instruction-blind controls, and reloads reproduce scores.

The quick start runs once per module through its demo (``mmreward demo --task edit``), about two
minutes on a 2-core CPU; the tests read its metrics.json and the exported model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmreward.cli import find_demos
from mmreward.data.records import read_records
from mmreward.scoring import load


@pytest.fixture(scope="module")
def edit_demo(tmp_path_factory) -> tuple[Path, dict]:
    from integrations.demos.edit import run

    out = tmp_path_factory.mktemp("edit-demo")
    return out, run(out)


def _checkpoint(run: Path) -> Path:
    found = sorted(run.rglob("*.ckpt"))
    assert found, f"no Lightning checkpoint under {run}"
    return found[-1]


def test_quickstart_edit_scorer_tracks_graded_edits(edit_demo):
    _, metrics = edit_demo
    assert metrics["heldout_correlations"]["spearman"] >= 0.7, metrics["heldout_correlations"]


@pytest.mark.parametrize("other, bar", [("no_op", 0.9), ("wrong_object", 0.9), ("near_miss", 0.85)])
def test_edit_scorer_prefers_the_correct_edit(edit_demo, other, bar):
    # no-op and wrong object: issue 3's 0.9. The near miss (the named object changed the wrong way)
    # came with the issue-13 world: 0.955 +- 0.025 over five seeds, so its bar sits at mean - 3 sd.
    _, metrics = edit_demo
    assert metrics["correct_beats"][other] >= bar, metrics["correct_beats"]


@pytest.mark.parametrize("control", ["instruction_shuffled", "pixel_distance_to_source", "off_palette_share"])
def test_edit_scorer_beats_its_controls(edit_demo, control):
    """Issue 13: the same model under shuffled instructions, and instruction-blind pixel baselines,
    rank the same held-out candidates near chance; the model stands far above each."""
    _, metrics = edit_demo
    margin, figures = metrics["margin_over_controls"][control], metrics["controls"][control]
    assert margin["spearman"] >= 0.1 and margin["pair_accuracy"] >= 0.1, (control, figures, margin)
    assert figures["pair_accuracy"] <= 0.6, (control, figures)


def test_edit_demo_report_and_reload(edit_demo):
    out, metrics = edit_demo
    assert json.loads((out / "metrics.json").read_text())["heldout_sources"] == metrics["heldout_sources"]
    assert "source and candidates" in (out / "report.html").read_text()
    samples = [r.sample for r in read_records(out / "run" / "data" / "test_ratings.jsonl")[:10]]
    exported = load(out / "run" / "model", device="cpu").forward(samples).score
    trained = load(_checkpoint(out / "run"), device="cpu").forward(samples).score
    torch.testing.assert_close(exported, trained)
    assert find_demos()["edit"].value == "integrations.demos.edit:run"
