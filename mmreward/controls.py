"""Controls for held-out figures: the inputs a model's claim says it reads, taken away.

A held-out figure means what it claims only beside a control that lacks the claimed ability:
the same model with the text shuffled across examples (does it read the prompt?), frames
shuffled within a clip (does it read the order?), a blind baseline on image statistics. The demos
report each control next to the figure it checks, on the same held-out data, in the same run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence

import numpy as np

from mmreward.types import Preference


def derangement(keys: Sequence[Hashable], seed: int = 0, tries: int = 100) -> np.ndarray:
    """A random permutation ``order`` of ``range(len(keys))`` with ``keys[order[i]] != keys[i]``.

    Used to hand each example another example's text: where two examples share a text, a plain
    shuffle could give one its own text back. Swaps re-draw the clashes; a key that holds more than
    half of ``keys`` cannot always move, and those few may keep their own.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(keys))
    for _ in range(tries):
        clash = [i for i in range(len(keys)) if keys[order[i]] == keys[i]]
        if not clash:
            break
        for i in clash:
            j = int(rng.integers(len(keys)))
            order[i], order[j] = order[j], order[i]
    return order


def prompt_shuffled(pairs: Sequence[Preference], seed: int = 0) -> list[Preference]:
    """The pairs, each with both sides under another pair's prompt (never its own text).

    A model that ranks by the prompt falls to chance on them; one that ranks by cues in the media
    alone keeps its accuracy. Everything but the prompt is kept.
    """
    texts = [p.chosen.prompt for p in pairs]
    return [
        dataclasses.replace(
            p,
            chosen=dataclasses.replace(p.chosen, prompt=texts[j]),
            rejected=dataclasses.replace(p.rejected, prompt=texts[j]),
        )
        for p, j in zip(pairs, derangement(texts, seed))
    ]
