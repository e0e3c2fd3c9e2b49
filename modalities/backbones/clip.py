"""``ClipBackbone``: an open_clip model whose image and text towers give a joint feature."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from mmreward.configurable import Configurable
from mmreward.optional import require
from mmreward.types import Sample
from modalities.image import image_to_pixels, load_image, map_threads, normalize, resize_center_crop


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _register_config(model_config: dict[str, Any]) -> str:
    """Register an inline open_clip model config under a name derived from its content."""
    open_clip = require("open_clip", "clip")
    text = json.dumps(model_config, sort_keys=True)
    name = "mmreward-" + hashlib.sha1(text.encode()).hexdigest()[:12]
    if open_clip.get_model_config(name) is None:
        path = Path(tempfile.mkdtemp(prefix="mmreward-openclip-")) / f"{name}.json"
        path.write_text(text)
        open_clip.add_model_config(path)
    return name


class ClipBackbone(nn.Module, Configurable):
    """An open_clip model as a reward backbone (PickScore / HPSv2 / ImageReward-style scoring).

    The feature for the head joins the two towers' unit-norm embeddings:
    ``product`` is ``D * img * txt`` (its sum is ``D`` times the cosine similarity, so
    ``LinearHead(init="ones", scale=logit_scale / D)`` reproduces PickScore's score), and
    ``concat`` is ``[sqrt(D) img, sqrt(D) txt, D img*txt]``. The scaling keeps entries of order one,
    so a freshly initialised head learns at a normal rate.

    Samples that share a prompt share one text encoding: ``collate`` tokenizes each distinct
    prompt once and ``forward`` gathers its embedding for every image.

    Args:
        model_name: An open_clip model name (``"ViT-H-14"``), or a name for ``model_config``.
        pretrained: An open_clip pretrained tag (``"laion2b_s32b_b79k"``) or a local checkpoint
            path; None starts from random weights.
        model_config: An open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``), as
            a dict or a JSON path, for architectures open_clip does not list.
        feature: How the towers' embeddings are joined (see above).
        freeze_image: Keep the image tower's weights fixed.
        freeze_text: Keep the text tower's weights fixed.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = None,
        model_config: dict[str, Any] | str | None = None,
        feature: Literal["product", "concat"] = "product",
        freeze_image: bool = False,
        freeze_text: bool = False,
    ) -> None:
        super().__init__()
        open_clip = require("open_clip", "clip")
        if isinstance(model_config, str):
            model_config = json.loads(Path(model_config).read_text())
        registry_name = _register_config(model_config) if model_config is not None else model_name
        if open_clip.get_model_config(registry_name) is None:
            raise ValueError(
                f"open_clip knows no model {model_name!r}. Use a name from open_clip.list_models() "
                "or pass model_config."
            )
        self.model_config = dict(model_config or open_clip.get_model_config(registry_name))
        with _quiet_root_logger():  # open_clip warns on the root logger whenever no weights are named
            self.model = open_clip.create_model(registry_name, pretrained=pretrained)
        self.tokenizer = open_clip.get_tokenizer(registry_name)
        self.embed_dim = int(self.model_config["embed_dim"])
        self.feature = feature
        self.feature_dim = self.embed_dim * (3 if feature == "concat" else 1)
        visual = self.model.visual
        self.image_size = int(
            visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
        )
        self.image_mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
        self.image_std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
        for unused in ("logit_scale", "logit_bias"):  # the head scores; CLIP's contrastive scale is not used
            param = getattr(self.model, unused, None)
            if isinstance(param, nn.Parameter):
                param.requires_grad_(False)
        if freeze_image:
            self.model.visual.requires_grad_(False)
        if freeze_text:
            for name, param in self.model.named_parameters():
                if not name.startswith("visual."):
                    param.requires_grad_(False)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "resize": "short side, bicubic, centre crop",
            "mean": self.image_mean,
            "std": self.image_std,
        }

    def export_args(self, directory: Path | None, prefix: str) -> dict[str, Any]:
        """Rebuild from the architecture alone: the weights come from model.safetensors."""
        return {"model_config": self.model_config, "pretrained": None}

    # -- inputs ---------------------------------------------------------------------------------

    def pixels_from_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable preprocessing of (N, 3, H, W) images in [0, 1] to the tower's input."""
        return normalize(resize_center_crop(images, self.image_size), self.image_mean, self.image_std)

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Tokenize each distinct prompt once; ``text_index[i]`` says which one sample i uses."""
        unique: dict[str, int] = {}
        index = [unique.setdefault(p, len(unique)) for p in prompts]
        return {
            "input_ids": self.tokenizer(list(unique)),
            "text_index": torch.tensor(index, dtype=torch.long),
        }

    def tensor_inputs(self, images: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Inputs for ``forward`` from (N, 3, H, W) images in [0, 1]; gradients flow to ``images``.

        This is the path a diffusion fine-tuning loop takes (``integrations.diffusers.RewardFn``).
        """
        if len(prompts) != len(images):
            raise ValueError(
                f"Got {len(images)} images but {len(prompts)} prompts; pass one prompt per image."
            )
        return {"pixel_values": self.pixels_from_tensor(images), **self.encode_prompts(list(prompts))}

    def collate(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        """Load, resize and normalise each sample's image; tokenize the distinct prompts.

        Images may differ in size, so each is resized on its own, in uint8 as PIL does (see
        ``modalities.image.image_to_pixels``), on a few threads (``map_threads``).
        """

        def pixels(sample: Sample) -> torch.Tensor:  # (1, 3, S, S)
            image = load_image(sample.image, sample, "image")
            return image_to_pixels(image, self.image_size, self.image_mean, self.image_std)

        return {
            "pixel_values": torch.cat(map_threads(pixels, samples)),
            **self.encode_prompts([s.prompt for s in samples]),
        }

    # -- features -------------------------------------------------------------------------------

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, D) unit-norm image embeddings."""
        return nn.functional.normalize(self.model.encode_image(pixel_values), dim=-1)

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(T, D) unit-norm text embeddings."""
        return nn.functional.normalize(self.model.encode_text(input_ids), dim=-1)

    def join(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The head's input from matched (N, D) image and text embeddings."""
        d = self.embed_dim
        product = d * image * text
        if self.feature == "product":
            return product
        return torch.cat([d**0.5 * image, d**0.5 * text, product], dim=-1)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        image = self.encode_image(inputs["pixel_values"])  # (N, D)
        text = self.encode_text(inputs["input_ids"])  # (T, D), T distinct prompts
        return self.join(image, text[inputs["text_index"]])
