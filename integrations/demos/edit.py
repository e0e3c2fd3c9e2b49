"""``mmreward demo --task edit``: train the quick-start edit scorer and report on held-out edits.

Steps: generate the synthetic edit world, fit ``configs/quickstart/edit.yaml`` (the fast CLIP edit
scorer), reload the exported model with ``mmreward.load``, and measure it on the test split's unseen
sources: Spearman/Kendall/Pearson against the graded ratings, how often the correct edit beats each
other kind of candidate, and how often the top-scored candidate is the correct edit (best-of-5).
"""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from integrations.demos.quickstart import run_quickstart
from mmreward.data.records import read_records
from mmreward.metrics import correlations
from mmreward.report import figure, metrics_table, write_html
from mmreward.types import Rating

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "quickstart" / "edit.yaml"


def _kind(rating: Rating) -> str:
    return (rating.subset or ":").split(":", 1)[1]


def group_by_source(ratings: list[Rating], scores: np.ndarray) -> list[dict[str, tuple[Rating, float]]]:
    """Candidates of each source: ``{kind: (rating, model score)}`` per source image."""
    groups: dict[str, dict[str, tuple[Rating, float]]] = defaultdict(dict)
    for rating, score in zip(ratings, scores):
        groups[str(rating.sample.source_image)][_kind(rating)] = (rating, float(score))
    return list(groups.values())


def heldout_ratings(data: Path) -> list[Rating]:
    """The graded candidates of the test split of an ``EditWorld`` folder."""
    return [r for r in read_records(data / "test_ratings.jsonl") if isinstance(r, Rating)]


def evaluate_edits(scorer: Any, data: Path) -> dict[str, Any]:
    """Held-out figures of an edit scorer on the graded candidates of an ``EditWorld`` folder."""
    ratings = heldout_ratings(data)
    scores = scorer.forward([r.sample for r in ratings]).score.numpy()
    target = np.array([r.score for r in ratings], dtype=float)
    groups = group_by_source(ratings, scores)
    beats = {}
    for other in ("no_op", "wrong_object", "partial", "over_edit"):
        wins = [g["correct"][1] > g[other][1] for g in groups if "correct" in g and other in g]
        beats[other] = float(np.mean(wins)) if wins else float("nan")
    top = [max(g, key=lambda k: g[k][1]) == "correct" for g in groups]
    return {
        "heldout_ratings": len(ratings),
        "heldout_sources": len(groups),
        "heldout_correlations": correlations(scores, target),
        "correct_beats": beats,
        "best_of_candidates_is_correct": float(np.mean(top)),
    }


def run(output: Path, config: Path = CONFIG, extra_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train, evaluate and write ``output/metrics.json`` and ``output/report.html`` (``run_quickstart``)."""
    metrics = run_quickstart(config, output, extra_args, evaluate_edits, write_report)
    spearman = metrics["heldout_correlations"]["spearman"]
    print(f"held-out Spearman {spearman:.3f}; correct edit beats: {metrics['correct_beats']}")
    return metrics


def write_report(path: Path, scorer: Any, metrics: dict[str, Any], data: Path, sources: int = 8) -> Path:
    """Held-out figures, then per source: the source image, the instruction and the scored candidates."""
    ratings = heldout_ratings(data)
    scores = scorer.forward([r.sample for r in ratings]).score.numpy()
    rows = []
    for group in group_by_source(ratings, scores)[:sources]:
        best = max(group, key=lambda k: group[k][1])
        first = next(iter(group.values()))[0].sample
        cells = [figure(first.source_image, "source", size=96)]
        cells += [
            figure(r.sample.image, f"{s:+.2f} · {kind}", best=kind == best, size=96)
            for kind, (r, s) in group.items()
        ]
        rows.append(
            f"<tr><td style='text-align:left;max-width:12em'>{html.escape(first.prompt)}</td><td>{''.join(cells)}</td></tr>"
        )
    grid = (
        "<p>Each row: a held-out instruction, the source image and the candidate edits (caption: model "
        "score · kind of candidate). The outlined image is the model's pick.</p>"
        f"<table><tr><th>instruction</th><th>source and candidates</th></tr>{''.join(rows)}</table>"
    )
    return write_html(
        path,
        "mmreward quick start: image-edit scorer",
        [("Held-out metrics", metrics_table(metrics)), ("Candidates and scores", grid)],
    )
