"""CLIP-similarity rewards: PickScore, HPSv2 / HPSv2.1 and CLIPScore on an open_clip model.

All three score ``scale * cos(image, prompt)`` on the two towers' embeddings and differ in the
weights and the scale: PickScore multiplies by CLIP's learned ``exp(logit_scale)``
(Kirstain et al., 2023), HPSv2 takes the plain cosine (Wu et al., 2023), CLIPScore takes
``2.5 * max(cos, 0)`` (Hessel et al., 2021).

PickScore is published as a transformers ``CLIPModel`` state dict; ``open_clip_from_transformers``
converts it to the open_clip layout (q/k/v projections joined into ``in_proj``, projections
transposed). HPSv2 is published as an open_clip state dict under ``"state_dict"``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from mmreward.configurable import Configurable
from mmreward.hub import load_converted, read_state_dict
from mmreward.types import HeadOutput, Sample
from modalities.backbones.clip import ClipBackbone

# transformers CLIPModel name -> open_clip name, for the parts that map one to one
_RENAMES = [
    (r"^text_model\.embeddings\.token_embedding\.", "token_embedding."),
    (r"^text_model\.final_layer_norm\.", "ln_final."),
    (r"^text_model\.encoder\.layers\.", "transformer.resblocks."),
    (r"^vision_model\.embeddings\.patch_embedding\.", "visual.conv1."),
    (r"^vision_model\.pre_layrnorm\.", "visual.ln_pre."),
    (r"^vision_model\.post_layernorm\.", "visual.ln_post."),
    (r"^vision_model\.encoder\.layers\.", "visual.transformer.resblocks."),
    (r"\.layer_norm1\.", ".ln_1."),
    (r"\.layer_norm2\.", ".ln_2."),
    (r"\.mlp\.fc1\.", ".mlp.c_fc."),
    (r"\.mlp\.fc2\.", ".mlp.c_proj."),
    (r"\.self_attn\.out_proj\.", ".attn.out_proj."),
]
_WHOLE = {
    "logit_scale": ("logit_scale", False),
    "text_model.embeddings.position_embedding.weight": ("positional_embedding", False),
    "vision_model.embeddings.class_embedding": ("visual.class_embedding", False),
    "vision_model.embeddings.position_embedding.weight": ("visual.positional_embedding", False),
    "text_projection.weight": ("text_projection", True),  # Linear (E, W) -> matrix (W, E)
    "visual_projection.weight": ("visual.proj", True),
}


def open_clip_from_transformers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a transformers ``CLIPModel`` state dict (PickScore's layout) to open_clip's ``CLIP``.

    ``position_ids`` buffers (in older transformers checkpoints) are dropped; keys the map does not
    know are kept as they are, so the strict load names them.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        if key.endswith("position_ids"):
            continue
        if key in _WHOLE:
            target, transpose = _WHOLE[key]
            out[target] = tensor.T if transpose else tensor
            continue
        new = key
        for pattern, repl in _RENAMES:
            new = re.sub(pattern, repl, new)
        match = re.match(r"^(.*)\.self_attn\.([qkv])_proj\.(weight|bias)$", new)
        if match:
            qkv.setdefault((match[1], match[3]), {})[match[2]] = tensor
            continue
        out[new] = tensor
    for (block, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:  # an incomplete file: keep what is there, the load names it
            out.update({f"{block}.self_attn.{p}_proj.{kind}": t for p, t in parts.items()})
            continue
        out[f"{block}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def convert_clip(state: Mapping[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """A published CLIP state dict in open_clip's layout: ``"transformers"`` is converted,
    ``"open_clip"`` loses the ``module.`` prefix that DDP training leaves."""
    if layout == "transformers":
        return open_clip_from_transformers(state)
    return {k.removeprefix("module."): v for k, v in state.items()}


class ClipSimilarityReward(nn.Module, Configurable):
    """``scale * cos(image, prompt)`` of an open_clip model: PickScore, HPSv2, CLIPScore.

    A reward model (``collate``/``forward``), so ``Scorer``, ``save_pretrained`` and ``mmreward
    fit`` take it; the fine-tuning path trains both towers (``logit_scale`` stays fixed).

    Args:
        model_name: An open_clip model name (``"ViT-H-14"`` for PickScore and HPSv2).
        model_config: An open_clip model config, for architectures open_clip does not list.
        pretrained: An open_clip pretrained tag or file for the starting weights (CLIPScore's
            ``"openai"``); None starts from random weights (the checkpoint brings them).
        checkpoint: The published weights file; None keeps the ``pretrained`` weights.
        layout: The checkpoint's key layout: ``"open_clip"`` (HPSv2; a ``"state_dict"`` wrapper and
            ``module.`` prefixes are removed) or ``"transformers"`` (PickScore's ``CLIPModel``).
        scale: The multiplier of the cosine; None uses the model's ``exp(logit_scale)`` (PickScore).
        floor: Clamp the score from below (CLIPScore's ``max(cos, 0)``: 0.0); None does not clamp.
        name: The model name for provenance.
    """

    aspects: list[str] = []

    def __init__(
        self,
        model_name: str = "ViT-H-14",
        model_config: dict[str, Any] | str | None = None,
        pretrained: str | None = None,
        checkpoint: str | None = None,
        layout: Literal["open_clip", "transformers"] = "open_clip",
        scale: float | None = 1.0,
        floor: float | None = None,
        name: str = "clip-similarity",
    ) -> None:
        super().__init__()
        self.backbone = ClipBackbone(model_name, pretrained=pretrained, model_config=model_config)
        self.layout, self.scale, self.floor, self.name = layout, scale, floor, name
        if checkpoint is not None:
            self.load_published(checkpoint)

    def load_published(self, path: str | Path) -> None:
        """Load the published checkpoint at ``path`` into the open_clip model, strictly."""
        state = convert_clip(read_state_dict(path, key="state_dict"), self.layout)
        load_converted(self.backbone.model, state, path)

    def export_args(self, directory: Path | None, prefix: str) -> dict[str, Any]:
        """Rebuild from the architecture alone: the weights are in model.safetensors."""
        return {"model_config": self.backbone.model_config, "pretrained": None, "checkpoint": None}

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.backbone.preprocessing

    def collate(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        return self.backbone.collate(samples)

    def tensor_inputs(self, images: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Differentiable inputs from (N, 3, H, W) images in [0, 1] (the diffusers reward path)."""
        return self.backbone.tensor_inputs(images, prompts)

    def forward(self, inputs: dict[str, torch.Tensor]) -> HeadOutput:
        image = self.backbone.encode_image(inputs["pixel_values"])  # (N, D), unit norm
        text = self.backbone.encode_text(inputs["input_ids"])  # (T, D), one per distinct prompt
        cosine = (image * text[inputs["text_index"]]).sum(-1)  # (N,)
        scale = self.backbone.model.logit_scale.exp() if self.scale is None else self.scale
        score = scale * cosine
        if self.floor is not None:
            score = score.clamp(min=self.floor)
        return HeadOutput(score=score)
