"""``mmreward demo --task cloth``: train the cloth action preference model, then flatten cloths with it.

Steps: simulate preference data and fit ``configs/quickstart/cloth.yaml`` (LightningCLI), reload the
exported model with ``mmreward.load``, measure held-out pair accuracy on the test split, and run
held-out flattening episodes choosing with the reward model, at random, and with the oracle
(which simulates every candidate). Writes ``metrics.json`` and ``report.html`` (coverage plot,
top-down views of the cloth before and after).

The headline is coverage (issue 13): the final coverage the reward model reaches, beside the same
held-out crumpled starts flattened by two controls that lack the learned preference, random
selection and the same architecture untrained, and by the oracle. ``coverage_gain`` gives the
paired gain over each control (with its standard error) and ``oracle_gap_closed`` the share of the
random-to-oracle gap closed. Held-out pair accuracy on the simulator's labels is secondary, with the
untrained model's as its control. The model only ever sees the observed point cloud and the
candidate actions; the simulator's coverage reaches the oracle and the labels, never the model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from integrations.robotics.cloth_env import ClothEnv
from integrations.robotics.evaluation import (
    oracle_chooser,
    plot_cloud,
    plot_coverage,
    random_chooser,
    reward_model_chooser,
    run_episodes,
)
from integrations.robotics.samplers import RandomPrimitiveSampler
from integrations.robotics.selector import ActionSelector
from mmreward.configurable import instantiate
from mmreward.data.records import read_records
from mmreward.report import figure, metrics_table, write_html, write_metrics

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "quickstart" / "cloth.yaml"
EPISODE_SEEDS = list(range(40_000, 40_032))  # 32 held-out starts: the gain's SE near 0.02


def pair_accuracy(scorer: Any, path: Path) -> tuple[float, int]:
    """Fraction of the file's preference pairs whose chosen side ``scorer`` scores higher."""
    pairs = read_records(path)
    chosen = np.array(scorer.score(samples=[p.chosen for p in pairs]))
    rejected = np.array(scorer.score(samples=[p.rejected for p in pairs]))
    return float((chosen > rejected).mean()), len(pairs)


def run(
    output: Path, config: Path = CONFIG, extra_args: tuple[str, ...] = (), steps: int = 4, candidates: int = 8
) -> dict[str, Any]:
    """Train, evaluate, and write ``output/metrics.json`` and ``output/report.html``.

    Args:
        output: The demo folder (the training run goes to ``output/run``).
        config: The quick-start config.
        extra_args: More LightningCLI flags (e.g. ``--trainer.max_steps=50``).
        steps: Steps per evaluation episode.
        candidates: Candidates proposed per step in the episodes.
    """
    from mmreward.cli import run_lightning
    from mmreward.scoring import load

    if not Path(config).is_file():
        raise FileNotFoundError(
            f"The quick-start config {str(config)!r} is missing; run the demo from a clone of the repository."
        )
    output, run_dir = Path(output), Path(output) / "run"
    torch.set_num_threads(1)  # tiny tensors: one thread is the fastest on a CPU
    started = time.perf_counter()
    run_lightning(["fit", "--config", str(config), "--trainer.default_root_dir", str(run_dir), *extra_args])
    train_seconds = time.perf_counter() - started
    scorer = load(run_dir / "model", device="cpu")
    untrained = untrained_scorer(run_dir / "model")
    accuracy, pairs = pair_accuracy(scorer, run_dir / "data" / "test.jsonl")
    untrained_accuracy, _ = pair_accuracy(untrained, run_dir / "data" / "test.jsonl")

    started = time.perf_counter()
    results, latency = flatten_episodes(scorer, untrained, steps, candidates)
    metrics = {
        **headline(results),
        "heldout_pair_accuracy": accuracy,
        "untrained_pair_accuracy": untrained_accuracy,
        "pair_accuracy_gain_over_untrained": accuracy - untrained_accuracy,
        "heldout_pairs": pairs,
        "episodes": len(EPISODE_SEEDS),
        "steps": steps,
        "candidates": candidates,
        "final_coverage": {name: stats.summary() for name, stats in results.items()},
        "selector_ms_per_call": latency.total_ms,
        "selector_decisions_per_s": latency.decisions_per_s,
        "train_seconds": round(train_seconds, 1),
        "episode_seconds": round(time.perf_counter() - started, 1),
        "model_dir": str(run_dir / "model"),
    }
    write_metrics(output / "metrics.json", metrics)
    write_report(output, metrics, results)
    gain = metrics["coverage_gain"]
    print(
        f"final coverage {metrics['coverage']['reward_model']:.3f}: {gain['over_random']:+.3f} over random "
        f"selection, {gain['over_untrained_model']:+.3f} over the untrained model, "
        f"{metrics['oracle_gap_closed']:.0%} of the random-to-oracle gap closed; held-out pair accuracy "
        f"{accuracy:.3f} ({pairs} pairs, untrained {untrained_accuracy:.3f}); report: {output / 'report.html'}"
    )
    return metrics


