"""The reward contract: one protocol for everything in mmreward that scores.

A *reward* is any object with one method::

    score_samples(samples: Sequence[Sample]) -> list[RewardOutput]

one ``RewardOutput`` per sample, in order: the score, and where the reward has them per-aspect
scores (``aspects``), an uncertainty (``sigma``), per-step scores (``steps``), text such as a
critique (``text``) and provenance (``provenance["model"]``, ``provenance["revision"]``).

``mmreward.Scorer`` implements it, as do every judge in ``judges`` (critique, pairwise through
round-robin comparisons, rubric, video, and ``ScaledJudge``) and the wrappers in
``mmreward.rewards`` (``Transformed``, ``Calibrated``). The loops that consume rewards take any
implementation: best-of-N and search (``integrations.search``), the diffusers ``RewardFn``, the robot
``ActionSelector``, the reward server and ``mmreward score --reward``. A user's class needs no base
class and no registration:

```python
class Brevity:
    def score_samples(self, samples):
        return [RewardOutput(score=-len(s.response or "")) for s in samples]
```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from mmreward.types import RewardOutput, Sample


@runtime_checkable
class Reward(Protocol):
    """Scores a batch of samples: ``score_samples(samples) -> list[RewardOutput]``, one per sample."""

    def score_samples(self, samples: Sequence[Sample]) -> list[RewardOutput]: ...


def check_reward(reward: Any, consumer: str) -> Reward:
    """``reward`` itself, or a ``TypeError`` naming what ``consumer`` needs.

    Args:
        reward: The object a consumer was given.
        consumer: The consumer's name, for the message (e.g. ``"ActionSelector"``).
    """
    if not isinstance(reward, Reward):
        raise TypeError(
            f"{consumer} needs a reward: an object with score_samples(samples) -> list[RewardOutput]; "
            f"got {type(reward).__name__}. Use mmreward.load(path), a judge, or implement that one method."
        )
    return reward


def score_outputs(reward: Reward, samples: Sequence[Sample]) -> list[RewardOutput]:
    """``reward.score_samples(samples)``, checked: one ``RewardOutput`` per sample.

    Raises:
        ValueError: The reward returned another number of outputs than it was given samples.
    """
    outputs = list(reward.score_samples(samples))
    if len(outputs) != len(samples):
        raise ValueError(
            f"{type(reward).__name__}.score_samples returned {len(outputs)} outputs for {len(samples)} "
            "samples; a reward must return one RewardOutput per sample, in order."
        )
    return outputs


def scores_of(outputs: Sequence[RewardOutput]) -> torch.Tensor:
    """(N,) float32 scores of ``outputs`` (NaN where an output has no score)."""
    return torch.tensor([float("nan") if o.score is None else float(o.score) for o in outputs])


def sigmas_of(outputs: Sequence[RewardOutput]) -> torch.Tensor | None:
    """(N,) standard deviations, or None unless every output has one."""
    if not outputs or any(o.sigma is None for o in outputs):
        return None
    return torch.tensor([float(o.sigma) for o in outputs])


def aspects_of(outputs: Sequence[RewardOutput]) -> dict[str, torch.Tensor] | None:
    """``{aspect: (N,) scores}`` for the aspects every output has, or None when there are none."""
    if not outputs or any(not o.aspects for o in outputs):
        return None
    names = [name for name in outputs[0].aspects if all(name in o.aspects for o in outputs)]
    return {name: torch.tensor([float(o.aspects[name]) for o in outputs]) for name in names} or None
