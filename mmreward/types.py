"""The contracts every package shares: samples, labelled records, results, and the model protocol.

A *reward model* in mmreward is any ``torch.nn.Module`` with two methods:

- ``collate(samples: list[Sample]) -> dict``: raw samples to model inputs (CPU tensors; runs in
  data-loader workers). It is the place to de-duplicate shared context: samples that share a
  prompt, a source image or a scene get it encoded once (see ``ClipBackbone.collate``).
- ``forward(inputs: dict) -> HeadOutput``: one score per sample, plus optional per-aspect scores
  and a log-sigma.

``mmreward.models.RewardModel`` builds one from a *backbone* (``collate`` + ``forward ->
(N, feature_dim)`` features, attribute ``feature_dim``) and a head; other models (the point-cloud
action model, for one) implement the protocol directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

import torch

Media = Any
"""A path (str or Path), a PIL image, a numpy array or a tensor."""


@dataclass
class Sample:
    """One candidate to score: a prompt and what answers it.

    Attributes:
        prompt: The instruction or caption the candidate answers.
        response: A text response (text and VLM reward models).
        image: An image (path, PIL image, array or tensor).
        images: Several images, for multi-image inputs.
        video: A video (path or frames).
        source_image: The image before an edit (edit scorers).
        point_cloud: An (N, 3) or (N, 6) observation (path or array).
        action: Action parameters (robot action preference models).
        steps: Reasoning steps (process reward models).
        meta: Where the sample came from (``source``: file, ``line``, ``id``, ``field``);
            used to name the record in error messages.
    """

    prompt: str = ""
    response: str | None = None
    image: Media | None = None
    images: list[Media] | None = None
    video: Media | None = None
    source_image: Media | None = None
    point_cloud: Media | None = None
    action: Any | None = None
    steps: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def where(self, field_name: str | None = None) -> str:
        """Say where this sample came from, for error messages: ``file:line (id) field``."""
        parts = [str(self.meta.get("source", "<in memory>"))]
        if "line" in self.meta:
            parts[0] += f":{self.meta['line']}"
        if self.meta.get("id") is not None:
            parts.append(f"(id {self.meta['id']})")
        prefix = self.meta.get("field")
        name = ".".join(p for p in (prefix, field_name) if p)
        if name:
            parts.append(f"field {name!r}")
        return " ".join(parts)


MEDIA_FIELDS = tuple(f.name for f in fields(Sample) if f.name not in ("prompt", "meta"))


@dataclass
class Preference:
    """A pair: ``chosen`` is preferred to ``rejected`` with probability ``label``.

    Attributes:
        chosen: The preferred candidate.
        rejected: The other candidate (same prompt).
        label: P(chosen is preferred): 1.0 for a hard label, 0.5 for a tie.
        margin: How much better chosen is, when the data says (Llama 2's margin).
        aspects: Per-aspect labels, ``{aspect: P(chosen better on it)}``.
        chosen_score: A rating of chosen, when the data has one (BT + regression).
        rejected_score: A rating of rejected, likewise.
        subset: A group name for per-subset metrics.
        id: The record's id.
    """

    chosen: Sample
    rejected: Sample
    label: float = 1.0
    margin: float | None = None
    aspects: dict[str, float] | None = None
    chosen_score: float | None = None
    rejected_score: float | None = None
    subset: str | None = None
    id: str | None = None


@dataclass
class Rating:
    """One candidate with an absolute score, and/or per-aspect scores."""

    sample: Sample
    score: float | None = None
    scores: dict[str, float] | None = None
    subset: str | None = None
    id: str | None = None


@dataclass
class Ranking:
    """K candidates for one prompt, ordered: ``order[0]`` indexes the best candidate."""

    candidates: list[Sample]
    order: list[int]
    subset: str | None = None
    id: str | None = None


@dataclass
class Candidate:
    """One unlabelled candidate: a prompt and what a generation loop produced for it, to be scored.

    In a data file it is a record with a ``prompt`` and media fields but no labels (no
    ``chosen``/``rejected``, ``score``/``scores`` or ``candidates``/``ranking``). Only scoring reads
    it (``mmreward score``, ``Scorer.score_records``); training and evaluation need labels.
    """

    sample: Sample
    subset: str | None = None
    id: str | None = None


@dataclass
class Process:
    """A reasoning chain with a label per step (the canonical ``process`` record).

    Attributes:
        sample: The prompt (and media) with ``steps`` set: the chain, one string a step.
        labels: One label a step: 1 for a correct step, 0 for a wrong one.
        subset: A group name for per-subset metrics.
        id: The record's id.
    """

    sample: Sample
    labels: list[int]
    subset: str | None = None
    id: str | None = None


@dataclass
class HeadOutput:
    """What a reward model's forward returns for N samples.

    Attributes:
        score: (N,) overall scores.
        aspects: (N, A) per-aspect scores, in the model's ``aspects`` order.
        log_sigma: (N,) log standard deviation of the score, for uncertainty heads.
        steps: (N, S) per-step logits of process reward models (P(step correct) = sigmoid),
            NaN past each sample's last step.
    """

    score: torch.Tensor
    aspects: torch.Tensor | None = None
    log_sigma: torch.Tensor | None = None
    steps: torch.Tensor | None = None

    def __getitem__(self, index: slice | torch.Tensor) -> HeadOutput:
        return HeadOutput(
            score=self.score[index],
            aspects=None if self.aspects is None else self.aspects[index],
            log_sigma=None if self.log_sigma is None else self.log_sigma[index],
            steps=None if self.steps is None else self.steps[index],
        )


@dataclass
class RewardOutput:
    """A scored sample, as every reward returns it (``mmreward.protocols.Reward``).

    Attributes:
        score: The model's score after the scorer's transforms (the raw score when none).
        raw: The model's raw score.
        aspects: Per-aspect scores.
        steps: Per-step scores (process reward models).
        sigma: The score's standard deviation, when the head predicts one.
        calibrated: P-scale score when the model carries a calibration fit.
        text: Text that came with the score, such as a judge's critique.
        provenance: Model name and revision, preprocessing, transforms applied.
    """

    score: float
    raw: float | None = None
    aspects: dict[str, float] | None = None
    steps: list[float] | None = None
    sigma: float | None = None
    calibrated: float | None = None
    text: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backbone(Protocol):
    """Turns samples into one feature vector each; see the module docstring."""

    feature_dim: int

    def collate(self, samples: list[Sample]) -> dict[str, Any]: ...

    def __call__(self, inputs: dict[str, Any]) -> torch.Tensor: ...
