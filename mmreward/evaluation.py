"""Score records of any kind with a ``Scorer`` and compute the matching metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmreward.data.records import Record
from mmreward.metrics import (
    all_pairs_accuracy,
    best_tie_accuracy,
    calibration,
    correlations,
    first_error_f1,
    first_error_index,
    grouped_accuracy,
    pairwise_accuracy,
    ranking_pair_accuracy,
    rating_pair_accuracy,
    step_auroc,
    tie_aware_accuracy,
)
from mmreward.protocols import score_outputs
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


def evaluate(scorer, records: Sequence[Record], points: dict[str, Any] | None = None) -> dict[str, Any]:
    """Metrics for ``records`` scored by ``scorer`` (a ``Scorer``, a judge, any ``Reward``).

    Pairs: accuracy without ties (tie labels left out) and with ties (a zero score gap predicts a
    tie; and at the best tie threshold), overall, per subset and per aspect; Acc+ (every pair of a
    query right) where a query has several pairs; ECE of sigmoid(score gap) with its reliability
    table. Ratings: Spearman, Kendall, Pearson (overall, per subset, per aspect), AUROC for 0/1
    labels. Rankings: pair accuracy. Process records: step AUROC and ProcessBench's first-error F1
    (steps below P = 0.5 count as errors).

    Args:
        points: If given, filled with the per-record arrays the report plots (``pair_diff``,
            ``pair_label``, ``rating_pred``, ``rating_target``).
    """
    direct = callable(getattr(scorer, "compare", None))  # a pairwise judge sees each pair as a pair
    scored = [r for r in records if not (direct and isinstance(r, Preference))]
    samples, spans = flatten(scored)
    no_output = (np.zeros(0), None, [], None)
    score, aspects, aspect_names, steps = _outputs(scorer, samples) if samples else no_output
    points = {} if points is None else points
    metrics: dict[str, Any] = {}
    pairs = [(r, s) for r, s in zip(scored, spans) if isinstance(r, Preference)]
    judged = [r for r in records if isinstance(r, Preference)] if direct else []
    if judged:
        diff = _judged_gaps(scorer, judged)
        label = np.array([r.label for r in judged], dtype=float)
        points.update(pair_diff=diff, pair_label=label)
        metrics["pairs"] = _pair_metrics(diff, label, judged)
    if pairs:
        diff = np.array([score[s.start] - score[s.start + 1] for _, s in pairs])
        label = np.array([r.label for r, _ in pairs], dtype=float)
        points.update(pair_diff=diff, pair_label=label)
        metrics["pairs"] = _pair_metrics(diff, label, [r for r, _ in pairs])
        if aspects is not None:
            by_aspect, with_ties = {}, {}
            for j, name in enumerate(aspect_names):
                labels = np.array([(r.aspects or {}).get(name, np.nan) for r, _ in pairs], dtype=float)
                a_diff = np.array([aspects[s.start, j] - aspects[s.start + 1, j] for _, s in pairs])
                by_aspect[name] = pairwise_accuracy(a_diff, labels)
                with_ties[name] = tie_aware_accuracy(a_diff, labels)
            metrics["pairs"]["by_aspect"] = by_aspect
            metrics["pairs"]["by_aspect_with_ties"] = with_ties
    ratings = [(r, s) for r, s in zip(scored, spans) if isinstance(r, Rating)]
    if ratings:
        rated = {"n": len(ratings)}
        target = np.array([np.nan if r.score is None else r.score for r, _ in ratings], dtype=float)
        pred = np.array([score[s.start] for _, s in ratings])
        points.update(rating_pred=pred, rating_target=target)
        if not np.isnan(target).all():
            rated.update(correlations(pred, target))
            rated["pair_accuracy"] = rating_pair_accuracy(pred, target)
            if set(np.unique(target[~np.isnan(target)])) <= {0.0, 1.0}:
                rated["auroc"] = step_auroc(pred[~np.isnan(target)], target[~np.isnan(target)])
            subsets = sorted({r.subset for r, _ in ratings if r.subset})
            if len(subsets) > 1:
                rated["by_subset"] = {
                    g: correlations(pred[m], target[m])
                    for g in subsets
                    for m in [np.array([r.subset == g for r, _ in ratings])]
                }
        if aspects is not None:
            for j, name in enumerate(aspect_names):
                t = np.array([(r.scores or {}).get(name, np.nan) for r, _ in ratings], dtype=float)
                rated[f"by_aspect/{name}"] = correlations(
                    np.array([aspects[s.start, j] for _, s in ratings]), t
                )
        metrics["ratings"] = rated
    rankings = [(r, s) for r, s in zip(scored, spans) if isinstance(r, Ranking)]
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
    processes = [(r, s) for r, s in zip(scored, spans) if isinstance(r, Process)]
    if processes:
        metrics["process"] = _process_metrics(processes, steps)
    return metrics


def _outputs(scorer, samples: list[Sample]) -> tuple[np.ndarray, np.ndarray | None, list[str], Any]:
    """(N,) scores, (N, A) aspect scores or None, the aspect names, and per-step logits or None.

    A ``Scorer`` gives its raw batched outputs; any other reward (a judge, a user's class) its
    ``RewardOutput`` list, whose aspects are the names every output has.
    """
    if hasattr(scorer, "forward") and hasattr(scorer, "aspects"):
        out = scorer.forward(samples)
        aspects = None if out.aspects is None else out.aspects.numpy()
        return out.score.numpy(), aspects, list(scorer.aspects), out.steps
    outputs = score_outputs(scorer, samples)
    score = np.array([np.nan if o.score is None else float(o.score) for o in outputs])
    names = sorted(set.intersection(*(set(o.aspects or {}) for o in outputs))) if outputs else []
    aspects = np.array([[o.aspects[n] for n in names] for o in outputs], dtype=float) if names else None
    return score, aspects, names, None


def _judged_gaps(judge, pairs: list[Preference]) -> np.ndarray:
    """(N,) logit of a pairwise judge's P(chosen better) per pair (from ``judge.compare``, which
    swaps positions where the judge does), so that sigmoid(gap) is the judge's own probability;
    NaN where the judge gave no verdict."""
    verdicts = judge.compare([(r.chosen, r.rejected) for r in pairs])
    p = np.array([np.nan if v.p_first is None else float(v.p_first) for v in verdicts])
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def _pair_metrics(diff: np.ndarray, label: np.ndarray, pairs: list[Preference]) -> dict[str, Any]:
    subsets = [r.subset or "all" for r in pairs]
    decided = ~np.isnan(label) & (label != 0.5)
    out: dict[str, Any] = {
        "n": len(pairs),
        "n_unscored": int(np.isnan(diff).sum()),  # no score (a judge's failed parse): counted wrong
        "n_ties": int(np.sum(label == 0.5)),
        "accuracy": pairwise_accuracy(diff, label),
        "by_subset": grouped_accuracy(diff, label, subsets),
    }
    if len(out["by_subset"]) > 1:  # VL-RewardBench's macro average: each subset counts once
        out["macro_accuracy"] = float(np.nanmean(list(out["by_subset"].values())))
    if out["n_ties"]:
        out["accuracy_with_ties"] = tie_aware_accuracy(diff, label)
        out["accuracy_with_ties_best"] = best_tie_accuracy(diff, label)
        out["by_subset_with_ties"] = {
            g: tie_aware_accuracy(diff[m], label[m])
            for g in sorted(set(subsets))
            for m in [np.array([x == g for x in subsets])]
        }
    queries = [_query_key(r) for r in pairs]
    if len(set(queries)) < len(queries):
        out["acc_plus"] = all_pairs_accuracy(diff, label, queries)
        out["n_queries"] = len(set(queries))
    prob = 1 / (1 + np.exp(-np.clip(diff[decided], -50, 50)))
    out["calibration"] = calibration(prob, (label[decided] > 0.5).astype(float))
    return out


def _query_key(pair: Preference) -> str:
    """What a pair's two candidates share (prompt and input media): pairs with the same key answer
    one query, which Acc+ and RewardBench 2's best-of-4 score as a whole."""
    c = pair.chosen
    return repr((c.prompt, c.image if c.source_image is None else c.source_image, c.video, c.images))


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
