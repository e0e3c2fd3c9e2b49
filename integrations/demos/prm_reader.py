"""The part of ``PixelStepBackbone`` that reads numbers off an image: the number reader.

The stem is ``modalities.backbones.colour_bins.ColourBins`` (soft colour bins; pooled, a bin's
mean is the share of the image in that colour, so "how many red shapes" is linear in it).

``NumberReader`` predicts one number of each step (its first or its last) from the image and the
step with that number masked, with the steps before it: "There are _ red shapes." is answered from
the pixels, "4 + 3 = _." from the text, "_ * 2 = 14." from the step before. It is trained on the
steps labelled correct, whose numbers are true (a masked-number objective, like masked-token
prediction; no scene values reach the model), and the PRM reads the gap between the stated number
and the read one: a misread or a slip is a gap of one or more.
"""

from __future__ import annotations

import torch
from torch import nn


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
