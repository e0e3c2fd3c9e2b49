"""Score records of any kind with a ``Scorer`` and compute the matching metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmreward.data.records import Record
from mmreward.metrics import (
    correlations,
    first_error_f1,
    first_error_index,
    grouped_accuracy,
    pairwise_accuracy,
    ranking_pair_accuracy,
    step_auroc,
)
from mmreward.types import Candidate, Preference, Process, Ranking, Rating, Sample


def flatten(records: Sequence[Record]) -> tuple[list[Sample], list[slice]]:
    """All samples of the records, and for each record the slice of its samples."""
    samples: list[Sample] = []
    spans = []
    for record in records:
        start = len(samples)
        if isinstance(record, Preference):
            samples += [record.chosen, record.rejected]
        elif isinstance(record, (Rating, Candidate, Process)):
            samples.append(record.sample)
        elif isinstance(record, Ranking):
            samples += record.candidates
        else:
            samples.append(record)
        spans.append(slice(start, len(samples)))
    return samples, spans


def evaluate(scorer, records: Sequence[Record]) -> dict[str, Any]:
    """Metrics for ``records`` scored by ``scorer``: pair accuracy (overall, per subset, per
    aspect), rating correlations (overall and per aspect), ranking pair accuracy, and for process
    records step AUROC and ProcessBench's first-error F1 (steps below P = 0.5 count as errors)."""
    samples, spans = flatten(records)
    out = scorer.forward(samples)
    score = out.score.numpy()
    aspects = None if out.aspects is None else out.aspects.numpy()
    metrics: dict[str, Any] = {}
    pairs = [(r, s) for r, s in zip(records, spans) if isinstance(r, Preference)]
    if pairs:
        diff = np.array([score[s.start] - score[s.start + 1] for _, s in pairs])
        label = np.array([r.label for r, _ in pairs])
        metrics["pairs"] = {
            "n": len(pairs),
            "accuracy": pairwise_accuracy(diff, label),
            "by_subset": grouped_accuracy(diff, label, [r.subset or "all" for r, _ in pairs]),
        }
        if aspects is not None:
            by_aspect = {}
            for j, name in enumerate(scorer.aspects):
                labels = np.array([(r.aspects or {}).get(name, np.nan) for r, _ in pairs], dtype=float)
                a_diff = np.array([aspects[s.start, j] - aspects[s.start + 1, j] for _, s in pairs])
                by_aspect[name] = pairwise_accuracy(a_diff, labels)
            metrics["pairs"]["by_aspect"] = by_aspect
    ratings = [(r, s) for r, s in zip(records, spans) if isinstance(r, Rating)]
    if ratings:
        rated = {"n": len(ratings)}
        target = np.array([np.nan if r.score is None else r.score for r, _ in ratings], dtype=float)
        pred = np.array([score[s.start] for _, s in ratings])
        if not np.isnan(target).all():
            rated.update(correlations(pred, target))
        if aspects is not None:
            for j, name in enumerate(scorer.aspects):
                t = np.array([(r.scores or {}).get(name, np.nan) for r, _ in ratings], dtype=float)
                rated[f"by_aspect/{name}"] = correlations(
                    np.array([aspects[s.start, j] for _, s in ratings]), t
                )
        metrics["ratings"] = rated
    rankings = [(r, s) for r, s in zip(records, spans) if isinstance(r, Ranking)]
    if rankings:
        k = max(len(r.candidates) for r, _ in rankings)
        scores = np.zeros((len(rankings), k))
        order = np.zeros((len(rankings), k), dtype=int)
        mask = np.zeros((len(rankings), k), dtype=bool)
        for b, (r, s) in enumerate(rankings):
            n = len(r.candidates)
            scores[b, :n], order[b, :n], mask[b, :n] = score[s], r.order, True
        metrics["rankings"] = {
            "n": len(rankings),
            "pair_accuracy": ranking_pair_accuracy(scores, order, mask),
        }
    processes = [(r, s) for r, s in zip(records, spans) if isinstance(r, Process)]
    if processes:
        metrics["process"] = _process_metrics(processes, out.steps)
    return metrics


def _process_metrics(processes: list[tuple[Process, slice]], steps: Any) -> dict[str, Any]:
    if steps is None:
        raise TypeError(
            "Process records need a model with per-step scores (mmreward.prm.ProcessRewardModel)."
        )
    probs = [1 / (1 + np.exp(-steps[s.start, : len(r.labels)].numpy())) for r, s in processes]
    labels = [np.asarray(r.labels) for r, _ in processes]
    return {
        "n": len(processes),
        "step_auroc": step_auroc(np.concatenate(probs), np.concatenate(labels)),
        **first_error_f1([first_error_index(p) for p in probs], [first_error_index(y) for y in labels]),
    }
