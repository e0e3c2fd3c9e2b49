"""Rewards built from rewards: a transform or a calibration around any ``Reward``, and ``as_reward``.

``Transformed`` and ``Calibrated`` wrap any implementation of ``mmreward.protocols.Reward`` (a
``Scorer``, a judge, a user's class) and are rewards themselves, so they stack and plug into every
consumer. ``as_reward`` is the one place where a bare reward model (an ``nn.Module`` with
``collate`` and ``forward``) becomes a reward: it is put in a ``Scorer``.

Example:
    >>> reward = Calibrated(Transformed(judge, ZNormalize(mean=3.0, std=1.0)), Calibration(2.0))
    >>> [out] = reward.score_samples([Sample(prompt="a red cube", image="a.png")])
    >>> out.score, out.raw, out.provenance["transform"]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from mmreward.protocols import Reward, aspects_of, check_reward, score_outputs, scores_of, sigmas_of
from mmreward.scoring import Scorer
from mmreward.types import RewardOutput, Sample


def as_reward(reward: Reward | nn.Module, consumer: str = "this consumer", **scorer_args: Any) -> Reward:
    """A reward from a reward (returned as it is) or from a bare reward model (put in a ``Scorer``).

    Args:
        reward: A ``Reward`` implementation, or an ``nn.Module`` reward model.
        consumer: Named in the error when ``reward`` is neither.
        scorer_args: ``Scorer`` arguments (``device``, ``dtype``, ``batch_size``) for a bare model.
    """
    if isinstance(reward, nn.Module):
        return Scorer(reward, **scorer_args)
    return check_reward(reward, consumer)


class Transformed:
    """``reward`` with a reward transform (``mmreward.transforms``) applied to each batch.

    The transform sees the batch's scores, aspects and sigmas (as the ``Scorer`` gives them); the
    result's ``score`` is the transformed value, ``raw`` the inner reward's score, and the
    transform's components go to ``provenance["components"]``.

    Args:
        reward: Any reward.
        transform: A callable ``(score, aspects, sigma) -> result with .score and .components``.
    """

    def __init__(self, reward: Reward, transform: Callable[..., Any]) -> None:
        self.reward, self.transform = check_reward(reward, "Transformed"), transform

    def score_samples(self, samples: Sequence[Sample]) -> list[RewardOutput]:
        """The inner reward's outputs with the transformed score."""
        outputs = score_outputs(self.reward, samples)
        result = self.transform(scores_of(outputs), aspects_of(outputs), sigmas_of(outputs))
        components = dict(getattr(result, "components", None) or {})
        name = type(self.transform).__name__
        return [
            replace(
                out,
                score=float(result.score[i]),
                raw=out.raw if out.raw is not None else out.score,
                provenance={
                    **out.provenance,
                    "transform": name,
                    **({"components": {k: float(v[i]) for k, v in components.items()}} if components else {}),
                },
            )
            for i, out in enumerate(outputs)
        ]


class Calibrated:
    """``reward`` with its score mapped through a calibration (``mmreward.calibration.Calibration``).

    The calibrated value becomes ``score`` (and ``calibrated``); ``raw`` keeps the inner score.

    Args:
        reward: Any reward.
        calibration: A callable ``(N,) scores -> (N,) calibrated scores``.
    """

    def __init__(self, reward: Reward, calibration: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.reward, self.calibration = check_reward(reward, "Calibrated"), calibration

    def score_samples(self, samples: Sequence[Sample]) -> list[RewardOutput]:
        """The inner reward's outputs with the calibrated score."""
        outputs = score_outputs(self.reward, samples)
        calibrated = self.calibration(scores_of(outputs))
        name = type(self.calibration).__name__
        return [
            replace(
                out,
                score=float(calibrated[i]),
                calibrated=float(calibrated[i]),
                raw=out.raw if out.raw is not None else out.score,
                provenance={**out.provenance, "calibration": name},
            )
            for i, out in enumerate(outputs)
        ]
