"""Scores with a stated meaning: fit a temperature on held-out pairs so that
``sigmoid(calibrated_a - calibrated_b)`` estimates P(a is preferred to b).

A Bradley-Terry reward model is trained to make ``sigmoid(r_a - r_b)`` the preference probability,
but after training its scale is usually off (over-confident once it fits its training pairs). One
temperature ``T``, fit by maximum likelihood on held-out pairs, fixes the scale; this is
temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks") applied to
pairwise differences. Differences are blind to a constant, so the offset is set to the mean
held-out score: a calibrated score of 0 is a typical held-out candidate, and ``sigmoid(c_a)``
estimates P(a beats such a candidate).

``fit_calibration`` returns the ``Calibration`` (a Configurable callable, saved with the model by
``Scorer.save_pretrained``) and a ``CalibrationReport`` with the expected calibration error before
and after.

Example:
    >>> calibration, report = fit_calibration(chosen, rejected, labels)
    >>> scorer.calibration = calibration  # RewardOutput.calibrated from now on
    >>> print(report.ece_before, report.ece_after)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from mmreward.configurable import Configurable
from mmreward.types import Preference


class Calibration(Configurable):
    """``calibrated = (raw - offset) / temperature``; see the module docstring.

    Args:
        temperature: Divides the raw score; > 1 softens an over-confident model.
        offset: Subtracted first; the mean held-out raw score, so 0 is a typical candidate.
    """

    def __init__(self, temperature: float = 1.0, offset: float = 0.0) -> None:
        if not temperature > 0:
            raise ValueError(
                f"Calibration temperature must be positive; got {temperature}. Refit with fit_calibration."
            )
        self.temperature, self.offset = float(temperature), float(offset)

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.offset) / self.temperature

    def probability(self, score_a: torch.Tensor, score_b: torch.Tensor) -> torch.Tensor:
        """P(a preferred to b) from raw scores."""
        return torch.sigmoid((score_a - score_b) / self.temperature)


@dataclass
class CalibrationReport:
    """What a calibration fit did, measured on the pairs it was fit on.

    Attributes:
        temperature: The fitted temperature.
        offset: The fitted offset (mean held-out score).
        pairs: Number of pairs.
        ece_before: Expected calibration error of ``sigmoid(r_a - r_b)`` (temperature 1).
        ece_after: The same after the fit.
        nll_before: Mean negative log-likelihood of the labels at temperature 1.
        nll_after: The same after the fit.
        bins: Equal-width probability bins used for the ECE.
    """

    temperature: float
    offset: float
    pairs: int
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    bins: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_array(values: Any, name: str) -> np.ndarray:
    array = (
        values.detach().cpu().double().numpy()
        if isinstance(values, torch.Tensor)
        else np.asarray(values, dtype=float)
    )
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of scores; got shape {array.shape}.")
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise ValueError(
            f"{name}[{bad}] is {array[bad]}; calibration needs finite scores. Drop or rescore that pair."
        )
    return array


def pair_nll(diff: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of soft labels under ``sigmoid(diff / T)``."""
    z = diff / temperature
    return float(np.mean(labels * np.logaddexp(0.0, -z) + (1 - labels) * np.logaddexp(0.0, z)))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE of pairwise probabilities: ``sum_b n_b / N * |mean p - mean y|`` over equal-width bins.

    Each pair is counted in both orders (``p, y`` and ``1 - p, 1 - y``), so the measure does not
    depend on which side a data set lists first. Soft labels count as their expectation.
    """
    p = np.concatenate([probabilities, 1 - probabilities])
    y = np.concatenate([labels, 1 - labels])
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            total += in_bin.mean() * abs(p[in_bin].mean() - y[in_bin].mean())
    return float(total)


def fit_calibration(
    chosen_scores: Sequence[float] | torch.Tensor,
    rejected_scores: Sequence[float] | torch.Tensor,
    labels: Sequence[float] | torch.Tensor | None = None,
    bins: int = 10,
) -> tuple[Calibration, CalibrationReport]:
    """Fit the temperature (and offset) on held-out pairs; report ECE before and after.

    Args:
        chosen_scores: (N,) raw scores of the first side of each pair.
        rejected_scores: (N,) raw scores of the second side.
        labels: (N,) P(first side preferred): 1 for a hard label, 0.5 for a tie; None means all 1.
        bins: Probability bins for the ECE.

    Returns:
        The ``Calibration`` and its ``CalibrationReport``.
    """
    chosen = _as_array(chosen_scores, "chosen_scores")
    rejected = _as_array(rejected_scores, "rejected_scores")
    y = np.ones_like(chosen) if labels is None else _as_array(labels, "labels")
    if not len(chosen) == len(rejected) == len(y) or len(chosen) < 2:
        raise ValueError(
            f"fit_calibration needs equally long score and label lists of at least 2 pairs; got "
            f"{len(chosen)} chosen, {len(rejected)} rejected, {len(y)} labels."
        )
    if ((y < 0) | (y > 1)).any():
        raise ValueError(f"labels must be probabilities in [0, 1]; got values from {y.min()} to {y.max()}.")
    diff = chosen - rejected
    # optimise log T: positive by construction, and NLL is smooth in it
    fit = minimize_scalar(
        lambda log_t: pair_nll(diff, y, float(np.exp(log_t))), bounds=(-7.0, 7.0), method="bounded"
    )
    temperature = float(np.exp(fit.x))
    offset = float(np.mean(np.concatenate([chosen, rejected])))
    report = CalibrationReport(
        temperature=temperature,
        offset=offset,
        pairs=len(diff),
        ece_before=expected_calibration_error(1 / (1 + np.exp(-diff)), y, bins),
        ece_after=expected_calibration_error(1 / (1 + np.exp(-diff / temperature)), y, bins),
        nll_before=pair_nll(diff, y),
        nll_after=pair_nll(diff, y, temperature),
        bins=bins,
    )
    return Calibration(temperature=temperature, offset=offset), report


def calibrate_scorer(scorer: Any, pairs: Sequence[Preference], bins: int = 10) -> CalibrationReport:
    """Score held-out ``pairs`` with ``scorer``, fit a calibration and attach it to the scorer.

    ``scorer.save_pretrained`` then stores it, and ``RewardOutput.calibrated`` carries the
    calibrated score.
    """
    if not pairs:
        raise ValueError("calibrate_scorer got no pairs; pass held-out Preference records (read_records).")
    out = scorer.forward([p.chosen for p in pairs] + [p.rejected for p in pairs])
    n = len(pairs)
    calibration, report = fit_calibration(out.score[:n], out.score[n:], [p.label for p in pairs], bins)
    scorer.calibration = calibration
    return report
