"""The PRM quick start (issue 14 item 10): ``mmreward demo --task prm`` on the visual-math world.

The learning bars are the issue's: first-error F1 >= 0.7 overall and >= 0.6 on misread chains, a
0.1 margin over the image-shuffled control on misreads, PRM-weighted best-of-8 above majority and
random. The demo runs as shipped (about five minutes on one CPU thread); its figures over seeds are
in docs/learning-figures.md and docs/prm.md.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from integrations.demos.prm import PixelStepBackbone, vote_curves
from mmreward.data.records import read_records
from mmreward.data.synthetic.visual_math import VOCABULARY, VisualMathWorld
from mmreward.heads import LinearHead
from mmreward.prm import ProcessRewardModel
from mmreward.scoring import Scorer, load

SEED = int(os.environ.get("MMREWARD_SEED", "0"))


def tiny_prm() -> ProcessRewardModel:
    backbone = PixelStepBackbone(
        list(VOCABULARY), channels=(8, 8, 8), hidden_size=16, embed_size=8, num_layers=1
    )
    return ProcessRewardModel(backbone, LinearHead())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("vm")
    VisualMathWorld(8, 4, 8, pool_problems=2, pool_size=8, seed=0).write(root)
    return root


def test_tiny_pixel_prm_scores_steps_and_reloads(world, tmp_path):
    torch.manual_seed(0)
    prm = tiny_prm().eval()
    records = read_records(world / "test.jsonl")
    samples = [r.sample for r in records]
    out = Scorer(prm).score_samples(samples)
    assert [len(o.steps) for o in out] == [len(s.steps) for s in samples]
    again = Scorer(prm).score_samples(samples[::-1])[::-1]  # batch order does not matter
    assert all(
        torch.allclose(torch.tensor(a.steps), torch.tensor(b.steps), atol=1e-5) for a, b in zip(out, again)
    )
    Scorer(prm).save_pretrained(tmp_path / "m")
    reloaded = load(tmp_path / "m").score_samples(samples)
    assert all(abs(a.score - b.score) < 1e-5 for a, b in zip(out, reloaded))


def test_step_k_does_not_see_later_steps(world):
    torch.manual_seed(0)
    prm = tiny_prm().eval()
    sample = read_records(world / "test.jsonl")[0].sample
    full = Scorer(prm).score_samples([sample])[0].steps
    cut = Scorer(prm).score_samples([type(sample)(**{**vars(sample), "steps": sample.steps[:2]})])[0].steps
    assert abs(full[0] - cut[0]) < 1e-5 and abs(full[1] - cut[1]) < 1e-5


def test_number_readers_read_first_and_last_numbers_and_learn_from_correct_steps_only(world):
    """The readers' targets are the numbers of steps labelled correct; other steps add nothing."""
    from integrations.demos.prm_reader import number_at
    from mmreward.data.collate import Collator
    from mmreward.training import RewardModule

    torch.manual_seed(0)
    prm = tiny_prm()
    backbone = prm.backbone
    ids = torch.tensor(
        [[backbone.tokenize(text, 8)[0] for text in ("4 + 3 = 7.", "The answer is 7.", "Hi.")]]
    )
    first_number = backbone.vocab["0"]
    assert number_at(ids, first_number, "first").tolist() == [[0, 3, -1]]
    assert number_at(ids, first_number, "last").tolist() == [[4, 3, -1]]
    with pytest.raises(ValueError, match="first' or 'last"):
        PixelStepBackbone(list(VOCABULARY), readers=("middle",))

    batch = Collator(prm.collate)(read_records(world / "train.jsonl"))
    terms, _ = RewardModule(prm)._step(batch)
    assert set(terms) == {"step_bce", "reading", "loss"}
    assert torch.allclose(terms["loss"], terms["step_bce"] + terms["reading"])
    by_hand = []
    for read, stated, has in backbone._reads:
        keep = has & (batch.labels == 1)
        by_hand.append(((read - stated)[keep] / 10.0).pow(2))
    assert torch.allclose(terms["reading"], backbone.reading_weight * torch.cat(by_hand).mean())
    assert prm.auxiliary_losses(torch.zeros_like(batch.labels))["reading"] == 0  # no correct step, no loss


def test_vote_curves_on_known_scores():
    raw = [{"pool": "p", "answer": a, "answer_correct": a == 5, "true_answer": 5} for a in (5, 6, 6, 6)]
    probs = [[0.9], [0.1], [0.1], [0.1]]  # the PRM trusts the one right chain
    curves = vote_curves(probs, raw, draws=50)
    assert curves["prm_min"][3] == 1.0 and curves["majority_vote"][3] == 0.0
    assert curves["prm_weighted_vote"][3] == 1.0 and curves["random"][0] == 0.25


def run_demo(tmp_path_factory, *extra: str):
    from integrations.demos.prm import run

    out = tmp_path_factory.mktemp("prm-demo")
    seeded = (f"--seed_everything={SEED}", f"--data.init_args.synthetic.init_args.seed={SEED}", *extra)
    return run(out, extra_args=seeded), out


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The quick start as shipped (``mmreward demo --task prm``)."""
    return run_demo(tmp_path_factory)


def test_demo_writes_the_report_with_controls_and_best_of_n(demo):
    metrics, out = demo
    assert set(metrics["controls"]) == {"images_shuffled", "blank_image"}
    assert len(metrics["best_of_n"]["prm_min"]) == 32
    assert metrics["best_of_n"]["majority_wrong_share"][0] >= 0.5  # pools where majority is often wrong
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["heldout"]["f1"] == pytest.approx(metrics["heldout"]["f1"])
    report = (out / "report.html").read_text()
    assert "Best-of-N" in report and "data:image/png;base64" in report and "images_shuffled" in report


def test_first_error_f1_overall(demo):
    assert demo[0]["heldout"]["f1"] >= 0.7


def test_first_error_f1_on_misreads_and_margin_over_shuffled_images(demo):
    """Misreads are visible only in the pixels: with each chain under another chain's image the
    misread F1 must fall by at least 0.1."""
    metrics, _ = demo
    assert metrics["heldout"]["f1_misread"] >= 0.6
    assert metrics["margin_over_controls"]["images_shuffled"]["f1_misread"] >= 0.1


def test_prm_weighted_vote_beats_majority_and_random_at_8(demo):
    best = demo[0]["best_of_8"]
    assert best["prm_weighted_vote"] > best["majority_vote"] and best["prm_weighted_vote"] > best["random"]
