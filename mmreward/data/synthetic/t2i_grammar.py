"""The compositional prompt grammar of the text-to-image world, and how a scene shows or breaks a prompt.

A ``PromptSpec`` is one ``ObjectGroup`` with a count (``"three small red circles"``) or two single
objects in a relation (``"a large yellow circle above a small purple square"``). ``faithful_layout``
places objects that show it exactly; ``corrupt`` breaks a layout in one named way (``color``,
``shape``, ``count``, ``relation``, ``missing``, ``size``) and says what is wrong in a sentence.
Layouts keep objects grouped by the prompt's groups; ``to_scene`` flattens them for ``render``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from mmreward.data.synthetic.scenes import PALETTE, SIZE_FRACTION, SIZES, Scene, SceneObject, free_position

Relation = Literal["left of", "right of", "above", "below"]
AlignmentCorruption = Literal["color", "shape", "count", "relation", "missing", "size"]
RELATIONS: tuple[str, ...] = get_args(Relation)
ALIGNMENT_CORRUPTIONS: tuple[str, ...] = get_args(AlignmentCorruption)
RELATION_TEXT = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
NUMBER_WORDS = {0: "no", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}

Layout = list[list[SceneObject]]
"""Scene objects grouped by the prompt's object group they render."""


@dataclass(frozen=True)
class Grammar:
    """What prompts may say.

    Attributes:
        colors: Colour words (``PALETTE`` names).
        shapes: Shape words (``scenes.SHAPES``).
        max_count: The largest count a count prompt asks for (at most 4).
        relation_fraction: Share of prompts that relate two objects; the rest ask for a count.
        size_fraction: Share of prompts that say the objects' sizes.
    """

    colors: tuple[str, ...] = tuple(PALETTE)
    shapes: tuple[str, ...] = ("circle", "square", "triangle")
    max_count: int = 4
    relation_fraction: float = 0.5
    size_fraction: float = 0.5


DEFAULT_GRAMMAR = Grammar()


@dataclass(frozen=True)
class ObjectGroup:
    """``count`` objects of one colour and shape; ``size`` is None when the prompt does not say it."""

    count: int
    color: str
    shape: str
    size: str | None = None

    def noun(self, count: int | None = None) -> str:
        """``"circle"`` or ``"circles"``."""
        return self.shape + ("s" if (self.count if count is None else count) != 1 else "")

    def phrase(self) -> str:
        """``"a small red circle"``, ``"three blue squares"``."""
        words = " ".join(w for w in (self.size, self.color, self.noun()) if w)
        if self.count != 1:
            return f"{NUMBER_WORDS[self.count]} {words}"
        return f"{_article(words)} {words}"


@dataclass(frozen=True)
class PromptSpec:
    """A prompt's meaning: one group with a count, or two single objects in a relation."""

    groups: tuple[ObjectGroup, ...]
    relation: Relation | None = None

    @property
    def text(self) -> str:
        """The prompt as a sentence."""
        if self.relation is None:
            return self.groups[0].phrase()
        first, second = self.groups
        return f"{first.phrase()} {RELATION_TEXT[self.relation]} {second.phrase()}"


def sample_prompt(rng: np.random.Generator, grammar: Grammar = DEFAULT_GRAMMAR) -> PromptSpec:
    """Draw a prompt from ``grammar``."""
    sized = rng.random() < grammar.size_fraction
    if rng.random() < grammar.relation_fraction:
        first = (str(rng.choice(grammar.colors)), str(rng.choice(grammar.shapes)))
        second = first
        while second == first:  # two identical objects would make a flipped relation look right
            second = (str(rng.choice(grammar.colors)), str(rng.choice(grammar.shapes)))
        groups = tuple(
            ObjectGroup(1, c, s, str(rng.choice(SIZES)) if sized else None) for c, s in (first, second)
        )
        return PromptSpec(groups, relation=str(rng.choice(RELATIONS)))
    count = int(rng.integers(1, grammar.max_count + 1))
    size = str(rng.choice(SIZES)) if sized else None
    return PromptSpec(
        (ObjectGroup(count, str(rng.choice(grammar.colors)), str(rng.choice(grammar.shapes)), size),)
    )


def applicable_corruptions(spec: PromptSpec) -> list[str]:
    """The alignment corruptions that make sense for ``spec``, in ``ALIGNMENT_CORRUPTIONS`` order."""
    kinds = ["color", "shape"]
    kinds += ["relation", "missing"] if spec.relation else ["count"]
    if any(g.size for g in spec.groups):
        kinds.append("size")
    return kinds


# -- layouts ------------------------------------------------------------------------------------

LARGE_RADIUS = SIZE_FRACTION["large"] / 2  # objects are spaced as if large, so a size swap never overlaps


def faithful_layout(spec: PromptSpec, rng: np.random.Generator) -> Layout:
    """Objects that show ``spec`` exactly, at jittered positions."""
    sizes = [g.size or str(rng.choice(SIZES)) for g in spec.groups]
    if spec.relation is not None:
        positions = _relation_positions(spec.relation, rng)
        return [[SceneObject(g.shape, g.color, s, *p)] for g, s, p in zip(spec.groups, sizes, positions)]
    group = spec.groups[0]
    for _ in range(20):  # random placement can paint itself into a corner: start over
        taken: list[tuple[float, float, float]] = []
        try:
            for _ in range(group.count):
                taken.append((*free_position(rng, LARGE_RADIUS, taken, tries=50), LARGE_RADIUS))
        except ValueError:
            continue
        return [[SceneObject(group.shape, group.color, sizes[0], x, y) for x, y, _ in taken]]
    raise AssertionError(f"no layout found for {spec.text!r}")


