"""The quick-start video model learns: held-out accuracy per aspect, the frame-shuffle control,
and reloads that reproduce scores (the edit model's tests are in test_edit_learning.py).

The quick start runs once per module through its demo (``mmreward demo --task video``: the YAML
config, LightningCLI, RewardModule, export, ``mmreward.load``); the tests read its metrics.json and
the exported model. The demo takes about four minutes on a 2-core CPU; it runs in the default
suite because these are the tests that prove issue 4's claims.
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
def video_demo(tmp_path_factory) -> tuple[Path, dict]:
    from integrations.demos.video import run

    out = tmp_path_factory.mktemp("video-demo")
    return out, run(out)


UNMET = "issue-4 claim not met yet by the fast route (measured 2026-11-26: {}); see the helper's report"


@pytest.mark.parametrize("aspect", ["quality", "alignment", "physics"])
def test_quickstart_video_ranks_heldout_pairs_per_aspect(video_demo, aspect):
    _, metrics = video_demo
    assert metrics["heldout_accuracy"][aspect] >= 0.85, metrics["heldout_accuracy"]


def test_physics_aspect_uses_frame_order(video_demo):
    _, metrics = video_demo
    ordered, shuffled = metrics["heldout_accuracy"]["physics"], metrics["shuffled_frames_accuracy"]["physics"]
    assert ordered - shuffled >= 0.15, (ordered, shuffled)
    # quality (blur, noise) is visible in single frames: shuffling must cost it far less
    assert metrics["shuffled_frames_accuracy"]["quality"] >= metrics["heldout_accuracy"]["quality"] - 0.15


def test_alignment_reads_the_prompt(video_demo):
    """Issue 13: under another pair's prompt the alignment aspect falls to chance; the aspects that
    need no prompt stay."""
    _, metrics = video_demo
    shuffled = metrics["controls"]["prompt_shuffled"]
    assert metrics["margin_over_controls"]["prompt_shuffled"]["alignment"] >= 0.1, metrics["controls"]
    assert abs(shuffled["alignment"] - 0.5) <= 0.15, shuffled


def test_alignment_uses_the_motion(video_demo):
    """Issue 13: the model beats its single-frame control (the middle frame repeated) by 0.1 on
    alignment, and by 0.1 on the wrong-direction pairs, where one frame holds no answer
    (docs/learning-figures.md has both margins over five seeds)."""
    _, metrics = video_demo
    assert metrics["margin_over_controls"]["single_frame"]["alignment"] >= 0.1, metrics["controls"]
    direction = metrics["direction_alignment_accuracy"]
    assert metrics["direction_fault_pairs"] >= 50 and direction["model"] - direction["single_frame"] >= 0.1, (
        metrics["direction_fault_pairs"],
        direction,
    )


def test_video_aspect_scores_correlate_with_heldout_ratings(video_demo):
    _, metrics = video_demo
    for aspect in ("quality", "alignment", "physics"):
        assert metrics["heldout_correlations"][aspect]["spearman"] >= 0.5, metrics["heldout_correlations"]


def test_video_demo_writes_metrics_and_a_report_with_frames(video_demo):
    out, metrics = video_demo
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["heldout_accuracy"] == pytest.approx(metrics["heldout_accuracy"])
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64") >= 12 and "physics" in report
    assert find_demos()["video"].value == "integrations.demos.video:run"


def _checkpoint(run: Path) -> Path:
    found = sorted(run.rglob("*.ckpt"))
    assert found, f"no Lightning checkpoint under {run}"
    return found[-1]


def test_video_model_reload_reproduces_scores(video_demo):
    out, _ = video_demo
    samples = [r.sample for r in read_records(out / "run" / "data" / "test_ratings.jsonl")[:16]]
    exported = load(out / "run" / "model", device="cpu").forward(samples)
    trained = load(_checkpoint(out / "run"), device="cpu").forward(
        samples
    )  # the weights as training left them
    torch.testing.assert_close(exported.aspects, trained.aspects)
    assert exported.aspects.std(0).min() > 0  # scores vary across clips: not a constant model
