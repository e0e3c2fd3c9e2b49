"""``EchoWorld``: a text preference world a tiny language model can learn in a minute.

Each prompt asks the assistant to repeat one or two words (``"repeat the words red circle"``); the
chosen response repeats them, the rejected one gets a word wrong (``substitute``) or, for two
words, swaps their order (``order``). Telling the two apart needs what a text reward model needs:
reading the response against the prompt. Test prompts are new word combinations, so held-out
accuracy measures that skill rather than memorised pairs.

Records are canonical preference JSONL (``prompt``, ``chosen``, ``rejected`` as text, ``subset``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmreward.configurable import Configurable
from mmreward.data.records import write_jsonl
from mmreward.data.synthetic.writing import split_sizes

_WORD_TEXT = (
    "red green blue yellow purple orange black white pink brown circle square triangle star cat dog "
    "car tree house sky sun moon man woman big small top left right"
)
DEFAULT_WORDS = _WORD_TEXT.split()

SPLITS = {"train": 0, "val": 1, "test": 2}


class EchoWorld(Configurable):
    """Repeat-the-words preference pairs; see the module docstring.

    Args:
        train_pairs: Pairs in the training split.
        val_pairs: Pairs in the validation split.
        test_pairs: Pairs in the test split.
        words: The vocabulary words are drawn from.
        two_word_fraction: Share of prompts with two words (the rest have one).
        seed: Seeds all splits; split ``k`` draws from ``default_rng([seed, k])``.
    """

    def __init__(
        self,
        train_pairs: int,
        val_pairs: int,
        test_pairs: int,
        words: list[str] | None = None,
        two_word_fraction: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.sizes = split_sizes("EchoWorld", train_pairs, val_pairs, test_pairs)
        self.words = list(words or DEFAULT_WORDS)
        if len(set(self.words)) < 3:
            raise ValueError(f"EchoWorld needs at least 3 distinct words; got {self.words!r}.")
        self.two_word_fraction, self.seed = two_word_fraction, seed

    def record(self, rng: np.random.Generator, split: str, index: int) -> dict:
        """One preference record."""
        count = 2 if rng.random() < self.two_word_fraction else 1
        picked = [str(w) for w in rng.choice(self.words, size=count + 1, replace=False)]
        target, spare = picked[:count], picked[count]
        kind = "order" if count == 2 and rng.random() < 0.5 else "substitute"
        wrong = list(reversed(target)) if kind == "order" else list(target)
        if kind == "substitute":
            wrong[int(rng.integers(count))] = spare
        noun = "words" if count == 2 else "word"
        return {
            "id": f"{split}-{index:05d}",
            "prompt": f"repeat the {noun} {' '.join(target)}",
            "chosen": " ".join(target),
            "rejected": " ".join(wrong),
            "subset": kind,
        }

    def write(self, root: str | Path) -> dict[str, Path]:
        """Write ``root/{train,val,test}.jsonl``; returns their paths."""
        root = Path(root)
        paths = {}
        for split, stream in SPLITS.items():
            rng = np.random.default_rng([self.seed, stream])
            records = [self.record(rng, split, i) for i in range(self.sizes[split])]
            paths[split] = write_jsonl(root / f"{split}.jsonl", records)
        return paths
