"""A MuJoCo cloth-flattening environment: a flexcomp cloth on a table, moved by grasp primitives.

The cloth is a ``flexcomp`` grid (one body with three slide joints per vertex). A primitive
grasps the vertices nearest its grasp points and drives them kinematically along a waypoint
path (lift, move, lower), then releases them and lets the cloth settle. Coverage is the area
of the table the cloth covers, from its triangles rasterised top-down, divided by the area of
the flat cloth, as in the cloth-flattening tasks of SoftGym (Lin et al., 2020) and DeformPAM
(Chen et al., 2024).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mmreward.configurable import Configurable
from mmreward.optional import require
from modalities.actions import parse_primitive

_XML = """
<mujoco>
  <option timestep="{timestep}" integrator="implicitfast"/>
  <worldbody>
    <geom name="table" type="plane" size="1 1 0.1" friction="0.9 0.005 0.0001"/>
    <flexcomp name="cloth" type="grid" count="{grid} {grid} 1" spacing="{spacing} {spacing} {spacing}"
              pos="0 0 0.01" radius="0.003" dim="2" mass="{mass}">
      <contact condim="3" solref="0.01 1" solimp=".95 .99 .0001" selfcollide="none"/>
      <edge equality="true" damping="0.002"/>
    </flexcomp>
  </worldbody>
