"""``ClipEditBackbone``: an instruction-guided edit as features of source, edit and instruction.

The fast edit scorer. The feature for the head is built from four unit-norm CLIP embeddings: the
source image ``s``, the edited image ``e``, the instruction ``t``, and the *change image* ``c``, the
image tower's view of the pixel difference ``(edit - source) / 2 + 0.5`` (mid-grey where nothing
changed). A small edit moves a pooled image embedding very little, but it fills the change image,
so the tower sees where and what changed directly. The head reads ``[e, s, t, e - s, c]`` (scaled by
``sqrt(D)``) and the products ``c * t`` and ``e * t`` (scaled by ``D``): "did the image change the
way the text says?" and "does the result match the text?".

Speed: N candidate edits of one source share their prefix. ``collate`` keeps each distinct source
image and each distinct instruction once (``source_index``/``text_index`` say which one a sample
uses), and ``forward`` encodes them once: scoring 16 edits of one source runs the image tower on
33 images (16 edits, 16 change images, 1 source) instead of 48, and the text tower once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mmreward.types import Sample
from modalities.backbones.clip import ClipBackbone
from modalities.image import load_image, normalize, pil_to_tensor, resize_center_crop

EDIT_PARTS = 7  # e, s, t, e - s, c, c*t, e*t


def _media_key(media: Any) -> Any:
    """A key that is equal for the same source: its path, or the object itself."""
    return str(Path(media)) if isinstance(media, (str, Path)) else id(media)


class ClipEditBackbone(ClipBackbone):
    """An open_clip model that scores an edit from (source image, instruction, edited image).

    Samples carry the instruction in ``prompt``, the image before the edit in ``source_image`` and
    the edited image in ``image``.

    Args:
        model_name: An open_clip model name, or a name for ``model_config``.
        pretrained: An open_clip pretrained tag or checkpoint path; None starts from random weights.
        model_config: An open_clip model config dict or JSON path.
        freeze_image: Keep the image tower fixed.
        freeze_text: Keep the text tower fixed.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = None,
        model_config: dict[str, Any] | str | None = None,
        freeze_image: bool = False,
        freeze_text: bool = False,
    ) -> None:
        super().__init__(model_name, pretrained, model_config, "concat", freeze_image, freeze_text)
        self.feature_dim = EDIT_PARTS * self.embed_dim

    def _resized(self, image: Any, sample: Sample, field: str) -> torch.Tensor:
        """(1, 3, S, S) in [0, 1] at the tower's resolution (the steps of ``pixels_from_tensor``)."""
        return resize_center_crop(
            pil_to_tensor(load_image(image, sample, field))[None], self.image_size
        ).clamp(0, 1)

    def collate(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        """Load each edit and its change image, each distinct source once, and tokenize each distinct
        instruction once."""
        sources: dict[Any, int] = {}
        source_images, source_index = [], []
        for s in samples:
            if s.source_image is None:
                raise ValueError(
                    f"{s.where('source_image')}: an edit sample needs the image before the edit in source_image."
                )
            key = _media_key(s.source_image)
            if key not in sources:
                sources[key] = len(sources)
                source_images.append(self._resized(s.source_image, s, "source_image"))
            source_index.append(sources[key])
        index = torch.tensor(source_index, dtype=torch.long)
        source = torch.cat(source_images)  # (S, 3, H, W)
        edit = torch.cat([self._resized(s.image, s, "image") for s in samples])  # (N, 3, H, W)
        change = (edit - source[index]) * 0.5 + 0.5
        mean, std = self.image_mean, self.image_std
        return {
            "pixel_values": normalize(torch.cat([edit, change]), mean, std),  # edits, then change images
            "source_pixel_values": normalize(source, mean, std),
            "source_index": index,
            **self.encode_prompts([s.prompt for s in samples]),
        }

    def edit_features(
        self, edit: torch.Tensor, source: torch.Tensor, change: torch.Tensor, text: torch.Tensor
    ) -> torch.Tensor:
        """The head's input from matched (N, D) unit-norm edit, source, change-image and instruction embeddings."""
        d = self.embed_dim
        parts = [d**0.5 * edit, d**0.5 * source, d**0.5 * text, d**0.5 * (edit - source), d**0.5 * change]
        return torch.cat([*parts, d * change * text, d * edit * text], dim=-1)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        n = len(inputs["source_index"])
        # one tower call for edits, change images and sources: a BatchNorm tower (open_clip's ResNets)
        # then normalises them with the same statistics in training, as it does in eval
        pixels = torch.cat([inputs["pixel_values"], inputs["source_pixel_values"]])
        edit, change, source = self.encode_image(pixels).split([n, n, len(pixels) - 2 * n])  # (N|N|S, D)
        text = self.encode_text(inputs["input_ids"])  # (P, D), P distinct instructions
        return self.edit_features(edit, source[inputs["source_index"]], change, text[inputs["text_index"]])
