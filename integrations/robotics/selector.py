"""Pick the best of K candidate actions with a reward model, inside a robot's control loop.

``ActionSelector`` scores the candidates of one or many environments in a single forward: each
scene is encoded once and every candidate is a query against it (``ActionPreferenceModel``), so
a decision costs one scene encoding plus K light queries. It times every decision, and it only
ever returns an action it scored: any non-finite score is an error, not a silent pick.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mmreward.types import Sample


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
        collate_ms: Mean time per call to load and check inputs.
        forward_ms: Mean time per call in the model's forward.
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
        model: A reward model over (point cloud, action) samples, or a ``Scorer`` holding one.
        device: Where to run; default: the scorer's device, else CUDA when present, else CPU.
        dtype: ``torch.bfloat16`` runs under autocast; None keeps float32.
        prompt: The task text given to the samples.
    """

    def __init__(
        self,
        model: Any,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        prompt: str = "flatten the cloth",
    ) -> None:
        if hasattr(model, "model") and not isinstance(model, nn.Module):  # a Scorer
            device = device if device is not None else model.device
            dtype = dtype if dtype is not None else model.dtype
            model = model.model
        for method in ("collate", "forward"):
            if not callable(getattr(model, method, None)):
                raise TypeError(
                    f"ActionSelector needs a reward model with {method}(); got {type(model).__name__}."
                )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.dtype, self.prompt = dtype, prompt
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
        samples = []
        for env, (cloud, actions) in enumerate(zip(point_clouds, candidates)):
            if not actions:
                raise ValueError(
                    f"Environment {env} has no candidate actions; the sampler must propose at least one."
                )
            for k, action in enumerate(actions):
                meta = {"source": "ActionSelector", "id": f"env {env}", "field": f"candidates[{k}]"}
                samples.append(Sample(prompt=self.prompt, point_cloud=cloud, action=action, meta=meta))
        scores = self._score(samples)
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

    def _score(self, samples: list[Sample]) -> np.ndarray:
        t0 = time.perf_counter()
        inputs = self.model.collate(samples)
        inputs = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        t1 = time.perf_counter()
        autocast = (
            torch.autocast(self.device.type, dtype=self.dtype)
            if self.dtype not in (None, torch.float32)
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            scores = self.model(inputs).score.float().cpu().numpy()
        t2 = time.perf_counter()
        self._timings.collate.append(t1 - t0)
        self._timings.forward.append(t2 - t1)
        return scores

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
