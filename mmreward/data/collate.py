"""Batches for training and evaluation. A pair goes through the model in one forward: the B
chosen samples and the B rejected samples are collated together (2B samples), so shared context
(the prompt, a source image, a scene) is encoded once for both sides."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mmreward.types import Preference, Process, Ranking, Rating, Sample


@dataclass
class PairBatch:
    """B preference pairs; ``inputs`` holds the chosen samples then the rejected ones."""

    inputs: dict[str, Any]
    label: torch.Tensor  # (B,) P(chosen preferred); 0.5 for a tie
    margin: torch.Tensor  # (B,) NaN where the record has none
    chosen_target: torch.Tensor  # (B,) rating of chosen, NaN where absent
    rejected_target: torch.Tensor  # (B,)
    aspect_labels: torch.Tensor | None  # (B, A) NaN where absent; None when the model has no aspects
    subsets: list[str]
    ids: list[str]


@dataclass
class RatingBatch:
    """B rated samples."""

    inputs: dict[str, Any]
    score: torch.Tensor  # (B,) NaN where absent
    aspect_scores: torch.Tensor | None  # (B, A) NaN where absent
    subsets: list[str]
    ids: list[str]


@dataclass
class RankingBatch:
    """B rankings of up to K candidates; ``inputs`` holds the real candidates flattened."""

    inputs: dict[str, Any]
    index: torch.Tensor  # (B, K) position of candidate (b, k) in the flat inputs; 0 where masked
    order: torch.Tensor  # (B, K) candidate indices best first
    mask: torch.Tensor  # (B, K) true for real positions
    subsets: list[str]
    ids: list[str]


@dataclass
class ProcessBatch:
    """B reasoning chains with a 0/1 label per step (process reward models)."""

    inputs: dict[str, Any]
    labels: torch.Tensor  # (B, S) 1 correct step, 0 wrong step, NaN past a chain's end
    subsets: list[str]
    ids: list[str]


def _nan(values: list[float | None]) -> torch.Tensor:
    return torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float32)


def _aspect_matrix(dicts: list[dict[str, float] | None], aspects: list[str]) -> torch.Tensor | None:
    if not aspects:
        return None
    rows = [[math.nan if not d or a not in d else float(d[a]) for a in aspects] for d in dicts]
    return torch.tensor(rows, dtype=torch.float32).reshape(len(dicts), len(aspects))


class Collator:
    """Collate records of one kind into a batch, with the model's own ``collate`` for the inputs.

    Args:
        collate_samples: The model's ``collate(samples) -> inputs``.
        aspects: The model's aspect names (order of ``HeadOutput.aspects``).
    """

    def __init__(
        self, collate_samples: Callable[[list[Sample]], dict[str, Any]], aspects: list[str] | None = None
    ) -> None:
        self.collate_samples = collate_samples
        self.aspects = list(aspects or [])

    def __call__(self, records: list[Any]) -> PairBatch | RatingBatch | RankingBatch | ProcessBatch:
        kinds = {type(r) for r in records}
        if len(kinds) != 1:
            names = ", ".join(sorted(k.__name__ for k in kinds))
            raise TypeError(f"A batch mixes record kinds ({names}); keep one kind per data file.")
        kind = kinds.pop()
        subsets = [r.subset or "all" for r in records]
        ids = [r.id or "" for r in records]
        if kind is Preference:
            return PairBatch(
                inputs=self.collate_samples([r.chosen for r in records] + [r.rejected for r in records]),
                label=torch.tensor([r.label for r in records], dtype=torch.float32),
                margin=_nan([r.margin for r in records]),
                chosen_target=_nan([r.chosen_score for r in records]),
                rejected_target=_nan([r.rejected_score for r in records]),
                aspect_labels=_aspect_matrix([r.aspects for r in records], self.aspects),
                subsets=subsets,
                ids=ids,
            )
        if kind is Rating:
            return RatingBatch(
                inputs=self.collate_samples([r.sample for r in records]),
                score=_nan([r.score for r in records]),
                aspect_scores=_aspect_matrix([r.scores for r in records], self.aspects),
                subsets=subsets,
                ids=ids,
            )
        if kind is Ranking:
            return self._rankings(records, subsets, ids)
        if kind is Process:
            labels = torch.full((len(records), max(len(r.labels) for r in records)), math.nan)
            for b, record in enumerate(records):
                labels[b, : len(record.labels)] = torch.tensor(record.labels, dtype=torch.float32)
            return ProcessBatch(self.collate_samples([r.sample for r in records]), labels, subsets, ids)
        raise TypeError(
            f"Cannot collate records of type {kind.__name__}; expected Preference, Rating, Ranking or Process."
        )

    def _rankings(self, records: list[Ranking], subsets: list[str], ids: list[str]) -> RankingBatch:
        k_max = max(len(r.candidates) for r in records)
        index = torch.zeros(len(records), k_max, dtype=torch.long)
        order = torch.zeros(len(records), k_max, dtype=torch.long)
        mask = torch.zeros(len(records), k_max, dtype=torch.bool)
        flat: list[Sample] = []
        for b, record in enumerate(records):
            k = len(record.candidates)
            index[b, :k] = torch.arange(len(flat), len(flat) + k)
            order[b, :k] = torch.tensor(record.order)
            mask[b, :k] = True
            flat.extend(record.candidates)
        return RankingBatch(self.collate_samples(flat), index, order, mask, subsets, ids)
