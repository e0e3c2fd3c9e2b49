"""Readers for the point clouds robot and driving users bring: LiDAR scans, PCL files, RGB-D frames.

Every reader returns an (N, 3) xyz or (N, 6) xyz + rgb float32 array (rgb in [0, 1]), the two
layouts the point-cloud encoders read. Columns kept, per format:

| ``format`` | file | stored columns | kept |
|---|---|---|---|
| ``kitti`` | KITTI ``velodyne/*.bin`` | float32 x, y, z, intensity | x, y, z |
| ``nuscenes`` | nuScenes ``LIDAR_TOP/*.pcd.bin`` | float32 x, y, z, intensity, ring | x, y, z |
| ``sunrgbd`` | SUN RGB-D ``.bin`` (mmdetection3d's depth clouds) | float32 x, y, z, r, g, b | all six |
| ``pcd`` | PCL / ROS ``.pcd``, ``DATA ascii`` or ``binary`` | the header's ``FIELDS`` | x, y, z and ``rgb``/``rgba`` |
| ``rgbd`` | a depth image + intrinsics (+ colour image) | depth per pixel | x, y, z (+ r, g, b) |

Intensity and ring are dropped: no encoder here reads them (``read_lidar_bin`` returns every column
for those who want them). Points that a format marks as "no return" (NaN in a ``.pcd``, depth 0 in
an RGB-D frame) are left out, as the format defines; any other non-finite value is refused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

PointCloudFormat = Literal["auto", "npy", "npz", "ply", "kitti", "nuscenes", "sunrgbd", "pcd"]
LIDAR_COLUMNS = {"kitti": 4, "nuscenes": 5, "sunrgbd": 6}
"""float32 values per point in each raw ``.bin`` layout."""


def sniff_format(path: Path) -> str:
    """The format of ``path`` from its name, and for a bare ``.bin`` from its size and values.

    ``.pcd.bin`` is nuScenes, ``.pcd`` is PCL. A ``.bin`` is SUN RGB-D when its size fits six float32
    columns whose last three (rgb) all lie in [0, 1], else KITTI (four columns); a real KITTI scan read
    six to a row puts metres in the colour columns, so the two do not mix up.
    """
    name = path.name.lower()
    if name.endswith(".pcd.bin"):
        return "nuscenes"
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz", ".ply", ".pcd"):
        return suffix[1:]
    if suffix != ".bin":
        return suffix
    size = path.stat().st_size
    if size % 24 == 0 and size:
        rgb = np.fromfile(path, dtype=np.float32).reshape(-1, 6)[:, 3:]
        if np.isfinite(rgb).all() and rgb.min() >= 0.0 and rgb.max() <= 1.0:
            logger.info("Read %s as SUN RGB-D (x, y, z, r, g, b); pass format= to choose.", path)
            return "sunrgbd"
    logger.info("Read %s as KITTI (x, y, z, intensity); pass format= to choose.", path)
    return "kitti"


def read_lidar_bin(path: Path, format: str, where: str) -> np.ndarray:
    """Every column of a raw float32 ``.bin`` scan: (N, 4) KITTI, (N, 5) nuScenes, (N, 6) SUN RGB-D."""
    columns = LIDAR_COLUMNS[format]
    size = path.stat().st_size
    if size == 0 or size % (4 * columns):
        fits = [name for name, c in LIDAR_COLUMNS.items() if size and size % (4 * c) == 0]
        hint = f" Its size fits {', '.join(fits)}: pass format={fits[0]!r}." if fits else ""
        raise ValueError(
            f"{where}: {str(path)!r} holds {size} bytes, not a whole number of {format} points "
            f"({columns} float32 values each).{hint}"
        )
    return np.fromfile(path, dtype=np.float32).reshape(-1, columns)


def read_bin(path: Path, format: str, where: str) -> np.ndarray:
    """A KITTI, nuScenes or SUN RGB-D ``.bin`` as xyz (LiDAR) or xyz + rgb (SUN RGB-D)."""
    raw = read_lidar_bin(path, format, where)
    return raw if format == "sunrgbd" else raw[:, :3]


_PCD_TYPES = {("F", 4): "<f4", ("F", 8): "<f8", ("U", 1): "u1", ("U", 2): "<u2", ("U", 4): "<u4"}
_PCD_TYPES |= {("I", 1): "i1", ("I", 2): "<i2", ("I", 4): "<i4", ("U", 8): "<u8", ("I", 8): "<i8"}


def _pcd_header(handle: Any, path: Path, where: str) -> dict[str, list[str]]:
    header: dict[str, list[str]] = {}
    for _ in range(64):
        line = handle.readline()
        if not line:
            break
        text = line.decode("ascii", errors="replace").strip()
        if not text or text.startswith("#"):
            continue
        key, *values = text.split()
        header[key.upper()] = values
        if key.upper() == "DATA":
            break
    missing = [k for k in ("FIELDS", "SIZE", "TYPE", "POINTS", "DATA") if k not in header]
    if missing:
        raise ValueError(f"{where}: {str(path)!r} is not a PCD file: its header lacks {', '.join(missing)}.")
    return header


def read_pcd(path: Path, where: str) -> np.ndarray:
    """A PCL ``.pcd`` file (``DATA ascii`` or ``binary``): x, y, z, and rgb when it has ``rgb``/``rgba``.

    PCL packs colour as the bytes of one 32-bit field (0x00RRGGBB). NaN points (PCL's "no return" in
    organised clouds) are left out.
    """
    with path.open("rb") as handle:
        header = _pcd_header(handle, path, where)
        body = handle.read()
    fields, count = header["FIELDS"], header.get("COUNT", ["1"] * len(header["FIELDS"]))
    if not {"x", "y", "z"} <= set(fields):
        raise ValueError(f"{where}: the points of {str(path)!r} have fields {fields}, not x, y, z.")
    try:
        dtype = np.dtype(
            [
                (name, _PCD_TYPES[(kind.upper(), int(size))], (int(n),) if int(n) > 1 else ())
                for name, size, kind, n in zip(fields, header["SIZE"], header["TYPE"], count)
            ]
        )
    except KeyError as err:
        raise ValueError(
            f"{where}: {str(path)!r} has a field type/size {err} that PCD does not define."
        ) from err
    points, data = int(header["POINTS"][0]), header["DATA"][0].lower()
    colour = next((c for c in ("rgb", "rgba") if c in fields), None)
    if data == "ascii":
        table = np.loadtxt(body.decode("ascii").splitlines(), dtype=np.float64, ndmin=2)
        starts = np.cumsum([0] + [int(n) for n in count])  # a field of COUNT n spans n columns
        cloud = {name: table[:, starts[i]] for i, name in enumerate(fields)}
        packed = None
        if colour is not None:  # the colour's 32 bits, written as a float (PCL) or an integer
            values = cloud[colour]
            is_float = dtype[colour].kind == "f"
            packed = values.astype(np.float32).view(np.uint32) if is_float else values.astype(np.uint32)
    elif data == "binary":
        if len(body) < points * dtype.itemsize:
            raise ValueError(
                f"{where}: {str(path)!r} is truncated: the header promises {points} points of "
                f"{dtype.itemsize} bytes, the file holds {len(body)} bytes of data."
            )
        cloud = np.frombuffer(body, dtype=dtype, count=points)
        packed = None if colour is None else np.ascontiguousarray(cloud[colour]).view(np.uint32)
    else:
        raise ValueError(
            f"{where}: {str(path)!r} is a PCD with DATA {data}, which is not read here; convert it to binary "
            "or ascii (PCL: `pcl_convert_pcd_ascii_binary IN OUT 1`; Open3D: write_point_cloud(..., compressed=False))."
        )
    xyz = np.stack([np.asarray(cloud[c], dtype=np.float32) for c in "xyz"], axis=1)
    columns = [xyz]
    if packed is not None:
        rgb = np.stack([(packed >> s) & 0xFF for s in (16, 8, 0)], axis=1).astype(np.float32) / 255.0
        columns.append(rgb)
    out = np.concatenate(columns, axis=1)
    keep = ~np.isnan(xyz).any(axis=1)
    if not keep.all():
        logger.info("%s: left out %d NaN points (no return) of %d.", path, int((~keep).sum()), len(out))
    return out[keep]


def rgbd_to_points(
    depth: Any,
    intrinsics: Any,
    color: Any = None,
    depth_scale: float = 1000.0,
    max_depth: float | None = None,
    where: str = "point_cloud",
) -> np.ndarray:
    """Back-project a depth image through pinhole intrinsics: (N, 3) xyz in metres, or (N, 6) with colour.

    Camera frame (OpenCV): x right, y down, z forward. Pixels with depth 0 (no return) are left out.

    Args:
        depth: A depth image path (16-bit PNG) or an (H, W) array of raw depth values.
        intrinsics: ``{"fx", "fy", "cx", "cy"}``, or a 3x3 camera matrix (nested lists or an array).
        color: Optional colour image path or (H, W, 3) uint8 array of the same size as ``depth``.
        depth_scale: Raw depth units per metre: 1000 for millimetre PNGs (Kinect, RealSense, SUN RGB-D
            after its bit shift), 5000 for the TUM RGB-D benchmark.
        max_depth: Leave out points farther than this many metres (None keeps all).
        where: The record and field, for errors.
    """
    depth = _image(depth, where, "depth").astype(np.float32)
    if depth.ndim != 2:
        raise ValueError(f"{where}: a depth image must be single-channel (H, W); got shape {depth.shape}.")
    fx, fy, cx, cy = _intrinsics(intrinsics, where)
    v, u = np.indices(depth.shape, dtype=np.float32)
    z = depth / depth_scale
    keep = (z > 0) & np.isfinite(z) & (True if max_depth is None else z <= max_depth)
    if not keep.any():
        raise ValueError(f"{where}: the depth image has no valid pixel (all 0 or beyond max_depth).")
    xyz = np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=-1)[keep]
    if color is None:
        return xyz.astype(np.float32)
    rgb = _image(color, where, "color")
    if rgb.shape[:2] != depth.shape or rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(
            f"{where}: the colour image is {rgb.shape}, the depth image {depth.shape}; they must share "
            "height and width (register the colour to the depth camera first)."
        )
    return np.concatenate([xyz, rgb[..., :3][keep].astype(np.float32) / 255.0], axis=1).astype(np.float32)


def _image(source: Any, where: str, name: str) -> np.ndarray:
    if isinstance(source, (str, Path)):
        from PIL import Image

        if not Path(source).is_file():
            raise FileNotFoundError(f"{where}: {name} image {str(source)!r} does not exist.")
        with Image.open(source) as image:
            return np.asarray(image)
    return np.asarray(source)


def _intrinsics(intrinsics: Any, where: str) -> tuple[float, float, float, float]:
    if isinstance(intrinsics, dict):
        missing = [k for k in ("fx", "fy", "cx", "cy") if k not in intrinsics]
        if missing:
            raise ValueError(f"{where}: intrinsics lack {', '.join(missing)}; give fx, fy, cx, cy in pixels.")
        return tuple(float(intrinsics[k]) for k in ("fx", "fy", "cx", "cy"))
    matrix = np.asarray(intrinsics, dtype=np.float64)
    if matrix.shape != (3, 3):
        raise ValueError(
            f"{where}: intrinsics must be {{fx, fy, cx, cy}} or a 3x3 camera matrix; got shape {matrix.shape}."
        )
    return matrix[0, 0], matrix[1, 1], matrix[0, 2], matrix[1, 2]
