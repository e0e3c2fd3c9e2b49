"""The synthetic text-to-image world: compositional prompts, faithful renders and corrupted ones.

For each prompt (``t2i_grammar``: colour, shape, count, relation, size) the world draws one
faithful scene (positions jittered, a random light background) and candidates that break it in
one way, each keeping the rest of the faithful layout so a pair differs in exactly what its label
says:

- alignment corruptions: ``color`` or ``shape`` of one object group swapped, ``count`` off by one,
  ``relation`` flipped (the two objects trade places), one object ``missing``, ``size`` swapped;
- quality corruptions of the faithful render: ``blur``, ``noise``, ``jpeg``.

``sample_prompt`` and ``make_candidates`` are the Python API; ``T2IWorld.write`` writes canonical
preference and rating JSONL files with PNG images (see its docstring for the record format).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmreward.configurable import Configurable
from mmreward.data.synthetic.scenes import Scene, degrade, light_background, render
from mmreward.data.synthetic.t2i_grammar import (
    ALIGNMENT_CORRUPTIONS,
    DEFAULT_GRAMMAR,
    Grammar,
    ObjectGroup,
    PromptSpec,
    applicable_corruptions,
    corrupt,
    faithful_layout,
    sample_prompt,
    to_scene,
)
from mmreward.data.synthetic.writing import SPLIT_STREAMS, split_sizes, write_once

__all__ = [
    "ALIGNMENT_CORRUPTIONS",
    "ALIGNMENT_SCORE",
    "Candidate",
    "Grammar",
    "ObjectGroup",
    "PromptSpec",
    "T2IWorld",
    "applicable_corruptions",
    "corrupt",
    "make_candidates",
    "sample_prompt",
]

ALIGNMENT_SCORE: dict[str, float] = {
    "missing": 0.2,
    "color": 0.4,
    "shape": 0.4,
    "count": 0.5,
    "relation": 0.5,
    "size": 0.6,
}
"""The alignment rating of a candidate with each corruption (1 is faithful): how wrong it is."""

QUALITY_CRITIQUE = {
    "blur": "The image is blurred.",
    "noise": "The image is noisy.",
    "jpeg": "The image has compression artefacts.",
}


@dataclass
class Candidate:
    """One rendered answer to a prompt, with how it fails (if it does).

    Attributes:
        image: The render.
        kind: ``"none"`` for the faithful render, else the corruption's name.
        critique: A sentence that says what is wrong (or that nothing is).
        alignment: How well it shows the prompt, in [0, 1].
        quality: How clean the image is, in [0, 1].
        scene: The scene that was rendered.
        severity: A quality corruption's severity in (0, 1], else None.
    """

    image: Image.Image
    kind: str
    critique: str
    alignment: float
    quality: float
    scene: Scene = field(repr=False)
    severity: float | None = None

    @property
    def score(self) -> float:
        """The overall rating: the mean of alignment and quality."""
        return (self.alignment + self.quality) / 2


# -- candidates -----------------------------------------------------------------------------------


def make_candidates(
    spec: PromptSpec,
    rng: np.random.Generator,
    image_size: int = 64,
    alignment: int = 3,
    quality: int = 1,
    grammar: Grammar = DEFAULT_GRAMMAR,
) -> list[Candidate]:
    """Render a faithful candidate, then ``alignment`` corrupted and ``quality`` degraded ones.

    Alignment corruptions are drawn without replacement from ``applicable_corruptions(spec)``
    (cycling when more are asked for); all share the faithful layout and background.

    Args:
        spec: The prompt.
        rng: The random stream (the same stream gives the same candidates).
        image_size: Side of the renders in pixels.
        alignment: How many alignment corruptions.
        quality: How many quality corruptions of the faithful render (blur, noise, jpeg in turn
            from a random start).
        grammar: The colours and shapes a swap may pick from.

    Returns:
        The faithful candidate first, then the alignment corruptions, then the quality ones.
    """
    background = light_background(rng)
    layout = faithful_layout(spec, rng)
    faithful = render(to_scene(layout, background), image_size)
    candidates = [
        Candidate(faithful, "none", "The image matches the prompt.", 1.0, 1.0, to_scene(layout, background))
    ]
    kinds = applicable_corruptions(spec)
    order: list[str] = []
    while len(order) < alignment:
        order += [kinds[i] for i in rng.permutation(len(kinds))]
    for kind in order[:alignment]:
        broken, critique = corrupt(spec, layout, kind, rng, grammar)
        scene = to_scene(broken, background)
        candidates.append(
            Candidate(render(scene, image_size), kind, critique, ALIGNMENT_SCORE[kind], 1.0, scene)
        )
    start = int(rng.integers(3))
    for j in range(quality):
        kind = ("blur", "noise", "jpeg")[(start + j) % 3]
        severity = float(rng.uniform(0.5, 1.0))
        image = degrade(faithful, kind, severity, rng)
        quality_score = round(1.0 - 0.7 * severity, 4)
        candidates.append(
            Candidate(image, kind, QUALITY_CRITIQUE[kind], 1.0, quality_score, candidates[0].scene, severity)
        )
    return candidates


# -- the world ------------------------------------------------------------------------------------


FORMAT_VERSION = 1


class T2IWorld(Configurable):
    """A synthetic text-to-image preference world, written as canonical JSONL with PNG images.

    ``write(root)`` makes ``root/{train,val,test}.jsonl`` (preference pairs) and
    ``root/{split}_ratings.jsonl`` (one rating per image), with images under ``root/images/<split>/``
    referenced relative to the files. Per prompt there is one faithful render and
    ``pairs_per_prompt`` alignment pairs (faithful vs a corruption: ``aspects`` alignment 1,
    quality 0.5), plus one quality pair (faithful vs a degraded copy: alignment 0.5, quality 1)
    when ``quality_pairs``. ``subset`` names the corruption.

    Learnability (measured on 2 CPU threads, a 3.4 M-parameter ViT CLIP from random init, 1500
    steps of 64 pairs): colour, size and missing-object pairs are learned within minutes, count and
    shape more slowly, and flipped relations stay at chance; a quick-start world therefore sets
    ``relation_fraction=0.0`` and ``quality_pairs=False``.

    Args:
        train_prompts: Prompts in the training split.
        val_prompts: Prompts in the validation split.
        test_prompts: Prompts in the test split.
        pairs_per_prompt: Alignment pairs per prompt (corruption kinds drawn without replacement).
        image_size: Side of the images in pixels.
        seed: Seeds all splits; split k of prompt i draws from ``default_rng([seed, k, i])``.
        quality_pairs: Add one blur/noise/jpeg pair per prompt.
        relation_fraction: Share of prompts that relate two objects (the rest give a count).
        size_fraction: Share of prompts that say sizes.
        max_count: The largest count a prompt asks for (1 to 4).
    """

    def __init__(
        self,
        train_prompts: int,
        val_prompts: int,
        test_prompts: int,
        pairs_per_prompt: int = 3,
        image_size: int = 64,
        seed: int = 0,
        quality_pairs: bool = True,
        relation_fraction: float = 0.5,
        size_fraction: float = 0.5,
        max_count: int = 4,
    ) -> None:
        if pairs_per_prompt < 1:
            raise ValueError(f"T2IWorld pairs_per_prompt must be >= 1; got {pairs_per_prompt}.")
        if not 1 <= max_count <= 4:
            raise ValueError(f"T2IWorld max_count must be between 1 and 4; got {max_count}.")
        if image_size < 16:
            raise ValueError(f"T2IWorld image_size must be at least 16 pixels; got {image_size}.")
        self.sizes = split_sizes("T2IWorld", train_prompts, val_prompts, test_prompts)
        self.pairs_per_prompt, self.image_size, self.seed = pairs_per_prompt, image_size, seed
        self.quality_pairs = quality_pairs
        self.grammar = Grammar(
            max_count=max_count, relation_fraction=relation_fraction, size_fraction=size_fraction
        )

    def write(self, root: str | Path) -> dict[str, Path]:
        """Write the world under ``root`` (or reuse it when ``root/world.json`` matches); see the class docstring.

        Returns:
            ``{"train": root/train.jsonl, "val": ..., "test": ...}``.
        """
        return write_once(root, self, FORMAT_VERSION, self._write_split)

    def prompt_candidates(self, split: str, index: int) -> tuple[PromptSpec, list[Candidate]]:
        """The prompt and candidates of record ``index`` of ``split``, as ``write`` makes them."""
        rng = np.random.default_rng([self.seed, SPLIT_STREAMS[split], index])
        spec = sample_prompt(rng, self.grammar)
        quality = 1 if self.quality_pairs else 0
        return spec, make_candidates(spec, rng, self.image_size, self.pairs_per_prompt, quality, self.grammar)

    def _write_split(self, root: Path, split: str, path: Path) -> None:
        image_dir = root / "images" / split
        if image_dir.exists():
            shutil.rmtree(image_dir)
        image_dir.mkdir(parents=True)
        pairs, ratings = [], []
        for i in range(self.sizes[split]):
            spec, candidates = self.prompt_candidates(split, i)
            names = []
            for j, cand in enumerate(candidates):
                name = f"images/{split}/{i:05d}_{j}.png"
                cand.image.save(root / name, format="PNG", compress_level=1)
                names.append(name)
                ratings.append(_rating_record(f"{split}-{i:05d}-{j}", spec.text, name, cand))
            seen: dict[str, int] = {}
            for j, cand in enumerate(candidates[1:], start=1):
                seen[cand.kind] = seen.get(cand.kind, 0) + 1
                suffix = "" if seen[cand.kind] == 1 else str(seen[cand.kind])
                aspects = (
                    {"alignment": 0.5, "quality": 1}
                    if cand.severity is not None
                    else {"alignment": 1, "quality": 0.5}
                )
                pairs.append(
                    {
                        "id": f"{split}-{i:05d}-{cand.kind}{suffix}",
                        "prompt": spec.text,
                        "chosen": {"image": names[0]},
                        "rejected": {"image": names[j]},
                        "subset": cand.kind,
                        "aspects": aspects,
                    }
                )
        _write_jsonl(path, pairs)
        _write_jsonl(root / f"{split}_ratings.jsonl", ratings)


def _rating_record(record_id: str, prompt: str, image: str, cand: Candidate) -> dict[str, Any]:
    return {
        "id": record_id,
        "prompt": prompt,
        "image": image,
        "scores": {"alignment": cand.alignment, "quality": cand.quality},
        "score": round(cand.score, 4),
        "corruption": cand.kind,
        "critique": cand.critique,
    }


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
