"""Controls: the shuffles that take an input away from a model keep everything else."""

from __future__ import annotations

import numpy as np

from mmreward.controls import derangement, prompt_shuffled
from mmreward.types import Preference, Sample


def test_derangement_never_hands_back_the_same_key():
    keys = ["a", "a", "a", "b", "b", "c", "d", "e", "e", "f"]
    for seed in range(20):
        order = derangement(keys, seed)
        assert sorted(order) == list(range(len(keys)))
        assert all(keys[j] != keys[i] for i, j in enumerate(order)), (seed, order)


def test_prompt_shuffled_moves_only_the_prompt():
    pairs = [
        Preference(
            Sample(prompt=f"p{i}", image=f"c{i}.png"), Sample(prompt=f"p{i}", image=f"r{i}.png"), subset="s"
        )
        for i in range(12)
    ]
    shuffled = prompt_shuffled(pairs, seed=3)
    assert [s.chosen.image for s in shuffled] == [p.chosen.image for p in pairs]
    assert [s.rejected.image for s in shuffled] == [p.rejected.image for p in pairs]
    assert all(s.chosen.prompt == s.rejected.prompt != p.chosen.prompt for s, p in zip(shuffled, pairs))
    assert sorted(s.chosen.prompt for s in shuffled) == sorted(p.chosen.prompt for p in pairs)
    assert np.all([s.subset == "s" for s in shuffled])
