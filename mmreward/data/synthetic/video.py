"""The synthetic text-to-video world: one shape moving across the frame, with graded faults per aspect.

A prompt says what moves and which way (``"a red ball moves right"``). Each clip is
rendered with ``scenes.render`` frame by frame and written as a real H.264 mp4 (PyAV, libx264,
yuv420p). A clip may carry a fault in any of three aspects, each graded (severity 0.5 or 1):

- ``quality`` (visual quality): ``blur``, ``noise`` or ``flicker`` (brightness jumping between frames);
- ``alignment`` (text-to-video alignment): the wrong ``color``, ``direction`` or ``object`` (shape);
  severity 1 gets two of them wrong;
- ``physics`` (physical/common-sense consistency): ``teleport`` (the object jumps along its path
  and back: a smooth path's positions, visited out of order), ``vanish`` (the object is gone for
  some frames) or ``speed`` (the speed jumps mid-clip).

These are the three aspects VideoScore2 (He et al., 2025) rates. The rating of an aspect is
``1 - severity``; the overall score is their mean. A teleporting clip shows the frames a clean clip
would show, in another order, and a wrong direction is a clean clip played backwards: a model must
read the frame order to see either (shuffle a clean clip's frames and it teleports). Blur, noise,
colour and shape show in any single frame.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from mmreward.configurable import Configurable
from mmreward.data.synthetic.scenes import PALETTE, Scene, SceneObject, blur, light_background, noise, render
from mmreward.data.synthetic.writing import SPLIT_STREAMS, split_sizes, write_once
from mmreward.optional import require

Direction = Literal["right", "left", "down", "up"]
ASPECTS: tuple[str, ...] = ("quality", "alignment", "physics")
FAULTS: dict[str, tuple[str, ...]] = {
    "quality": ("blur", "noise", "flicker"),
    "alignment": ("color", "direction", "object"),
    "physics": ("teleport", "vanish", "speed"),
}
NOUNS: dict[str, str] = {"circle": "ball", "square": "box", "triangle": "triangle", "diamond": "diamond"}
PATHS: dict[str, str] = {"right": "right", "left": "left", "down": "down", "up": "up"}
"""Direction words. Each direction is its own word, not an order of shared words ("from left to right"
vs "from right to left"): a small text tower tells those apart only after long training, and the
world is about video, not word order. Colour, noun and direction are each one CLIP BPE token
("rightwards" would be three, two of them shared with "leftwards")."""
OPPOSITE: dict[str, str] = {"right": "left", "left": "right", "down": "up", "up": "down"}
FORMAT_VERSION = 3  # 2: teleport visits the path out of order; 3: one-token direction words


@dataclass(frozen=True)
class Motion:
    """What a prompt asks for: a ``color`` ``shape`` moving in ``direction``."""

    shape: str
    color: str
    direction: str

    @property
    def text(self) -> str:
        """The prompt, e.g. ``"a red ball moves right"``."""
        return f"a {self.color} {NOUNS[self.shape]} moves {PATHS[self.direction]}"


@dataclass
class Clip:
    """One candidate clip and its per-aspect faults.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 frames.
        faults: ``{aspect: (kind, severity)}`` for each faulty aspect.
    """

    frames: np.ndarray
    faults: dict[str, tuple[str, float]] = field(default_factory=dict)

    @property
    def scores(self) -> dict[str, float]:
        """``1 - severity`` per aspect (1 where the aspect has no fault)."""
        return {a: round(1.0 - self.faults[a][1], 4) if a in self.faults else 1.0 for a in ASPECTS}

    @property
    def score(self) -> float:
        """The mean of the aspect scores."""
        return round(float(np.mean(list(self.scores.values()))), 4)


def sample_motion(rng: np.random.Generator) -> Motion:
    """A random prompt: shape, colour and direction drawn uniformly."""
    return Motion(str(rng.choice(list(NOUNS))), str(rng.choice(list(PALETTE))), str(rng.choice(list(PATHS))))


def _other(rng: np.random.Generator, options: list[str], current: str) -> str:
    return str(rng.choice([o for o in options if o != current]))


def misalign(motion: Motion, kinds: list[str], rng: np.random.Generator) -> Motion:
    """The motion actually shown when the clip gets ``kinds`` of alignment wrong."""
    shape, color, direction = motion.shape, motion.color, motion.direction
    if "color" in kinds:
        color = _other(rng, list(PALETTE), color)
    if "object" in kinds:
        shape = _other(rng, list(NOUNS), shape)
    if "direction" in kinds:
        direction = OPPOSITE[direction]
    return Motion(shape, color, direction)


def trajectory(
    direction: str, frames: int, rng: np.random.Generator, physics: tuple[str, float] | None = None
) -> list[tuple[float, float] | None]:
    """Object centres per frame (None: not visible), moving across in ``direction``.

    A ``physics`` fault bends the path: ``speed`` covers ``0.25`` (severity 0.5) or ``0.08``
    (severity 1) of the way in the first half; ``teleport`` visits the clean path's positions out of
    order (``teleport_order``: the object jumps ahead along its path, then back to the skipped part);
    ``vanish`` hides the object for 2 middle frames or the whole second half.
    """
    margin, half = 0.2, frames // 2
    progress = np.linspace(0.0, 1.0, frames)
    kind, severity = physics if physics else (None, 0.0)
    if kind == "speed":
        first = 0.25 if severity < 1 else 0.08
        progress = np.concatenate(
            [np.linspace(0, first, half, endpoint=False), np.linspace(first, 1.0, frames - half)]
        )
    if kind == "teleport":
        progress = progress[teleport_order(frames, severity)]
    along = margin + (1 - 2 * margin) * progress
    if direction in ("left", "up"):
        along = 1.0 - along
    side = np.full(frames, rng.uniform(0.3, 0.7))
    points: list[tuple[float, float] | None] = [
        (float(a), float(s)) if direction in ("right", "left") else (float(s), float(a))
        for a, s in zip(along, side)
    ]
    if kind == "vanish":
        hidden = range(half - 1, half + 1) if severity < 1 else range(half, frames)
        for t in hidden:
            points[t] = None
    return points


def teleport_order(frames: int, severity: float) -> np.ndarray:
    """The order in which a teleporting object visits a smooth path's ``frames`` positions.

    A middle block of the path is rotated by half its length: the object jumps ahead, runs on, jumps
    back to the part it skipped, then jumps ahead again. The first and last positions stay, so the
    clip starts and ends where a clean one does. Severity 0.5 rotates the middle half (8 frames:
    ``0 1 4 5 2 3 6 7``), severity 1 everything but the ends (``0 4 5 6 1 2 3 7``: longer jumps).
    """
    lo, hi = (frames // 4, frames - frames // 4) if severity < 1 else (1, frames - 1)
    block = np.arange(lo, hi)
    return np.concatenate([np.arange(lo), np.roll(block, -(len(block) // 2)), np.arange(hi, frames)])


def render_clip(
    motion: Motion, points: list[tuple[float, float] | None], size: int, background: tuple[int, int, int]
) -> np.ndarray:
    """Frames of ``motion``'s object at ``points``: ``(T, size, size, 3)`` uint8."""
    frames = []
    for point in points:
        objects = () if point is None else (SceneObject(motion.shape, motion.color, "large", *point),)
        frames.append(np.asarray(render(Scene(objects, background), size)))
    return np.stack(frames)


