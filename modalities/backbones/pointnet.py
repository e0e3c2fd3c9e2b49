"""PointNet++-style set abstraction (Qi et al., 2017): point clouds -> scene tokens.

Each level picks centroids by farthest-point sampling, groups each centroid's k nearest points,
runs a shared MLP on their offsets (and features) and max-pools the group. Centroid choice, k-NN
grouping and max-pooling are all free of the points' order, so the tokens are too.
``PointNetEncoder`` returns the tokens of every level with their centroid positions, for models
that attend to them (``modalities.action_model``); ``PointCloudBackbone`` pools them into one
feature vector for ``mmreward.models.RewardModel``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from mmreward.configurable import Configurable
from mmreward.types import Sample
from modalities.pointcloud import (
    farthest_point_sampling,
    farthest_point_sampling_torch,
    load_point_cloud,
    normalize_point_cloud,
)


def _gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values (B, N, C), index (B, ...) -> (B, ..., C)."""
    b = values.shape[0]
    flat = index.reshape(b, -1)
    out = values.gather(1, flat[..., None].expand(-1, -1, values.shape[-1]))
    return out.reshape(*index.shape, values.shape[-1])


class SetAbstraction(nn.Module):
    """One PointNet++ level: FPS centroids, k-NN groups, shared MLP, max-pool.

    Args:
        centroids: Number of centroids (tokens) this level outputs.
        neighbours: Points grouped per centroid.
        in_features: Feature size of the input points (0 for bare positions).
        width: Output feature size.
    """

    def __init__(self, centroids: int, neighbours: int, in_features: int, width: int) -> None:
        super().__init__()
        self.centroids, self.neighbours = centroids, neighbours
        self.mlp = nn.Sequential(
            nn.Linear(3 + in_features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU()
        )
        self.norm = nn.LayerNorm(width)

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """xyz (B, N, 3), feats (B, N, C) or None -> centroids (B, M, 3), features (B, M, width)."""
        k = min(self.neighbours, xyz.shape[1])
        centre_idx = farthest_point_sampling_torch(xyz, self.centroids)  # (B, M)
        centres = _gather(xyz, centre_idx)  # (B, M, 3)
        group_idx = torch.cdist(centres, xyz).topk(k, dim=-1, largest=False).indices  # (B, M, k)
        offsets = _gather(xyz, group_idx) - centres[:, :, None]  # (B, M, k, 3)
        # offsets in units of the cloud's own neighbourhood size: the MLP sees numbers of order one
        offsets = offsets / offsets.square().mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-6)
        grouped = offsets if feats is None else torch.cat([offsets, _gather(feats, group_idx)], dim=-1)
        return centres, self.norm(self.mlp(grouped).amax(dim=2))  # norm after the pool: cheap


class PointNetEncoder(nn.Module, Configurable):
    """Stacked set-abstraction levels; every level's tokens are projected to ``dim`` and kept.

    Args:
        dim: Token size.
        in_channels: 3 for xyz, 6 for xyz + rgb (colours become the first level's point features).
        centroids: Tokens per level (PointNet++ uses 512 and 128 on 1024 points; small scenes
            need fewer).
        neighbours: k of the k-NN groups per level.
        widths: MLP width per level.
    """

    def __init__(
        self,
        dim: int = 64,
        in_channels: int = 3,
        centroids: tuple[int, ...] = (64, 16),
        neighbours: tuple[int, ...] = (16, 8),
        widths: tuple[int, ...] = (64, 128),
    ) -> None:
        super().__init__()
        if not len(centroids) == len(neighbours) == len(widths):
            raise ValueError(
                f"PointNetEncoder needs one entry per level in centroids, neighbours and widths; got "
                f"{len(centroids)}, {len(neighbours)} and {len(widths)}."
            )
        if in_channels not in (3, 6):
            raise ValueError(f"in_channels must be 3 (xyz) or 6 (xyz + rgb); got {in_channels}.")
        self.dim, self.in_channels = dim, in_channels
        self.centroids = list(centroids)
        in_features = [in_channels - 3, *widths[:-1]]
        self.levels = nn.ModuleList(
            SetAbstraction(c, k, f, w) for c, k, f, w in zip(centroids, neighbours, in_features, widths)
        )
        self.projections = nn.ModuleList(nn.Linear(w + 3, dim) for w in widths)

    @property
    def num_tokens(self) -> int:
        return sum(self.centroids)

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points (B, N, in_channels) -> tokens (B, T, dim) and their positions (B, T, 3)."""
        xyz = points[..., :3]
        feats = points[..., 3:] if self.in_channels > 3 else None
        tokens, positions = [], []
        for level, proj in zip(self.levels, self.projections):
            xyz, feats = level(xyz, feats)
            tokens.append(proj(torch.cat([feats, xyz], dim=-1)))
            positions.append(xyz)
        return torch.cat(tokens, dim=1), torch.cat(positions, dim=1)


class PointCloudBackbone(nn.Module, Configurable):
    """A point-cloud backbone for ``RewardModel``: tokens max- and mean-pooled into one vector.

    Args:
        encoder: The token encoder.
        num_points: Points kept per cloud (farthest-point sampled) before encoding.
        normalize: Canonical frame (see ``modalities.pointcloud.normalize_point_cloud``).
        bounds: Workspace ``(xmin, ymin, xmax, ymax)`` for ``normalize="bounds"``.
    """

    def __init__(
        self,
        encoder: PointNetEncoder,
        num_points: int = 1024,
        normalize: Literal["unit_sphere", "bounds"] = "unit_sphere",
        bounds: tuple[float, float, float, float] | None = None,
    ) -> None:
        super().__init__()
        self.encoder, self.num_points = encoder, num_points
        self.normalize, self.bounds = normalize, bounds
        self.feature_dim = 2 * encoder.dim

    def collate(self, samples: list[Sample]) -> dict[str, Any]:
        """Load, check, normalise and farthest-point sample each sample's cloud."""
        clouds = [
            prepare_points(
                s.point_cloud, s, self.encoder.in_channels, self.num_points, self.normalize, self.bounds
            )
            for s in samples
        ]
        return {"points": torch.from_numpy(np.stack(clouds))}

    def forward(self, inputs: dict[str, Any]) -> torch.Tensor:
        tokens, _ = self.encoder(inputs["points"])
        return torch.cat([tokens.amax(dim=1), tokens.mean(dim=1)], dim=-1)


def prepare_points(
    source: Any,
    sample: Sample | None,
    channels: int,
    num_points: int,
    normalize: Literal["unit_sphere", "bounds"],
    bounds: tuple[float, ...] | None,
    field: str = "point_cloud",
) -> np.ndarray:
    """Load, check, normalise and farthest-point sample one cloud to a (num_points, channels) array."""
    points = load_point_cloud(source, sample, field)
    if points.shape[1] < channels:
        where = sample.where(field) if sample is not None else field
        raise ValueError(
            f"{where}: the model reads {channels} channels (xyz + rgb) but the cloud has {points.shape[1]}. "
            "Set in_channels=3 or add colours."
        )
    points = normalize_point_cloud(points[:, :channels], normalize, None if bounds is None else tuple(bounds))
    return points[farthest_point_sampling(points, num_points)]
