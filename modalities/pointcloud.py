"""Point clouds: load (.npy/.npz/.ply, LiDAR .bin, PCL .pcd, RGB-D frames), validate, move to a
canonical frame, farthest-point sampling.

The LiDAR, PCL and RGB-D readers live in ``modalities.pointcloud_formats``, with the table of the
columns each keeps.

A point cloud is an (N, 3) array of positions or an (N, 6) array of positions and RGB colours in
[0, 1]. Every loader checks what it read and names the record and field it came from when the
data is unusable; nothing is silently repaired.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mmreward.optional import require
from mmreward.types import Sample
from modalities.pointcloud_formats import PointCloudFormat, read_bin, read_pcd, rgbd_to_points, sniff_format

SUFFIXES = (".npy", ".npz", ".ply", ".pcd", ".bin (KITTI, SUN RGB-D)", ".pcd.bin (nuScenes)")
FORMATS = ("npy", "npz", "ply", "kitti", "nuscenes", "sunrgbd", "pcd")


def load_point_cloud(
    source: Any, sample: Sample | None = None, field: str = "point_cloud", format: PointCloudFormat = "auto"
) -> np.ndarray:
    """Return ``source`` as a validated float32 (N, 3) or (N, 6) array.

    Args:
        source: A path to a ``.npy`` file, a ``.npz`` file (key ``points``, or its only array), a
            ``.ply`` file (vertex ``x, y, z`` and, when present, ``red, green, blue``), a KITTI or
            SUN RGB-D ``.bin``, a nuScenes ``.pcd.bin``, a PCL ``.pcd``; an RGB-D frame as a dict
            ``{"depth": png, "intrinsics": {fx, fy, cx, cy} or 3x3, "color": image (optional),
            "depth_scale": 1000 (optional)}``; or an array or tensor. Columns kept per format:
            ``modalities.pointcloud_formats``.
        sample: The sample it belongs to, to name the record in errors.
        field: The field name for errors.
        format: The file format; ``"auto"`` goes by the suffix (and, for a bare ``.bin``, by its
            size and values: ``pointcloud_formats.sniff_format``).

    Raises:
        FileNotFoundError: The path does not exist.
        ValueError: Unknown suffix, wrong shape, no points, or non-finite values.
    """
    where = sample.where(field) if sample is not None else field
    if source is None:
        raise ValueError(
            f"{where}: the sample has no point cloud; this model scores point-cloud observations."
        )
    if isinstance(source, dict):
        points = _read_rgbd(source, where)
    elif isinstance(source, (str, Path)):
        points = _read_file(Path(source), where, format)
    elif isinstance(source, torch.Tensor):
        points = source.detach().cpu().numpy()
    elif isinstance(source, np.ndarray):
        points = source
    else:
        raise TypeError(
            f"{where}: cannot use a {type(source).__name__} as a point cloud; pass a .npy/.npz/.ply path or an (N, 3) array."
        )
    return validate_point_cloud(points, where)


def _read_rgbd(frame: dict[str, Any], where: str) -> np.ndarray:
    missing = [k for k in ("depth", "intrinsics") if k not in frame]
    unknown = sorted(set(frame) - {"depth", "intrinsics", "color", "depth_scale", "max_depth"})
    if missing or unknown:
        raise ValueError(
            f"{where}: an RGB-D frame is {{depth, intrinsics, color?, depth_scale?, max_depth?}}; "
            f"got keys {sorted(frame)}." + (f" Missing: {', '.join(missing)}." if missing else "")
        )
    return rgbd_to_points(
        frame["depth"],
        frame["intrinsics"],
        frame.get("color"),
        float(frame.get("depth_scale", 1000.0)),
        frame.get("max_depth"),
        where,
    )


def _read_file(path: Path, where: str, format: str = "auto") -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{where}: point-cloud file {str(path)!r} does not exist.")
    if format != "auto" and format not in FORMATS:
        raise ValueError(
            f"{where}: unknown point-cloud format {format!r}; use one of auto, {', '.join(FORMATS)}."
        )
    suffix = "." + (sniff_format(path) if format == "auto" else format)
    if suffix in (".kitti", ".nuscenes", ".sunrgbd"):
        return read_bin(path, suffix[1:], where)
    if suffix == ".pcd":
        return read_pcd(path, where)
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if "points" in archive.files:
                return archive["points"]
            if len(archive.files) == 1:
                return archive[archive.files[0]]
            raise ValueError(
                f"{where}: {str(path)!r} holds arrays {archive.files} and none is named 'points'. "
                "Save the cloud under the key 'points'."
            )
    if suffix == ".ply":
        return _read_ply(path, where)
    raise ValueError(
        f"{where}: cannot read point-cloud file {str(path)!r}; use one of {', '.join(SUFFIXES)}, "
        "or name the layout with format= (one of " + ", ".join(FORMATS) + ")."
    )


def _read_ply(path: Path, where: str) -> np.ndarray:
    plyfile = require("plyfile", "robotics")
    try:
        ply = plyfile.PlyData.read(str(path))
        vertex = ply["vertex"].data
    except (KeyError, ValueError, plyfile.PlyParseError) as err:
        raise ValueError(
            f"{where}: cannot read {str(path)!r} as a PLY file with a vertex element ({err})."
        ) from err
    names = vertex.dtype.names
    if not {"x", "y", "z"} <= set(names):
        raise ValueError(f"{where}: the vertices of {str(path)!r} have properties {names}, not x, y, z.")
    columns = [vertex["x"], vertex["y"], vertex["z"]]
    if {"red", "green", "blue"} <= set(names):
        columns += [vertex[c].astype(np.float32) / 255.0 for c in ("red", "green", "blue")]
    return np.stack(columns, axis=1).astype(np.float32)


def validate_point_cloud(points: np.ndarray, where: str = "point_cloud") -> np.ndarray:
    """Check that ``points`` is a non-empty finite (N, 3) or (N, 6) array; return it as float32."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] not in (3, 6):
        raise ValueError(
            f"{where}: a point cloud must have shape (N, 3) or (N, 6) (xyz or xyz+rgb); got {points.shape}. "
            "Reshape it, e.g. np.fromfile(...).reshape(-1, 3)."
        )
    if points.shape[0] == 0:
        raise ValueError(f"{where}: the point cloud is empty (0 points). Drop the record or fix the capture.")
    if not np.issubdtype(points.dtype, np.number):
        raise ValueError(f"{where}: point-cloud values must be numbers; got dtype {points.dtype}.")
    finite = np.isfinite(points).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{where}: {bad.size} of {len(points)} points hold NaN or inf (first at row {bad[0]}). "
            "Remove invalid depth returns before saving the cloud."
        )
    return points.astype(np.float32, copy=False)


