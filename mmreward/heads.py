"""Reward heads: features (N, D) -> HeadOutput.

Every head takes ``in_features=None`` to mean "the backbone's ``feature_dim``": ``RewardModel``
calls ``bind`` with it, so a config need not repeat a number the backbone already knows.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from mmreward.configurable import Configurable
from mmreward.types import HeadOutput

ACTIVATIONS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
Activation = Literal["silu", "relu", "gelu", "tanh"]


class RewardHead(nn.Module, Configurable):
    """Base class: subclasses build their layers in ``build(in_features)``."""

    aspects: list[str] = []

    def __init__(self, in_features: int | None = None) -> None:
        super().__init__()
        self.in_features = in_features
        if in_features is not None:
            self.build(in_features)

    def bind(self, feature_dim: int) -> None:
        """Build the layers for ``feature_dim`` inputs, or check that they fit it."""
        if self.in_features is None:
            self.in_features = feature_dim
            self.build(feature_dim)
        elif self.in_features != feature_dim:
            raise ValueError(
                f"{type(self).__name__} has in_features={self.in_features} but the backbone gives "
                f"{feature_dim} features. Set in_features to {feature_dim} or leave it out."
            )

    def build(self, in_features: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement build(in_features).")


class LinearHead(RewardHead):
    """One linear layer: the PickScore/HPSv2 reading of a CLIP joint feature when ``init="ones"``.

    Args:
        in_features: Feature size; None takes the backbone's.
        init: ``"normal"`` (std 0.02) or ``"ones"``, which makes the score the sum of the joint
            feature, i.e. CLIP's cosine similarity on the ``product`` feature.
        scale: A fixed multiplier on the score (CLIP's logit scale is 100).
        bias: Whether the score has a learned offset. Pairs and rankings cannot see a shift of all
            scores, so under them the offset gets no gradient, and Adam turns rounding noise in its
            zero gradient into full-size steps: ``False`` (as TRL's score heads) keeps the scores
            of two runs that compute the same gradients equal, not only their order.
    """

    def __init__(
        self,
        in_features: int | None = None,
        init: Literal["normal", "ones"] = "normal",
        scale: float = 1.0,
        bias: bool = True,
    ) -> None:
        self.init, self.scale, self.bias = init, scale, bias
        super().__init__(in_features)

    def build(self, in_features: int) -> None:
        self.proj = nn.Linear(in_features, 1, bias=self.bias)
        if self.init == "ones":
            nn.init.ones_(self.proj.weight)
        else:
            nn.init.normal_(self.proj.weight, std=0.02)
        if self.bias:
            nn.init.zeros_(self.proj.bias)

    def forward(self, features: torch.Tensor) -> HeadOutput:
        return HeadOutput(score=self.proj(features).squeeze(-1) * self.scale)


class MLPHead(RewardHead):
    """The two-layer MLP head that BaseReward (Zhang et al., 2025) found best on VLM features.

    Args:
        in_features: Feature size; None takes the backbone's.
        hidden_size: Width of the hidden layer.
        activation: Non-linearity between the layers (BaseReward uses SiLU).
        dropout: Dropout before each layer.
        bias: Whether the output layer has a bias (see ``LinearHead``: pairs give it no gradient).
    """

    def __init__(
        self,
        in_features: int | None = None,
        hidden_size: int = 1024,
        activation: Activation = "silu",
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        self.hidden_size, self.activation, self.dropout, self.bias = hidden_size, activation, dropout, bias
        super().__init__(in_features)

    def build(self, in_features: int) -> None:
        self.mlp = nn.Sequential(
            nn.Dropout(self.dropout),
            nn.Linear(in_features, self.hidden_size),
            ACTIVATIONS[self.activation](),
            nn.Dropout(self.dropout),
            nn.Linear(self.hidden_size, 1, bias=self.bias),
        )

    def forward(self, features: torch.Tensor) -> HeadOutput:
        return HeadOutput(score=self.mlp(features).squeeze(-1))


class MultiAspectHead(RewardHead):
    """One score per named aspect, plus an overall score that mixes them.

    The overall score is a learned, softmax-weighted mean of the aspect scores (weights start
    equal), so it stays on the aspects' scale and each aspect's share is readable.

    Args:
        aspects: Aspect names, e.g. ``["alignment", "quality"]``.
        in_features: Feature size; None takes the backbone's.
        hidden_size: Width of a shared hidden layer; None reads the aspects linearly.
        activation: Non-linearity of the hidden layer.
    """

    def __init__(
        self,
        aspects: list[str],
        in_features: int | None = None,
        hidden_size: int | None = None,
        activation: Activation = "silu",
    ) -> None:
        if not aspects or len(set(aspects)) != len(aspects):
            raise ValueError(f"MultiAspectHead needs distinct aspect names; got {aspects!r}.")
        self.aspects = list(aspects)
        self.hidden_size, self.activation = hidden_size, activation
        super().__init__(in_features)

    def build(self, in_features: int) -> None:
        width = self.hidden_size or in_features
        self.trunk = (
            nn.Sequential(nn.Linear(in_features, width), ACTIVATIONS[self.activation]())
            if self.hidden_size
            else nn.Identity()
        )
        self.proj = nn.Linear(width, len(self.aspects))
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)
        self.mix_logits = nn.Parameter(torch.zeros(len(self.aspects)))

    def forward(self, features: torch.Tensor) -> HeadOutput:
        aspects = self.proj(self.trunk(features))  # (N, A)
        overall = aspects @ torch.softmax(self.mix_logits, dim=0)
        return HeadOutput(score=overall, aspects=aspects)
