"""Calibration: a fitted temperature makes sigmoid(score differences) match preference rates,
on held-out pairs, and the fit travels with a saved model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import mmreward as mr
from mmreward.calibration import Calibration, calibrate_scorer, expected_calibration_error, fit_calibration
from mmreward.configurable import Configurable, instantiate, to_config
from mmreward.scoring import Scorer
from mmreward.types import HeadOutput, Preference, Sample


def preference_world(
    n: int, overconfidence: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs with a known P(first preferred) = sigmoid(u_a - u_b); the model's scores are the
    latent utilities times ``overconfidence``; labels are drawn from the true probabilities."""
    rng = np.random.default_rng(seed)
    utility_a, utility_b = rng.normal(0, 1.5, n), rng.normal(0, 1.5, n)
    truth = 1 / (1 + np.exp(-(utility_a - utility_b)))
    labels = (rng.random(n) < truth).astype(float)
    return overconfidence * utility_a + 0.3, overconfidence * utility_b + 0.3, labels, truth


def test_fit_lowers_held_out_ece_and_recovers_the_scale():
    fit_a, fit_b, fit_y, _ = preference_world(4000, overconfidence=4.0, seed=0)
    calibration, report = fit_calibration(fit_a, fit_b, fit_y)
    # scores are 4x the true utilities, so the right temperature is about 4
    assert 3.4 < calibration.temperature < 4.6
    assert report.ece_after < report.ece_before and report.nll_after < report.nll_before
    held_a, held_b, held_y, truth = preference_world(4000, overconfidence=4.0, seed=1)
    raw_p = 1 / (1 + np.exp(-(held_a - held_b)))
    cal_p = calibration.probability(torch.tensor(held_a), torch.tensor(held_b)).numpy()
    ece_raw, ece_cal = expected_calibration_error(raw_p, held_y), expected_calibration_error(cal_p, held_y)
    assert ece_raw > 0.1 and ece_cal < 0.04, (ece_raw, ece_cal)
    # against the known probabilities, the calibrated ones are close
    assert np.abs(cal_p - truth).mean() < 0.05 < np.abs(raw_p - truth).mean()


def test_calibrated_scores_give_probabilities_through_sigmoid_of_differences():
    a, b, y, _ = preference_world(500, overconfidence=2.0, seed=2)
    calibration, _ = fit_calibration(a, b, y)
    ca, cb = calibration(torch.tensor(a)), calibration(torch.tensor(b))
    assert torch.allclose(torch.sigmoid(ca - cb), calibration.probability(torch.tensor(a), torch.tensor(b)))
    # the offset centres the held-out scores at 0
    assert abs(float(torch.cat([ca, cb]).mean())) < 1e-6


def test_an_underconfident_model_gets_a_temperature_below_one():
    a, b, y, _ = preference_world(3000, overconfidence=0.4, seed=3)
    calibration, report = fit_calibration(a, b, y)
    assert calibration.temperature < 0.6 and report.ece_after < report.ece_before


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match=r"chosen_scores\[1\] is nan"):
        fit_calibration([0.1, float("nan")], [0.0, 0.0], [1, 1])
    with pytest.raises(ValueError, match="equally long"):
        fit_calibration([0.1, 0.2, 0.3], [0.0, 0.0], [1, 1])
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        fit_calibration([0.1, 0.2], [0.0, 0.0], [1, 2])
    with pytest.raises(ValueError, match="temperature must be positive"):
        Calibration(temperature=0.0)


class PromptLengthModel(nn.Module, Configurable):
    """A reward model whose score is ``scale * len(prompt)``: enough to test the scorer's path."""

    def __init__(self, scale: float = 3.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def collate(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        return {"length": torch.tensor([len(s.prompt) for s in samples], dtype=torch.float32)}

    def forward(self, inputs: dict[str, torch.Tensor]) -> HeadOutput:
        return HeadOutput(score=self.scale * inputs["length"])


def test_calibration_survives_save_and_load(tmp_path):
    rng = np.random.default_rng(4)
    pairs = []
    for _ in range(400):
        la, lb = rng.integers(1, 12, size=2)
        truth = 1 / (1 + np.exp(-(la - lb) / 2))  # the model (scale 3) is 6x over-confident
        pairs.append(
            Preference(Sample(prompt="x" * la), Sample(prompt="x" * lb), label=float(rng.random() < truth))
        )
    scorer = Scorer(PromptLengthModel(), device="cpu")
    report = calibrate_scorer(scorer, pairs)
    assert 4.5 < report.temperature < 8.0 and report.ece_after < report.ece_before
    samples = [Sample(prompt="x" * k) for k in (2, 5, 9)]
    before = [o.calibrated for o in scorer.score_samples(samples)]
    scorer.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["calibration"]
    assert saved["class_path"] == "mmreward.calibration.Calibration"
    after = [o.calibrated for o in mr.load(tmp_path, device="cpu", trust_config=True).score_samples(samples)]
    assert after == pytest.approx(before, abs=1e-6)
    assert after[2] - after[0] == pytest.approx(3.0 * 7 / report.temperature, rel=1e-5)
    rebuilt = instantiate(json.loads(json.dumps(to_config(scorer.calibration))))
    assert (rebuilt.temperature, rebuilt.offset) == (
        scorer.calibration.temperature,
        scorer.calibration.offset,
    )
