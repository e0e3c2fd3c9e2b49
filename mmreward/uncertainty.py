"""Rewards with error bars: a head that predicts a mean and a log-sigma per sample, and the
uncertainty-aware ranking loss that trains it.

Each score is read as a Gaussian ``N(mu, sigma^2)``. The probability that ``a`` beats ``b`` is
then that of ``r_a - r_b > 0`` with ``r_a - r_b ~ N(mu_a - mu_b, sigma_a^2 + sigma_b^2)``:

- ``link="probit"``: ``Phi((mu_a - mu_b) / sqrt(sigma_a^2 + sigma_b^2))``, the Thurstone-style
  form of HPSv3 (Ma et al., 2025) and EditReward (Wu et al., 2025);
- ``link="sigmoid"``: Bradley-Terry on the Gaussian difference, marginalised with the probit
  approximation ``sigmoid(d / sqrt(1 + pi/8 * s^2))`` (MacKay, 1992); it reduces to the plain
  Bradley-Terry loss as sigma goes to 0.

Ambiguous pairs can be explained by a large sigma instead of a distorted mean, so sigma learns
where annotators (or the data) disagree.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmreward.heads import ACTIVATIONS, Activation, RewardHead
from mmreward.losses import RewardLoss
from mmreward.types import HeadOutput

Link = Literal["probit", "sigmoid"]


class UncertaintyHead(RewardHead):
    """A two-layer MLP (BaseReward's head) with two outputs: the mean and the log-sigma.

    As in HPSv3 (Ma et al., 2025) and EditReward (Wu et al., 2025), the model predicts a
    distribution per sample; ``HeadOutput.log_sigma`` carries ``log sigma`` and the ``Scorer``
    reports ``sigma = exp(log_sigma)``.

    Args:
        in_features: Feature size; None takes the backbone's.
        hidden_size: Width of the hidden layer.
        activation: Non-linearity between the layers.
        init_log_sigma: The log-sigma the head starts at (0: unit variance).
    """

    def __init__(
        self,
        in_features: int | None = None,
        hidden_size: int = 1024,
        activation: Activation = "silu",
        init_log_sigma: float = 0.0,
    ) -> None:
        self.hidden_size, self.activation, self.init_log_sigma = hidden_size, activation, init_log_sigma
        super().__init__(in_features)

    def build(self, in_features: int) -> None:
        self.trunk = nn.Sequential(nn.Linear(in_features, self.hidden_size), ACTIVATIONS[self.activation]())
        self.out = nn.Linear(self.hidden_size, 2)
        nn.init.normal_(self.out.weight, std=0.02)
        with torch.no_grad():
            self.out.bias.copy_(torch.tensor([0.0, self.init_log_sigma]))

    def forward(self, features: torch.Tensor) -> HeadOutput:
        mu, log_sigma = self.out(self.trunk(features)).unbind(-1)
        return HeadOutput(score=mu, log_sigma=log_sigma)


def preference_log_probability(
    mu_a: torch.Tensor,
    mu_b: torch.Tensor,
    log_sigma_a: torch.Tensor,
    log_sigma_b: torch.Tensor,
    link: Link = "probit",
    min_sigma: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log P(a > b), log P(b > a))`` for Gaussian scores; see the module docstring.

    Args:
        mu_a, mu_b: (N,) means.
        log_sigma_a, log_sigma_b: (N,) log standard deviations.
        link: ``"probit"`` (HPSv3) or ``"sigmoid"`` (marginalised Bradley-Terry).
        min_sigma: A floor on each sigma, so a collapsing sigma cannot divide by zero.
    """
    var = log_sigma_a.exp().clamp_min(min_sigma) ** 2 + log_sigma_b.exp().clamp_min(min_sigma) ** 2
    diff = mu_a - mu_b
    if link == "probit":
        z = diff / var.sqrt()
        return torch.special.log_ndtr(z), torch.special.log_ndtr(-z)
    z = diff / torch.sqrt(1.0 + math.pi / 8.0 * var)
    return F.logsigmoid(z), F.logsigmoid(-z)


def uncertainty_ranking_loss(
    chosen: HeadOutput,
    rejected: HeadOutput,
    label: torch.Tensor | float = 1.0,
    link: Link = "probit",
    min_sigma: float = 1e-3,
) -> torch.Tensor:
    """Negative log-likelihood of the preference labels under Gaussian scores (HPSv3, Ma et al., 2025).

    Args:
        chosen, rejected: Head outputs with ``log_sigma``.
        label: P(chosen preferred); 0.5 for a tie.
        link: See ``preference_log_probability``.
        min_sigma: See ``preference_log_probability``.
    """
    log_p, log_q = preference_log_probability(
        chosen.score, rejected.score, chosen.log_sigma, rejected.log_sigma, link, min_sigma
    )
    label = torch.as_tensor(label, dtype=log_p.dtype, device=log_p.device)
    return -(label * log_p + (1 - label) * log_q).mean()


def gaussian_nll(mu: torch.Tensor, log_sigma: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``0.5 ((y - mu) / sigma)^2 + log sigma``: regression with a predicted error bar."""
    return (0.5 * ((target - mu) * torch.exp(-log_sigma)) ** 2 + log_sigma).mean()


class UncertaintyRewardLoss(RewardLoss):
    """``RewardLoss`` whose pair term is the uncertainty-aware ranking loss of HPSv3 (Ma et al.,
    2025) and EditReward (Wu et al., 2025), and whose rating term is a Gaussian NLL.

    The other terms (centring, per-side ratings, aspects) and rankings (Plackett-Luce on the
    means) are those of ``RewardLoss``. The model's head must predict ``log_sigma``
    (``UncertaintyHead``).

    Args:
        link: ``"probit"`` (HPSv3's Gaussian form) or ``"sigmoid"`` (see the module docstring).
        min_sigma: A floor on each predicted sigma.
        use_margin: Subtract the record's ``margin`` from the mean difference (Llama 2).
        label_smoothing: Smooth hard pair labels to ``1 - eps``.
        centering: Weight of the reward-centring penalty on the means.
        regression_weight: Weight of the per-side rating term.
        aspect_weight: Weight of the per-aspect terms.
    """

    def __init__(
        self,
        link: Link = "probit",
        min_sigma: float = 1e-3,
        use_margin: bool = True,
        label_smoothing: float = 0.0,
        centering: float = 0.0,
        regression_weight: float = 1.0,
        aspect_weight: float = 1.0,
    ) -> None:
        super().__init__(use_margin, label_smoothing, centering, regression_weight, aspect_weight)
        self.link, self.min_sigma = link, min_sigma

    @staticmethod
    def _check(output: HeadOutput) -> None:
        if output.log_sigma is None:
            raise ValueError(
                "UncertaintyRewardLoss needs a head that predicts log_sigma, but the model's output has "
                "none. Use mmreward.uncertainty.UncertaintyHead, or mmreward.losses.RewardLoss."
            )

    def pairs(self, chosen: HeadOutput, rejected: HeadOutput, batch) -> dict[str, torch.Tensor]:
        """Loss terms for a ``PairBatch``: the Gaussian ranking term replaces Bradley-Terry."""
        self._check(chosen)
        terms = super().pairs(chosen, rejected, batch)
        terms.pop("loss")
        terms.pop("bt")
        c = chosen.score
        label = batch.label.to(c.dtype)
        label = torch.where(label == 1.0, 1.0 - self.label_smoothing, label)
        margin = torch.nan_to_num(batch.margin.to(c.dtype), nan=0.0) if self.use_margin else 0.0
        shifted = HeadOutput(score=c - margin, log_sigma=chosen.log_sigma)
        terms = {
            "uncertainty_rank": uncertainty_ranking_loss(shifted, rejected, label, self.link, self.min_sigma),
            **terms,
        }
        terms["loss"] = sum(terms.values())
        return terms

    def ratings(self, output: HeadOutput, batch) -> dict[str, torch.Tensor]:
        """Loss terms for a ``RatingBatch``: Gaussian NLL on the overall score, MSE on aspects."""
        self._check(output)
        terms = super().ratings(output, batch)
        terms.pop("loss")
        keep = ~torch.isnan(batch.score)
        if "regression" in terms and keep.any():
            target = batch.score.to(output.score.dtype)
            terms["regression"] = gaussian_nll(output.score[keep], output.log_sigma[keep], target[keep])
        terms["loss"] = sum(terms.values())
        return terms
