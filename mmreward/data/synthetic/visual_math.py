"""The synthetic visual-math world: rendered images, multi-step questions, chains with known errors.

Each problem is an image and a question. The image is one of three kinds, drawn at ``image_size``
pixels with no text in it:

- ``objects``: coloured squares in the cells of a 6 x 6 layout ("There are 4 red shapes.");
- ``bars``: a bar chart, one coloured bar per colour on a faint unit grid ("The blue bar is 6.");
- ``grid``: a 6 x 6 grid of cells, some filled ("Row 3 has 2 filled cells.").

A question asks to add up one to three quantities read from the image (or to subtract one from
another), and perhaps to multiply the result by 2 or 3. A reasoning chain answers it in 3-6 steps:
it reads the quantities off the image ("There are 4 red shapes."), works the arithmetic one
operation a step ("4 + 3 = 7.", "7 * 2 = 14."), each step carrying the previous result on, and
ends "The answer is N.". Chains come in four kinds:

===============  ====================================================================================
``correct``      every reading and every sum right
``misread``      one reading step states a value one off the image's; later steps compute correctly
                 from it (a misread is visible only in the pixels)
``arithmetic``   one arithmetic step's result is off by 1-3; later steps carry it on
``carry``        one arithmetic step uses a number one or two off the value an earlier step gave
                 (a wrong carry-over), and computes correctly from it
===============  ====================================================================================

Labels follow Math-Shepherd / ProcessBench: steps before the first error are 1, the first error
and every later step 0. Each record also says ``first_error`` (-1 if none), ``error_kind`` (also its
``subset``), ``answer`` and ``answer_correct`` (the final answer equals the true one).

No leak from text: a stated reading is drawn uniformly from its range whether the chain is correct
or not, and a misread chain's image holds a value one away from it, so the text of a misread chain
has the same distribution as a correct one's; only the image tells them apart. Arithmetic slips and
wrong carry-overs are visible in the text alone. The prompt holds the question only: no scene text.

Files (``write(root)``): ``{train,val,test}.jsonl`` process records (``chains_per_problem`` chains a
problem, sharing its image), and ``test_pools.jsonl``: for each of ``pool_problems`` held-out
problems a pool of ``pool_size`` chains for best-of-N, where wrong chains tend to agree on one
systematic misread, so majority voting is often wrong (``pool`` field: the problem's id).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mmreward.configurable import Configurable
from mmreward.data.synthetic.scenes import PALETTE
from mmreward.data.synthetic.writing import SPLIT_STREAMS, split_sizes, write_once

FORMAT_VERSION = 1
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow")
KINDS: tuple[str, ...] = ("objects", "bars", "grid")
ERROR_KINDS: tuple[str, ...] = ("correct", "misread", "arithmetic", "carry")
VALUE_RANGE: dict[str, tuple[int, int]] = {"objects": (1, 7), "bars": (1, 9), "grid": (1, 6)}
"""The range of a stated reading of each image kind (a misread image's true value stays in it)."""
CELLS = 6  # the objects layout and the grid are CELLS x CELLS
VOCABULARY: tuple[str, ...] = (
    "there",
    "are",
    "is",
    "has",
    "the",
    "and",
    "row",
    "rows",
    "filled",
    "cells",
    "shapes",
    "bar",
    "bars",
    "count",
    "read",
    "in",
    "add",
    "them",
    "then",
    "subtract",
    "second",
    "from",
    "first",
    "multiply",
    "by",
    "what",
    "result",
    "answer",
    *COLORS,
    ".",
    ",",
    "?",
    "+",
    "-",
    "*",
    "=",
)
"""Every word and symbol the questions and steps use (numbers aside): a word-level model's vocabulary."""


@dataclass(frozen=True)
class Problem:
    """One question about one image.

    Attributes:
        kind: ``objects``, ``bars`` or ``grid``.
        names: What each read quantity is (a colour, or a row number as text), in reading order.
        values: The quantities' true values (what the image shows).
        op: ``+`` (add them up) or ``-`` (the first minus the second; two readings).
        factor: Multiply the result by this at the end (1: no multiplication).
        others: The true values of the image's other quantities (the colours or rows not asked about).
    """

    kind: str
    names: tuple[str, ...]
    values: tuple[int, ...]
    op: str
    factor: int
    others: dict[str, int]

    def question(self) -> str:
        """The question text (no scene text: what to read, never the values)."""
        if self.kind == "objects":
            what = " and ".join(self.names)
            base = f"Count the {what} shapes."
        elif self.kind == "bars":
            base = "Read the " + " and ".join(f"{n}" for n in self.names) + " bars."
        else:
            rows = "rows " if len(self.names) > 1 else "row "
            base = "Count the filled cells in " + rows + " and ".join(self.names) + "."
        if len(self.values) == 1:
            return f"{base} Multiply by {self.factor}. What is the result?"
        verb = "Add them" if self.op == "+" else "Subtract the second from the first"
        tail = f", then multiply by {self.factor}" if self.factor > 1 else ""
        return f"{base} {verb}{tail}. What is the result?"

    def answer(self) -> int:
        """The true answer."""
        return evaluate(self.values, self.op, self.factor)


def evaluate(values: tuple[int, ...] | list[int], op: str, factor: int) -> int:
    """The result of combining ``values`` with ``op`` then multiplying by ``factor``."""
    total = values[0]
    for v in values[1:]:
        total = total + v if op == "+" else total - v
    return total * factor


def reading_step(kind: str, name: str, value: int) -> str:
    """The text of a step that reads one quantity off the image."""
    if kind == "objects":
        return f"There are {value} {name} shapes."
    if kind == "bars":
        return f"The {name} bar is {value}."
    return f"Row {name} has {value} filled cells."


@dataclass
class Chain:
    """A reasoning chain: its steps, per-step labels, first error, kind and final answer."""

    steps: list[str]
    labels: list[int]
    first_error: int
    error_kind: str
    answer: int


def make_chain(problem: Problem, error_kind: str, rng: np.random.Generator, stated: tuple[int, ...]) -> Chain:
    """A chain for ``problem`` with ``stated`` readings and (unless ``correct``/``misread``) one error.

    A ``misread`` chain is one whose ``stated`` readings differ from ``problem.values``; the caller
    chooses them. ``arithmetic`` and ``carry`` put their error at a random arithmetic step.
    """
    steps = [reading_step(problem.kind, name, value) for name, value in zip(problem.names, stated)]
    misread_at = [i for i, (s, v) in enumerate(zip(stated, problem.values)) if s != v]
    first_error = misread_at[0] if misread_at else -1
    ops = [problem.op] * (len(stated) - 1) + (["*"] if problem.factor > 1 else [])
    error_op = int(rng.integers(len(ops))) if error_kind in ("arithmetic", "carry") else -1
    total = stated[0]
    for k, op in enumerate(ops):
        operand = stated[k + 1] if op != "*" else problem.factor
        carried = _off_by(total, rng, 2, low=0) if k == error_op and error_kind == "carry" else total
        result = carried + operand if op == "+" else carried - operand if op == "-" else carried * operand
        if k == error_op and error_kind == "arithmetic":
            result = _off_by(result, rng, 3, low=0)
        steps.append(f"{carried} {op} {operand} = {result}.")
        if k == error_op and first_error < 0:
            first_error = len(steps) - 1
        total = result
    steps.append(f"The answer is {total}.")
    labels = [1 if first_error < 0 or i < first_error else 0 for i in range(len(steps))]
    kind = error_kind if first_error >= 0 else "correct"
    return Chain(steps, labels, first_error, kind, total)


def _off_by(value: int, rng: np.random.Generator, most: int, low: int) -> int:
    """``value`` moved by 1..``most`` up or down, staying >= ``low``."""
    choices = [value + d for d in range(-most, most + 1) if d != 0 and value + d >= low]
    return int(rng.choice(choices))


def sample_values(kind: str, count: int, op: str, rng: np.random.Generator) -> tuple[int, ...]:
    """Readings as a chain states them: uniform over the kind's range (for ``-``, pairs at least 2
    apart, so a misread by one keeps the difference >= 0). Correct and misread chains both use it."""
    lo, hi = VALUE_RANGE[kind]
    while True:
        values = tuple(int(v) for v in rng.integers(lo, hi + 1, size=count))
        if op == "+" or values[0] - values[1] >= 2:
            return values


def sample_problem(rng: np.random.Generator) -> Problem:
    """A random problem: an image kind, 1-3 quantities to read, an operation and maybe a factor."""
    kind = KINDS[int(rng.integers(len(KINDS)))]
    lo, hi = VALUE_RANGE[kind]
    pool = list(COLORS) if kind != "grid" else [str(r) for r in range(1, CELLS + 1)]
    count = int(rng.choice([1, 2, 2, 3]))
    names = [pool[i] for i in rng.permutation(len(pool))[:count]]
    if kind == "grid":
        names = sorted(names)
    op = "-" if count == 2 and rng.random() < 0.3 else "+"
    factor = int(rng.choice([2, 3])) if count == 1 or (count == 2 and rng.random() < 0.5) else 1
    values = sample_values(kind, count, op, rng)
    others = {n: int(rng.integers(lo, hi + 1)) for n in pool if n not in names}
    return Problem(kind, tuple(names), values, op, factor, others)


def misread(problem: Problem, rng: np.random.Generator, index: int | None = None) -> Problem:
    """The problem with one quantity's true value moved one away from what its chains state.

    ``problem.values`` are taken as the stated readings (drawn as a correct chain's are); the
    returned problem's image holds ``index``'s value (random if None) one above or below, in range.
    """
    lo, hi = VALUE_RANGE[problem.kind]
    index = int(rng.integers(len(problem.values))) if index is None else index
    s = problem.values[index]
    true = list(problem.values)
    true[index] = int(rng.choice([v for v in (s - 1, s + 1) if lo <= v <= hi]))
    return Problem(problem.kind, problem.names, tuple(true), problem.op, problem.factor, problem.others)


# -- rendering ------------------------------------------------------------------------------------


def scene_values(problem: Problem) -> dict[str, int]:
    """Every quantity the image shows: the asked ones and the others."""
    return {**problem.others, **dict(zip(problem.names, problem.values))}


def render_problem(problem: Problem, size: int, rng: np.random.Generator) -> Image.Image:
    """The problem's image at ``size`` pixels (drawn at 4x, then box-downsampled)."""
    scale = 4
    side = size * scale
    image = Image.new("RGB", (side, side), (245, 245, 240))
    draw = ImageDraw.Draw(image)
    values = scene_values(problem)
    cell = side / CELLS
    if problem.kind == "objects":
        slots = rng.permutation(CELLS * CELLS)
        placed = 0
        for color in COLORS:
            for _ in range(values[color]):
                r, c = divmod(int(slots[placed]), CELLS)
                placed += 1
                pad = cell * 0.18
                box = (c * cell + pad, r * cell + pad, (c + 1) * cell - pad, (r + 1) * cell - pad)
                draw.rectangle(box, fill=PALETTE[color])
    elif problem.kind == "bars":
        lo, hi = VALUE_RANGE["bars"]
        unit = side * 0.9 / hi
        base = side * 0.95
        for k in range(1, hi + 1):  # a faint unit grid to read the bars against
            draw.line([(0, base - k * unit), (side, base - k * unit)], fill=(215, 215, 210), width=scale)
        order = [COLORS[i] for i in rng.permutation(len(COLORS))]
        width = side / (len(order) + 1)
        for j, color in enumerate(order):
            x0 = width * (j + 0.5) + width * 0.1
            draw.rectangle((x0, base - values[color] * unit, x0 + width * 0.8, base), fill=PALETTE[color])
    else:
        for r in range(CELLS):
            filled = set(rng.permutation(CELLS)[: values[str(r + 1)]].tolist())
            for c in range(CELLS):
                box = (c * cell + scale, r * cell + scale, (c + 1) * cell - scale, (r + 1) * cell - scale)
                draw.rectangle(box, fill=(60, 60, 70) if c in filled else None, outline=(180, 180, 175))
    return image.resize((size, size), Image.Resampling.BOX)


# -- the world ------------------------------------------------------------------------------------


def chain_record(problem: Problem, chain: Chain, image: str, record_id: str, pool: str | None = None) -> dict:
    """One process record: the question, the image, the chain, its labels and what is known about it."""
    record = {
        "id": record_id,
        "prompt": problem.question(),
        "image": image,
        "steps": chain.steps,
        "labels": chain.labels,
        "subset": chain.error_kind,
        "error_kind": chain.error_kind,
        "first_error": chain.first_error,
        "image_kind": problem.kind,
        "answer": chain.answer,
        "true_answer": problem.answer(),
        "answer_correct": chain.answer == problem.answer(),
    }
    if pool is not None:
        record["pool"] = pool
    return record


def sample_chain(rng: np.random.Generator, mix: dict[str, float]) -> tuple[Problem, Chain]:
    """A fresh problem and one chain for it, of a kind drawn from ``mix``."""
    kinds = list(mix)
    kind = kinds[int(rng.choice(len(kinds), p=np.array([mix[k] for k in kinds]) / sum(mix.values())))]
    problem = sample_problem(rng)
    stated = problem.values
    if kind == "misread":
        problem = misread(problem, rng)
    return problem, make_chain(problem, kind, rng, stated)


def sample_pool(rng: np.random.Generator, size: int) -> tuple[Problem, list[Chain]]:
    """One problem and a pool of ``size`` chains whose wrong ones lean on one systematic misread.

    A share of 15-50% is correct; of the rest, about two thirds state the same wrong reading (the
    pool's systematic misread, which gives one wrong answer a block of votes) and the rest are
    arithmetic slips, wrong carry-overs or other misreads.
    """
    problem = sample_problem(rng)
    lo, hi = VALUE_RANGE[problem.kind]
    index = int(rng.integers(len(problem.values)))
    stated = list(problem.values)
    stated[index] = int(rng.choice([v for v in (stated[index] - 1, stated[index] + 1) if lo <= v <= hi]))
    systematic = tuple(stated)
    chains = []
    n_correct = max(1, round(size * rng.uniform(0.15, 0.5)))
    for i in range(size):
        if i < n_correct:
            chains.append(make_chain(problem, "correct", rng, problem.values))
        elif rng.random() < 0.67:
            chains.append(make_chain(problem, "misread", rng, systematic))
        else:
            kind = str(rng.choice(["arithmetic", "carry", "misread"]))
            said = problem.values
            if kind == "misread":
                said = list(problem.values)
                j = int(rng.integers(len(said)))
                said[j] = int(
                    rng.choice([v for v in (said[j] - 2, said[j] + 2) if lo <= v <= hi] or [said[j] + 1])
                )
                said = tuple(said) if problem.op == "+" or said[0] - said[1] >= 0 else problem.values
            chains.append(make_chain(problem, kind, rng, tuple(said)))
    order = rng.permutation(size)
    return problem, [chains[i] for i in order]


DEFAULT_MIX = {"correct": 0.4, "misread": 0.2, "arithmetic": 0.2, "carry": 0.2}


class VisualMathWorld(Configurable):
    """Writes the visual-math world: process records with images, and best-of-N pools; see the module docstring.

    Args:
        train_chains: Training chains (each with its own problem and image).
        val_chains: Validation chains.
        test_chains: Held-out chains (unseen problems and images).
        pool_problems: Held-out problems with a best-of-N pool each (``test_pools.jsonl``).
        pool_size: Chains in each pool.
        image_size: Side of the rendered images in pixels.
        correct_fraction: Share of correct chains in the splits; the rest split evenly between
            misread, arithmetic and carry.
        truncate_training: End the train and val chains at their first error (PRM800K's
            convention), so every label says whether its step is right given a right prefix; the
            test chains and the pools stay whole.
        training_mix: The share of each chain kind (``correct``, ``misread``, ``arithmetic``,
            ``carry``) in the train and val splits; None: as the test split.
        seed: Seeds every split (each split its own stream).
    """

    def __init__(
        self,
        train_chains: int,
        val_chains: int,
        test_chains: int,
        pool_problems: int = 0,
        pool_size: int = 32,
        image_size: int = 48,
        correct_fraction: float = 0.4,
        truncate_training: bool = True,
        training_mix: dict[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        self.sizes = split_sizes("VisualMathWorld", train_chains, val_chains, test_chains)
        if not 0.0 < correct_fraction < 1.0:
            raise ValueError(f"correct_fraction must be in (0, 1); got {correct_fraction}.")
        if pool_problems < 0 or pool_size < 1:
            raise ValueError(
                f"pool_problems must be >= 0 and pool_size >= 1; got {pool_problems}, {pool_size}."
            )
        self.pool_problems, self.pool_size, self.image_size = pool_problems, pool_size, image_size
        self.truncate_training, self.seed = truncate_training, seed
        wrong = (1.0 - correct_fraction) / 3
        self.mix = {"correct": correct_fraction, "misread": wrong, "arithmetic": wrong, "carry": wrong}
        if training_mix is not None and (
            set(training_mix) - set(ERROR_KINDS) or sum(training_mix.values()) <= 0
        ):
            raise ValueError(
                f"training_mix must give non-negative shares of {', '.join(ERROR_KINDS)}; got {training_mix!r}."
            )
        self.training_mix = training_mix or self.mix

    def records(self, split: str) -> list[tuple[dict, Image.Image]]:
        """The split's records, each with its image (paths are ``images/<split>/<id>.png``)."""
        rng = np.random.default_rng([self.seed, SPLIT_STREAMS[split]])
        out = []
        for i in range(self.sizes[split]):
            problem, chain = sample_chain(rng, self.mix if split == "test" else self.training_mix)
            if self.truncate_training and split != "test" and chain.first_error >= 0:
                end = chain.first_error + 1
                chain = Chain(
                    chain.steps[:end], chain.labels[:end], chain.first_error, chain.error_kind, chain.answer
                )
            rid = f"{split}-{i}"
            out.append(
                (
                    chain_record(problem, chain, f"images/{split}/{rid}.png", rid),
                    render_problem(problem, self.image_size, rng),
                )
            )
        return out

    def pools(self) -> list[tuple[list[dict], Image.Image]]:
        """The held-out best-of-N pools (from their own seed stream), each with its problem's image."""
        rng = np.random.default_rng([self.seed, 3])
        out = []
        for p in range(self.pool_problems):
            problem, chains = sample_pool(rng, self.pool_size)
            pid = f"pool-{p}"
            path = f"images/pools/{pid}.png"
            records = [chain_record(problem, c, path, f"{pid}-{k}", pool=pid) for k, c in enumerate(chains)]
            out.append((records, render_problem(problem, self.image_size, rng)))
        return out

    def write(self, root: str | Path) -> dict[str, Path]:
        """Write ``{train,val,test}.jsonl``, ``test_pools.jsonl`` and the images under ``root`` (once)."""
        root = Path(root)

        def write_split(root: Path, split: str, path: Path) -> None:
            shutil.rmtree(root / "images" / split, ignore_errors=True)
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            lines = []
            for record, image in self.records(split):
                image.save(root / record["image"])
                lines.append(json.dumps(record))
            path.write_text("".join(line + "\n" for line in lines))
            if split == "test":
                self._write_pools(root)

        return write_once(root, self, FORMAT_VERSION, write_split)

    def _write_pools(self, root: Path) -> None:
        shutil.rmtree(root / "images" / "pools", ignore_errors=True)
        (root / "images" / "pools").mkdir(parents=True, exist_ok=True)
        lines = []
        for records, image in self.pools():
            image.save(root / records[0]["image"])
            lines += [json.dumps(r) for r in records]
        (root / "test_pools.jsonl").write_text("".join(line + "\n" for line in lines))


def read_chains(path: str | Path) -> list[dict[str, Any]]:
    """The raw records of a visual-math file (with ``error_kind``, ``first_error``, ``answer_correct``, ``pool``)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
