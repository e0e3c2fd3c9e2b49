"""Candidate samplers: the policies that propose K actions for each observed scene.

A sampler is any object with ``sample(point_clouds, num, seed) -> list[list[dict]]``: one list of
``num`` action dicts (``modalities.actions`` format) per point cloud. ``RandomPrimitiveSampler``
is built in here; ``integrations.robotics.diffusion_policy.DiffusionPolicySampler`` is the
learned one; any other policy plugs in by implementing the same method.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from mmreward.configurable import Configurable


@runtime_checkable
class CandidateSampler(Protocol):
    """Proposes candidate actions for a batch of scenes."""

    def sample(
        self, point_clouds: list[np.ndarray], num: int, seed: int | None = None
    ) -> list[list[dict[str, Any]]]: ...


class RandomPrimitiveSampler(Configurable):
    """Random primitives anchored on the cloth: grasps at observed points, random moves.

    A pick-and-place grasps a random observed point and moves it a random distance in a random
    direction; a fling grasps two random observed points and swings in a random direction.
    Points are clipped to the workspace shrunk by ``margin``.

    Args:
        workspace: Table area ``(xmin, ymin, xmax, ymax)`` in metres.
        primitives: The primitives to draw from, uniformly.
        min_shift: Shortest pick-and-place move (metres).
        max_shift: Longest pick-and-place move (metres).
        margin: Distance kept from the workspace's edge.
    """

    def __init__(
        self,
        workspace: tuple[float, float, float, float] = (-0.3, -0.3, 0.3, 0.3),
        primitives: tuple[Literal["pick_place", "fling"], ...] = ("pick_place",),
        min_shift: float = 0.03,
        max_shift: float = 0.2,
        margin: float = 0.01,
    ) -> None:
        if not primitives:
            raise ValueError("RandomPrimitiveSampler needs at least one primitive, e.g. ('pick_place',).")
        self.workspace = tuple(float(v) for v in workspace)
        self.primitives = tuple(primitives)
        self.min_shift, self.max_shift, self.margin = min_shift, max_shift, margin

    def _clip(self, xy: np.ndarray) -> list[float]:
        xmin, ymin, xmax, ymax = self.workspace
        m = self.margin
        return [float(np.clip(xy[0], xmin + m, xmax - m)), float(np.clip(xy[1], ymin + m, ymax - m))]

    def _one(self, cloud: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        name = self.primitives[int(rng.integers(len(self.primitives)))]
        angle = rng.uniform(0.0, 2 * np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)])
        if name == "fling":
            a, b = cloud[rng.choice(len(cloud), size=2, replace=False), :2]
            return {
                "primitive": "fling",
                "grasps": [self._clip(a), self._clip(b)],
                "direction": direction.tolist(),
            }
        pick = cloud[int(rng.integers(len(cloud))), :2]
        place = pick + rng.uniform(self.min_shift, self.max_shift) * direction
        return {"primitive": "pick_place", "pick": self._clip(pick), "place": self._clip(place)}

    def sample(
        self, point_clouds: list[np.ndarray], num: int, seed: int | None = None
    ) -> list[list[dict[str, Any]]]:
        """``num`` random actions for each cloud in ``point_clouds`` ((N, 3) arrays)."""
        rng = np.random.default_rng(seed)
        return [[self._one(np.asarray(cloud), rng) for _ in range(num)] for cloud in point_clouds]
