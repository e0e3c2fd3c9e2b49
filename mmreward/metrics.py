"""Evaluation metrics: pairwise accuracy (overall, per group, per aspect) and rank correlations."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def pairwise_accuracy(diff: np.ndarray, label: np.ndarray) -> float:
    """Share of pairs whose score difference agrees with the label; ties (label 0.5) are left out.

    Args:
        diff: (N,) ``score_chosen - score_rejected``.
        label: (N,) P(chosen preferred).
    Returns:
        The accuracy, or NaN when no pair has a decided label. A zero difference counts as half.
    """
    diff, label = np.asarray(diff, dtype=float), np.asarray(label, dtype=float)
    decided = ~np.isnan(label) & (label != 0.5)
    if not decided.any():
        return float("nan")
    agree = np.where(diff[decided] == 0, 0.5, (diff[decided] > 0) == (label[decided] > 0.5))
    return float(np.mean(agree))


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