def untrained_scorer(model_dir: Path, seed: int = 1) -> Any:
    """The control: the saved model's architecture (its ``config.json``), freshly initialised, untrained."""
    from mmreward.scoring import Scorer

    config = json.loads((Path(model_dir) / "config.json").read_text())
    torch.manual_seed(seed)
    return Scorer(instantiate(config["model"], root=model_dir), device="cpu")


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """Final coverage of each strategy, and the reward model's paired gain over each control.

    ``results`` holds ``reward_model``, the controls ``random`` and ``untrained_model``, and
    ``oracle``, all run from the same held-out starts with the same candidates at each step.
    """
    final = {name: stats.coverage[:, -1] for name, stats in results.items()}
    rm = final["reward_model"]
    gain, sem = {}, {}
    for control in ("random", "untrained_model", "oracle"):
        diff = rm - final[control]  # paired: the same starts and candidates
        key = f"over_{control}"
        gain[key] = float(diff.mean())
        sem[key] = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    gap = float(final["oracle"].mean() - final["random"].mean())
    return {
        "coverage": {name: float(v.mean()) for name, v in final.items()},
        "coverage_gain": gain,
        "coverage_gain_sem": sem,
        "oracle_gap_closed": gain["over_random"] / gap if gap > 0 else float("nan"),
        "start_coverage": float(results["reward_model"].coverage[:, 0].mean()),
    }


def flatten_episodes(scorer: Any, untrained: Any, steps: int, candidates: int) -> tuple[dict[str, Any], Any]:
    """Held-out episodes choosing with the reward model, the controls (random, the untrained model)
    and the oracle; the reward model's selector latency."""
    env, sampler = ClothEnv(), RandomPrimitiveSampler()
    selector = ActionSelector(scorer)
    choosers = {
        "reward_model": reward_model_chooser(selector),
        "random": random_chooser(0),
        "untrained_model": reward_model_chooser(ActionSelector(untrained)),
        "oracle": oracle_chooser(env),
    }
    results = {
        name: run_episodes(env, sampler, choose, EPISODE_SEEDS, steps, candidates, num_points=256)
        for name, choose in choosers.items()
    }
    return results, selector.latency()


def write_report(output: Path, metrics: dict[str, Any], results: dict[str, Any]) -> Path:
    """``report.html``: the metrics, the coverage plot, and the cloth before/after for three episodes."""
    plots = output / "plots"
    coverage_png = plot_coverage(results, plots / "coverage.png")
    rows = []
    for e in range(min(3, len(EPISODE_SEEDS))):
        cells = [
            figure(
                plot_cloud(results["reward_model"].start_clouds[e], plots / f"start_{e}.png"),
                "start",
                size=180,
            )
        ]
        for name, stats in results.items():
            png = plot_cloud(stats.final_clouds[e], plots / f"{name}_{e}.png")
            cells.append(figure(png, f"{name}: coverage {stats.coverage[e, -1]:.2f}", size=180))
        rows.append("<div>" + "".join(cells) + "</div>")
    gain, sem, cov = metrics["coverage_gain"], metrics["coverage_gain_sem"], metrics["coverage"]
    headline_html = (
        f"<p>Final coverage after {metrics['steps']} steps on {metrics['episodes']} held-out crumpled starts "
        f"(fraction of the flat cloth's area; start {metrics['start_coverage']:.3f}), each strategy choosing "
        f"among the same {metrics['candidates']} random pick-and-place candidates at every step. The model "
        "sees only the observed point cloud and the candidate actions.</p><ul>"
        f"<li>Reward model: <b>{cov['reward_model']:.3f}</b>.</li>"
        f"<li>Control, random selection: {cov['random']:.3f}; the model's gain over it: "
        f"<b>{gain['over_random']:+.3f}</b> (paired SE {sem['over_random']:.3f}).</li>"
        f"<li>Control, the same model untrained: {cov['untrained_model']:.3f}; the model's gain over it: "
        f"<b>{gain['over_untrained_model']:+.3f}</b> (paired SE {sem['over_untrained_model']:.3f}).</li>"
        f"<li>Oracle (simulates every candidate, the ceiling for this sampler): {cov['oracle']:.3f}; the model "
        f"trails it by {-gain['over_oracle']:.3f} and closes <b>{metrics['oracle_gap_closed']:.0%}</b> of the "
        "random-to-oracle gap.</li></ul>"
        f"<p>Secondary: held-out pair accuracy on the simulator's labels {metrics['heldout_pair_accuracy']:.3f} "
        f"({metrics['heldout_pairs']} pairs) against the untrained model's "
        f"{metrics['untrained_pair_accuracy']:.3f}: a gain of {metrics['pair_accuracy_gain_over_untrained']:+.3f}.</p>"
    )
    sections = [
        ("Coverage gain over the controls", headline_html),
        (
            "Coverage against step (mean, band: +-1 std over episodes)",
            figure(coverage_png, "coverage", size=500),
        ),
        ("Cloth seen from above: start, and after the last step of each strategy", "".join(rows)),
        ("All held-out metrics", metrics_table(metrics)),
    ]
    return write_html(
        output / "report.html", "Cloth flattening with a point-cloud action reward model", sections
    )
