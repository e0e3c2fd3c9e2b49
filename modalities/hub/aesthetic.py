"""The LAION improved aesthetic predictor: an MLP on L2-normalised CLIP ViT-L/14 image embeddings.

Published as ``sac+logos+ava1-l14-linearMSE.pth`` (christophschuhmann/improved-aesthetic-predictor):
a state dict of ``layers.{0,2,4,6,7}`` (five linear layers, no non-linearity between them; dropout
at 1, 3, 5), trained with MSE on mean ratings of 1-10. The CLIP weights are OpenAI's ViT-L/14,
loaded separately (``pretrained``). The prompt is not used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmreward.configurable import Configurable
from mmreward.hub import load_converted, read_state_dict
from mmreward.types import HeadOutput, Sample
from modalities.backbones.clip import ClipBackbone
from modalities.image import load_image, pil_to_tensor


def aesthetic_mlp(in_features: int) -> nn.Sequential:
    """The predictor's layers, indexed as published (Linear at 0, 2, 4, 6, 7)."""
    return nn.Sequential(
        nn.Linear(in_features, 1024),
        nn.Dropout(0.2),
        nn.Linear(1024, 128),
        nn.Dropout(0.2),
        nn.Linear(128, 64),
        nn.Dropout(0.1),
        nn.Linear(64, 16),
        nn.Linear(16, 1),
    )


def convert_aesthetic(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Published ``layers.N.*`` (or a Lightning ``model.layers.N.*``) -> ``AestheticReward.mlp`` keys."""
    return {k.removeprefix("model.").removeprefix("layers."): v for k, v in state.items()}


class AestheticReward(nn.Module, Configurable):
    """The LAION aesthetic score: ``mlp(normalize(clip.encode_image(x)))``, about 1-10.

    Args:
        model_name: The open_clip model of the embeddings (``"ViT-L-14"`` as published).
        model_config: An open_clip model config, for architectures open_clip does not list.
        pretrained: The CLIP weights: an open_clip tag (``"openai"``) or a local file.
        checkpoint: The published predictor file (``sac+logos+ava1-l14-linearMSE.pth``).
        name: The model name for provenance.
    """

    aspects: list[str] = []

    def __init__(
        self,
        model_name: str = "ViT-L-14",
        model_config: dict[str, Any] | str | None = None,
        pretrained: str | None = None,
        checkpoint: str | None = None,
        name: str = "aesthetic",
    ) -> None:
        super().__init__()
        self.backbone = ClipBackbone(model_name, pretrained=pretrained, model_config=model_config)
        self.mlp = aesthetic_mlp(self.backbone.embed_dim)
        self.name = name
        if checkpoint is not None:
            load_converted(
                self.mlp, convert_aesthetic(read_state_dict(checkpoint, key="state_dict")), checkpoint
            )

    def export_args(self, directory: Path | None, prefix: str) -> dict[str, Any]:
        """Rebuild from the architecture alone: the weights are in model.safetensors."""
        return {"model_config": self.backbone.model_config, "pretrained": None, "checkpoint": None}

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {**self.backbone.preprocessing, "prompt": "not used"}

    def collate(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        """Load, resize and normalise each sample's image (the prompt is not used)."""
        pixels = [
            self.backbone.pixels_from_tensor(pil_to_tensor(load_image(s.image, s, "image"))[None])
            for s in samples
        ]
        return {"pixel_values": torch.cat(pixels)}

    def tensor_inputs(self, images: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Differentiable inputs from (N, 3, H, W) images in [0, 1] (the diffusers reward path)."""
        return {"pixel_values": self.backbone.pixels_from_tensor(images)}

    def forward(self, inputs: dict[str, torch.Tensor]) -> HeadOutput:
        embedding = self.backbone.encode_image(inputs["pixel_values"])  # (N, D), unit norm
        return HeadOutput(score=self.mlp(embedding).squeeze(-1))
