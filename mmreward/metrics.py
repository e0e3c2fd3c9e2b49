"""Evaluation metrics: pairwise accuracy (overall, per group, per aspect), rank correlations, and for
process reward models step AUROC, ProcessBench's first-error F1 and best-of-N accuracy against N."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from math import comb

import numpy as np


def pairwise_accuracy(diff: np.ndarray, label: np.ndarray) -> float:
    """Share of pairs whose score difference agrees with the label; ties (label 0.5) are left out.

    Args:
        diff: (N,) ``score_chosen - score_rejected``.
        label: (N,) P(chosen preferred).
    Returns:
        The accuracy, or NaN when no pair has a decided label. A zero difference counts as half, a
        NaN difference (no score) as wrong.
    """
    diff, label = np.asarray(diff, dtype=float), np.asarray(label, dtype=float)
    decided = ~np.isnan(label) & (label != 0.5)
    if not decided.any():
        return float("nan")
    d, y = diff[decided], label[decided]
    agree = np.where(d == 0, 0.5, (d > 0) == (y > 0.5))
    return float(np.mean(np.where(np.isnan(d), 0.0, agree)))  # no score (NaN) is wrong


def grouped_accuracy(diff: np.ndarray, label: np.ndarray, groups: Sequence[str]) -> dict[str, float]:
    """``pairwise_accuracy`` for each group name."""
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    diff, label = np.asarray(diff), np.asarray(label)
    return {g: pairwise_accuracy(diff[idx], label[idx]) for g, idx in sorted(members.items())}


def correlations(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Spearman, Kendall (tau-b) and Pearson correlation of predictions with targets (NaNs dropped)."""
    from scipy import stats

    pred, target = np.asarray(pred, dtype=float), np.asarray(target, dtype=float)
    keep = ~(np.isnan(pred) | np.isnan(target))
    pred, target = pred[keep], target[keep]
    if len(pred) < 3 or np.ptp(pred) == 0 or np.ptp(target) == 0:
        return {
            "spearman": float("nan"),
            "kendall": float("nan"),
            "pearson": float("nan"),
            "n": int(len(pred)),
        }
    return {
        "spearman": float(stats.spearmanr(pred, target).statistic),
        "kendall": float(stats.kendalltau(pred, target).statistic),
        "pearson": float(stats.pearsonr(pred, target).statistic),
        "n": int(len(pred)),
    }


def ranking_pair_accuracy(scores: np.ndarray, order: np.ndarray, mask: np.ndarray) -> float:
    """Share of ordered candidate pairs within each ranking that the scores put in the right order.

    Args:
        scores: (B, K) candidate scores.
        order: (B, K) candidate indices, best first.
        mask: (B, K) true for real positions.
    """
    correct, total = 0.0, 0
    for s, o, m in zip(scores, order, mask):
        ranked = s[o[m]]
        diff = ranked[:, None] - ranked[None, :]  # (k, k): better row minus worse column above the diagonal
        upper = np.triu(np.ones_like(diff, dtype=bool), k=1)
        correct += float(np.sum(np.where(diff[upper] == 0, 0.5, diff[upper] > 0)))
        total += int(upper.sum())
    return correct / total if total else float("nan")


