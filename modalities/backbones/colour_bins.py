"""``ColourBins``: a learned soft colour histogram, a stem for towers that must tell colours apart.

Each bin is a Gaussian around a learned RGB centre (learnable histogram layers, Wang et al., 2016).
Pooled over a region, a bin's mean is the share of that region in the bin's colour, so "how many red
shapes" or "is the square blue" is linear in it. A 1x1 conv with a ReLU, trained from random init,
did not learn such colour detectors in 1200 steps on the visual-math world (reading error 1.4
against 0.13 for the bins; docs/prm.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ColourBins(nn.Module):
    """(N, 3, H, W) pixels in [0, 1] -> (N, levels**3, H, W) soft memberships of learned colour bins.

    The bins start on a ``levels`` x ``levels`` x ``levels`` grid of the RGB cube, wide enough
    (``width``) that every colour is near one, so each centre gets a gradient; centres and widths
    then learn. (Random centres with narrow bins left some colours in no bin on some seeds.)
    """

    def __init__(self, levels: int = 3, width: float = 0.25) -> None:
        super().__init__()
        steps = torch.linspace(0.0, 1.0, levels)
        grid = torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3)
        self.centres = nn.Parameter(grid)
        self.log_width = nn.Parameter(torch.full((len(grid),), math.log(width)))
        self.out_channels = len(grid)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        distance = (pixels[:, None] - self.centres[None, :, :, None, None]).pow(2).sum(2)
        return torch.exp(-distance / (2 * self.log_width.exp()[None, :, None, None] ** 2))
