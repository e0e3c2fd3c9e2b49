"""``mmreward demo --task video``: train the quick-start video reward model and report on held-out clips.

Steps: generate the synthetic video world (real H.264 files), fit ``configs/quickstart/video.yaml``
(per-frame CLIP features, a temporal transformer, one score per aspect), reload the exported model
with ``mmreward.load``, and measure it on the test split: per-aspect pair accuracy, per-aspect
Spearman/Kendall/Pearson against the ratings, and three controls on the same held-out pairs
(issue 13), each the trained model with one input taken away:

- ``shuffled_frames``: the frames of every clip in a random order. A model that uses time loses
  its physics accuracy.
- ``single_frame``: the middle sampled frame repeated in place of the clip. Colour and shape still
  show; the direction of motion does not, so alignment on direction faults falls to chance.
- ``prompt_shuffled``: each pair scored under another pair's prompt. Alignment falls to chance if
  the model reads the prompt; quality and physics need no prompt and stay.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from integrations.demos.quickstart import run_quickstart
from mmreward.controls import prompt_shuffled
from mmreward.data.records import read_records
from mmreward.metrics import correlations, pairwise_accuracy
from mmreward.report import controls_table, figure, metrics_table, write_html
from mmreward.types import Preference, Rating, Sample

CONTROL_NOTES = {
    "shuffled_frames": "the order of the frames",
    "single_frame": "motion: the middle frame stands for the clip",
    "prompt_shuffled": "the prompt: each pair scored under another pair's",
}
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "quickstart" / "video.yaml"


def aspect_pair_accuracy(scorer: Any, pairs: list[Preference], transform: Any = None) -> dict[str, float]:
    """Pair accuracy per aspect (pairs tied on an aspect are left out of it), and overall.

    Args:
        scorer: A ``mmreward.scoring.Scorer`` of a multi-aspect model.
        pairs: Preferences with ``aspects`` labels.
        transform: Optional ``Sample -> Sample`` applied to both sides first (the shuffled control).
    """
    samples = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    if transform is not None:
        samples = [transform(s) for s in samples]
    out = scorer.forward(samples)
    n = len(pairs)
    result = {
        "overall": pairwise_accuracy(
            (out.score[:n] - out.score[n:]).numpy(), np.array([p.label for p in pairs])
        )
    }
    for j, name in enumerate(scorer.aspects):
        labels = np.array([(p.aspects or {}).get(name, np.nan) for p in pairs], dtype=float)
        result[name] = pairwise_accuracy((out.aspects[:n, j] - out.aspects[n:, j]).numpy(), labels)
    return result


def aspect_correlations(scorer: Any, ratings: list[Rating]) -> dict[str, dict[str, float]]:
    """Spearman, Kendall and Pearson of each aspect score (and the overall score) with the ratings."""
    out = scorer.forward([r.sample for r in ratings])
    result = {"overall": correlations(out.score.numpy(), np.array([r.score for r in ratings], dtype=float))}
    for j, name in enumerate(scorer.aspects):
        target = np.array([(r.scores or {}).get(name, np.nan) for r in ratings], dtype=float)
        result[name] = correlations(out.aspects[:, j].numpy(), target)
    return result


class FrameShuffle:
    """Replace a sample's video by its sampled frames in a fixed random order (the control).

    Args:
        backbone: The model's backbone (its ``sampler`` and ``image_size`` decode the clip).
        seed: Seeds the permutation of every clip.
    """

    def __init__(self, backbone: Any, seed: int = 0) -> None:
        from modalities.video import load_video

        self.load, self.backbone, self.rng = load_video, backbone, np.random.default_rng(seed)

    def __call__(self, sample: Sample) -> Sample:
        frames = self.load(sample.video, self.backbone.sampler, self.backbone.image_size, sample)
        order = torch.from_numpy(self.rng.permutation(len(frames)))
        return Sample(prompt=sample.prompt, video=frames[order], meta=sample.meta)


class SingleFrame(FrameShuffle):
    """Replace a sample's video by its middle sampled frame, repeated (the single-frame control)."""

    def __call__(self, sample: Sample) -> Sample:
        frames = self.load(sample.video, self.backbone.sampler, self.backbone.image_size, sample)
        middle = frames[len(frames) // 2 : len(frames) // 2 + 1]
        return Sample(prompt=sample.prompt, video=middle.expand_as(frames).clone(), meta=sample.meta)


def run(output: Path, config: Path = CONFIG, extra_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train, evaluate and write ``output/metrics.json`` and ``output/report.html`` (``run_quickstart``)."""
    metrics = run_quickstart(config, output, extra_args, evaluate_video, write_report)
    acc = metrics["heldout_accuracy"]
    print("held-out pair accuracy per aspect: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    return metrics


def evaluate_video(scorer: Any, data: Path) -> dict[str, Any]:
    """Held-out figures of a video reward model on a ``VideoWorld`` folder."""
    pairs = [r for r in read_records(data / "test.jsonl") if isinstance(r, Preference)]
    ratings = [r for r in read_records(data / "test_ratings.jsonl") if isinstance(r, Rating)]
    metrics: dict[str, Any] = {
        "heldout_pairs": len(pairs),
        "heldout_accuracy": aspect_pair_accuracy(scorer, pairs),
        "heldout_correlations": aspect_correlations(scorer, ratings),
    }
    backbone = scorer.model.backbone
    direction = [p for p in pairs if "alignment:direction" in (p.subset or "")]
    metrics["controls"] = {
        "shuffled_frames": aspect_pair_accuracy(scorer, pairs, FrameShuffle(backbone)),
        "single_frame": aspect_pair_accuracy(scorer, pairs, SingleFrame(backbone)),
        "prompt_shuffled": aspect_pair_accuracy(scorer, prompt_shuffled(pairs)),
    }
    metrics["shuffled_frames_accuracy"] = metrics["controls"]["shuffled_frames"]
    metrics["margin_over_controls"] = {
        name: {k: metrics["heldout_accuracy"][k] - v for k, v in control.items()}
        for name, control in metrics["controls"].items()
    }
    # the alignment faults that only motion shows: a wrong direction
    metrics["direction_fault_pairs"] = len(direction)
    metrics["direction_alignment_accuracy"] = {
        "model": aspect_pair_accuracy(scorer, direction)["alignment"],
        "single_frame": aspect_pair_accuracy(scorer, direction, SingleFrame(backbone))["alignment"],
    }
    metrics["heldout_spearman"] = {k: v["spearman"] for k, v in metrics["heldout_correlations"].items()}
    return metrics


def frame_strip(sample: Sample, backbone: Any) -> Image.Image:
    """The frames the model sees, side by side."""
    from modalities.video import load_video

    frames = load_video(sample.video, backbone.sampler, None, sample)  # (T, 3, H, W)
    strip = (frames.permute(2, 0, 3, 1).flatten(1, 2) * 255).round().byte().numpy()  # (H, T*W, 3)
    return Image.fromarray(strip)


def write_report(path: Path, scorer: Any, metrics: dict[str, Any], data: Path, clips: int = 12) -> Path:
    """Held-out figures, then test clips as frame strips with their per-aspect scores and ratings."""
    ratings = [r for r in read_records(data / "test_ratings.jsonl") if isinstance(r, Rating)][:clips]
    outputs = scorer.score_samples([r.sample for r in ratings])
    rows = []
    for rating, out in zip(ratings, outputs):
        scores = ", ".join(f"{k} {v:+.2f}" for k, v in (out.aspects or {}).items())
        truth = ", ".join(f"{k} {v:.2f}" for k, v in (rating.scores or {}).items())
        strip = figure(frame_strip(rating.sample, scorer.model.backbone), rating.subset or "", size=384)
        rows.append(
            f"<tr><td style='text-align:left;max-width:14em'>{html.escape(rating.sample.prompt)}</td>"
            f"<td>{strip}</td><td>{html.escape(scores)}</td><td>{html.escape(truth)}</td></tr>"
        )
    grid = (
        "<p>Each row: a held-out clip (the frames the model sees; caption: the faults it was given), the "
        "model's aspect scores, and the world's ratings (1 is flawless).</p>"
        f"<table><tr><th>prompt</th><th>frames</th><th>model</th><th>rating</th></tr>{''.join(rows)}</table>"
    )
    return write_html(
        path,
        "mmreward quick start: video reward model (quality, alignment, physics)",
        [
            (
                "Held-out pair accuracy per aspect, and its controls",
                controls_table(metrics["heldout_accuracy"], metrics["controls"], CONTROL_NOTES),
            ),
            ("Held-out metrics", metrics_table(metrics)),
            ("Clips and scores", grid),
        ],
    )
