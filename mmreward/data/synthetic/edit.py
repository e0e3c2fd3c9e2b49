"""The synthetic image-edit world: a scene of shapes, an instruction, and edits of graded quality.

A source scene holds two or three shapes (distinct colour-shape pairs). An instruction asks for one
edit: ``recolor`` ("make the red circle blue"), ``remove``, ``add`` ("add a green square"),
``move`` ("move the red circle to the left") or ``resize`` ("make the red circle bigger"). Each
source gets five edited candidates, rated as an edit judge would (ADIEE, Chen et al., 2025, regresses
one such score from source, instruction and edit). A rating adds credit for touching the named
object and for making the asked change, and takes credit away for damaging what should stay:

=================  =====  ================================================================
candidate          score  what it is
=================  =====  ================================================================
``correct``        1.0    exactly the asked edit
``near_miss``      0.6    the named object, changed the wrong way (another colour, direction or
                          kind of edit; ``add``: the asked shape in another colour)
``no_op``          0.4    the source unchanged: nothing asked is done, nothing else is damaged
``wrong_object``   0.2    the asked change, done to another object (``add``: a wrong shape)
``unrelated``      0.0    another kind of change, done to another object
=================  =====  ================================================================

Every candidate but ``no_op`` is the source with exactly one edit done, drawn from the same kinds
of edit, so the candidates look alike until the instruction is read: a scorer that sees only the
images (how much changed, which colours appear) cannot rank them. ``no_op`` sits in the middle of
the ratings for the same reason: spotting "nothing changed", which needs no instruction, says
nothing about whether a candidate is better or worse. The edit demo reports such blind controls
beside the model's figures.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from mmreward.configurable import Configurable
from mmreward.data.synthetic.scenes import (
    PALETTE,
    SHAPES,
    Scene,
    SceneObject,
    free_position,
    light_background,
    render,
)
from mmreward.data.synthetic.writing import SPLIT_STREAMS, split_sizes, write_once

EditKind = Literal["recolor", "remove", "add", "move", "resize"]
EDIT_KINDS: tuple[str, ...] = ("recolor", "remove", "add", "move", "resize")
CANDIDATE_SCORES: dict[str, float] = {
    "correct": 1.0,
    "near_miss": 0.6,
    "no_op": 0.4,
    "wrong_object": 0.2,
    "unrelated": 0.0,
}
"""The rating of each kind of candidate edit (see the module docstring)."""
MOVES: dict[str, tuple[float, float]] = {
    "left": (-0.3, 0.0),
    "right": (0.3, 0.0),
    "up": (0.0, -0.3),
    "down": (0.0, 0.3),
}
FORMAT_VERSION = 2


@dataclass(frozen=True)
class Edit:
    """One instruction: ``kind`` applied to ``scene.objects[target]`` (``add``: adds ``new``)."""

    kind: str
    target: int
    new: SceneObject | None = None
    color: str | None = None
    direction: str | None = None

    def text(self, scene: Scene) -> str:
        """The instruction in words."""
        if self.kind == "add":
            return f"add a {self.new.color} {self.new.shape}"
        name = _name(scene.objects[self.target])
        if self.kind == "recolor":
            return f"make the {name} {self.color}"
        if self.kind == "remove":
            return f"remove the {name}"
        if self.kind == "move":
            return (
                f"move the {name} to the {self.direction}"
                if self.direction in ("left", "right")
                else f"move the {name} {self.direction}"
            )
        return f"make the {name} {'bigger' if scene.objects[self.target].size == 'small' else 'smaller'}"


def _name(obj: SceneObject) -> str:
    return f"{obj.color} {obj.shape}"


def _taken(objects: tuple[SceneObject, ...] | list[SceneObject]) -> list[tuple[float, float, float]]:
    return [(o.x, o.y, o.radius) for o in objects]


def source_scene(rng: np.random.Generator) -> Scene:
    """Two or three objects with distinct colour-shape pairs, not overlapping, on a light background."""
    objects: list[SceneObject] = []
    names: set[tuple[str, str]] = set()
    while len(objects) < int(rng.integers(2, 4)):
        shape, color = str(rng.choice(SHAPES)), str(rng.choice(list(PALETTE)))
        if (shape, color) in names:
            continue
        size = str(rng.choice(["small", "large"]))
        try:
            x, y = free_position(
                rng, SceneObject(shape, color, size, 0.5, 0.5).radius, _taken(objects), gap=0.05
            )
        except ValueError:  # two large shapes can leave no room for a third large one; a small one fits
            size = "small"
            x, y = free_position(
                rng, SceneObject(shape, color, size, 0.5, 0.5).radius, _taken(objects), gap=0.05
            )
        objects.append(SceneObject(shape, color, size, x, y))
        names.add((shape, color))
    return Scene(tuple(objects), light_background(rng))


def sample_edit(
    scene: Scene, rng: np.random.Generator, target: int | None = None, kind: str | None = None
) -> Edit:
    """A random instruction for ``scene`` (``target``/``kind`` fix the object or the edit kind)."""
    kind = kind or str(rng.choice(EDIT_KINDS))
    target = int(rng.integers(len(scene.objects))) if target is None else target
    obj = scene.objects[target]
    if kind == "add":
        used = {(o.shape, o.color) for o in scene.objects}
        options = [(s, c) for s in SHAPES for c in PALETTE if (s, c) not in used]
        shape, color = options[int(rng.integers(len(options)))]
        for size in ("large", "small"):  # a crowded scene may have room for a small shape only
            new = SceneObject(shape, color, size, 0.5, 0.5)
            try:
                x, y = free_position(rng, new.radius, _taken(scene.objects), gap=0.02)
            except ValueError:
                continue
            return Edit("add", target, new=new.replace(x=x, y=y))
        return sample_edit(scene, rng, target, "recolor")  # no room at all: ask for another edit
    if kind == "recolor":
        return Edit(kind, target, color=str(rng.choice([c for c in PALETTE if c != obj.color])))
    if kind == "move":
        fits = [
            d
            for d, (dx, dy) in MOVES.items()
            if obj.radius <= obj.x + dx <= 1 - obj.radius and obj.radius <= obj.y + dy <= 1 - obj.radius
        ]
        return (
            Edit(kind, target, direction=str(rng.choice(fits)))
            if fits
            else sample_edit(scene, rng, target, "recolor")
        )
    return Edit(kind, target)


def apply_edit(scene: Scene, edit: Edit, target: int | None = None) -> Scene:
    """``scene`` with ``edit`` done to object ``target`` (default: the edit's own target)."""
    index = edit.target if target is None else target
    objects = list(scene.objects)
    obj = objects[index]
    if edit.kind == "add":
        return scene.replace(objects=(*objects, edit.new))
    if edit.kind == "remove":
        del objects[index]
    elif edit.kind == "recolor":
        objects[index] = obj.replace(color=edit.color if edit.color != obj.color else _next_color(obj.color))
    elif edit.kind == "move":
        dx, dy = MOVES[edit.direction]
        objects[index] = obj.replace(
            x=float(np.clip(obj.x + dx, obj.radius, 1 - obj.radius)),
            y=float(np.clip(obj.y + dy, obj.radius, 1 - obj.radius)),
        )
    else:
        objects[index] = obj.replace(size="large" if obj.size == "small" else "small")
    return scene.replace(objects=tuple(objects))


def _next_color(color: str) -> str:
    names = list(PALETTE)
    return names[(names.index(color) + 1) % len(names)]


def wrong_object_scene(scene: Scene, edit: Edit, rng: np.random.Generator) -> Scene:
    """The edit done to another object; for ``add``, a shape of the wrong kind and colour is added."""
    if edit.kind == "add":
        used = {(o.shape, o.color) for o in scene.objects} | {(edit.new.shape, edit.new.color)}
        options = [
            (s, c)
            for s in SHAPES
            for c in PALETTE
            if (s, c) not in used and s != edit.new.shape and c != edit.new.color
        ]
        shape, color = options[int(rng.integers(len(options)))]
        return scene.replace(objects=(*scene.objects, edit.new.replace(shape=shape, color=color)))
    others = [i for i in range(len(scene.objects)) if i != edit.target]
    return apply_edit(scene, edit, target=int(rng.choice(others)))


def near_miss_scene(scene: Scene, edit: Edit, rng: np.random.Generator) -> Scene:
    """The named object changed the wrong way; for ``add``, the asked shape in another colour."""
    correct = apply_edit(scene, edit)
    if edit.kind == "add":
        used = {(o.shape, o.color) for o in scene.objects}
        colors = [c for c in PALETTE if c != edit.new.color and (edit.new.shape, c) not in used]
        return scene.replace(objects=(*scene.objects, edit.new.replace(color=str(rng.choice(colors)))))
    kinds = [k for k in EDIT_KINDS if k != "add"]
    for _ in range(50):
        other = sample_edit(scene, rng, target=edit.target, kind=str(rng.choice(kinds)))
        edited = apply_edit(scene, other)
        if edited != correct and edited != scene:
            return edited
    raise RuntimeError(f"no near miss found for {edit}")  # cannot happen: a recolour always differs


def unrelated_scene(scene: Scene, edit: Edit, rng: np.random.Generator) -> Scene:
    """Another kind of edit (``add`` included) done to an object other than the named one."""
    others = [i for i in range(len(scene.objects)) if i != edit.target or edit.kind == "add"]
    kind = str(rng.choice([k for k in EDIT_KINDS if k != edit.kind]))
    other = sample_edit(scene, rng, target=int(rng.choice(others)), kind=kind)
    return apply_edit(scene, other)


def make_candidates(scene: Scene, edit: Edit, rng: np.random.Generator, size: int) -> dict[str, Image.Image]:
    """The five graded candidates of ``CANDIDATE_SCORES``, rendered at ``size`` pixels."""
    return {
        "correct": render(apply_edit(scene, edit), size),
        "near_miss": render(near_miss_scene(scene, edit, rng), size),
        "no_op": render(scene, size),
        "wrong_object": render(wrong_object_scene(scene, edit, rng), size),
        "unrelated": render(unrelated_scene(scene, edit, rng), size),
    }


class EditWorld(Configurable):
    """A synthetic instruction-guided edit world, written as canonical JSONL with PNG images.

    ``write(root)`` makes ``root/{split}.jsonl`` (pairs: every two candidates of a source with
    different scores, the better one ``chosen``) and ``root/{split}_ratings.jsonl`` (one rating
    per candidate), with images under ``root/images/<split>/``. Every record has the instruction as
    ``prompt``, the ``source_image`` and the edited ``image``; ``subset`` names the candidate kind
    (pairs: ``"correct>no_op"``).

    Args:
        train_sources: Source scenes in the training split.
        val_sources: Source scenes in the validation split.
        test_sources: Source scenes in the test split.
        size: Image side in pixels.
        seed: Source ``i`` of split ``k`` draws from ``default_rng([seed, k, i])``.
        records: Which files ``write`` returns for training: the ``pairs`` or the ``ratings``
            (both are always written).
    """

    def __init__(
        self,
        train_sources: int,
        val_sources: int,
        test_sources: int,
        size: int = 32,
        seed: int = 0,
        records: Literal["pairs", "ratings"] = "pairs",
    ) -> None:
        if size < 16:
            raise ValueError(f"EditWorld size must be at least 16 pixels; got {size}.")
        self.sizes = split_sizes("EditWorld", train_sources, val_sources, test_sources)
        self.size, self.seed, self.records = size, seed, records

    def source(self, split: str, index: int) -> tuple[Scene, Edit, dict[str, Image.Image]]:
        """Source scene, edit and candidates of source ``index`` of ``split``, as ``write`` makes them."""
        rng = np.random.default_rng([self.seed, SPLIT_STREAMS[split], index])
        scene = source_scene(rng)
        edit = sample_edit(scene, rng)
        return scene, edit, make_candidates(scene, edit, rng, self.size)

    def write(self, root: str | Path) -> dict[str, Path]:
        """Write the world under ``root`` (reused when ``root/world.json`` matches this config).

        Returns:
            ``{"train": root/train.jsonl, "val": ..., "test": ...}`` (``records="pairs"``) or the
            ``{split}_ratings.jsonl`` files (``records="ratings"``).
        """
        return write_once(root, self, FORMAT_VERSION, self._write_split, self.records)

    def _write_split(self, root: Path, split: str, path: Path) -> None:
        image_dir = root / "images" / split
        if image_dir.exists():
            shutil.rmtree(image_dir)
        image_dir.mkdir(parents=True)
        pairs, ratings = [], []
        for i in range(self.sizes[split]):
            scene, edit, candidates = self.source(split, i)
            instruction, source = edit.text(scene), f"images/{split}/{i:05d}_source.png"
            render(scene, self.size).save(root / source, compress_level=1)
            names = {}
            for kind, image in candidates.items():
                names[kind] = f"images/{split}/{i:05d}_{kind}.png"
                image.save(root / names[kind], compress_level=1)
                ratings.append(
                    {
                        "id": f"{split}-{i:05d}-{kind}",
                        "prompt": instruction,
                        "source_image": source,
                        "image": names[kind],
                        "score": CANDIDATE_SCORES[kind],
                        "subset": f"{edit.kind}:{kind}",
                    }
                )
            pairs.extend(_pair_records(f"{split}-{i:05d}", instruction, source, names))
        _write_jsonl(path, pairs)
        _write_jsonl(root / f"{split}_ratings.jsonl", ratings)


def _pair_records(prefix: str, instruction: str, source: str, names: dict[str, str]) -> list[dict[str, Any]]:
    """Every two candidates of one source, the better-rated one ``chosen`` (``names`` is best first)."""
    kinds, pairs = list(names), []
    for a, better in enumerate(kinds):
        for worse in kinds[a + 1 :]:
            side = {
                k: {"source_image": source, "image": names[k], "score": CANDIDATE_SCORES[k]}
                for k in (better, worse)
            }
            pairs.append(
                {
                    "id": f"{prefix}-{better}>{worse}",
                    "prompt": instruction,
                    "chosen": side[better],
                    "rejected": side[worse],
                    "subset": f"{better}>{worse}",
                }
            )
    return pairs


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