def step_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of step scores against 0/1 step labels (1 = correct step).

    The Mann-Whitney statistic: the chance that a random correct step scores above a random wrong
    one, ties counted as half. NaN when one class is absent.
    """
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=float)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    above = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(above / (len(pos) * len(neg)))


def first_error_index(step_scores: Sequence[float], threshold: float = 0.5) -> int:
    """Index of the first step scored below ``threshold`` (a predicted error), or -1 when none is.

    With 0/1 labels as the scores it gives a chain's true first error (ProcessBench's ``label``).
    """
    for i, value in enumerate(step_scores):
        if float(value) < threshold:
            return i
    return -1


def first_error_f1(predicted: Sequence[int], true: Sequence[int]) -> dict[str, float]:
    """ProcessBench's metric (Zheng et al., 2024): the harmonic mean of the accuracy on erroneous
    chains (the first error found at the right step) and on correct chains (no error found).

    Args:
        predicted: (N,) predicted first-error index per chain, -1 for "no error".
        true: (N,) the true first-error index, -1 for a correct chain.

    Returns:
        ``error_accuracy``, ``correct_accuracy`` and ``f1`` (NaN where a kind of chain is absent;
        0 when either accuracy is 0).
    """
    predicted, true = np.asarray(predicted, dtype=int), np.asarray(true, dtype=int)
    wrong = true >= 0
    err = float(np.mean(predicted[wrong] == true[wrong])) if wrong.any() else float("nan")
    ok = float(np.mean(predicted[~wrong] == -1)) if (~wrong).any() else float("nan")
    f1 = 0.0 if err == 0 or ok == 0 else 2 * err * ok / (err + ok)
    return {"error_accuracy": err, "correct_accuracy": ok, "f1": float(f1)}


def best_of_n_accuracy(scores: np.ndarray, correct: np.ndarray, n: int) -> float:
    """Expected accuracy of picking the best-scored of ``n`` candidates drawn at random (without
    replacement) from each problem's pool, averaged over problems; exact, no sampling.

    Candidate at rank j (0 = best, of M) is the pick iff it is drawn and no better one is:
    P = C(M-1-j, n-1) / C(M, n). Tied candidates share their group's probability (a random tie-break).

    Args:
        scores: (P, M) candidate scores per problem.
        correct: (P, M) 1 where the candidate's final answer is right.
        n: Candidates drawn, 1 <= n <= M.
    """
    scores, correct = np.asarray(scores, dtype=float), np.asarray(correct, dtype=float)
    m = scores.shape[1]
    if not 1 <= n <= m:
        raise ValueError(f"n must be in 1..{m} (the pool size); got {n}.")
    pick = np.array([comb(m - 1 - j, n - 1) / comb(m, n) for j in range(m)])  # by rank, best first
    total = 0.0
    for row_scores, row_correct in zip(scores, correct):
        order = np.argsort(-row_scores, kind="stable")
        ranked_scores, ranked_correct = row_scores[order], row_correct[order]
        for value in np.unique(ranked_scores):
            tied = ranked_scores == value
            total += pick[tied].sum() * ranked_correct[tied].mean()
    return float(total / len(scores))


def tie_aware_accuracy(diff: np.ndarray, label: np.ndarray, threshold: float = 0.0) -> float:
    """Accuracy *with* ties, as GenAI-Bench and VideoGen-RewardBench count it: a pair whose
    ``|diff| <= threshold`` is predicted a tie, and a prediction is right when it equals the label
    (chosen better, rejected better, or a tie at label 0.5).

    Args:
        diff: (N,) ``score_chosen - score_rejected``.
        label: (N,) P(chosen preferred): 1, 0 or 0.5.
        threshold: The score gap at or below which the model calls a tie.
    Returns:
        The accuracy over every pair with a label, NaN when none has one.
    """
    diff, label = np.asarray(diff, dtype=float), np.asarray(label, dtype=float)
    keep = ~np.isnan(label)
    if not keep.any():
        return float("nan")
    diff, label = diff[keep], label[keep]
    predicted = np.where(np.abs(diff) <= threshold, 0.5, (diff > 0).astype(float))
    truth = np.where(label == 0.5, 0.5, (label > 0.5).astype(float))
    return float(np.mean((predicted == truth) & ~np.isnan(diff)))  # no score (NaN) is wrong


def best_tie_accuracy(diff: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """``tie_aware_accuracy`` at the tie threshold that maximises it, searched over the pairs' own
    ``|diff|`` values (VideoAlign's "accuracy w/ ties", Liu et al., 2025). Returns ``accuracy`` and
    ``threshold``; reported beside the accuracy at threshold 0, since the search sees the labels."""
    candidates = np.unique(np.concatenate([[0.0], np.abs(np.asarray(diff, dtype=float))]))
    candidates = candidates[~np.isnan(candidates)]
    accuracies = [tie_aware_accuracy(diff, label, t) for t in candidates]
    if np.all(np.isnan(accuracies)):
        return {"accuracy": float("nan"), "threshold": float("nan")}
    best = int(np.nanargmax(accuracies))
    return {"accuracy": float(accuracies[best]), "threshold": float(candidates[best])}


def all_pairs_accuracy(diff: np.ndarray, label: np.ndarray, groups: Sequence[str]) -> float:
    """Share of groups (queries) whose every decided pair is ordered right: MM-RLHF-RewardBench's
    Acc+ (Zhang et al., 2025) and RewardBench 2's best-of-4 (chosen above all three rejected) when
    each group holds one prompt's pairs. Ties (label 0.5) are left out; a zero difference is wrong."""
    diff, label = np.asarray(diff, dtype=float), np.asarray(label, dtype=float)
    ok: dict[str, bool] = {}
    for d, y, g in zip(diff, label, groups):
        if np.isnan(y) or y == 0.5:
            continue
        ok[g] = ok.get(g, True) and bool(d != 0 and not np.isnan(d) and (d > 0) == (y > 0.5))
    return float(np.mean(list(ok.values()))) if ok else float("nan")


def calibration(prob: np.ndarray, outcome: np.ndarray, bins: int = 10) -> dict[str, object]:
    """Expected calibration error of probabilities against 0/1 outcomes, and the reliability table.

    Binary ECE (Guo et al., 2017, in its two-sided form): the predictions are put into ``bins``
    equal-width bins of P(outcome = 1), and ECE is the count-weighted mean of
    ``|mean outcome - mean P|`` over the bins.

    Args:
        prob: (N,) predicted P(outcome = 1), e.g. sigmoid of a pair's score difference.
        outcome: (N,) 0/1 outcomes (rows with NaN are dropped).
        bins: Number of equal-width bins on [0, 1].
    Returns:
        ``ece``, ``n`` and ``bins``: a list of ``{lo, hi, n, mean_prob, frequency}`` (empty bins kept,
        with NaN means) for the reliability diagram.
    """
    prob, outcome = np.asarray(prob, dtype=float), np.asarray(outcome, dtype=float)
    keep = ~(np.isnan(prob) | np.isnan(outcome))
    prob, outcome = prob[keep], outcome[keep]
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(prob, edges[1:-1], right=True), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        members = index == b
        n = int(members.sum())
        mean_p = float(prob[members].mean()) if n else float("nan")
        freq = float(outcome[members].mean()) if n else float("nan")
        if n:
            ece += n / len(prob) * abs(freq - mean_p)
        table.append(
            {"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n, "mean_prob": mean_p, "frequency": freq}
        )
    return {"ece": float(ece) if len(prob) else float("nan"), "n": int(len(prob)), "bins": table}


def rating_pair_accuracy(pred: np.ndarray, target: np.ndarray, max_items: int = 3500) -> dict[str, float]:
    """Pairwise accuracy of ratings over every pair of items, with tie calibration (Deutsch et
    al., 2023), as GenAI-Bench's rating evaluation reports it (Lin et al., 2024).

    For items i < j the human order is sign(target_i - target_j) (0 = a tie). ``without_ties``: the
    share of humanly ordered pairs the predictions order alike (an equal prediction counts half).
    ``with_ties``: the model calls a tie when |pred_i - pred_j| <= epsilon; the share of all pairs
    whose call equals the human one, at the epsilon that maximises it (``epsilon``).

    Args:
        pred: (N,) model scores.
        target: (N,) human ratings (NaN rows dropped).
        max_items: Above this many items (N^2 / 2 pairs) the figures are NaN rather than using
            gigabytes of memory (3162 items, GenAI-Bench image: 5M pairs, about 4 s and 1 GB).
    """
    pred, target = np.asarray(pred, dtype=float), np.asarray(target, dtype=float)
    keep = ~(np.isnan(pred) | np.isnan(target))
    pred, target = pred[keep], target[keep]
    nan = {"without_ties": float("nan"), "with_ties": float("nan"), "epsilon": float("nan")}
    if len(pred) < 2 or len(pred) > max_items:
        return nan
    i, j = np.triu_indices(len(pred), k=1)
    human = np.sign(target[i] - target[j])
    model_diff = pred[i] - pred[j]
    ordered = human != 0
    agree = np.where(model_diff == 0, 0.5, np.sign(model_diff) == human)
    without = float(np.mean(agree[ordered])) if ordered.any() else float("nan")
    gap = np.abs(model_diff)
    order = np.argsort(gap, kind="stable")
    gap, tie, right = gap[order], (~ordered)[order], (np.sign(model_diff) == human)[order] & ordered[order]
    # with epsilon = gap[k], the first k + 1 pairs (and any equal gaps) are called ties
    ends = np.r_[np.nonzero(np.diff(gap))[0], len(gap) - 1]
    correct_ties = np.cumsum(tie)[ends]
    correct_rest = right.sum() - np.cumsum(right)[ends]
    totals = np.r_[right.sum(), correct_ties + correct_rest]  # first: no tie called at all
    thresholds = np.r_[-np.inf, gap[ends]]
    best = int(np.argmax(totals))
    return {
        "without_ties": without,
        "with_ties": float(totals[best] / len(gap)),
        "epsilon": float(thresholds[best]),
    }
