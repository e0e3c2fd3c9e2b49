"""Load and check images; the resize-and-normalise steps in both PIL and (differentiable) torch form.

The checks on files, sizes and modes follow ``mmreward.data.validation`` (the one validation layer).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from mmreward.data.validation import MediaPolicy, check_media_file, check_pixels, media_policy
from mmreward.types import Sample

T, R = TypeVar("T"), TypeVar("R")
_POOL: tuple[tuple[int, int], ThreadPoolExecutor] | None = None  # ((pid, workers), pool)


def load_image(
    image: Any, sample: Sample | None = None, field: str = "image", policy: MediaPolicy | None = None
) -> Image.Image:
    """Return ``image`` as an RGB PIL image: from a path, a PIL image, an (H, W[, C]) uint8 or uint16
    array, or a (C, H, W) float tensor in [0, 1].

    Paths pass ``mmreward.data.validation.check_media_file`` (a regular file, inside the policy's
    ``media_root``); images over the policy's ``max_pixels`` are refused before decoding; modes are
    converted by ``to_rgb`` (16-bit scaled, alpha composited on the policy's background).

    Raises:
        FileNotFoundError / ValueError naming the sample's file, record and field.
    """
    policy = policy or media_policy()
    where = sample.where(field) if sample is not None else field
    if isinstance(image, Image.Image):
        check_pixels(image.size, where, policy.max_pixels)
        return to_rgb(image, where, policy.background)
    if isinstance(image, (str, Path)):
        path = check_media_file(image, where, "image", policy.media_root)
        try:
            with Image.open(path) as img:
                check_pixels(img.size, where, policy.max_pixels)
                return to_rgb(img, where, policy.background)
        except Image.DecompressionBombError as err:
            raise ValueError(
                f"{where}: image {str(path)!r} is too large to decode safely ({err}) "
                "Shrink it, or raise the cap (--max-pixels) if you trust it."
            ) from None
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(
                f"{where}: cannot read image {str(path)!r} ({err}). Re-encode it as PNG or JPEG."
            ) from err
    if isinstance(image, torch.Tensor):
        if not torch.isfinite(image).all():
            raise ValueError(f"{where}: the image tensor holds NaN or inf values.")
        image = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.dtype not in (np.uint8, np.uint16) or image.ndim not in (2, 3):
            raise ValueError(
                f"{where}: an image array must be uint8 or uint16, (H, W) or (H, W, C); "
                f"got {image.dtype} {image.shape}."
            )
        if image.dtype == np.uint16:  # 16-bit: 65535 is white
            image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
        check_pixels((image.shape[1], image.shape[0]), where, policy.max_pixels)
        return to_rgb(Image.fromarray(image), where, policy.background)
    if image is None:
        raise ValueError(f"{where}: the sample has no image; this model scores images.")
    raise TypeError(
        f"{where}: cannot use a {type(image).__name__} as an image; pass a path, PIL image, array or tensor."
    )


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(
    img: Image.Image, where: str = "image", background: tuple[int, int, int] = (255, 255, 255)
) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB without clipping or dropping information silently.

    16-bit greyscale (``I;16*``, and ``I`` holding 0..65535) is scaled so that 65535 is white (PIL's
    own ``convert`` clips it at 255). Alpha (``RGBA``, ``LA``, ``PA``, a palette or ``tRNS``
    transparency) is composited on ``background``; an image that is transparent everywhere has
    nothing to score and is refused. Float images (``F``) must hold values in [0, 1].
    """
    mode = img.mode
    if mode in SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(img)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"{where}: a 32-bit integer image holds values in [{values.min()}, {values.max()}]; "
                "only 0..65535 (16-bit) is understood. Convert it to 8- or 16-bit first."
            )
        return Image.fromarray((values.astype(np.float32) / 257.0).round().astype(np.uint8)).convert("RGB")
    if mode == "F":
        values = np.asarray(img, dtype=np.float32)
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise ValueError(
                f"{where}: a float image must hold finite values in [0, 1]; "
                f"got [{np.nanmin(values)}, {np.nanmax(values)}]. Rescale it first."
            )
        return Image.fromarray((values * 255).round().astype(np.uint8)).convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if not has_alpha:
        return img.convert("RGB")
    rgba = img.convert("RGBA")
    if rgba.getextrema()[3][1] == 0:
        raise ValueError(
            f"{where}: the image is fully transparent (alpha 0 everywhere), so there is nothing to score. "
            "Flatten it onto a background, or drop its alpha channel if the colours are meant."
        )
    flat = Image.new("RGBA", rgba.size, (*background, 255))
    return Image.alpha_composite(flat, rgba).convert("RGB")


def resize_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the short side to ``size`` (bicubic, antialiased) and crop the centre.

    Float images stay differentiable. uint8 images take torch's uint8 kernel, which rounds and clamps
    as PIL's bicubic ``resize`` does (within 2 grey levels of PIL, mean 0.005) and is ~30x faster
    than the float path on a 512 px image.

    Args:
        images: (N, C, H, W) tensor, float or uint8.
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


def denormalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``normalize`` undone: (N, C, H, W) pixels back in [0, 1] (clamped)."""
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images * std_t + mean_t).clamp(0, 1)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """(C, H, W) float tensor in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """(C, H, W) uint8 tensor, channels last in memory (the layout torch's uint8 resize wants)."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


def image_to_pixels(
    image: Image.Image, size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """(1, C, size, size) normalised pixels from an RGB image: resized and cropped in uint8, as the
    published CLIP reward models' PIL preprocessing does, then scaled to [0, 1] and normalised.

    ``normalize(resize_center_crop(pil_to_tensor(image)[None], size), mean, std)`` is the float,
    differentiable twin; the two differ by the rounding to uint8 and by bicubic overshoot at sharp
    edges, which uint8 clamps (mean 0.3, at most 3 grey levels on a 512 px photograph).
    """
    pixels = resize_center_crop(pil_to_uint8(image)[None], size)
    return normalize(pixels.float().div_(255.0), mean, std)


def map_threads(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(x) for x in items]`` on a small shared thread pool, in order; the first failing item's
    exception is raised, as the plain loop would raise it.

    Image decoding (PIL) and torch's resize release the GIL, so a batch's images decode in parallel.
    Runs the plain loop where torch has one thread (e.g. in DataLoader workers).
    """
    items = list(items)
    workers = min(4, torch.get_num_threads())
    if len(items) < 2 or workers < 2:
        return [fn(x) for x in items]
    return list(_thread_pool(workers).map(fn, items))


def _thread_pool(workers: int) -> ThreadPoolExecutor:
    """The shared pool, made on first use (not at import) and again in a forked child, whose copy
    of the parent's pool has no threads."""
    global _POOL
    key = (os.getpid(), workers)
    if _POOL is None or _POOL[0] != key:
        if _POOL is not None and _POOL[0][0] == key[0]:
            _POOL[1].shutdown(wait=False)
        _POOL = (key, ThreadPoolExecutor(workers, thread_name_prefix="mmreward-images"))
    return _POOL[1]