</mujoco>
"""


@dataclass
class ClothState:
    """A snapshot of the simulation, enough to restore it exactly.

    Attributes:
        qpos: Joint positions (3 per cloth vertex).
        qvel: Joint velocities.
        time: Simulated time in seconds.
    """

    qpos: np.ndarray
    qvel: np.ndarray
    time: float


class ClothEnv(Configurable):
    """Cloth flattening on a table, with pick-and-place and fling primitives.

    Args:
        grid: Vertices per side of the square cloth.
        spacing: Distance between neighbouring vertices in metres.
        workspace: Half-width of the square table area (metres) that actions and coverage use.
        timestep: Simulation step in seconds.
        lift_height: Height a pick-and-place lifts the grasped vertex to.
        speed: Gripper speed in metres per second.
        settle_steps: Steps simulated after a release.
        grasp_radius: A grasp point farther than this from every vertex (in the table plane)
            grasps nothing, and the primitive leaves the cloth as it is.
        resolution: Pixels per side of the coverage raster.
        noise_std: Standard deviation of the sensor noise on observed points (metres).
        crumple_steps: Random drops that ``reset`` applies to the flat cloth.
    """

    def __init__(
        self,
        grid: int = 8,
        spacing: float = 0.038,
        workspace: float = 0.3,
        timestep: float = 0.004,
        lift_height: float = 0.08,
        speed: float = 1.0,
        settle_steps: int = 60,
        grasp_radius: float = 0.03,
        resolution: int = 128,
        noise_std: float = 0.002,
        crumple_steps: int = 4,
    ) -> None:
        mujoco = require("mujoco", "robotics")
        self._mj = mujoco
        self.grid, self.spacing, self.workspace = grid, spacing, workspace
        self.timestep, self.lift_height, self.speed = timestep, lift_height, speed
        self.settle_steps, self.grasp_radius = settle_steps, grasp_radius
        self.resolution, self.noise_std, self.crumple_steps = resolution, noise_std, crumple_steps
        xml = _XML.format(timestep=timestep, grid=grid, spacing=spacing, mass=0.002 * grid * grid)
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        bodies = self.model.flex_vertbodyid
        self._qadr = self.model.jnt_qposadr[self.model.body_jntadr[bodies]]  # (V,) first of 3 slide joints
        self._origin = self.model.body_pos[bodies].copy()  # vertex position at qpos = 0
        self.triangles = self.model.flex_elem.reshape(-1, 3).copy()
        mujoco.mj_forward(self.model, self.data)
        self.flat_area = self.covered_area()
        self._flat = self.state()
        self.steps_simulated = 0

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """The workspace as ``(xmin, ymin, xmax, ymax)``."""
        w = self.workspace
        return (-w, -w, w, w)

    # -- state ----------------------------------------------------------------------------------

    def state(self) -> ClothState:
        """The current simulation state (a copy)."""
        return ClothState(self.data.qpos.copy(), self.data.qvel.copy(), float(self.data.time))

    def set_state(self, state: ClothState) -> None:
        """Restore a state from ``state()``."""
        self.data.qpos[:] = state.qpos
        self.data.qvel[:] = state.qvel
        self.data.time = state.time
        self._mj.mj_forward(self.model, self.data)

    @property
    def vertices(self) -> np.ndarray:
        """(V, 3) cloth vertex positions in the table frame."""
        return self.data.flexvert_xpos.copy()

    def reset_flat(self) -> ClothState:
        """Lay the cloth flat at the centre of the table (coverage 1) and return that state."""
        self.set_state(self._flat)
        return self.state()

    @property
    def rest_positions(self) -> np.ndarray:
        """(V, 3) vertex positions of the flat cloth."""
        return self._origin.copy()

    def reset(self, seed: int) -> ClothState:
        """Start from a crumpled cloth: the flat cloth, randomly shifted, then dropped and folded.

        Each crumple step grasps a random vertex, lifts it high, moves it a random distance and
        drops it, which folds the cloth over itself (SoftGym's crumpled initial states).
        """
        rng = np.random.default_rng(seed)
        self.set_state(self._flat)
        shift = rng.uniform(-0.05, 0.05, size=2)
        self.data.qpos[self._qadr] += shift[0]
        self.data.qpos[self._qadr + 1] += shift[1]
        self._mj.mj_forward(self.model, self.data)
        for _ in range(self.crumple_steps):
            vertex = int(rng.integers(len(self._origin)))
            start = self.vertices[vertex]
            target = np.clip(start[:2] + rng.uniform(-0.15, 0.15, size=2), -0.2, 0.2)
            height = rng.uniform(0.1, 0.2)
            path = [start, [*start[:2], height], [*target, height]]
            self._drive([vertex], [np.asarray(path)])
        return self.state()

    # -- primitives -----------------------------------------------------------------------------

    def step(self, action: dict[str, Any]) -> float:
        """Execute one primitive (see ``modalities.actions``) and return the coverage after it."""
        name, params = parse_primitive(action, self.workspace)
        executors = {"pick_place": self._pick_place, "fling": self._fling}
        if name not in executors:
            raise ValueError(f"ClothEnv cannot execute primitive {name!r}; it knows {', '.join(executors)}.")
        points = params.reshape(-1, 2)  # keypoints, then the extras as one more (x, y) pair
        executors[name](*points)
        return self.coverage()

    def simulate(self, state: ClothState, actions: list[dict[str, Any]]) -> np.ndarray:
        """Coverage after each action, each executed from ``state``; the env is left at ``state``."""
        out = np.empty(len(actions))
        for i, action in enumerate(actions):
            self.set_state(state)
            out[i] = self.step(action)
        self.set_state(state)
        return out

    def grasp_vertex(self, point: np.ndarray) -> int | None:
        """The vertex a gripper at ``point`` (x, y) grasps: the highest one within reach, if any."""
        verts = self.vertices
        dist = np.linalg.norm(verts[:, :2] - point, axis=1)
        reach = np.flatnonzero(dist <= self.grasp_radius)
        if reach.size == 0:
            return None
        # a top-down gripper closes on the layer on top
        return int(reach[np.argmax(verts[reach, 2] - 0.1 * dist[reach])])

    def _pick_place(self, pick: np.ndarray, place: np.ndarray) -> None:
        vertex = self.grasp_vertex(pick)
        if vertex is None:
            self._settle()
            return
        start = self.vertices[vertex]
        h = self.lift_height
        path = np.array([start, [*start[:2], h], [*place, h], [*place, 0.01]])
        self._drive([vertex], [path])

    def _fling(self, left: np.ndarray, right: np.ndarray, direction: np.ndarray) -> None:
        """Lift two grasps, stretch them taut across ``direction``, swing forward, lay the cloth back.

        The stretch-and-swing of dynamic flinging (Ha & Song, 2021, FlingBot), made kinematic.
        """
        grasped = [self.grasp_vertex(left), self.grasp_vertex(right)]
        if None in grasped or grasped[0] == grasped[1]:
            self._settle()
            return
        across = np.array([-direction[1], direction[0]])
        starts = [self.vertices[v] for v in grasped]
        middle = (starts[0][:2] + starts[1][:2]) / 2
        sign = 1.0 if float((starts[0][:2] - starts[1][:2]) @ across) >= 0 else -1.0
        half = 0.475 * float(
            np.linalg.norm(self._origin[grasped[0], :2] - self._origin[grasped[1], :2])
        )  # taut, not torn
        paths = []
        for start, s in zip(starts, (sign, -sign)):
            wide = middle + s * half * across
            high = np.array([*start[:2], 0.2])
            stretched = np.array([*wide, 0.2])
            forward = np.array([*(wide + 0.1 * direction), 0.15])
            lay = np.array([*(wide - 0.1 * direction), 0.01])
            paths.append(np.array([start, high, stretched, forward, lay]))
        self._drive(grasped, paths)

    def _drive(self, vertices: list[int], paths: list[np.ndarray]) -> None:
        """Move grasped vertices along their waypoint paths at ``speed``, release, and settle."""
        lengths = [np.linalg.norm(np.diff(p, axis=0), axis=1) for p in paths]
        total = max(float(seg.sum()) for seg in lengths)
        n = max(2, int(total / (self.speed * self.timestep)))
        targets = [_resample(p, seg, n) for p, seg in zip(paths, lengths)]
        for t in range(1, n):
            for vertex, target in zip(vertices, targets):
                adr = self._qadr[vertex]
                self.data.qpos[adr : adr + 3] = target[t] - self._origin[vertex]
                self.data.qvel[adr : adr + 3] = (target[t] - target[t - 1]) / self.timestep
            self._mj.mj_step(self.model, self.data)
        self.steps_simulated += n
        self._settle()

    def _settle(self) -> None:
        for _ in range(self.settle_steps):
            self._mj.mj_step(self.model, self.data)
        self.steps_simulated += self.settle_steps

    # -- measurements ---------------------------------------------------------------------------

    def covered_area(self) -> float:
        """Table area (m^2) under the cloth: its triangles rasterised in the workspace."""
        res, half = self.resolution, self.workspace
        xy = (self.vertices[:, :2] + half) / (2 * half) * res
        canvas = Image.new("1", (res, res), 0)
        draw = ImageDraw.Draw(canvas)
        for tri in xy[self.triangles]:
            draw.polygon([tuple(p) for p in tri], fill=1)
        pixel = (2 * half / res) ** 2
        return float(np.asarray(canvas, dtype=bool).sum() * pixel)

    def coverage(self) -> float:
        """Covered area over the area of the flat cloth: 1.0 is fully flattened."""
        return self.covered_area() / self.flat_area

    def observe(self, num_points: int = 1024, seed: int | None = None) -> np.ndarray:
        """(num_points, 3) float32 points sampled on the cloth surface, with Gaussian sensor noise."""
        rng = np.random.default_rng(seed)
        tri = self.vertices[self.triangles]  # (T, 3, 3)
        area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        which = rng.choice(len(tri), size=num_points, p=area / area.sum())
        u, v = rng.random((2, num_points))
        flip = u + v > 1
        u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
        t = tri[which]
        points = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
        points += rng.normal(0.0, self.noise_std, size=points.shape)
        return points.astype(np.float32)


def _resample(path: np.ndarray, seg: np.ndarray, n: int) -> np.ndarray:
    """``n`` points spaced evenly along a polyline (``seg``: its segment lengths)."""
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    s = np.linspace(0.0, cum[-1], n)
    return np.stack([np.interp(s, cum, path[:, k]) for k in range(3)], axis=1)
