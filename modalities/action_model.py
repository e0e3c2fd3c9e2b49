"""``ActionPreferenceModel``: scores K candidate actions against one point-cloud scene in one pass.

The scene is encoded once into tokens (``PointNetEncoder``); each candidate action becomes a query
(its primitive's ``ActionEncoder``) that cross-attends to its scene's tokens; a small MLP reads the
score. This is the action-conditioned reward model of DeformPAM (Chen et al., 2024), with the
scene encoding shared by all candidates. ``collate`` de-duplicates the scenes of a batch, so a
ranking of K candidates, or a chosen/rejected pair, costs one scene encoding.

Besides the learned query-key attention, each head adds a bias ``-w_hp * |keypoint_p - token|^2``
for the action's keypoints, with ``w`` learned and started at a spread of scales: grasp-centred
heads see what lies under and around the gripper from the first step. With ``local_neighbours``,
each keypoint also reads the scene points nearest to it at the cloud's full resolution (the scene
tokens are centroids of groups, a few centimetres apart).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmreward.configurable import Configurable
from mmreward.types import HeadOutput, Sample
from modalities.actions import ActionEncoder, primitive_name
from modalities.backbones.pointnet import PointNetEncoder, prepare_points
from modalities.pointcloud import workspace_frame


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention (SDPA) of action queries to their scene's tokens, then an MLP."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm_q, self.norm_kv, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.kv, self.out = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(
        self, query: torch.Tensor, tokens: torch.Tensor, scene_index: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        """query (N, D), tokens (S, T, D) of S scenes, scene_index (N,), bias (N, H, 1, T) -> (N, D)."""
        s, t, d = tokens.shape
        n, h = query.shape[0], self.num_heads
        q = self.q(self.norm_q(query)).view(n, h, 1, d // h)
        # keys and values are computed once per scene, then shared by that scene's queries
        k, v = self.kv(self.norm_kv(tokens)).view(s, t, 2, h, d // h).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q, k[scene_index], v[scene_index], attn_mask=bias
        )  # (N, H, 1, D/H)
        query = query + self.out(attended.reshape(n, d))
        return query + self.mlp(self.norm_mlp(query))


Symmetry = Literal[
    "half_turn", "quarter_turn", "mirror_x", "mirror_y", "mirror_diagonal", "mirror_antidiagonal"
]

SYMMETRIES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "half_turn": ((-1.0, 0.0), (0.0, -1.0)),
    "quarter_turn": ((0.0, 1.0), (-1.0, 0.0)),
    "mirror_x": ((-1.0, 0.0), (0.0, 1.0)),
    "mirror_y": ((1.0, 0.0), (0.0, -1.0)),
    "mirror_diagonal": ((0.0, 1.0), (1.0, 0.0)),
    "mirror_antidiagonal": ((0.0, -1.0), (-1.0, 0.0)),
}
"""Maps of the table plane, as matrices that multiply (x, y) row vectors."""


class ActionPreferenceModel(nn.Module, Configurable):
    """A reward model over (point-cloud scene, action) samples; see the module docstring.

    Args:
        encoder: Scene encoder; its ``dim`` is the model's width.
        action_encoders: ``{primitive name: ActionEncoder}``; a sample's ``action["primitive"]``
            picks its encoder. New primitives are new encoders named here (by ``class_path``).
        workspace: The scene frame's table area ``(xmin, ymin, xmax, ymax)`` in metres: clouds and
            actions are mapped from it to [-1, 1]^2, and action points outside it are errors.
        frame: ``"centroid"`` puts the origin at the cloud's centroid (in the table plane), so the
            model sees where an action is relative to the cloth, wherever the cloth lies;
            ``"workspace"`` keeps the workspace centre as origin.
        num_points: Points kept per scene (farthest-point sampled) before encoding.
        num_heads: Attention heads.
        num_layers: Cross-attention blocks.
        local_neighbours: When above 0, each action keypoint also reads the ``local_neighbours``
            scene points nearest to it in the table plane: their offsets from the keypoint and
            their heights, through a shared MLP, max- and mean-pooled. 0 leaves this out.
        local_radius: The unit of those offsets in metres (on the cloth: the grasp's reach).
        train_symmetries: Maps of the table plane under which the task's outcomes do not change.
            In training, each scene is mapped, with its actions, by one drawn uniformly from these
            and the identity (about the frame's origin: the cloud's centroid with
            ``frame="centroid"``). Scoring never maps. Name only maps that hold for your task: on
            the simulated cloth the half turn and the two diagonal mirrors keep a move's coverage
            within 0.01, a quarter turn changes it by up to 0.16 (docs/robotics.md).
        name: Model name, for provenance.
    """

    aspects: list[str] = []

    def __init__(
        self,
        encoder: PointNetEncoder,
        action_encoders: dict[str, ActionEncoder],
        workspace: tuple[float, float, float, float] = (-0.3, -0.3, 0.3, 0.3),
        frame: Literal["centroid", "workspace"] = "centroid",
        num_points: int = 512,
        num_heads: int = 4,
        num_layers: int = 2,
        local_neighbours: int = 0,
        local_radius: float = 0.03,
        train_symmetries: tuple[Symmetry, ...] = (),
        name: str = "action-preference",
    ) -> None:
        super().__init__()
        if not action_encoders:
            raise ValueError(
                "ActionPreferenceModel needs at least one action encoder, e.g. {'pick_place': PickPlaceEncoder()}."
            )
        dim = encoder.dim
        if dim % num_heads:
            raise ValueError(f"The encoder's dim ({dim}) must be divisible by num_heads ({num_heads}).")
        self.encoder = encoder
        self.action_encoders = nn.ModuleDict(action_encoders)
        for enc in self.action_encoders.values():
            enc.bind(dim)
        self.primitives = list(action_encoders)
        self.workspace = tuple(float(v) for v in workspace)
        self._center, self._half = workspace_frame(self.workspace)
        self.frame, self.num_points, self.num_heads, self.name = frame, num_points, num_heads, name
        self.max_keypoints = max(len(e.keys) for e in self.action_encoders.values())
        self.max_extra = max(e.num_extra for e in self.action_encoders.values())
        self.primitive_embedding = nn.Embedding(len(self.primitives), dim)
        self.scene_summary = nn.Linear(2 * dim, dim)
        # grasp-local heads from sharp (first) to broad (last), in canonical units of [-1, 1]
        scales = torch.logspace(2.5, 0.5, num_heads)[:, None].expand(num_heads, self.max_keypoints)
        self.distance_logit = nn.Parameter(scales + torch.log(-torch.expm1(-scales)))  # softplus^-1
        self.blocks = nn.ModuleList(CrossAttentionBlock(dim, num_heads) for _ in range(num_layers))
        self.score_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1))
        self.local_neighbours, self.local_radius = local_neighbours, local_radius
        if local_neighbours:
            # per neighbour: (dx, dy) in units of local_radius, its distance, its height
            self.local_mlp = nn.Sequential(nn.Linear(4, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU())
            self.local_out = nn.Linear(2 * dim * self.max_keypoints, dim)
        unknown = [s for s in train_symmetries if s not in SYMMETRIES]
        if unknown:
            raise ValueError(f"Unknown train_symmetries {unknown}; choose from {', '.join(SYMMETRIES)}.")
        self.train_symmetries = tuple(train_symmetries)
        maps = [((1.0, 0.0), (0.0, 1.0))] + [SYMMETRIES[s] for s in self.train_symmetries]
        self.register_buffer("_maps", torch.tensor(maps), persistent=False)  # (1 + M, 2, 2)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {
            "num_points": self.num_points,
            "frame": self.frame,
            "workspace": list(self.workspace),
            "sampling": "farthest point",
        }

    # -- inputs ---------------------------------------------------------------------------------

    def collate(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        """Load each distinct scene once; parse every action into canonical keypoints and extras.

        Returns:
            ``points`` (S, P, C) for S distinct scenes, ``scene_index`` (N,), ``primitive`` (N,),
            ``keypoints`` (N, Kp, 2), ``keypoint_mask`` (N, Kp) and ``extra`` (N, E).
        """
        scenes: dict[str, int] = {}
        clouds, origins, scene_index = [], [], []
        for s in samples:
            key = _scene_key(s.point_cloud)
            if key not in scenes:
                scenes[key] = len(clouds)
                points = prepare_points(
                    s.point_cloud, s, self.encoder.in_channels, self.num_points, "bounds", self.workspace
                )
                origin = (
                    points[:, :2].mean(axis=0) if self.frame == "centroid" else np.zeros(2, dtype=np.float32)
                )
                points[:, :2] -= origin
                clouds.append(points)
                origins.append(origin)
            scene_index.append(scenes[key])
        n = len(samples)
        primitive = torch.empty(n, dtype=torch.long)
        keypoints = torch.zeros(n, self.max_keypoints, 2)
        mask = torch.zeros(n, self.max_keypoints, dtype=torch.bool)
        extra = torch.zeros(n, self.max_extra)
        for i, s in enumerate(samples):
            primitive[i], points, ext = self.parse_action(s)
            origin = origins[scene_index[i]]
            keypoints[i, : len(points)] = torch.from_numpy((points - self._center) / self._half - origin)
            mask[i, : len(points)] = True
            extra[i, : len(ext)] = torch.from_numpy(ext)
        return {
            "points": torch.from_numpy(np.stack(clouds)),
            "scene_index": torch.tensor(scene_index, dtype=torch.long),
            "primitive": primitive,
            "keypoints": keypoints,
            "keypoint_mask": mask,
            "extra": extra,
        }

    def parse_action(self, sample: Sample) -> tuple[int, np.ndarray, np.ndarray]:
        """(primitive index, scene-frame keypoints, extras) of a sample's action, checked."""
        where = sample.where("action")
        name = primitive_name(sample.action, where)
        if name not in self.action_encoders:
            raise ValueError(
                f"{where}: primitive {name!r} has no encoder in this model; it knows {', '.join(self.primitives)}. "
                "Add an encoder for it to `action_encoders`."
            )
        points, extra = self.action_encoders[name].parse(sample.action, self.workspace, where)
        return self.primitives.index(name), points.astype(np.float32), extra.astype(np.float32)

    # -- scoring --------------------------------------------------------------------------------

    def encode_actions(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, D) action queries: each primitive's encoder on its own rows."""
        primitive = inputs["primitive"]
        query = self.primitive_embedding(primitive)
        for i, enc in enumerate(self.action_encoders.values()):
            rows = (primitive == i).nonzero().squeeze(1)
            if rows.numel():
                kp = inputs["keypoints"][rows, : len(enc.keys)]
                ext = inputs["extra"][rows, : enc.num_extra]
                query = query.index_add(0, rows, enc(kp, ext).to(query.dtype))
        return query

    def forward(self, inputs: dict[str, torch.Tensor]) -> HeadOutput:
        if self.training and self.train_symmetries:
            inputs = self.map_scenes(inputs)
        tokens, positions = self.encoder(inputs["points"])  # (S, T, D), (S, T, 3): once per scene
        scene = inputs["scene_index"]
        sq = ((inputs["keypoints"][:, :, None] - positions[scene][:, None, :, :2]) ** 2).sum(-1)  # (N, Kp, T)
        weight = F.softplus(self.distance_logit) * inputs["keypoint_mask"][:, None].to(sq.dtype)  # (N, H, Kp)
        bias = -torch.einsum("nhp,npt->nht", weight, sq)[:, :, None].to(tokens.dtype)  # (N, H, 1, T)
        summary = self.scene_summary(torch.cat([tokens.amax(dim=1), tokens.mean(dim=1)], dim=-1))  # (S, D)
        query = self.encode_actions(inputs) + summary[scene]
        if self.local_neighbours:
            query = query + self.local_features(inputs)
        for block in self.blocks:
            query = block(query, tokens, scene, bias)
        return HeadOutput(score=self.score_head(query).squeeze(-1).float())

    def local_features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, D): what lies under and around each keypoint, from its nearest scene points."""
        points = inputs["points"][inputs["scene_index"], :, :3]  # (N, P, 3)
        keypoints, mask = inputs["keypoints"], inputs["keypoint_mask"]
        n, kp = keypoints.shape[:2]
        k = min(self.local_neighbours, points.shape[1])
        sq = ((keypoints[:, :, None] - points[:, None, :, :2]) ** 2).sum(-1)  # (N, Kp, P)
        idx = sq.topk(k, dim=-1, largest=False).indices  # (N, Kp, k)
        near = points.gather(1, idx.reshape(n, kp * k, 1).expand(-1, -1, 3)).view(n, kp, k, 3)
        xy = (near[..., :2] - keypoints[:, :, None]) / (self.local_radius / self._half)
        h = self.local_mlp(torch.cat([xy, xy.norm(dim=-1, keepdim=True), near[..., 2:3]], dim=-1))
        pooled = torch.cat([h.amax(dim=2), h.mean(dim=2)], dim=-1) * mask[..., None].to(h.dtype)
        return self.local_out(pooled.flatten(1))

    def map_scenes(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each scene and its actions mapped by a random one of ``train_symmetries`` or the identity."""
        maps = self._maps[torch.randint(0, len(self._maps), (inputs["points"].shape[0],))]  # (S, 2, 2)
        points = inputs["points"].clone()
        points[:, :, :2] = torch.einsum("spc,scd->spd", points[:, :, :2], maps)
        per_action = maps[inputs["scene_index"]].to(points.dtype)  # (N, 2, 2)
        extra = inputs["extra"].clone()
        for i, enc in enumerate(self.action_encoders.values()):  # vector extras turn with the scene
            rows = (inputs["primitive"] == i).nonzero().squeeze(1)
            if enc.extra_vectors and rows.numel():
                vec = extra[rows, : 2 * enc.extra_vectors].view(len(rows), enc.extra_vectors, 2)
                extra[rows, : 2 * enc.extra_vectors] = torch.einsum(
                    "nvc,ncd->nvd", vec, per_action[rows]
                ).flatten(1)
        keypoints = torch.einsum("npc,ncd->npd", inputs["keypoints"], per_action)
        return {**inputs, "points": points, "keypoints": keypoints, "extra": extra}


def _scene_key(point_cloud: Any) -> str:
    """A key that is equal for the same scene: the path, or a hash of the array's bytes."""
    if isinstance(point_cloud, (str, Path)):
        return "path:" + str(Path(point_cloud).resolve())
    if isinstance(point_cloud, torch.Tensor):
        point_cloud = point_cloud.detach().cpu().numpy()
    if isinstance(point_cloud, np.ndarray):
        arr = np.ascontiguousarray(point_cloud)
        return f"array:{arr.shape}:{arr.dtype}:" + hashlib.blake2b(arr.tobytes(), digest_size=16).hexdigest()
    return f"object:{id(point_cloud)}"
