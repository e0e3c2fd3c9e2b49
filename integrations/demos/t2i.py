"""``mmreward demo --task t2i``: train the quick-start text-to-image reward model and report on held-out data.

Steps: generate the synthetic world, fit ``configs/quickstart/t2i.yaml`` (a small CLIP-architecture
model from random init), reload the exported model with ``mmreward.load``, and measure it on the
test split, whose prompts and scenes training never saw.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from integrations.demos.quickstart import run_quickstart
from mmreward.data.records import read_records
from mmreward.evaluation import evaluate
from mmreward.metrics import pairwise_accuracy
from mmreward.report import figure, metrics_table, write_html
from mmreward.types import Preference, Sample

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "quickstart" / "t2i.yaml"
QUALITY_KINDS = ("blur", "noise", "jpeg")


def run(output: Path, config: Path = CONFIG, extra_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train, evaluate and write ``output/metrics.json`` and ``output/report.html`` (``run_quickstart``)."""
    metrics = run_quickstart(config, output, extra_args, evaluate_t2i, write_report)
    print(
        f"held-out alignment pair accuracy: {metrics['heldout_alignment_accuracy']:.3f} ({metrics['heldout_alignment_pairs']} pairs)"
    )
    return metrics


def evaluate_t2i(scorer, data: Path) -> dict[str, Any]:
    """Held-out figures of a text-to-image reward model on a ``T2IWorld`` folder."""
    pairs = [r for r in read_records(data / "test.jsonl") if isinstance(r, Preference)]
    metrics = heldout_metrics(scorer, pairs)
    metrics["best_pick_is_faithful"] = best_picks(scorer, data / "test_ratings.jsonl")[1]
    return metrics


def heldout_metrics(scorer, pairs: list[Preference]) -> dict[str, Any]:
    """Pair accuracy on held-out pairs: alignment pairs, quality pairs, and per corruption kind."""
    evaluated = evaluate(scorer, pairs)["pairs"]
    alignment = [p for p in pairs if p.subset not in QUALITY_KINDS]
    quality = [p for p in pairs if p.subset in QUALITY_KINDS]
    return {
        "heldout_alignment_accuracy": _accuracy(scorer, alignment),
        "heldout_alignment_pairs": len(alignment),
        "heldout_quality_accuracy": _accuracy(scorer, quality) if quality else float("nan"),
        "heldout_quality_pairs": len(quality),
        "heldout_accuracy_by_corruption": evaluated["by_subset"],
    }


def _accuracy(scorer, pairs: list[Preference]) -> float:
    scores = scorer.forward([p.chosen for p in pairs] + [p.rejected for p in pairs]).score.numpy()
    n = len(pairs)
    return pairwise_accuracy(scores[:n] - scores[n:], np.ones(n))


def best_picks(scorer, ratings_path: Path) -> tuple[list[dict[str, Any]], float]:
    """Score every candidate of every held-out prompt; how often is the top pick the faithful render?"""
    raw = [json.loads(line) for line in ratings_path.read_text().splitlines() if line.strip()]
    samples = [Sample(prompt=r["prompt"], image=str(ratings_path.parent / r["image"])) for r in raw]
    scores = scorer.forward(samples).score.numpy()
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(raw):
        groups[r["id"].rsplit("-", 1)[0]].append(i)
    picks = []
    for members in groups.values():
        best = max(members, key=lambda i: scores[i])
        picks.append(
            {
                "prompt": raw[members[0]]["prompt"],
                "best": best,
                "members": members,
                "raw": raw,
                "scores": scores,
                "root": ratings_path.parent,
            }
        )
    rate = float(np.mean([raw[p["best"]]["corruption"] == "none" for p in picks]))
    return picks, rate


def write_report(path: Path, scorer, metrics: dict[str, Any], data: Path, prompts: int = 8) -> Path:
    """The report: held-out figures, then per prompt its candidates with scores, the model's pick outlined."""
    picks = best_picks(scorer, data / "test_ratings.jsonl")[0][:prompts]
    rows = []
    for pick in picks:
        cells = []
        for i in pick["members"]:
            r = pick["raw"][i]
            caption = f"{pick['scores'][i]:+.2f} · {r['corruption']}"
            cells.append(figure(pick["root"] / r["image"], caption, best=i == pick["best"], size=96))
        rows.append(
            f"<tr><td style='text-align:left;max-width:14em'>{html.escape(pick['prompt'])}</td><td>{''.join(cells)}</td></tr>"
        )
    grid = (
        "<p>Each row: one held-out prompt and its candidates (caption: model score · what was changed; "
        "'none' is the faithful render). The outlined image is the model's pick.</p>"
        f"<table><tr><th>prompt</th><th>candidates</th></tr>{''.join(rows)}</table>"
    )
    return write_html(
        path,
        "mmreward quick start: text-to-image reward model",
        [("Held-out metrics", metrics_table(metrics)), ("Candidates and scores", grid)],
    )
