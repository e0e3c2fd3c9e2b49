"""``mmreward demo --task t2i``: train the quick-start text-to-image reward model and report on held-out data.

Steps: generate the synthetic world, fit ``configs/quickstart/t2i.yaml`` (a small CLIP-architecture
model from random init), reload the exported model with ``mmreward.load``, and measure it on the
test split, whose prompts and scenes training never saw.

Beside the model's held-out alignment figure stand two controls on the same held-out pairs
(issue 13): the same model with the prompts shuffled across pairs (``text_blind_accuracy``: each
pair keeps its two images but is scored under another prompt's text), and a prompt-blind image
model (``image_statistics_accuracy``: a Bradley-Terry logistic score on pooled colour statistics of
each image, fitted on the training pairs). Both sit near chance when no image-only cue gives the
faithful render away; ``margin_over_controls`` is how far the model stands above each.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from integrations.demos.quickstart import run_quickstart
from mmreward.controls import prompt_shuffled
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
    alignment = [p for p in pairs if p.subset not in QUALITY_KINDS]
    train = [r for r in read_records(data / "train.jsonl") if isinstance(r, Preference)]
    controls = {
        "text_blind_accuracy": text_blind_accuracy(scorer, alignment),
        "image_statistics_accuracy": image_statistics_accuracy(train, alignment),
    }
    metrics["controls"] = controls
    metrics["margin_over_controls"] = {
        name: metrics["heldout_alignment_accuracy"] - value for name, value in controls.items()
    }
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


def text_blind_accuracy(scorer, pairs: list[Preference], seed: int = 0) -> float:
    """The model's pair accuracy when each pair is scored under another pair's prompt.

    Both images of a pair get the same other prompt (never one with the same text), so a model
    that ranks by the text scores near 0.5 and one that ranks by image cues alone keeps its accuracy.
    """
    return _accuracy(scorer, prompt_shuffled(pairs, seed))


def colour_statistics(image_path: str | Path, levels: int = 4) -> np.ndarray:
    """Pooled colour statistics of one image: per-channel mean and sd, and a ``levels``^3 colour histogram."""
    from PIL import Image

    pixels = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float32).reshape(-1, 3) / 255.0
    bins = np.minimum((pixels * levels).astype(int), levels - 1)
    codes = (bins[:, 0] * levels + bins[:, 1]) * levels + bins[:, 2]
    histogram = np.bincount(codes, minlength=levels**3) / len(codes)
    return np.concatenate([pixels.mean(0), pixels.std(0), histogram])


def image_statistics_accuracy(
    train: list[Preference], pairs: list[Preference], max_train: int = 6000
) -> float:
    """A prompt-blind baseline: a logistic Bradley-Terry score ``w . f(image)`` on ``colour_statistics``,
    fitted on (up to ``max_train``) training pairs, then its accuracy on ``pairs``."""
    import torch

    def features(batch: list[Preference]) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.stack([colour_statistics(p.chosen.image) for p in batch]),
            np.stack([colour_statistics(p.rejected.image) for p in batch]),
        )

    chosen, rejected = features(train[:max_train])
    sd = np.concatenate([chosen, rejected]).std(0) + 1e-6
    diff = torch.tensor((chosen - rejected) / sd, dtype=torch.float64)
    w = torch.zeros(diff.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.softplus(-diff @ w).mean() + 1e-3 * (w * w).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    test_chosen, test_rejected = features(pairs)
    margin = ((test_chosen - test_rejected) / sd) @ w.detach().numpy()
    return pairwise_accuracy(margin, np.ones(len(pairs)))


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
    controls = (
        "<p>Controls on the same held-out alignment pairs, in the same run: chance is 0.5, and a figure "
        "well above it would mean the images give the faithful render away without the prompt.</p><ul>"
        f"<li>The model: {metrics['heldout_alignment_accuracy']:.3f}.</li>"
        f"<li>Text-blind (the same model, each pair scored under another pair's prompt): "
        f"{metrics['controls']['text_blind_accuracy']:.3f}; the model beats it by "
        f"{metrics['margin_over_controls']['text_blind_accuracy']:.3f}.</li>"
        f"<li>Image statistics (a logistic score on each image's pooled colour statistics, fitted on the "
        f"training pairs, no prompt): {metrics['controls']['image_statistics_accuracy']:.3f}; the model beats it by "
        f"{metrics['margin_over_controls']['image_statistics_accuracy']:.3f}.</li></ul>"
    )
    grid = (
        "<p>Each row: one held-out prompt and its candidates (caption: model score · what was changed; "
        "'none' is the faithful render). The outlined image is the model's pick.</p>"
        f"<table><tr><th>prompt</th><th>candidates</th></tr>{''.join(rows)}</table>"
    )
    return write_html(
        path,
        "mmreward quick start: text-to-image reward model",
        [
            ("Held-out metrics", metrics_table(metrics)),
            ("Controls", controls),
            ("Candidates and scores", grid),
        ],
    )
