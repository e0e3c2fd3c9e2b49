"""Robot action primitives in the scene frame, and the encoders that turn them into query vectors.

An action is a dict naming its primitive and giving its points in the scene (table) frame:

- ``{"primitive": "pick_place", "pick": [x, y], "place": [x, y]}``
- ``{"primitive": "fling", "grasps": [[x, y], [x, y]], "direction": [dx, dy]}``

Each primitive has an ``ActionEncoder``; a model holds a dict ``{primitive: encoder}`` given in
its config by ``class_path``, so a new primitive is a new encoder class, named in that dict.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from mmreward.configurable import Configurable


def _point(value: Any, key: str, where: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64) if value is not None else None
    if arr is None or arr.shape != (2,) or not np.isfinite(arr).all():
        raise ValueError(f"{where}: action field {key!r} must be two finite numbers [x, y]; got {value!r}.")
    return arr


def _check_workspace(points: np.ndarray, keys: list[str], bounds: tuple[float, ...], where: str) -> None:
    xmin, ymin, xmax, ymax = bounds
    for key, (x, y) in zip(keys, points):
        if not (xmin <= x <= xmax and ymin <= y <= ymax):
            raise ValueError(
                f"{where}: action point {key!r} = [{x:.3f}, {y:.3f}] lies outside the workspace "
                f"x in [{xmin}, {xmax}], y in [{ymin}, {ymax}]. Clip the policy's output or widen `workspace`."
            )


def _bounds(workspace: float | tuple[float, ...] | list[float]) -> tuple[float, float, float, float]:
    if isinstance(workspace, (int, float)):
        return (-workspace, -workspace, workspace, workspace)
    return tuple(float(v) for v in workspace)  # type: ignore[return-value]


class ActionEncoder(nn.Module, Configurable):
    """Base class: parse one primitive's dict into keypoints + extras, and embed them.

    Subclasses set ``primitive``, ``keys`` (the names of their keypoints, in order),
    ``num_extra`` and ``extra_vectors`` (how many (x, y) vectors in the table plane lead the extras,
    such as a fling's direction: they turn with the scene when a model trains on its symmetries),
    and implement ``parse_extra``. The model moves keypoints to the canonical
    frame; ``forward`` embeds them with Fourier features (NeRF, Mildenhall et al., 2020) and
    adds the offset and distance between every two keypoints.

    Args:
        dim: Output size; None is bound to the model's width by ``bind``.
        hidden: Width of the embedding MLP.
        frequencies: Number of Fourier frequencies per coordinate.
    """

    primitive: str = ""
    keys: tuple[str, ...] = ()
    num_extra: int = 0
    extra_vectors: int = 0

    def __init__(self, dim: int | None = None, hidden: int = 128, frequencies: int = 6) -> None:
        super().__init__()
        self.dim, self.hidden, self.frequencies = dim, hidden, frequencies
        self.register_buffer(
            "freqs", math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32), persistent=False
        )
        if dim is not None:
            self.bind(dim)

    def bind(self, dim: int) -> None:
        """Build the embedding for ``dim`` outputs, or check that it already has that size."""
        if self.dim is not None and hasattr(self, "mlp"):
            if self.dim != dim:
                raise ValueError(
                    f"{type(self).__name__} has dim={self.dim} but the model needs {dim}; leave dim out."
                )
            return
        self.dim = dim
        per_point = 2 + 4 * self.frequencies
        pairs = len(self.keys) * (len(self.keys) - 1) // 2
        width = len(self.keys) * per_point + 3 * pairs + self.num_extra
        self.mlp = nn.Sequential(nn.Linear(width, self.hidden), nn.GELU(), nn.Linear(self.hidden, dim))

    @classmethod
    def parse(
        cls, action: dict[str, Any], bounds: tuple[float, ...], where: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """(num keypoints, 2) scene-frame keypoints and (num_extra,) extras of one action dict.

        Raises:
            ValueError: A field is missing or malformed, or a point lies outside ``bounds``.
        """
        for key in cls.fields():
            if key not in action:
                raise ValueError(
                    f"{where}: a {cls.primitive!r} action needs field {key!r}; got fields {sorted(action)}."
                )
        points = cls.parse_points(action, where)
        _check_workspace(points, list(cls.keys), bounds, where)
        return points, cls.parse_extra(action, where)

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The fields an action dict of this primitive must have."""
        return cls.keys

    @classmethod
    def parse_points(cls, action: dict[str, Any], where: str) -> np.ndarray:
        return np.stack([_point(action[k], k, where) for k in cls.keys])

    @classmethod
    def parse_extra(cls, action: dict[str, Any], where: str) -> np.ndarray:
        return np.zeros(0)

    def forward(self, points: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """(K, P, 2) canonical keypoints and (K, E) extras -> (K, dim) action embeddings."""
        angles = points[..., None] * self.freqs  # (K, P, 2, F)
        fourier = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (K, P, 4F)
        feats = torch.cat([points, fourier], dim=-1).flatten(1)
        # the keypoints' relative geometry (how far and which way the gripper moves) given outright
        i, j = torch.triu_indices(points.shape[1], points.shape[1], offset=1, device=points.device)
        delta = points[:, j] - points[:, i]  # (K, pairs, 2)
        relative = torch.cat([delta, delta.norm(dim=-1, keepdim=True)], dim=-1).flatten(1)
        return self.mlp(torch.cat([feats, relative, extra], dim=-1))


class PickPlaceEncoder(ActionEncoder):
    """Pick-and-place: grasp at ``pick``, release at ``place`` (both (x, y) on the table)."""

    primitive = "pick_place"
    keys = ("pick", "place")


class FlingEncoder(ActionEncoder):
    """Fling: two grasp points ``grasps`` and a unit ``direction`` of the swing, as in DeformPAM."""

    primitive = "fling"
    keys = ("left", "right")
    num_extra = 2
    extra_vectors = 1

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return ("grasps", "direction")

    @classmethod
    def parse_points(cls, action: dict[str, Any], where: str) -> np.ndarray:
        grasps = action["grasps"]
        if not isinstance(grasps, (list, tuple, np.ndarray)) or len(grasps) != 2:
            raise ValueError(f"{where}: fling field 'grasps' must hold two [x, y] points; got {grasps!r}.")
        return np.stack([_point(g, f"grasps[{i}]", where) for i, g in enumerate(grasps)])

    @classmethod
    def parse_extra(cls, action: dict[str, Any], where: str) -> np.ndarray:
        direction = _point(action["direction"], "direction", where)
        norm = float(np.linalg.norm(direction))
        if norm < 1e-6:
            raise ValueError(
                f"{where}: fling field 'direction' must be a non-zero vector; got {action['direction']!r}."
            )
        return direction / norm


DEFAULT_ENCODERS: dict[str, type[ActionEncoder]] = {"pick_place": PickPlaceEncoder, "fling": FlingEncoder}
"""The built-in primitives, for code that executes or samples actions (the simulator, the samplers)."""


def primitive_name(action: Any, where: str) -> str:
    """The primitive an action dict names, with a clear error when it names none."""
    if not isinstance(action, dict):
        raise TypeError(
            f"{where}: an action must be a dict with a 'primitive' field; got {type(action).__name__}."
        )
    name = action.get("primitive")
    if not isinstance(name, str):
        raise ValueError(f"{where}: the action has no 'primitive' name; got fields {sorted(action)}.")
    return name


def parse_primitive(
    action: dict[str, Any], workspace: float | tuple[float, ...], where: str = "action"
) -> tuple[str, np.ndarray]:
    """Validate a built-in primitive and return its name and flat parameters (points, then extras)."""
    name = primitive_name(action, where)
    if name not in DEFAULT_ENCODERS:
        raise ValueError(f"{where}: unknown primitive {name!r}; built in are {', '.join(DEFAULT_ENCODERS)}.")
    points, extra = DEFAULT_ENCODERS[name].parse(action, _bounds(workspace), where)
    return name, np.concatenate([points.ravel(), extra])
