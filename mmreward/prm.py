"""Discriminative process reward models: a score for every step of a reasoning chain.

``ProcessRewardModel(backbone, head, aggregation)``: a step backbone (``collate(samples)`` with
``Sample.steps`` set, ``forward -> (N, S, D)`` features, one per step, and ``inputs["step_counts"]``;
``modalities.backbones.steps.StepBackbone`` reads them at a separator token after each step, in one
forward) and a ``RewardHead`` applied to every step's feature. The head's output is the step's
logit, P(step correct) = sigmoid(logit), trained with per-step binary cross-entropy on the
process labels (Math-Shepherd, Wang et al., 2024; VisualPRM, Wang et al., 2025). The chain's score
aggregates the step probabilities: ``min`` (Lightman et al., 2023 use the product; ``min`` is the
common choice for search), ``last``, ``mean`` or ``product``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from mmreward.configurable import Configurable
from mmreward.heads import RewardHead
from mmreward.types import HeadOutput, Sample

Aggregation = Literal["min", "last", "mean", "product"]


def step_mask(counts: torch.Tensor, width: int) -> torch.Tensor:
    """(N, S) true on each chain's real steps, from (N,) step counts."""
    return torch.arange(width, device=counts.device)[None] < counts[:, None]


def aggregate_step_logits(logits: torch.Tensor, mask: torch.Tensor, how: Aggregation) -> torch.Tensor:
    """(N,) chain scores on the probability scale from (N, S) step logits.

    The batched, masked twin of ``mmreward.transforms.aggregate_steps`` (one chain's probabilities,
    as ``RewardOutput.steps`` holds them); both give the same number for a chain.

    Args:
        logits: (N, S) step logits; entries outside ``mask`` are ignored (NaN allowed there).
        mask: (N, S) true on real steps; every row has at least one.
        how: ``min``, ``last``, ``mean`` or ``product`` of the step probabilities.
    """
    logits = logits.masked_fill(~mask, 0.0)
    if how == "product":  # in log space: a long chain of confident steps does not underflow
        return (F.logsigmoid(logits) * mask).sum(1).exp()
    probs = torch.sigmoid(logits)
    if how == "min":
        return probs.masked_fill(~mask, 1.0).min(1).values
    if how == "mean":
        return (probs * mask).sum(1) / mask.sum(1)
    if how == "last":
        last = mask.long().sum(1) - 1
        return probs[torch.arange(len(probs), device=probs.device), last]
    raise ValueError(f"Unknown aggregation {how!r}; use 'min', 'last', 'mean' or 'product'.")


def step_bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the labelled steps; NaN labels (padding) are left out.

    Args:
        logits: (N, S) step logits (NaN past a chain's end is fine).
        labels: (N, S) 1 for a correct step, 0 for a wrong one, NaN for none.
    """
    keep = ~torch.isnan(labels)
    return F.binary_cross_entropy_with_logits(logits[keep], labels[keep].to(logits.dtype))


class ProcessRewardModel(nn.Module, Configurable):
    """A discriminative PRM: ``head`` on every step feature of ``backbone``; see the module docstring.

    Args:
        backbone: A step backbone (``modalities.backbones.steps.StepBackbone``).
        head: A ``RewardHead``; it scores each step feature (its output is the step's logit).
        aggregation: How the chain's score is made from the step probabilities.
        name: A model name for provenance.
    """

    reads_steps = True
    aspects: list[str] = []

    def __init__(
        self, backbone: nn.Module, head: RewardHead, aggregation: Aggregation = "min", name: str = "prm"
    ) -> None:
        super().__init__()
        if not getattr(backbone, "reads_steps", False):
            raise TypeError(
                f"ProcessRewardModel needs a step backbone (one feature per step); {type(backbone).__name__} "
                "gives one per sample. Wrap it: StepBackbone(backbone)."
            )
        if aggregation not in ("min", "last", "mean", "product"):
            raise ValueError(f"Unknown aggregation {aggregation!r}; use 'min', 'last', 'mean' or 'product'.")
        self.backbone, self.head = backbone, head
        self.aggregation, self.name = aggregation, name
        head.bind(backbone.feature_dim)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {**getattr(self.backbone, "preprocessing", {}), "aggregation": self.aggregation}

    def collate(self, samples: list[Sample]) -> dict[str, Any]:
        """The backbone's inputs for the chains (each sample needs ``steps``)."""
        return self.backbone.collate(samples)

    def auxiliary_losses(self, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms of the backbone's own objectives on the last forward (``{}`` if it has none),
        given the batch's (N, S) step labels: for example ``PixelStepBackbone``'s number readers."""
        own = getattr(self.backbone, "auxiliary_losses", None)
        return own(labels) if own is not None else {}

    def forward(self, inputs: dict[str, Any]) -> HeadOutput:
        features = self.backbone(inputs)  # (N, S, D)
        logits = self.head(features).score  # (N, S)
        mask = step_mask(inputs["step_counts"].to(logits.device), logits.shape[1])
        score = aggregate_step_logits(logits, mask, self.aggregation)
        return HeadOutput(score=score, steps=logits.masked_fill(~mask, float("nan")))


def implicit_step_rewards(
    token_log_ratio: torch.Tensor, step_ids: torch.Tensor, num_steps: int, beta: float
) -> torch.Tensor:
    """(N, S) implicit Q-values: ``q_k = beta * sum of log(pi / pi_ref)`` over the tokens of steps 1..k.

    "Free Process Rewards without Process Labels" (Yuan et al., 2024): with the outcome reward
    parameterised as ``beta log pi(y) / pi_ref(y)``, step k's process reward is the same log ratio
    over step k's tokens, and the running sum ``q_k`` is the logit of the chain succeeding from
    there, so ``sigmoid(q_k)`` reads like a discriminative PRM's step probability.

    Args:
        token_log_ratio: (N, L) ``log pi(token) - log pi_ref(token)`` for each token (0 where unused).
        step_ids: (N, L) the step each token belongs to, -1 for prompt, separators and padding.
        num_steps: S, the most steps in the batch.
        beta: The KL coefficient of the parameterisation.
    """
    keep = step_ids >= 0
    per_step = torch.zeros(
        token_log_ratio.shape[0], num_steps + 1, dtype=token_log_ratio.dtype, device=token_log_ratio.device
    )
    index = torch.where(keep, step_ids, num_steps)  # unused tokens go to a spare column
    per_step = per_step.scatter_add(1, index, token_log_ratio * keep)
    return beta * per_step[:, :num_steps].cumsum(dim=1)


def outcome_bce_loss(final_q: torch.Tensor, outcome: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the chain's implicit outcome logit against 0/1 outcome labels (Yuan et al.,
    2024, the CE variant: unpaired data, one label per chain)."""
    return F.binary_cross_entropy_with_logits(final_q, outcome.to(final_q.dtype))
