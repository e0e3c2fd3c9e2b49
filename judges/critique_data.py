"""A synthetic critique set built from the text-to-image world: prompt, scene, critique, score.

Each candidate of ``mmreward.data.synthetic.t2i`` (a faithful render or one with a known
corruption: colour, shape, count, relation, missing object, size, blur, noise, JPEG) becomes one
judge example. The judge's target names the kind of problem, then gives the world's templated
critique, which says what is wrong, then a score line:
``"Critique: Wrong color. The circles are blue, not red.\\nScore: 2"``.

What the quick-start judge sees of the image is a serialized scene description (a caption of the
objects drawn, with sizes, colours, shapes, counts and relation, then the image quality), not the
pixels: a judge built from scratch on a CPU in minutes cannot also learn to see. ``CritiqueExample.image`` keeps the
render's path so a vision-language judge can take the pixels instead.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from mmreward.configurable import Configurable
from mmreward.data.synthetic.scenes import PALETTE, SHAPES, SIZES, Scene
from mmreward.data.synthetic.t2i import Candidate, T2IWorld
from mmreward.data.synthetic.t2i_grammar import NUMBER_WORDS
from mmreward.types import Sample

Split = Literal["train", "val", "test"]
QUALITY_WORDS = {"none": "clean", "blur": "blurred", "noise": "noisy", "jpeg": "compressed"}
"""How the description names each quality corruption (alignment corruptions leave it clean)."""

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


def describe_scene(scene: Scene, kind: str) -> str:
    """A caption of what a render shows, in the prompts' own grammar, then the image quality.

    Objects that share size, colour and shape form one group (``"three large red circles"``);
    two groups are related by their larger offset, left group or top group first
    (``"a large red circle above a small blue square"``). The caption never sees the prompt.

    Args:
        scene: The rendered scene.
        kind: The candidate's corruption (quality corruptions are named; others show as clean).
    """
    groups: dict[tuple[str, str, str], list] = {}
    for obj in sorted(scene.objects, key=lambda o: (o.x, o.y)):
        groups.setdefault((obj.size, obj.color, obj.shape), []).append(obj)
    phrases = []
    for (size, color, shape), members in groups.items():
        count = len(members)
        words = f"{size} {color} {shape}" + ("s" if count != 1 else "")
        phrases.append(
            (
                f"{'an' if size[0] in 'aeiou' else 'a'} {words}"
                if count == 1
                else f"{NUMBER_WORDS[count]} {words}",
                members,
            )
        )
    if len(phrases) == 2 and all(len(m) == 1 for _, m in phrases):
        (first, [a]), (second, [b]) = phrases
        if abs(a.y - b.y) > abs(a.x - b.x):  # vertical: the upper one first
            (first, a), (second, b) = sorted([(first, a), (second, b)], key=lambda p: p[1].y)
            caption = f"{first} above {second}"
        else:
            caption = f"{first} to the left of {second}"
    else:
        caption = " and ".join(p for p, _ in phrases) if phrases else "nothing"
    return f"{caption}. Quality: {QUALITY_WORDS.get(kind, 'clean')}."


def critique_hit(generated: str, reference: str) -> bool:
    """Whether ``generated`` names every attribute word (colour, shape, count, ...) that ``reference`` names."""
    words = lambda text: {w.strip(".,;:").lower() for w in text.split()} & ATTRIBUTE_WORDS  # noqa: E731
    return words(reference) <= words(generated)


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

    @property
    def target(self) -> str:
        """The judge's output: the kind of problem, the critique, then the score line."""
        return f"Critique: {PROBLEMS.get(self.corruption, 'A problem')}. {self.critique}\nScore: {self.label}"

    def sample(self, root: str | Path | None = None) -> Sample:
        """As a ``Sample`` (the description as the response), the image resolved against ``root``."""
        image = None if self.image is None or root is None else str(Path(root) / self.image)
        return Sample(prompt=self.prompt, response=self.description, image=image, meta={"id": self.id})


def examples_from_candidates(prompt: str, candidates: list[Candidate], prefix: str) -> list[CritiqueExample]:
    """One example per candidate of one prompt; ids are ``<prefix>-<candidate index>``."""
    return [
        CritiqueExample(
            id=f"{prefix}-{j}",
            prompt=prompt,
            description=describe_scene(c.scene, c.kind),
            critique=c.critique,
            label=score_label(c.score),
            score=round(c.score, 4),
            corruption=c.kind,
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
            batch = examples_from_candidates(spec.text, candidates, f"{split}-{i:05d}")
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