def normalize_point_cloud(
    points: np.ndarray,
    mode: Literal["unit_sphere", "bounds"] = "unit_sphere",
    bounds: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """Map positions to a canonical frame; colour channels pass through.

    Args:
        points: (N, 3) or (N, 6) array.
        mode: ``"unit_sphere"`` centres on the centroid and scales the farthest point to radius 1
            (the object-level convention of PointNet, Qi et al., 2017); ``"bounds"`` maps a fixed
            workspace ``(xmin, ymin, xmax, ymax)`` of a scene frame to [-1, 1]^2, z scaled alike,
            so that positions stay comparable across observations and with actions.
        bounds: The workspace for ``mode="bounds"``.
    """
    out = points.astype(np.float32, copy=True)
    if mode == "unit_sphere":
        out[:, :3] -= out[:, :3].mean(axis=0)
        radius = float(np.linalg.norm(out[:, :3], axis=1).max())
        out[:, :3] /= radius if radius > 0 else 1.0
        return out
    if bounds is None:
        raise ValueError("normalize_point_cloud(mode='bounds') needs bounds=(xmin, ymin, xmax, ymax).")
    center, half = workspace_frame(bounds)
    out[:, :2] = (out[:, :2] - center) / half
    out[:, 2] = out[:, 2] / half
    return out


def workspace_frame(bounds: tuple[float, float, float, float]) -> tuple[np.ndarray, float]:
    """Centre (x, y) and half-extent of a workspace ``(xmin, ymin, xmax, ymax)``."""
    xmin, ymin, xmax, ymax = bounds
    if not (xmax > xmin and ymax > ymin):
        raise ValueError(
            f"A workspace (xmin, ymin, xmax, ymax) must have xmax > xmin and ymax > ymin; got {bounds}."
        )
    center = np.array([(xmin + xmax) / 2, (ymin + ymax) / 2], dtype=np.float32)
    return center, max(xmax - xmin, ymax - ymin) / 2


def farthest_point_sampling(points: np.ndarray, num_samples: int) -> np.ndarray:
    """Indices of ``num_samples`` points chosen by farthest-point sampling (PointNet++, Qi et al., 2017).

    The first point is the one farthest from the centroid, so the selection does not depend on
    the order of the points. With no more points than asked, every point is kept, in its order
    (farthest-point sampling would only permute them, at a numpy call per point: half a training
    step of the cloth model went there), repeated cyclically up to ``num_samples``.

    Args:
        points: (N, C) array; the first three columns are positions.
    """
    if len(points) <= num_samples:
        return np.resize(np.arange(len(points)), num_samples)
    # one contiguous array per coordinate: a reduce over a length-3 axis is slow in numpy
    x, y, z = (np.ascontiguousarray(points[:, k], dtype=np.float64) for k in range(3))
    chosen = np.empty(num_samples, dtype=np.int64)
    chosen[0] = int(np.argmax((x - x.mean()) ** 2 + (y - y.mean()) ** 2 + (z - z.mean()) ** 2))
    dist = np.full(len(x), np.inf)
    for i in range(num_samples):
        if i:
            chosen[i] = int(np.argmax(dist))
        c = chosen[i]
        np.minimum(dist, (x - x[c]) ** 2 + (y - y[c]) ** 2 + (z - z[c]) ** 2, out=dist)
    return chosen


def farthest_point_sampling_torch(xyz: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Batched farthest-point sampling: (B, N, 3) -> (B, M) indices; the start is order-free (see above)."""
    b, n, _ = xyz.shape
    if num_samples > n:
        raise ValueError(f"Cannot pick {num_samples} centroids from {n} points; sample more input points.")
    chosen = torch.empty(b, num_samples, dtype=torch.long, device=xyz.device)
    rows = torch.arange(b, device=xyz.device)
    first = ((xyz - xyz.mean(dim=1, keepdim=True)) ** 2).sum(-1).argmax(dim=1)
    chosen[:, 0] = first
    dist = ((xyz - xyz[rows, first, None]) ** 2).sum(-1)  # (B, N)
    for i in range(1, num_samples):
        nxt = dist.argmax(dim=1)
        chosen[:, i] = nxt
        dist = torch.minimum(dist, ((xyz - xyz[rows, nxt, None]) ** 2).sum(-1))
    return chosen