def degrade_clip(frames: np.ndarray, kind: str, severity: float, rng: np.random.Generator) -> np.ndarray:
    """A ``quality`` fault applied to every frame (``blur``, ``noise``) or across frames (``flicker``)."""
    if kind == "flicker":  # alternate frames brighten and darken by up to 70 grey levels
        offsets = 70.0 * severity * np.where(np.arange(len(frames)) % 2 == 0, 1.0, -1.0)
        return np.clip(frames.astype(np.float32) + offsets[:, None, None, None], 0, 255).astype(np.uint8)
    if kind == "blur":
        return np.stack([np.asarray(blur(Image.fromarray(f), 0.6 * severity)) for f in frames])
    if kind == "noise":
        return np.stack([np.asarray(noise(Image.fromarray(f), 0.6 * severity, rng)) for f in frames])
    raise ValueError(f"Unknown quality fault {kind!r}; use one of {', '.join(FAULTS['quality'])}.")


def make_clip(
    motion: Motion, faults: dict[str, tuple[str, float]], rng: np.random.Generator, size: int, frames: int
) -> Clip:
    """Render one clip of ``motion`` with ``faults`` (``{aspect: (kind, severity)}``)."""
    background = light_background(rng)
    shown = motion
    if "alignment" in faults:
        kind, severity = faults["alignment"]
        kinds = [kind] if severity < 1 else [kind, _other(rng, list(FAULTS["alignment"]), kind)]
        shown = misalign(motion, kinds, rng)
    points = trajectory(shown.direction, frames, rng, faults.get("physics"))
    pixels = render_clip(shown, points, size, background)
    if "quality" in faults:
        pixels = degrade_clip(pixels, *faults["quality"], rng)
    return Clip(pixels, dict(faults))