def _relation_positions(relation: str, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Centres for (first, second) that make ``first <relation> second`` unmistakable."""
    margin = LARGE_RADIUS + 0.02
    gap = float(rng.uniform(0.38, 1 - 2 * margin))  # along the relation's axis
    start = float(rng.uniform(margin, 1 - margin - gap))
    middle, skew = float(rng.uniform(0.3, 0.7)), float(rng.uniform(-0.1, 0.1))  # across it
    near, far = (start, middle - skew), (start + gap, middle + skew)
    first, second = (near, far) if relation in ("left of", "above") else (far, near)
    if relation in ("above", "below"):  # the axis is y: swap coordinates
        first, second = first[::-1], second[::-1]
    return [first, second]


def to_scene(layout: Layout, background: tuple[int, int, int]) -> Scene:
    """Flatten a layout into a scene."""
    return Scene(tuple(o for group in layout for o in group), background)


# -- alignment corruptions ------------------------------------------------------------------------


def corrupt(
    spec: PromptSpec, layout: Layout, kind: str, rng: np.random.Generator, grammar: Grammar = DEFAULT_GRAMMAR
) -> tuple[Layout, str]:
    """Break ``layout`` in the way ``kind`` names; returns the new layout and a critique."""
    if kind not in applicable_corruptions(spec):
        raise ValueError(
            f"Corruption {kind!r} does not apply to {spec.text!r}; use one of {applicable_corruptions(spec)}."
        )
    layout = [list(group) for group in layout]
    if kind == "relation":
        (a,), (b,) = layout
        layout = [[a.replace(x=b.x, y=b.y)], [b.replace(x=a.x, y=a.y)]]
        first, second = spec.groups
        return layout, (
            f"The {first.color} {first.shape} is {RELATION_TEXT[OPPOSITE[spec.relation]]} the {second.color} "
            f"{second.shape}, not {RELATION_TEXT[spec.relation]} it."
        )
    candidates = [i for i, g in enumerate(spec.groups) if kind != "size" or g.size]
    index = int(rng.choice(candidates))
    group = spec.groups[index]
    if kind == "missing":
        del layout[index]
        return layout, f"The {group.color} {group.shape} is missing."
    if kind == "count":
        new_count = _change_count(layout[index], group.count, rng)
        verb = "is" if new_count == 1 else "are"
        return (
            layout,
            f"There {verb} {NUMBER_WORDS[new_count]} {group.color} {group.noun(new_count)}, not {NUMBER_WORDS[group.count]}.",
        )
    old = getattr(group, kind)
    choices = {"color": grammar.colors, "shape": grammar.shapes, "size": SIZES}[kind]
    # as in the prompts, never two identical objects in a relation: the render could not say which
    # is which, so neither its relation nor a caption placing each object could be read off it
    others = [o for i, objects in enumerate(layout) if i != index for o in objects]
    twins = {getattr(o, kind) for o in others if _alike_but(o, layout[index][0], kind)}
    new = str(rng.choice([c for c in choices if c != old and c not in twins]))
    layout[index] = [o.replace(**{kind: new}) for o in layout[index]]
    return layout, _swap_critique(spec, group, kind, old, new)


def _alike_but(a: SceneObject, b: SceneObject, kind: str) -> bool:
    """Whether ``a`` and ``b`` share every attribute but ``kind`` (size, colour and shape)."""
    return all(getattr(a, k) == getattr(b, k) for k in ("size", "color", "shape") if k != kind)


def _change_count(objects: list[SceneObject], count: int, rng: np.random.Generator) -> int:
    """Add or remove one object of ``objects`` in place; returns the new count."""
    if count >= 4 or (count > 1 and rng.random() < 0.5):  # four is the most a scene holds
        del objects[int(rng.integers(count))]
        return count - 1
    taken = [(o.x, o.y, LARGE_RADIUS) for o in objects]
    try:
        x, y = free_position(rng, LARGE_RADIUS, taken)
    except ValueError:  # no room for one more: take one away instead
        if count == 1:
            raise
        del objects[int(rng.integers(count))]
        return count - 1
    objects.append(objects[0].replace(x=x, y=y))
    return count + 1


def _swap_critique(spec: PromptSpec, group: ObjectGroup, kind: str, old: str, new: str) -> str:
    """``"The circles are blue, not red."``; names the group in full when a shorter name is ambiguous."""
    others = [g for g in spec.groups if g is not group]
    verb = "are" if group.count != 1 else "is"
    if kind == "shape":
        if group.count != 1:
            return f"The {group.color} shapes are {new}s, not {old}s."
        named = "shape" if all(g.color != group.color for g in others) else old
        return f"The {group.color} {named} is {_article(new)} {new}, not {_article(old)} {old}."
    if kind == "color" and all(g.shape != group.shape for g in others):
        return f"The {group.noun()} {verb} {new}, not {old}."
    return f"The {group.color} {group.noun()} {verb} {new}, not {old}."


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"
