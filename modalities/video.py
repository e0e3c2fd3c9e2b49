"""Read videos with decord: open a file, pick frames, decode them in one batch, resize to tensors.

Frame picking is a ``FrameSampler`` (uniform over the clip, at a target fps, or a fixed number from a
time window); ``read_frames`` turns a path into a ``(T, 3, H, W)`` float tensor in [0, 1] with one
``get_batch`` call. Bad files fail with an error that names them and says what is wrong in our
words before the decoder's detail: a missing path (``FileNotFoundError``); an empty file, a file
that is not a video, a damaged or truncated one, a codec this FFmpeg cannot decode, or a clip with
no frames (``ValueError``). ``video_info`` decodes the first, middle and last frames before it calls
a file good, and a clip whose decoded frames are all one image gets a warning naming it.

Rotation: phone videos store a display rotation as side data (the ``.mov`` edge cases of decord's test
set: 0, 90, 180, 270). decord 0.6 applies it while decoding, so a clip coded 568x320 with a 90 degree
rotation comes back 568 rows tall; the PyAV reader here does the same (``np.rot90`` by the frame's
``rotation``), so both backends return the frames as a player shows them.

GIFs: decord cannot measure a GIF's frame count, so ``backend="auto"`` reads ``.gif`` files with PyAV.

Example:
    >>> frames = read_frames("clip.mp4", FrameSampler(num_frames=8), size=224)  # (8, 3, 224, 224)
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mmreward.configurable import Configurable
from mmreward.optional import require
from mmreward.types import Sample
from modalities.image import resize_center_crop

SamplingMode = Literal["uniform", "fps", "window"]
Backend = Literal["auto", "decord", "pyav"]

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif", ".mpg", ".mpeg", ".flv", ".ts")
REENCODE_HINT = "Re-encode it, e.g. `ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4`."


@dataclass
class VideoInfo:
    """What a video file holds, as decoded (display orientation).

    Attributes:
        path: The file.
        num_frames: Number of frames.
        fps: Average frame rate.
        height: Frame height in pixels, after rotation.
        width: Frame width in pixels, after rotation.
    """

    path: str
    num_frames: int
    fps: float
    height: int
    width: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_frames / self.fps if self.fps > 0 else 0.0


class FrameSampler(Configurable):
    """Which frames of a clip to decode.

    Modes:
        ``uniform``: ``num_frames`` frames at the centres of equal segments of the whole clip (the
            TSN-style sampling that VideoScore and most video reward models use).
        ``fps``: frames at ``fps`` per second from ``start`` seconds, at most ``num_frames``.
        ``window``: ``num_frames`` frames spread uniformly over ``[start, end]`` seconds.

    A clip shorter than the request repeats frames, so every clip gives ``num_frames`` frames in
    ``uniform`` and ``window`` modes (batches stay rectangular).

    Args:
        mode: One of the modes above.
        num_frames: Frames per clip (the maximum, in ``fps`` mode).
        fps: Target frame rate for ``fps`` mode.
        start: Window start in seconds (``fps`` and ``window`` modes).
        end: Window end in seconds (``window`` mode); None is the clip's end.
    """

    def __init__(
        self,
        mode: SamplingMode = "uniform",
        num_frames: int = 8,
        fps: float | None = None,
        start: float = 0.0,
        end: float | None = None,
    ) -> None:
        if num_frames < 1:
            raise ValueError(f"FrameSampler needs num_frames >= 1; got {num_frames}.")
        if mode == "fps" and not (fps and fps > 0):
            raise ValueError(
                f"FrameSampler(mode='fps') needs a positive fps; got {fps!r}. Pass e.g. fps=2.0."
            )
        if end is not None and end <= start:
            raise ValueError(f"FrameSampler window is empty: start={start}, end={end}. Use end > start.")
        self.mode, self.num_frames, self.fps, self.start, self.end = mode, num_frames, fps, start, end

    def indices(self, total: int, fps: float) -> list[int]:
        """Frame indices to decode from a clip of ``total`` frames at ``fps``."""
        if total < 1:
            raise ValueError("Cannot sample frames from a clip with no frames.")
        if self.mode == "uniform":
            return _spread(0.0, float(total), self.num_frames, total)
        first = min(total - 1, int(self.start * fps))
        if self.mode == "fps":
            step = fps / self.fps
            count = min(self.num_frames, max(1, math.ceil((total - first) / step)))
            return [min(total - 1, int(first + k * step)) for k in range(count)]
        last = total if self.end is None else min(total, max(first + 1, math.ceil(self.end * fps)))
        return _spread(float(first), float(last), self.num_frames, total)

    def __repr__(self) -> str:
        return f"FrameSampler({', '.join(f'{k}={v!r}' for k, v in self.init_args.items())})"


def _spread(lo: float, hi: float, count: int, total: int) -> list[int]:
    """Centres of ``count`` equal segments of ``[lo, hi)``, as frame indices."""
    width = (hi - lo) / count
    return [min(total - 1, int(lo + (k + 0.5) * width)) for k in range(count)]


def _decord_error() -> tuple[type[BaseException], ...]:
    decord = require("decord", "video")
    return (RuntimeError, decord._ffi.base.DECORDError)


def _check_path(path: str | Path, where: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{where}: video file {str(path)!r} does not exist. "
            "Check the path (media paths in records are relative to the records file)."
        )
    return path


def _use_pyav(path: Path, backend: Backend) -> bool:
    return backend == "pyav" or (backend == "auto" and path.suffix.lower() == ".gif")


def _open_decord(path: Path, where: str) -> Any:
    decord = require("decord", "video")
    if path.stat().st_size == 0:
        raise ValueError(f"{where}: video file {str(path)!r} is empty (0 bytes). Replace the file.")
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except _decord_error() as err:
        raise _unreadable(path, where, err) from err
    if len(reader) == 0:
        raise ValueError(
            f"{where}: video {str(path)!r} has no frames. Remove the record or replace the file."
        )
    return reader


def _first_line(err: BaseException) -> str:
    """The decoder's own words, without decord's timestamp and source-file prefixes."""
    text = str(err).strip().splitlines()
    line = re.sub(r"\[\d\d:\d\d:\d\d\] \S+?:\d+: ", "", text[-1]) if text else type(err).__name__
    return line[:200]


def _diagnose(path: Path) -> tuple[str, bool]:
    """What is wrong with a file the decoder refused, in our words (PyAV looks at the container);
    and whether re-encoding could help (not for a file that is no video at all)."""
    try:
        av = require("av", "video")
    except ImportError:
        return "cannot be decoded", True
    decoded = -1  # -1 until the container opens
    try:
        with av.open(str(path)) as container:
            decoded = 0
            if not container.streams.video:
                return "holds no video stream (an audio-only or data file?)", False
            stream = container.streams.video[0]
            if stream.codec_context is None:
                return f"uses a codec ({stream.codec.name}) that this FFmpeg build cannot decode", True
            for _ in container.decode(video=0):
                decoded += 1
    except av.error.InvalidDataError:
        if decoded < 0:
            kind = f"a {path.suffix} file, " if path.suffix.lower() not in VIDEO_SUFFIXES else ""
            return f"is not a video ({kind}FFmpeg finds no video container in it)", False
        return f"is damaged or truncated: it opens, but frame {decoded} does not decode", True
    except (av.error.FFmpegError, OSError):
        return "cannot be decoded", True
    return "cannot be decoded by decord (PyAV reads it: try backend='pyav')", True


def _unreadable(path: Path, where: str, err: BaseException) -> ValueError:
    """A ``ValueError`` naming the file and what is wrong with it, the decoder's detail last."""
    problem, reencode = _diagnose(path)
    fix = REENCODE_HINT if reencode else "Pass a video file (.mp4, .mov, .mkv, .webm, .avi, .gif)."
    return ValueError(f"{where}: video {str(path)!r} {problem}. {fix} Decoder: {_first_line(err)}")


