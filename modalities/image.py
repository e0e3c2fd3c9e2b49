"""Load and check images; the resize-and-normalise steps in both PIL and (differentiable) torch form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from mmreward.types import Sample


def load_image(image: Any, sample: Sample | None = None, field: str = "image") -> Image.Image:
    """Return ``image`` as an RGB PIL image: from a path, a PIL image, an (H, W[, C]) uint8 array,
    or a (C, H, W) float tensor in [0, 1].

    Raises:
        FileNotFoundError / ValueError naming the sample's file, record and field.
    """
    where = sample.where(field) if sample is not None else field
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{where}: image file {str(path)!r} does not exist.")
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(
                f"{where}: cannot read image {str(path)!r} ({err}). Re-encode it as PNG or JPEG."
            ) from err
    if isinstance(image, torch.Tensor):
        image = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(
                f"{where}: an image array must be uint8 (H, W) or (H, W, C); got {image.dtype} {image.shape}."
            )
        return Image.fromarray(image).convert("RGB")
    if image is None:
        raise ValueError(f"{where}: the sample has no image; this model scores images.")
    raise TypeError(
        f"{where}: cannot use a {type(image).__name__} as an image; pass a path, PIL image, array or tensor."
    )


def resize_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the short side to ``size`` (bicubic, antialiased) and crop the centre; differentiable.

    Args:
        images: (N, C, H, W) tensor.
    """
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        images = F.interpolate(
            images, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True
        )
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return images[..., top : top + size, left : left + size]


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Channel-wise ``(x - mean) / std`` for (N, C, H, W) images in [0, 1]."""
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """(C, H, W) float tensor in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
