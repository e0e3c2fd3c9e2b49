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
from mmreward.controls import derangement
from mmreward.data.records import read_records
from mmreward.data.synthetic.scenes import PALETTE
from mmreward.metrics import correlations, ranking_pair_accuracy
from mmreward.report import controls_table, figure, metrics_table, write_html
from mmreward.types import Rating, Sample

CONTROL_NOTES = {
    "instruction_shuffled": "the instruction: each source's candidates scored under another source's",
    "pixel_distance_to_source": "the instruction: more pixels changed scores higher",
    "off_palette_share": "the instruction: changed pixels in colours outside the palette score lower",
}
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
    """Held-out figures of an edit scorer on the graded candidates of an ``EditWorld`` folder, and
    the same figures for each control."""
    ratings = heldout_ratings(data)
    scores = scorer.forward([r.sample for r in ratings]).score.numpy()
    target = np.array([r.score for r in ratings], dtype=float)
    groups = group_by_source(ratings, scores)
    beats = {}
    for other in ("near_miss", "no_op", "wrong_object", "unrelated"):
        wins = [g["correct"][1] > g[other][1] for g in groups if "correct" in g and other in g]
        beats[other] = float(np.mean(wins)) if wins else float("nan")
    top = [max(g, key=lambda k: g[k][1]) == "correct" for g in groups]
    model = _figures(ratings, scores)
    controls = {
        "instruction_shuffled": _figures(ratings, shuffled_instruction_scores(scorer, ratings)),
        "pixel_distance_to_source": _figures(ratings, np.array([pixel_distance(r.sample) for r in ratings])),
        "off_palette_share": _figures(ratings, -np.array([off_palette_share(r.sample) for r in ratings])),
    }
    return {
        "heldout_ratings": len(ratings),
        "heldout_sources": len(groups),
        "heldout_correlations": correlations(scores, target),
        "heldout_pair_accuracy": model["pair_accuracy"],
        "correct_beats": beats,
        "best_of_candidates_is_correct": float(np.mean(top)),
        "controls": controls,
        "margin_over_controls": {name: {k: model[k] - c[k] for k in model} for name, c in controls.items()},
    }


def _figures(ratings: list[Rating], scores: np.ndarray) -> dict[str, float]:
    """Spearman with the ratings, and the share of candidate pairs of one source put in the rated order."""
    target = np.array([r.score for r in ratings], dtype=float)
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(ratings):
        by_source[str(r.sample.source_image)].append(i)
    k = max(len(v) for v in by_source.values())
    table, order, mask = (
        np.zeros((len(by_source), k)),
        np.zeros((len(by_source), k), int),
        np.zeros((len(by_source), k), bool),
    )
    for row, members in enumerate(by_source.values()):
        ranked = sorted(members, key=lambda i: -target[i])
        table[row, : len(members)] = scores[ranked]
        order[row, : len(members)] = np.arange(len(members))
        mask[row, : len(members)] = True
    return {
        "spearman": correlations(scores, target)["spearman"],
        "pair_accuracy": ranking_pair_accuracy(table, order, mask),
    }


def shuffled_instruction_scores(scorer: Any, ratings: list[Rating], seed: int = 0) -> np.ndarray:
    """The model's scores when every candidate of a source is scored under another source's instruction."""
    sources = list(dict.fromkeys(str(r.sample.source_image) for r in ratings))
    instruction = {str(r.sample.source_image): r.sample.prompt for r in ratings}
    texts = [instruction[s] for s in sources]
    given = {s: texts[j] for s, j in zip(sources, derangement(texts, seed))}
    samples = [
        Sample(
            prompt=given[str(r.sample.source_image)], source_image=r.sample.source_image, image=r.sample.image
        )
        for r in ratings
    ]
    return scorer.forward(samples).score.numpy()


def _pixels(image: Any) -> np.ndarray:
    from PIL import Image

    image = image if isinstance(image, Image.Image) else Image.open(image)
    return np.asarray(image.convert("RGB"), dtype=float)


def pixel_distance(sample: Sample) -> float:
    """Instruction-blind baseline: mean absolute pixel change from the source (more change, higher score)."""
    return float(np.abs(_pixels(sample.image) - _pixels(sample.source_image)).mean())


def off_palette_share(sample: Sample, changed_at: float = 30.0, far: float = 60.0) -> float:
    """Instruction-blind baseline: the share of changed pixels whose colour is far from every palette
    colour and from the background (a faded or blended edit; scored as its negative)."""
    source, edited = _pixels(sample.source_image), _pixels(sample.image)
    changed = np.abs(edited - source).sum(-1) > changed_at
    colours = np.concatenate([np.array(list(PALETTE.values()), float), source[:1, 0]])
    distance = np.linalg.norm(edited[..., None, :] - colours, axis=-1).min(-1)
    return float(((distance > far) & changed).sum() / max(int(changed.sum()), 1))


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
        [
            (
                "Held-out figures and their controls",
                controls_table(
                    {
                        "spearman": metrics["heldout_correlations"]["spearman"],
                        "pair_accuracy": metrics["heldout_pair_accuracy"],
                    },
                    metrics["controls"],
                    CONTROL_NOTES,
                ),
            ),
            ("Held-out metrics", metrics_table(metrics)),
            ("Candidates and scores", grid),
        ],
    )