def random_faults(rng: np.random.Generator, fault_rate: float) -> dict[str, tuple[str, float]]:
    """Each aspect independently faulty with probability ``fault_rate``, kind and severity uniform."""
    return {
        aspect: (str(rng.choice(kinds)), float(rng.choice([0.5, 1.0])))
        for aspect, kinds in FAULTS.items()
        if rng.random() < fault_rate
    }


def write_mp4(frames: np.ndarray, path: str | Path, fps: int = 8, crf: int = 12) -> Path:
    """Write ``(T, H, W, 3)`` uint8 frames as an H.264 mp4 (libx264, yuv420p; even sides)."""
    av = require("av", "video")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(
            f"H.264 with yuv420p needs even frame sides; got {width}x{height}. Use an even size."
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "ultrafast"}
        for frame in frames:
            container.mux(
                stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24"))
            )
        container.mux(stream.encode())
    return path


def aspect_labels(a: Clip, b: Clip) -> dict[str, float]:
    """Per aspect, 1 where ``a`` is better, 0 where worse, 0.5 for a tie."""
    sa, sb = a.scores, b.scores
    return {k: 1.0 if sa[k] > sb[k] else 0.0 if sa[k] < sb[k] else 0.5 for k in ASPECTS}


class VideoWorld(Configurable):
    """A synthetic text-to-video world, written as canonical JSONL with H.264 mp4 clips.

    ``write(root)`` makes ``root/{split}.jsonl`` (pairs) and ``root/{split}_ratings.jsonl`` (one
    rating per clip, ``scores`` per aspect), with clips under ``root/videos/<split>/``. Each prompt
    has one clean clip and ``clips_per_prompt - 1`` clips whose aspects are each faulty with
    probability ``fault_rate``; every two clips of a prompt form a pair (the better overall is
    ``chosen``; equal overall scores give ``label`` 0.5), with ``aspects`` labels 1/0/0.5.

    Args:
        train_prompts: Prompts in the training split.
        val_prompts: Prompts in the validation split.
        test_prompts: Prompts in the test split.
        clips_per_prompt: Clips per prompt (at least 2).
        frames: Frames per clip.
        size: Frame side in pixels (even).
        fps: Frame rate written into the files.
        fault_rate: Probability that an aspect of a non-clean clip is faulty.
        seed: Prompt ``i`` of split ``k`` draws from ``default_rng([seed, k, i])``.
        records: Which files ``write`` returns for training: the ``pairs`` or the per-aspect
            ``ratings`` (both are always written).
    """

    def __init__(
        self,
        train_prompts: int,
        val_prompts: int,
        test_prompts: int,
        clips_per_prompt: int = 4,
        frames: int = 8,
        size: int = 32,
        fps: int = 8,
        fault_rate: float = 0.5,
        seed: int = 0,
        records: Literal["pairs", "ratings"] = "pairs",
    ) -> None:
        if clips_per_prompt < 2:
            raise ValueError(
                f"VideoWorld clips_per_prompt must be >= 2 to make pairs; got {clips_per_prompt}."
            )
        if frames < 4:
            raise ValueError(f"VideoWorld frames must be >= 4 so a clip has a middle; got {frames}.")
        if size < 16 or size % 2:
            raise ValueError(f"VideoWorld size must be even and >= 16 (H.264, yuv420p); got {size}.")
        self.sizes = split_sizes("VideoWorld", train_prompts, val_prompts, test_prompts)
        self.clips_per_prompt, self.frames, self.size, self.fps = clips_per_prompt, frames, size, fps
        self.fault_rate, self.seed, self.records = fault_rate, seed, records

    def prompt_clips(self, split: str, index: int) -> tuple[Motion, list[Clip]]:
        """The prompt and clips of prompt ``index`` of ``split``, as ``write`` makes them."""
        rng = np.random.default_rng([self.seed, SPLIT_STREAMS[split], index])
        motion = sample_motion(rng)
        clips = [make_clip(motion, {}, rng, self.size, self.frames)]
        while len(clips) < self.clips_per_prompt:
            faults = (
                random_faults(rng, self.fault_rate)
                or random_faults(rng, 1.0 / len(ASPECTS))
                or {"quality": ("blur", 1.0)}
            )
            clips.append(make_clip(motion, faults, rng, self.size, self.frames))
        return motion, clips

    def write(self, root: str | Path) -> dict[str, Path]:
        """Write the world under ``root`` (reused when ``root/world.json`` matches this config).

        Returns:
            ``{"train": root/train.jsonl, "val": ..., "test": ...}`` (``records="pairs"``) or the
            ``{split}_ratings.jsonl`` files (``records="ratings"``).
        """
        return write_once(root, self, FORMAT_VERSION, self._write_split, self.records)

    def _write_split(self, root: Path, split: str, path: Path) -> None:
        video_dir = root / "videos" / split
        if video_dir.exists():
            shutil.rmtree(video_dir)
        pairs, ratings = [], []
        for i in range(self.sizes[split]):
            motion, clips = self.prompt_clips(split, i)
            names = [f"videos/{split}/{i:05d}_{j}.mp4" for j in range(len(clips))]
            for j, (clip, name) in enumerate(zip(clips, names)):
                write_mp4(clip.frames, root / name, self.fps)
                ratings.append(_rating_record(f"{split}-{i:05d}-{j}", motion.text, name, clip))
            for a in range(len(clips)):
                for b in range(a + 1, len(clips)):
                    pairs.append(
                        _pair_record(
                            f"{split}-{i:05d}-{a}{b}", motion.text, (names[a], clips[a]), (names[b], clips[b])
                        )
                    )
        _write_jsonl(path, pairs)
        _write_jsonl(root / f"{split}_ratings.jsonl", ratings)


def _fault_text(clip: Clip) -> str:
    return "+".join(f"{a}:{k}@{s:g}" for a, (k, s) in sorted(clip.faults.items())) or "clean"


def _rating_record(record_id: str, prompt: str, video: str, clip: Clip) -> dict[str, Any]:
    return {
        "id": record_id,
        "prompt": prompt,
        "video": video,
        "scores": clip.scores,
        "score": clip.score,
        "subset": _fault_text(clip),
    }


def _pair_record(record_id: str, prompt: str, a: tuple[str, Clip], b: tuple[str, Clip]) -> dict[str, Any]:
    if b[1].score > a[1].score:
        a, b = b, a
    return {
        "id": record_id,
        "prompt": prompt,
        "chosen": {"video": a[0], "score": a[1].score},
        "rejected": {"video": b[0], "score": b[1].score},
        "label": 0.5 if a[1].score == b[1].score else 1.0,
        "aspects": aspect_labels(a[1], b[1]),
        "subset": f"{_fault_text(a[1])} vs {_fault_text(b[1])}",
    }


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
