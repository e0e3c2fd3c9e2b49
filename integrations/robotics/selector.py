"""Pick the best of K candidate actions with a reward, inside a robot's control loop.

``ActionSelector`` takes any reward (``mmreward.protocols.Reward``: a ``Scorer``, a judge, a
user's class) and scores the candidates of one or many environments in one call. With the
``ActionPreferenceModel`` each scene is encoded once and every candidate is a query against it, so
a decision costs one scene encoding plus K light queries. It times every decision, and it only
ever returns an action it scored: any non-finite score is an error, not a silent pick.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mmreward.guards import NonFiniteError
from mmreward.protocols import Reward, score_outputs
from mmreward.rewards import as_reward
from mmreward.types import Sample

MODEL_BATCH = 1024
"""Samples per forward when the selector is given a bare reward model (a whole decision, usually)."""


@dataclass
class Decision:
    """The outcome of one environment's selection.

    Attributes:
        index: Position of the chosen candidate in the list given.
        action: The chosen candidate itself.
        scores: (K,) the model's score of every candidate.
    """

    index: int
    action: Any
    scores: np.ndarray


@dataclass
class LatencyReport:
    """Wall-clock cost of the selector's calls so far, in milliseconds.

    Attributes:
        calls: Calls to ``select``/``select_batch``.
        decisions: Environments decided (one per scene).
        candidates: Candidates scored.
        collate_ms: Mean time per call to check the inputs and build the samples.
        forward_ms: Mean time per call in the reward's ``score_samples``.
        total_ms: Mean time per call, end to end.
        p95_ms: 95th percentile of the end-to-end time per call.
        decisions_per_s: Decisions per second of total time.
    """

    calls: int = 0
    decisions: int = 0
    candidates: int = 0
    collate_ms: float = 0.0
    forward_ms: float = 0.0
    total_ms: float = 0.0
    p95_ms: float = 0.0
    decisions_per_s: float = 0.0


@dataclass
class _Timings:
    collate: list[float] = field(default_factory=list)
    forward: list[float] = field(default_factory=list)
    decisions: int = 0
    candidates: int = 0


class ActionSelector:
    """Choose actions by reward: ``select(point_cloud, candidates) -> (best index, scores)``.

    Args:
        reward: Any reward over (point cloud, action) samples, or a bare reward model, which is
            put in a ``Scorer`` with ``device``, ``dtype`` and a batch of ``MODEL_BATCH``.
        device: Where a bare model runs; default CUDA when present, else CPU. A reward keeps its own.
        dtype: ``torch.bfloat16`` runs a bare model under autocast; None keeps float32.
        prompt: The task text given to the samples.
    """

    def __init__(
        self,
        reward: Reward | nn.Module,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        prompt: str = "flatten the cloth",
    ) -> None:
        self.reward = as_reward(
            reward, "ActionSelector", device=device, dtype=dtype or torch.float32, batch_size=MODEL_BATCH
        )
        self.prompt = prompt
        self._timings = _Timings()

    def select(self, point_cloud: Any, candidates: list[Any]) -> tuple[int, np.ndarray]:
        """Score the candidates for one scene; return the best one's index and all scores."""
        decision = self.select_batch([point_cloud], [candidates])[0]
        return decision.index, decision.scores

    def select_batch(self, point_clouds: list[Any], candidates: list[list[Any]]) -> list[Decision]:
        """One decision per environment, all scored in one forward.

        Args:
            point_clouds: One observation per environment (path, (N, 3)/(N, 6) array or tensor).
            candidates: One list of action dicts per environment.

        Raises:
            ValueError: Lengths differ, an environment has no candidates, an input is bad (the
                error names the environment and candidate), or a score is not finite.
        """
        if len(point_clouds) != len(candidates):
            raise ValueError(
                f"select_batch got {len(point_clouds)} point clouds but {len(candidates)} candidate lists; pass one list per cloud."
            )
        t0 = time.perf_counter()
        samples = []
        for env, (cloud, actions) in enumerate(zip(point_clouds, candidates)):
            if not actions:
                raise ValueError(
                    f"Environment {env} has no candidate actions; the sampler must propose at least one."
                )
            for k, action in enumerate(actions):
                meta = {"source": "ActionSelector", "id": f"env {env}", "field": f"candidates[{k}]"}
                samples.append(Sample(prompt=self.prompt, point_cloud=cloud, action=action, meta=meta))
        t1 = time.perf_counter()
        try:
            outputs = score_outputs(self.reward, samples)
        except NonFiniteError as err:  # a Scorer refuses NaN itself; say what it means here
            raise ValueError(f"The reward gave non-finite scores ({err}); no action is chosen.") from err
        scores = np.array([o.score for o in outputs], dtype=np.float64)
        self._timings.collate.append(t1 - t0)
        self._timings.forward.append(time.perf_counter() - t1)
        decisions, start = [], 0
        for env, actions in enumerate(candidates):
            own = scores[start : start + len(actions)]
            start += len(actions)
            if not np.isfinite(own).all():
                raise ValueError(
                    f"Environment {env}: the model gave non-finite scores to candidates "
                    f"{np.flatnonzero(~np.isfinite(own)).tolist()}; no action is chosen. Check the inputs and weights."
                )
            best = int(np.argmax(own))
            decisions.append(Decision(index=best, action=actions[best], scores=own))
        self._timings.decisions += len(candidates)
        self._timings.candidates += len(samples)
        return decisions

    def latency(self) -> LatencyReport:
        """Mean and tail cost of the calls so far."""
        t = self._timings
        if not t.collate:
            return LatencyReport()
        total = np.add(t.collate, t.forward)
        return LatencyReport(
            calls=len(total),
            decisions=t.decisions,
            candidates=t.candidates,
            collate_ms=1e3 * float(np.mean(t.collate)),
            forward_ms=1e3 * float(np.mean(t.forward)),
            total_ms=1e3 * float(total.mean()),
            p95_ms=1e3 * float(np.percentile(total, 95)),
            decisions_per_s=t.decisions / float(total.sum()),
        )

    def reset_latency(self) -> None:
        """Forget the timings recorded so far."""
        self._timings = _Timings()
