"""ImageReward (Xu et al., 2023): BLIP's image-grounded text encoder read at [CLS], an MLP, z-scored.

Published as ``ImageReward.pt`` (THUDM/ImageReward): ``blip.visual_encoder.*`` (a ViT-L/16 at 224
px in the timm layout), ``blip.text_encoder.*`` (BERT-base with cross-attention to the image
tokens), ``blip.vision_proj`` / ``blip.text_proj`` (BLIP's contrastive projections, which the score
does not use, so they are dropped) and ``mlp.layers.{0,2,4,6,7}``. The score is
``(mlp(text_encoder(prompt, image)[:, 0]) - mean) / std`` with the published mean and std.

The towers are transformers' ``BlipVisionModel`` and ``BlipTextModel``; ``convert_imagereward``
maps the timm ViT names onto the former (the BERT names match the latter as they are).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmreward.configurable import Configurable
from mmreward.hub import load_converted, read_state_dict
from mmreward.optional import require
from mmreward.types import HeadOutput, Sample
from modalities.hub.aesthetic import aesthetic_mlp
from modalities.image import load_image, normalize, pil_to_tensor, resize_center_crop

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # ImageReward normalises with CLIP's constants
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# BLIP ViT-L/16 at 224 px and BLIP's med_config.json (BERT-base, cross-attention to 1024-wide tokens)
PUBLISHED_VISION = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 16,
    "layer_norm_eps": 1e-6,
    "hidden_act": "gelu",
}
PUBLISHED_TEXT = {
    "vocab_size": 30524,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 512,
    "encoder_hidden_size": 1024,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
}
MEAN, STD = 0.16717362830052426, 1.0333394966054072  # ImageReward's published reward statistics

_VISION_RENAMES = [
    (r"^cls_token$", "embeddings.class_embedding"),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"^blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
    (r"^norm\.", "post_layernorm."),
]
UNUSED_PREFIXES = ("blip.vision_proj.", "blip.text_proj.")
"""Published keys the score does not read (BLIP's contrastive projections)."""


def convert_imagereward(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Published ``ImageReward.pt`` keys -> ``ImageReward`` module keys (unknown keys kept as they are)."""
    out = {}
    for key, tensor in state.items():
        if key.startswith(UNUSED_PREFIXES) or key.endswith("position_ids"):
            continue
        if key.startswith("blip.visual_encoder."):
            new = key.removeprefix("blip.visual_encoder.")
            for pattern, repl in _VISION_RENAMES:
                new = re.sub(pattern, repl, new)
            key = "vision." + new
        elif key.startswith("blip.text_encoder."):
            key = "text." + key.removeprefix("blip.text_encoder.")
        elif key.startswith("mlp.layers."):
            key = "mlp." + key.removeprefix("mlp.layers.")
        out[key] = tensor
    return out


class ImageReward(nn.Module, Configurable):
    """ImageReward: ``(mlp(BLIP_text(prompt | image)[CLS]) - mean) / std``.

    Args:
        tokenizer: A BERT tokenizer (``"bert-base-uncased"`` as published): a hub id or a folder.
        vision_config: ``BlipVisionConfig`` arguments; None is the published ViT-L/16.
        text_config: ``BlipTextConfig`` arguments; None is the published BERT-base with cross-attention.
        checkpoint: The published ``ImageReward.pt``; None leaves the weights random.
        max_length: Prompt tokens (ImageReward pads and truncates to 35).
        mean: Subtracted from the MLP output (published value).
        std: Divides the centred output (published value).
        name: The model name for provenance.
    """

    aspects: list[str] = []

    def __init__(
        self,
        tokenizer: str,
        vision_config: dict[str, Any] | None = None,
        text_config: dict[str, Any] | None = None,
        checkpoint: str | None = None,
        max_length: int = 35,
        mean: float = MEAN,
        std: float = STD,
        name: str = "imagereward",
    ) -> None:
        super().__init__()
        transformers = require("transformers", "vlm")
        self.vision_config = dict(vision_config or PUBLISHED_VISION)
        self.text_config = dict(text_config or PUBLISHED_TEXT)
        self.vision = transformers.BlipVisionModel(transformers.BlipVisionConfig(**self.vision_config))
        self.text = transformers.BlipTextModel(
            transformers.BlipTextConfig(**self.text_config), add_pooling_layer=False
        )
        self.mlp = aesthetic_mlp(self.text.config.hidden_size)  # the same MLP as the aesthetic predictor
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer)
        self.image_size = int(self.vision_config.get("image_size", 224))
        self.max_length, self.mean, self.std, self.name = max_length, mean, std, name
        if checkpoint is not None:
            load_converted(
                self, convert_imagereward(read_state_dict(checkpoint, key="state_dict")), checkpoint
            )

    def export_args(self, directory: Path | None, prefix: str) -> dict[str, Any]:
        """Write the tokenizer under ``prefix``; the weights are in model.safetensors."""
        args: dict[str, Any] = {"vision_config": self.vision_config, "text_config": self.text_config}
        args["checkpoint"] = None
        if directory is not None:
            self.tokenizer.save_pretrained(directory / prefix / "tokenizer")
            args["tokenizer"] = {"asset": f"{prefix}/tokenizer".lstrip("/")}
        return args

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "resize": "short side, bicubic, centre crop",
            "mean": OPENAI_MEAN,
            "std": OPENAI_STD,
            "max_length": self.max_length,
        }

    def pixels_from_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable preprocessing of (N, 3, H, W) images in [0, 1]."""
        return normalize(resize_center_crop(images, self.image_size), OPENAI_MEAN, OPENAI_STD)

    def tokenize(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        text = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"]}

    def tensor_inputs(self, images: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Differentiable inputs from (N, 3, H, W) images in [0, 1] (the diffusers reward path)."""
        return {"pixel_values": self.pixels_from_tensor(images), **self.tokenize(list(prompts))}

    def collate(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        pixels = [
            self.pixels_from_tensor(pil_to_tensor(load_image(s.image, s, "image"))[None]) for s in samples
        ]
        return {"pixel_values": torch.cat(pixels), **self.tokenize([s.prompt for s in samples])}

    def forward(self, inputs: dict[str, torch.Tensor]) -> HeadOutput:
        image = self.vision(pixel_values=inputs["pixel_values"]).last_hidden_state  # (N, P+1, Dv)
        image_mask = torch.ones(image.shape[:-1], dtype=torch.long, device=image.device)
        text = self.text(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            encoder_hidden_states=image,
            encoder_attention_mask=image_mask,
        ).last_hidden_state  # (N, L, Dt)
        reward = self.mlp(text[:, 0].float()).squeeze(-1)
        return HeadOutput(score=(reward - self.mean) / self.std)
