"""``mmreward eval --output DIR``: ``report.json`` and a self-contained ``report.html``.

The page holds the headline table (pairs, ratings, rankings, process), per-subset accuracy with
and without ties, per-aspect figures, and plots when matplotlib is installed (``mmreward[plot]``):
per-subset accuracy bars, the reliability diagram of sigmoid(score gap), and predicted against
human ratings. Without matplotlib the tables are written and the page says how to get the plots.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from mmreward.report import _plain, metrics_table, write_html, write_metrics


def write_report(
    output: str | Path, metrics: dict[str, Any], points: dict[str, Any], meta: dict[str, Any]
) -> dict[str, Path]:
    """Write ``report.json`` (``meta`` and ``metrics``) and ``report.html`` into ``output``.

    Args:
        output: The folder (created).
        metrics: What ``mmreward.evaluation.evaluate`` returned.
        points: The arrays ``evaluate(..., points=)`` filled, for the plots.
        meta: What was evaluated: model or reward, data file, format, record count.
    Returns:
        ``{"json": path, "html": path}``.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    json_path = write_metrics(output / "report.json", {"meta": meta, "metrics": metrics})
    sections = [("What was evaluated", _table([(k, v) for k, v in meta.items()], ("field", "value")))]
    sections += _pair_sections(metrics.get("pairs"), points)
    if "ratings" in metrics:
        sections.append(("Ratings", metrics_table(metrics["ratings"])))
        plot = _plot(_rating_scatter, points) if "rating_pred" in points else None
        if plot:
            sections.append(("Predicted against human ratings", plot))
    for key, title in (("rankings", "Rankings"), ("process", "Process (per-step) records")):
        if key in metrics:
            sections.append((title, metrics_table(metrics[key])))
    html_path = write_html(output / "report.html", f"mmreward eval: {meta.get('data', '')}", sections)
    return {"json": json_path, "html": html_path}


def _pair_sections(pairs: dict[str, Any] | None, points: dict[str, Any]) -> list[tuple[str, str]]:
    if not pairs:
        return []
    head = [
        ("pairs", pairs["n"]),
        ("tie labels", pairs["n_ties"]),
        ("pairs without a score (counted wrong)", pairs["n_unscored"]),
        ("accuracy without ties", pairs["accuracy"]),
    ]
    if "accuracy_with_ties" in pairs:
        best = pairs["accuracy_with_ties_best"]
        head += [
            ("accuracy with ties (gap 0 = tie)", pairs["accuracy_with_ties"]),
            (f"accuracy with ties, best threshold {best['threshold']:.4g}", best["accuracy"]),
        ]
    if "acc_plus" in pairs:
        head.append((f"Acc+ (every pair of a query right; {pairs['n_queries']} queries)", pairs["acc_plus"]))
    head.append(("ECE of sigmoid(score gap)", pairs["calibration"]["ece"]))
    sections = [("Pairs", _table(head, ("metric", "value")))]
    ties = pairs.get("by_subset_with_ties", {})
    rows = [(g, acc, ties.get(g, "")) for g, acc in pairs["by_subset"].items()]
    sections.append(("Pair accuracy by subset", _table(rows, ("subset", "without ties", "with ties"))))
    if "by_aspect" in pairs:
        with_ties = pairs.get("by_aspect_with_ties", {})
        rows = [(a, acc, with_ties.get(a, "")) for a, acc in pairs["by_aspect"].items()]
        sections.append(("Pair accuracy by aspect", _table(rows, ("aspect", "without ties", "with ties"))))
    bars = _plot(_subset_bars, pairs) if len(pairs["by_subset"]) > 1 else None
    if bars:
        sections.append(("Accuracy by subset (plot)", bars))
    reliability = _plot(_reliability, pairs["calibration"])
    table = _table(
        [
            (f"{b['lo']:.1f}-{b['hi']:.1f}", b["n"], b["mean_prob"], b["frequency"])
            for b in pairs["calibration"]["bins"]
        ],
        ("P(chosen) bin", "pairs", "mean P", "chosen preferred"),
    )
    sections.append(("Reliability of sigmoid(score gap)", (reliability or "") + table))
    return sections


def _cell(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def _table(rows: list[tuple], header: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _plot(draw, data: Any) -> str | None:
    """``draw(ax, data)`` as an inline PNG ``<img>``; a note instead when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        return "<p>Plots need matplotlib: <code>pip install 'mmreward[plot]'</code>.</p>"
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=100)
    try:
        draw(ax, data)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _subset_bars(ax, pairs: dict[str, Any]) -> None:
    names = list(pairs["by_subset"])
    x = np.arange(len(names))
    without = [_nan(pairs["by_subset"][n]) for n in names]
    ax.bar(x - 0.2, without, 0.4, label="without ties")
    if "by_subset_with_ties" in pairs:
        ax.bar(x + 0.2, [_nan(pairs["by_subset_with_ties"][n]) for n in names], 0.4, label="with ties")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)


def _reliability(ax, calib: dict[str, Any]) -> None:
    bins = [b for b in calib["bins"] if b["n"]]
    centres = [(b["lo"] + b["hi"]) / 2 for b in bins]
    ax.bar(centres, [b["frequency"] for b in bins], width=0.09, alpha=0.7, label="observed")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.plot([b["mean_prob"] for b in bins], [b["frequency"] for b in bins], "o", color="C1", label="mean P")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("sigmoid(score chosen - score rejected)")
    ax.set_ylabel("share where chosen is preferred")
    ax.set_title(f"ECE {calib['ece']:.3f} over {calib['n']} pairs", fontsize=9)
    ax.legend(fontsize=7)


def _rating_scatter(ax, points: dict[str, Any]) -> None:
    ax.scatter(points["rating_target"], points["rating_pred"], s=8, alpha=0.6)
    ax.set_xlabel("human rating")
    ax.set_ylabel("model score")


def _nan(value: float) -> float:
    return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else value
