"""Reward-model losses: small pure functions, and ``RewardLoss`` that applies them to batches.

Every function returns a scalar (the mean over the batch) and names its source.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmreward.configurable import Configurable
from mmreward.types import HeadOutput


def soft_bradley_terry_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, label: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """Bradley-Terry with a soft label: ``-y log s(d) - (1 - y) log s(-d)``, ``d = chosen - rejected``.

    ``label`` is P(chosen preferred); 0.5 encodes a tie as Pick-a-Pic (Kirstain et al., 2023) and
    VideoGen-RewardBench do. With ``label=1`` it is the plain Bradley-Terry loss.
    """
    diff = chosen - rejected
    label = torch.as_tensor(label, dtype=diff.dtype, device=diff.device)
    return -(label * F.logsigmoid(diff) + (1 - label) * F.logsigmoid(-diff)).mean()


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """``-log sigmoid(r_chosen - r_rejected)`` (Bradley & Terry, 1952; InstructGPT, Ouyang et al., 2022)."""
    return -F.logsigmoid(chosen - rejected).mean()


def margin_bradley_terry_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor
) -> torch.Tensor:
    """``-log sigmoid(r_chosen - r_rejected - m)``: the margin term of Llama 2 (Touvron et al., 2023)."""
    return -F.logsigmoid(chosen - rejected - margin).mean()


def label_smoothed_bradley_terry_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, epsilon: float = 0.1
) -> torch.Tensor:
    """BT with label smoothing ``eps`` (Wang et al., 2024, "Secrets of RLHF II"): soft label ``1 - eps``."""
    return soft_bradley_terry_loss(chosen, rejected, 1.0 - epsilon)


def tie_bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, tie: torch.Tensor) -> torch.Tensor:
    """BT where tied pairs (``tie`` true) take label 0.5, as in Pick-a-Pic's PickScore training."""
    return soft_bradley_terry_loss(chosen, rejected, torch.where(tie.bool(), 0.5, 1.0))


def regression_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error on ratings (SteerLM/HelpSteer-style regression reward models)."""
    return F.mse_loss(prediction, target)


def bt_regression_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    chosen_target: torch.Tensor,
    rejected_target: torch.Tensor,
    regression_weight: float = 1.0,
) -> torch.Tensor:
    """BT on the pair plus MSE on each side's rating: the hybrid of HelpSteer2-Preference (Wang et al., 2024)."""
    mse = regression_loss(torch.cat([chosen, rejected]), torch.cat([chosen_target, rejected_target]))
    return bradley_terry_loss(chosen, rejected) + regression_weight * mse


def plackett_luce_loss(
    scores: torch.Tensor, order: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Negative log-likelihood of a ranking under Plackett-Luce (Plackett, 1975; Luce, 1959).

    Args:
        scores: (B, K) candidate scores.
        order: (B, K) candidate indices, best first.
        mask: (B, K) true where ``order`` holds a real candidate (rankings of fewer than K).
    """
    ranked = scores.gather(1, order)  # (B, K), best first
    if mask is None:
        mask = torch.ones_like(ranked, dtype=torch.bool)
    ranked = ranked.masked_fill(~mask, float("-inf"))
    # log-sum-exp over the candidates still in play at each position: a reversed cumulative LSE
    tail_lse = torch.logcumsumexp(ranked.flip(1), dim=1).flip(1)
    terms = (ranked - tail_lse).masked_fill(~mask, 0.0)
    # the last real position contributes log(1) = 0; dividing by rankings keeps it a per-ranking mean
    return -terms.sum(1).mean()


def centering_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """``(r_chosen + r_rejected)^2``: keeps rewards centred at zero (Eisenstein et al., 2023)."""
    return ((chosen + rejected) ** 2).mean()


def _nan_masked(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    keep = ~torch.isnan(target)
    return pred[keep], target[keep]


class RewardLoss(Configurable):
    """The training objective for each kind of batch: pairs, ratings and rankings.

    Args:
        use_margin: Subtract the record's ``margin`` when it has one (Llama 2).
        label_smoothing: Smooth hard pair labels to ``1 - eps``; soft labels (ties) stay as given.
        centering: Weight of the reward-centring penalty.
        regression_weight: Weight of MSE on per-side ratings of pairs, where records carry them.
        aspect_weight: Weight of the per-aspect terms against the overall score's term.
    """

    def __init__(
        self,
        use_margin: bool = True,
        label_smoothing: float = 0.0,
        centering: float = 0.0,
        regression_weight: float = 1.0,
        aspect_weight: float = 1.0,
    ) -> None:
        self.use_margin = use_margin
        self.label_smoothing = label_smoothing
        self.centering = centering
        self.regression_weight = regression_weight
        self.aspect_weight = aspect_weight

    def pairs(self, chosen: HeadOutput, rejected: HeadOutput, batch) -> dict[str, torch.Tensor]:
        """Loss terms for a ``PairBatch``; the ``loss`` entry is their weighted sum."""
        c, r = chosen.score, rejected.score
        label = batch.label.to(c.dtype)
        hard = label == 1.0
        label = torch.where(hard, 1.0 - self.label_smoothing, label)
        margin = torch.nan_to_num(batch.margin.to(c.dtype), nan=0.0) if self.use_margin else 0.0
        terms = {"bt": soft_bradley_terry_loss(c - margin, r, label)}
        if self.centering:
            terms["centering"] = self.centering * centering_loss(c, r)
        targets = torch.cat([batch.chosen_target, batch.rejected_target]).to(c.dtype)
        if self.regression_weight and not torch.isnan(targets).all():
            terms["regression"] = self.regression_weight * regression_loss(
                *_nan_masked(torch.cat([c, r]), targets)
            )
        if chosen.aspects is not None and batch.aspect_labels is not None:
            labels = batch.aspect_labels.to(c.dtype)
            keep = ~torch.isnan(labels)
            if keep.any():
                terms["aspects"] = self.aspect_weight * soft_bradley_terry_loss(
                    chosen.aspects[keep], rejected.aspects[keep], labels[keep]
                )
        terms["loss"] = sum(terms.values())
        return terms

    def ratings(self, output: HeadOutput, batch) -> dict[str, torch.Tensor]:
        """Loss terms for a ``RatingBatch``: MSE on the overall score and on each rated aspect."""
        terms = {}
        if not torch.isnan(batch.score).all():
            terms["regression"] = regression_loss(
                *_nan_masked(output.score, batch.score.to(output.score.dtype))
            )
        if (
            output.aspects is not None
            and batch.aspect_scores is not None
            and not torch.isnan(batch.aspect_scores).all()
        ):
            pred, target = _nan_masked(output.aspects, batch.aspect_scores.to(output.aspects.dtype))
            terms["aspects"] = self.aspect_weight * regression_loss(pred, target)
        if not terms:
            raise ValueError("A rating batch has neither scores nor aspect scores that the model predicts.")
        terms["loss"] = sum(terms.values())
        return terms

    def rankings(self, scores: torch.Tensor, batch) -> dict[str, torch.Tensor]:
        """Loss terms for a ``RankingBatch``: Plackett-Luce over each ranked set."""
        pl = plackett_luce_loss(scores, batch.order, batch.mask)
        return {"plackett_luce": pl, "loss": pl}
