"""The parts of ``PixelStepBackbone`` that read numbers off an image: soft colour bins and a number reader.

``ColourBins`` is a learned soft colour histogram (each bin a Gaussian around a learned RGB centre,
as learnable histogram layers do, Wang et al., 2016): pooled, a bin's mean is the share of the image
in that colour, so "how many red shapes" and "how tall is the blue bar" are linear in it. A
1x1 conv with a ReLU, the tower's first stem, did not learn such colour detectors from random init
in 1200 steps (reading error 1.4 against 0.13 for the bins, on the world's reading steps alone).

``NumberReader`` predicts one number of each step (its first or its last) from the image and the
step with that number masked, with the steps before it: "There are _ red shapes." is answered from
the pixels, "4 + 3 = _." from the text, "_ * 2 = 14." from the step before. It is trained on the
steps labelled correct, whose numbers are true (a masked-number objective, like masked-token
prediction; no scene values reach the model), and the PRM reads the gap between the stated number
and the read one: a misread or a slip is a gap of one or more.
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


class NumberReader(nn.Module):
    """Reads one number of each step: the query (the step with that number masked, and the steps
    before it) attends over the image tokens and gates the global one; an MLP gives the number.

    Args:
        query_size: Width of the query's input (the flattened token embeddings).
        hidden_size: Width of the image tokens.
        scale: Predictions are ``scale`` times the MLP's output (numbers are tens, the MLP's output ~1).
    """

    def __init__(self, query_size: int, hidden_size: int, scale: float = 10.0) -> None:
        super().__init__()
        self.query = nn.Sequential(
            nn.Linear(query_size, 2 * hidden_size), nn.GELU(), nn.Linear(2 * hidden_size, hidden_size)
        )
        self.key = nn.Linear(hidden_size, hidden_size)
        self.gate = nn.Linear(hidden_size, hidden_size)
        self.out = nn.Sequential(
            nn.Linear(2 * hidden_size, 2 * hidden_size), nn.GELU(), nn.Linear(2 * hidden_size, 1)
        )
        self.scale = scale

    def forward(self, query_tokens: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """(N, S) numbers from (N, S, Q) query inputs and (N, I, D) image tokens (token 0 global)."""
        q = self.query(query_tokens)
        weights = torch.einsum("nsd,nid->nsi", q, self.key(image)) / q.shape[-1] ** 0.5
        picked = torch.einsum("nsi,nid->nsd", weights.softmax(-1), image)
        return self.out(torch.cat([picked, self.gate(q) * image[:, :1]], -1)).squeeze(-1) * self.scale


def number_at(ids: torch.Tensor, first_number_id: int, which: str) -> torch.Tensor:
    """(N, S) position of each step's first or last number token (number ids are >= first_number_id),
    -1 where a step has none."""
    width = ids.shape[-1]
    positions = torch.arange(width, device=ids.device)
    is_number = ids >= first_number_id
    if which == "last":
        return torch.where(is_number, positions, -1).max(-1).values
    if which == "first":
        first = torch.where(is_number, positions, width).min(-1).values
        return torch.where(first == width, -1, first)
    raise ValueError(f"which must be 'first' or 'last'; got {which!r}.")
