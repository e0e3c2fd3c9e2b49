"""``RewardModel``: a backbone that turns samples into features, and a head that scores them."""

from __future__ import annotations

from typing import Any

from torch import nn

from mmreward.configurable import Configurable
from mmreward.heads import RewardHead
from mmreward.types import HeadOutput, Sample


class RewardModel(nn.Module, Configurable):
    """The generic reward model: ``head(backbone(collate(samples)))``.

    Args:
        backbone: Any module with ``feature_dim``, ``collate(samples) -> inputs`` and
            ``forward(inputs) -> (N, feature_dim)`` (``modalities.backbones``).
        head: A ``RewardHead``; its ``in_features`` is bound to the backbone's ``feature_dim``.
        name: A model name for provenance (e.g. ``"t2i-quickstart"``).
    """

    def __init__(self, backbone: nn.Module, head: RewardHead, name: str = "reward-model") -> None:
        super().__init__()
        for method in ("collate", "forward"):
            if not callable(getattr(backbone, method, None)):
                raise TypeError(
                    f"The backbone {type(backbone).__name__} has no {method}(); see mmreward.types.Backbone."
                )
        if not isinstance(getattr(backbone, "feature_dim", None), int):
            raise TypeError(f"The backbone {type(backbone).__name__} must set an int `feature_dim`.")
        self.backbone = backbone
        self.head = head
        self.name = name
        head.bind(backbone.feature_dim)

    @property
    def aspects(self) -> list[str]:
        """The names of the per-aspect scores, in the order of ``HeadOutput.aspects``."""
        return list(getattr(self.head, "aspects", []))

    @property
    def preprocessing(self) -> dict[str, Any]:
        """What the backbone does to inputs (image size, frames, ...), for provenance."""
        return dict(getattr(self.backbone, "preprocessing", {}))

    def collate(self, samples: list[Sample]) -> dict[str, Any]:
        """Turn samples into the backbone's inputs (CPU tensors)."""
        return self.backbone.collate(samples)

    def forward(self, inputs: dict[str, Any]) -> HeadOutput:
        return self.head(self.backbone(inputs))
