"""Two small reward models that follow the mmreward protocol, for demos, tests and smoke runs.

``ColourReward`` is differentiable (it offers ``tensor_inputs``), so reward backpropagation and
guidance can use it. ``BrightPixelCount`` counts pixels, which has no useful gradient: it stands for
the rewards that only a sampling-based trainer can use (counts, generative judges).
"""

from __future__ import annotations

import torch
from torch import nn

from mmreward.configurable import Configurable
from mmreward.types import HeadOutput, Sample
from modalities.image import load_image, pil_to_tensor


def _stack_images(samples: list[Sample]) -> torch.Tensor:
    images = [pil_to_tensor(load_image(s.image, s, "image")) for s in samples]
    sizes = {tuple(im.shape) for im in images}
    if len(sizes) != 1:
        raise ValueError(
            f"These toy rewards need equally sized images in a batch; got sizes {sorted(sizes)}."
        )
    return torch.stack(images)  # (N, 3, H, W)


class ColourReward(nn.Module, Configurable):
    """Reward closeness to a target colour: minus the mean squared distance of each pixel to it.

    Args:
        target: RGB colour in [0, 1].
    """

    aspects: list[str] = []

    def __init__(self, target: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
        super().__init__()
        self.register_buffer(
            "target", torch.tensor(target, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )

    def tensor_inputs(self, images: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Inputs from (N, 3, H, W) images in [0, 1]; differentiable."""
        return {"pixels": images}

    def collate(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        """Load the samples' images."""
        return {"pixels": _stack_images(samples)}

    def forward(self, inputs: dict[str, torch.Tensor]) -> HeadOutput:
        pixels = inputs["pixels"]
        distance = ((pixels - self.target.to(pixels.dtype)) ** 2).sum(dim=1)  # (N, H, W)
        return HeadOutput(score=-distance.flatten(1).mean(dim=1))


class BrightPixelCount(nn.Module, Configurable):
    """Reward the fraction of pixels brighter than ``threshold``: a count, with no gradient.

    Args:
        threshold: Mean-over-channels brightness in [0, 1] a pixel must exceed to count.
    """

    aspects: list[str] = []

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        self.threshold = threshold

    def collate(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        """Load the samples' images."""
        return {"pixels": _stack_images(samples)}

    def forward(self, inputs: dict[str, torch.Tensor]) -> HeadOutput:
        bright = inputs["pixels"].mean(dim=1) > self.threshold  # (N, H, W)
        return HeadOutput(score=bright.flatten(1).float().mean(dim=1))
