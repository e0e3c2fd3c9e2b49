"""A synthetic critique set built from the text-to-image world: prompt, scene, critique, score.

Each candidate of ``mmreward.data.synthetic.t2i`` (a faithful render or one with a known
corruption: colour, shape, count, relation, missing object, size, blur, noise, JPEG) becomes one
judge example. The judge's target thinks first, then judges: a ``Seen:`` line restates what the
image shows in the prompt's own terms, marking each departure from the prompt (``"two (not three)
red circles"``); then the critique names the kind of problem and gives the world's templated
sentence; then the score line:
``"Seen: three blue (not red) circles. Critique: Wrong color. The circles are blue, not red.\\nScore: 2"``.
Restating before judging is what lets a two-layer judge trained in minutes compare the prompt with
the image: each mark is a local comparison of one word, and the verdict reads the marks.

``CritiqueExample.description`` is a serialized scene description (a caption of the objects drawn,
with sizes, colours, shapes, counts and relation, then the image quality). It holds the answer, so
it is a training target only for a judge of images: the quick-start judge (``judges.pixel_training``)
gets the render (``CritiqueExample.image``) and learns to write the description itself. A judge that
reads the description as its input is the scene-text ablation (``judges.scene_text_ablation``), never
a judge of images.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from mmreward.configurable import Configurable
from mmreward.data.synthetic.scenes import PALETTE, SHAPES, SIZES, Scene, SceneObject
from mmreward.data.synthetic.t2i import Candidate, T2IWorld
from mmreward.data.synthetic.t2i_grammar import NUMBER_WORDS, RELATION_TEXT, ObjectGroup, PromptSpec
from mmreward.types import Sample

Split = Literal["train", "val", "test"]
QUALITY_WORDS = {"none": "clean", "blur": "blurred", "noise": "noisy", "jpeg": "compressed"}
"""How the description names each quality corruption (alignment corruptions leave it clean)."""

SEVERITY_WORDS = ((0.64, "slightly"), (0.79, "clearly"), (float("inf"), "heavily"))
"""How the description grades a quality corruption's severity (the world draws it from [0.5, 1]):
the first word whose bound the severity is under."""

PROBLEMS = {
    "none": "No problem",
    "color": "Wrong color",
    "shape": "Wrong shape",
    "count": "Wrong count",
    "relation": "Wrong relation",
    "missing": "Missing object",
    "size": "Wrong size",
    "blur": "Poor quality",
    "noise": "Poor quality",
    "jpeg": "Poor quality",
}
"""How a critique opens for each corruption: the kind of problem first, then the details."""

ATTRIBUTE_WORDS = frozenset(
    [*PALETTE, *SHAPES, *(s + "s" for s in SHAPES), *SIZES, *NUMBER_WORDS.values()]
    + ["left", "right", "above", "below", "missing", "blurred", "noisy", "compression", "matches"]
)
"""The words a critique names an attribute with: a generated critique *hits* when it names every
attribute word that the reference critique names."""


SCORE_THRESHOLDS = (0.65, 0.725, 0.775, 0.9)
"""World ratings at or above each threshold add one to the label (1 to 5): a missing object (0.6)
scores 1, a wrong colour or shape (0.7) 2, a wrong count or relation (0.75) 3, a wrong size (0.8)
4 and a faithful image 5; degraded images land on 1 to 4 by severity. Each alignment corruption
gets its own label, so the labels order candidates as the ratings do."""


def score_label(score: float) -> int:
    """The integer label (1 to 5) of a world rating; see ``SCORE_THRESHOLDS``."""
    return 1 + sum(score >= t for t in SCORE_THRESHOLDS)


def places(a: SceneObject, b: SceneObject) -> tuple[str, str]:
    """Where two objects are relative to each other, along the axis of their larger offset:
    ``("left", "right")`` or ``("top", "bottom")``, in the order given.

    One word each, right after the object's noun, so a small judge copies an object's place in one
    step (find the object, take the next word). As ``"on the left"``, the place was two words past
    the noun and the tiny quick-start judge never learned to find it: wrong relations went unnoticed.
    """
    if abs(a.y - b.y) > abs(a.x - b.x):
        return ("top", "bottom") if a.y < b.y else ("bottom", "top")
    return ("left", "right") if a.x < b.x else ("right", "left")


def _article(words: str) -> str:
    return "an" if words[0] in "aeiou" else "a"


def describe_scene(scene: Scene, kind: str, severity: float | None = None) -> str:
    """A caption of what a render shows, in the prompts' own words, then the image quality.

    Objects that share size, colour and shape form one group (``"three large red circles"``). Two
    single objects each get their place (``places``), left or top one first (``"a large red circle
    top and a small blue square bottom"``). The caption never sees the prompt.

    Args:
        scene: The rendered scene.
        kind: The candidate's corruption (quality corruptions are named; others show as clean).
        severity: A quality corruption's severity, said as ``SEVERITY_WORDS`` grade it.
    """
    groups: dict[tuple[str, str, str], list[SceneObject]] = {}
    for obj in sorted(scene.objects, key=lambda o: (o.x, o.y)):
        groups.setdefault((obj.size, obj.color, obj.shape), []).append(obj)
    phrases = []
    for (size, color, shape), members in groups.items():
        words = f"{size} {color} {shape}" + ("s" if len(members) != 1 else "")
        phrases.append(
            f"{_article(words)} {words}" if len(members) == 1 else f"{NUMBER_WORDS[len(members)]} {words}"
        )
    if len(groups) == 2 and all(len(m) == 1 for m in groups.values()):
        (a,), (b,) = groups.values()
        where = places(a, b)
        parts = sorted(zip(phrases, where), key=lambda p: p[1] in ("right", "bottom"))
        caption = " and ".join(f"{phrase} {place}" for phrase, place in parts)
    else:
        caption = " and ".join(phrases) if phrases else "nothing"
    quality = QUALITY_WORDS.get(kind, "clean")
    if severity is not None and kind in QUALITY_WORDS:
        quality = next(word for bound, word in SEVERITY_WORDS if severity < bound) + " " + quality
    return f"{caption}. Quality: {quality}."


def _marked_phrase(group: ObjectGroup, objects: list[SceneObject]) -> str:
    """The objects drawn for ``group`` in the prompt's words, each departure marked ``(not X)``.

    Only what the prompt asks about is said: the size only when the prompt gives one.
    """
    if not objects:
        return f"no {group.color} {group.noun()}"
    first, count = objects[0], len(objects)

    def said(seen: str, asked: str) -> str:
        return seen if seen == asked else f"{seen} (not {asked})"

    plural = "" if count == 1 else "s"
    words = [said(first.size, group.size)] if group.size else []
    words += [said(first.color, group.color), said(first.shape + plural, group.shape + plural)]
    body = " ".join(words)
    if count == 1 and group.count == 1:
        return f"{_article(body)} {body}"
    return f"{said(NUMBER_WORDS[count], NUMBER_WORDS[group.count])} {body}"


def seen_line(spec: PromptSpec, scene: Scene) -> str:
    """What ``scene`` shows, restated in the terms of ``spec``'s prompt with departures marked.

    ``"two (not three) red circles"``; ``"no green circle, a red circle"``; for a relation, each
    object with its place, then the relation they make, in the prompt's terms: ``"a green circle
    right, a red circle left: to the right of (not to the left of)"``. A corrupted
    object keeps its place in the scene's order, which follows the prompt's groups; with one of
    two missing, the survivor is the group whose colour and shape it has (a prompt never relates
    two identical objects).
    """
    objects = list(scene.objects)
    if spec.relation is None:
        return _marked_phrase(spec.groups[0], objects)
    if len(objects) == 1:  # one of the two is missing: the survivor is the group it still matches
        (survivor,) = objects
        matches = [(g.color, g.shape) == (survivor.color, survivor.shape) for g in spec.groups]
        return ", ".join(_marked_phrase(g, [survivor] if m else []) for g, m in zip(spec.groups, matches))
    first, second = objects
    if spec.relation in ("left of", "right of"):
        seen = "left of" if first.x < second.x else "right of"
    else:
        seen = "above" if first.y < second.y else "below"
    relation = RELATION_TEXT[seen] + (
        "" if seen == spec.relation else f" (not {RELATION_TEXT[spec.relation]})"
    )
    place_first, place_second = places(first, second)
    phrase_first, phrase_second = (_marked_phrase(g, [o]) for g, o in zip(spec.groups, (first, second)))
    return f"{phrase_first} {place_first}, {phrase_second} {place_second}: {relation}"


def critique_part(generated: str) -> str:
    """The critique of a judge's output: what follows its last ``Critique:``, or all of it when there is none."""
    _, marker, tail = generated.rpartition("Critique:")
    return tail.strip() if marker else generated.strip()


def critique_hit(generated: str, reference: str) -> bool:
    """Whether the critique of ``generated`` names every attribute word (colour, shape, count, ...) that
    ``reference`` names. The seen line, which repeats the prompt's words, does not count."""
    words = lambda text: {w.strip(".,;:()").lower() for w in text.split()} & ATTRIBUTE_WORDS  # noqa: E731
    return words(reference) <= words(critique_part(generated))


def names_problem(generated: str, corruption: str) -> bool:
    """Whether the critique of ``generated`` opens with the kind of problem ``corruption`` is (``PROBLEMS``)."""
    return critique_part(generated).startswith(PROBLEMS.get(corruption, "A problem") + ".")


@dataclass
class CritiqueExample:
    """One judge training or test example.

    Attributes:
        id: ``<split>-<prompt index>-<candidate index>``.
        prompt: The text-to-image prompt.
        description: What the image shows (``describe_scene``), the judge's "response".
        critique: The reference critique.
        label: The reference integer score.
        score: The world's rating in [0.5, 1] (ground truth for correlations).
        corruption: The candidate's corruption, ``"none"`` when faithful.
        image: Path of the render (relative to the set's folder), or None when not written.
    """

    id: str
    prompt: str
    description: str
    critique: str
    label: int
    score: float
    corruption: str
    image: str | None = None
    seen: str = ""

    @property
    def target(self) -> str:
        """The judge's output: the seen line (if any), the kind of problem, the critique, the score line."""
        think = f"Seen: {self.seen}. " if self.seen else ""
        return f"{think}Critique: {PROBLEMS.get(self.corruption, 'A problem')}. {self.critique}\nScore: {self.label}"

    def sample(self, root: str | Path | None = None) -> Sample:
        """As a ``Sample`` (the description as the response), the image resolved against ``root``."""
        image = None if self.image is None or root is None else str(Path(root) / self.image)
        return Sample(prompt=self.prompt, response=self.description, image=image, meta={"id": self.id})


def examples_from_candidates(
    spec: PromptSpec, candidates: list[Candidate], prefix: str
) -> list[CritiqueExample]:
    """One example per candidate of one prompt; ids are ``<prefix>-<candidate index>``."""
    return [
        CritiqueExample(
            id=f"{prefix}-{j}",
            prompt=spec.text,
            description=describe_scene(c.scene, c.kind, c.severity),
            critique=c.critique,
            label=score_label(c.score),
            score=round(c.score, 4),
            corruption=c.kind,
            seen=seen_line(spec, c.scene),
        )
        for j, c in enumerate(candidates)
    ]


class CritiqueWorld(Configurable):
    """The synthetic critique set: ``write(root)`` makes ``root/{split}.jsonl`` of ``CritiqueExample``.

    Args:
        world: The text-to-image world the candidates come from (its prompt counts size the splits).
        images: The splits whose candidate PNGs to write under ``root/images/`` (for reports and VLM judges).
    """

    def __init__(self, world: T2IWorld, images: list[Split] | None = None) -> None:
        self.world, self.images = world, images

    def examples(self, split: Split, root: Path | None = None) -> list[CritiqueExample]:
        """All examples of ``split``; writes their images under ``root`` when ``images`` names the split."""
        out = []
        for i in range(self.world.sizes[split]):
            spec, candidates = self.world.prompt_candidates(split, i)
            batch = examples_from_candidates(spec, candidates, f"{split}-{i:05d}")
            if self.images and split in self.images and root is not None:
                for example, cand in zip(batch, candidates):
                    example.image = f"images/{example.id}.png"
                    (root / "images").mkdir(parents=True, exist_ok=True)
                    cand.image.save(root / example.image, format="PNG", compress_level=1)
            out += batch
        return out

    def write(self, root: str | Path) -> dict[str, Path]:
        """Write every split as JSONL under ``root``; returns ``{split: path}``."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        paths = {}
        for split in ("train", "val", "test"):
            paths[split] = root / f"{split}.jsonl"
            with paths[split].open("w") as f:
                for example in self.examples(split, root):
                    f.write(json.dumps(asdict(example)) + "\n")
        return paths


def read_examples(path: str | Path) -> list[CritiqueExample]:
    """Read a JSONL file that ``CritiqueWorld.write`` wrote.

    Raises:
        ValueError: naming the file and line of a record that lacks a field.
    """
    out = []
    for line_no, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        try:
            out.append(CritiqueExample(**record))
        except TypeError as err:
            raise ValueError(
                f"{path}:{line_no} is not a critique example ({err}). "
                "Write the file with judges.critique_data.CritiqueWorld.write."
            ) from err
    return out
