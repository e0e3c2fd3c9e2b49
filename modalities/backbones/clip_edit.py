"""``ClipEditBackbone``: an instruction-guided edit as features of source, edit and instruction.

The fast edit scorer. A small edit barely moves a pooled embedding of the whole image, and the
difference of two such embeddings loses *which* object changed; but an edit judge must check
exactly that ("the red circle", not the green square). So besides the source ``s``, the edited
image ``e`` and the instruction ``t``, the image tower sees two *change crops* of each candidate:
``b``, the source where the pixels changed, and ``a``, the edit there, both mid-grey elsewhere and
zoomed in on the changed region. ``b`` shows the object that was touched before the edit (its colour
and shape, to match against the instruction's object words), ``a`` what it became (the new colour,
place or size; an added shape). A no-op gives two blank crops; an edit of the wrong object shows
that object in ``b``; a near miss shows the named object in ``b`` and the wrong change in ``a``.

The head reads ``[e, s, t, e - s, b, a]`` (unit-norm CLIP embeddings scaled by ``sqrt(D)``) and the
products ``b * t``, ``a * t`` and ``e * t`` (scaled by ``D``): "is the touched object the one the text
names?", "did it become what the text asks?" and "does the result match the text?".

Speed: N candidate edits of one source share their prefix. ``collate`` keeps each distinct source
image and each distinct instruction once (``source_index``/``text_index`` say which one a sample
uses), and ``forward`` encodes them once: scoring 16 edits of one source runs the image tower on
49 images (16 edits, 32 change crops, 1 source) instead of 64, and the text tower once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mmreward.types import Sample
from modalities.backbones.clip import ClipBackbone
from modalities.image import load_image, normalize, pil_to_tensor, resize_center_crop

EDIT_PARTS = 9  # e, s, t, e - s, b, a, b*t, a*t, e*t
CHANGE_THRESHOLD = 0.1
"""A pixel counts as changed, fully, once a channel moves by this much (images in [0, 1]); smaller
moves count in proportion, so anti-aliased edges fade in rather than flicker."""
ZOOM_MARGIN = 0.15
"""Room left around the changed pixels when the crops zoom in, as a fraction of the box side."""
ZOOM_MIN_SIDE = 0.25
"""The zoomed box is at least this fraction of the image side (a zoom of 4x at most)."""


def change_crops(source: torch.Tensor, edit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The source and the edit where they differ, mid-grey elsewhere, both zoomed in on the square box
    around the changed pixels: (N, 3, H, W) each, in [0, 1].

    The zoom shows a small object's shape at a size the tower can read; both crops share one box, so
    a move or a resize still shows as where and how large the object is in ``after`` against
    ``before``. Nothing changed: both crops are mid-grey.
    """
    changed = ((edit - source).abs().amax(1, keepdim=True) / CHANGE_THRESHOLD).clamp(max=1)  # (N, 1, H, W)
    grey = 0.5 * (1 - changed)
    crops = torch.cat([changed * source + grey, changed * edit + grey], dim=1)  # (N, 6, H, W)
    n, _, h, w = crops.shape
    # the box of pixels that changed at least half-way, in grid_sample's [-1, 1] coordinates
    rows, cols = changed[:, 0].amax(2) >= 0.5, changed[:, 0].amax(1) >= 0.5  # (N, H), (N, W)
    top, bottom = rows.int().argmax(1), h - rows.flip(1).int().argmax(1)
    left, right = cols.int().argmax(1), w - cols.flip(1).int().argmax(1)
    side = torch.maximum((bottom - top) / h, (right - left) / w) * (1 + 2 * ZOOM_MARGIN)
    side = torch.where(rows.any(1), side.clamp(ZOOM_MIN_SIDE, 1.0), 1.0)  # (N,)
    centre_x, centre_y = (left + right) / w - 1, (top + bottom) / h - 1
    zeros = torch.zeros_like(side)
    theta = torch.stack([side, zeros, centre_x, zeros, side, centre_y], dim=1).view(n, 2, 3)
    grid = torch.nn.functional.affine_grid(theta, [n, 6, h, w], align_corners=False)
    # sampled around mid-grey, so the box may reach past the image's edge into more grey
    zoomed = torch.nn.functional.grid_sample(crops - 0.5, grid, align_corners=False) + 0.5
    return zoomed[:, :3], zoomed[:, 3:]


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
        """Load each edit and make its change crops, load each distinct source once, and tokenize
        each distinct instruction once."""
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
        before, after = change_crops(source[index], edit)
        mean, std = self.image_mean, self.image_std
        return {
            "pixel_values": normalize(torch.cat([edit, before, after]), mean, std),  # edits, then crops
            "source_pixel_values": normalize(source, mean, std),
            "source_index": index,
            **self.encode_prompts([s.prompt for s in samples]),
        }

    def edit_features(
        self,
        edit: torch.Tensor,
        source: torch.Tensor,
        before: torch.Tensor,
        after: torch.Tensor,
        text: torch.Tensor,
    ) -> torch.Tensor:
        """The head's input from matched (N, D) unit-norm edit, source, change-crop and instruction embeddings."""
        d = self.embed_dim
        parts = [edit, source, text, edit - source, before, after]
        products = [before * text, after * text, edit * text]
        return torch.cat([d**0.5 * p for p in parts] + [d * p for p in products], dim=-1)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        n = len(inputs["source_index"])
        # one tower call for edits, crops and sources: a BatchNorm tower (open_clip's ResNets) then
        # normalises them with the same statistics in training, as it does in eval
        pixels = torch.cat([inputs["pixel_values"], inputs["source_pixel_values"]])
        edit, before, after, source = self.encode_image(pixels).split([n, n, n, len(pixels) - 3 * n])
        text = self.encode_text(inputs["input_ids"])  # (P, D), P distinct instructions
        source, text = source[inputs["source_index"]], text[inputs["text_index"]]  # (N, D) each
        return self.edit_features(edit, source, before, after, text)