def _warn_if_constant(frames: np.ndarray, path: Path, where: str) -> None:
    """Warn when every decoded frame is the same image: a still or blank clip, or a bad decode."""
    if len(frames) > 1 and int(np.ptp(frames, axis=0).max()) <= 1:
        warnings.warn(
            f"{where}: every decoded frame of {str(path)!r} is the same image (mean value "
            f"{float(frames.mean()):.0f}/255), so a reward model sees a still picture. "
            "Check the clip in a player; if it should move, re-encode it "
            "(`ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4`).",
            stacklevel=3,
        )


def video_info(path: str | Path, where: str = "video", backend: Backend = "auto") -> VideoInfo:
    """Frame count, fps and display size of a video file, checked by decoding frames.

    The first, middle and last frames are decoded before the file is called good, so a damaged
    or truncated file fails here rather than at training time; a clip whose probed frames are all
    the same image gets a warning naming it.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file is empty, not a video, truncated or damaged, or in a codec that cannot be
            decoded (the message says which, then the decoder's detail).
    """
    path = _check_path(path, where)
    if _use_pyav(path, backend):
        frames = _decode_pyav(path, None, where)
        _warn_if_constant(np.stack(frames), path, where)
        return VideoInfo(str(path), len(frames), _pyav_fps(path, where), *frames[0].shape[:2])
    reader = _open_decord(path, where)
    count = len(reader)
    try:
        probe = reader.get_batch(sorted({0, count // 2, count - 1})).asnumpy()
    except _decord_error() as err:
        raise _unreadable(path, where, err) from err
    _warn_if_constant(probe, path, where)
    height, width = probe.shape[1:3]
    return VideoInfo(str(path), count, float(reader.get_avg_fps()), int(height), int(width))


def _pyav_fps(path: Path, where: str) -> float:
    av = require("av", "video")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        return float(rate) if rate else 10.0


def _decode_pyav(path: Path, indices: list[int] | None, where: str) -> list[np.ndarray]:
    """Decode frames sequentially with PyAV (the baseline decoder); None decodes every frame."""
    av = require("av", "video")
    wanted = None if indices is None else set(indices)
    frames: dict[int, np.ndarray] = {}
    try:
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if wanted is None or i in wanted:
                    k = (int(getattr(frame, "rotation", 0) or 0) // 90) % 4
                    frames[i] = np.rot90(frame.to_ndarray(format="rgb24"), k)
                if wanted is not None and i >= max(wanted):
                    break
    except (av.error.FFmpegError, OSError) as err:
        raise _unreadable(path, where, err) from err
    if not frames:
        raise ValueError(
            f"{where}: video {str(path)!r} has no frames. Remove the record or replace the file."
        )
    if indices is None:
        return [frames[i] for i in sorted(frames)]
    last = max(frames)  # a container may over-report its frame count; clamp to what decoded
    return [frames[min(i, last)] for i in indices]


def decode_frames(
    path: str | Path, sampler: FrameSampler, where: str = "video", backend: Backend = "auto"
) -> np.ndarray:
    """Decode the frames ``sampler`` picks: a ``(T, H, W, 3)`` uint8 array, in one decord ``get_batch``.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file cannot be decoded or has no frames (the message names the file).
    """
    path = _check_path(path, where)
    if _use_pyav(path, backend):
        every = _decode_pyav(path, None, where)
        picked = sampler.indices(len(every), _pyav_fps(path, where))
        frames = np.stack([every[i] for i in picked])
        _warn_if_constant(frames, path, where)
        return frames
    reader = _open_decord(path, where)
    picked = sampler.indices(len(reader), float(reader.get_avg_fps()))
    try:
        frames = reader.get_batch(picked).asnumpy()
    except _decord_error() as err:
        raise _unreadable(path, where, err) from err
    _warn_if_constant(frames, path, where)
    return frames


def frames_to_tensor(frames: np.ndarray, size: int | None = None) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 frames to a ``(T, 3, H, W)`` float tensor in [0, 1], optionally resized
    (short side to ``size``, bicubic, centre crop: the same steps as images)."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
    return tensor if size is None else resize_center_crop(tensor, size).clamp_(0.0, 1.0)


def read_frames(
    path: str | Path,
    sampler: FrameSampler,
    size: int | None = None,
    where: str = "video",
    backend: Backend = "auto",
) -> torch.Tensor:
    """Sampled frames of a video file as a ``(T, 3, H, W)`` float tensor in [0, 1]."""
    return frames_to_tensor(decode_frames(path, sampler, where, backend), size)


def load_video(
    video: Any,
    sampler: FrameSampler,
    size: int | None = None,
    sample: Sample | None = None,
    field: str = "video",
) -> torch.Tensor:
    """A sample's video as ``(T, 3, H, W)`` floats in [0, 1]: from a path, or from frames in memory.

    In-memory frames (a ``(T, H, W, 3)`` uint8 array or a ``(T, 3, H, W)`` float tensor) have no
    frame rate, so only ``uniform`` sampling applies to them.
    """
    where = sample.where(field) if sample is not None else field
    if isinstance(video, (str, Path)):
        return read_frames(video, sampler, size, where)
    if video is None:
        raise ValueError(f"{where}: the sample has no video; this model scores videos.")
    if isinstance(video, np.ndarray):
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(
                f"{where}: a video array must be uint8 (T, H, W, 3); got {video.dtype} {video.shape}."
            )
        video = frames_to_tensor(video)
    if not isinstance(video, torch.Tensor):
        raise TypeError(f"{where}: cannot use a {type(video).__name__} as a video; pass a path or frames.")
    if video.ndim != 4 or video.shape[1] != 3 or len(video) == 0:
        raise ValueError(
            f"{where}: a video tensor must be (T, 3, H, W) with T >= 1; got {tuple(video.shape)}."
        )
    if sampler.mode != "uniform":
        raise ValueError(
            f"{where}: frames in memory have no frame rate, so {sampler.mode!r} sampling cannot apply. Pass a file path or use mode='uniform'."
        )
    frames = video[sampler.indices(len(video), 1.0)].float()
    return frames if size is None else resize_center_crop(frames, size).clamp_(0.0, 1.0)
