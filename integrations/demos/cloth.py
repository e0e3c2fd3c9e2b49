"""``mmreward demo --task cloth``: train the cloth action preference model, then flatten cloths with it.

Steps: simulate preference data and fit ``configs/quickstart/cloth.yaml`` (LightningCLI), reload the
exported model with ``mmreward.load``, measure held-out pair accuracy on the test split, and run
held-out flattening episodes choosing with the reward model, at random, and with the oracle
(which simulates every candidate). Writes ``metrics.json`` and ``report.html`` (coverage plot,
top-down views of the cloth before and after).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from integrations.robotics.cloth_env import ClothEnv
from integrations.robotics.evaluation import (
    compare,
    oracle_chooser,
    plot_cloud,
    plot_coverage,
    random_chooser,
    reward_model_chooser,
    run_episodes,
)
from integrations.robotics.samplers import RandomPrimitiveSampler
from integrations.robotics.selector import ActionSelector
from mmreward.data.records import read_records
from mmreward.report import figure, metrics_table, write_html, write_metrics

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "quickstart" / "cloth.yaml"
EPISODE_SEEDS = list(range(40_000, 40_010))


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
    accuracy, pairs = pair_accuracy(scorer, run_dir / "data" / "test.jsonl")

    started = time.perf_counter()
    results, latency = flatten_episodes(scorer, steps, candidates)
    metrics = {
        "heldout_pair_accuracy": accuracy,
        "heldout_pairs": pairs,
        "episodes": len(EPISODE_SEEDS),
        "steps": steps,
        "candidates": candidates,
        **compare(results),
        "selector_ms_per_call": latency.total_ms,
        "selector_decisions_per_s": latency.decisions_per_s,
        "train_seconds": round(train_seconds, 1),
        "episode_seconds": round(time.perf_counter() - started, 1),
        "model_dir": str(run_dir / "model"),
    }
    write_metrics(output / "metrics.json", metrics)
    write_report(output, metrics, results)
    rm, rnd, orc = (metrics[k]["final_coverage"] for k in ("reward_model", "random", "oracle"))
    print(
        f"held-out pair accuracy {accuracy:.3f} ({pairs} pairs); final coverage: reward model {rm:.3f}, "
        f"random {rnd:.3f}, oracle {orc:.3f}; report: {output / 'report.html'}"
    )
    return metrics


def flatten_episodes(scorer: Any, steps: int, candidates: int) -> tuple[dict[str, Any], Any]:
    """Held-out episodes choosing with the reward model, at random and with the oracle; the selector's latency."""
    env, sampler = ClothEnv(), RandomPrimitiveSampler()
    selector = ActionSelector(scorer)
    choosers = {
        "reward_model": reward_model_chooser(selector),
        "random": random_chooser(0),
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
    sections = [
        ("Held-out metrics", metrics_table(metrics)),
        (
            "Coverage against step (mean, band: +-1 std over episodes)",
            figure(coverage_png, "coverage", size=500),
        ),
        ("Cloth seen from above: start, and after the last step of each strategy", "".join(rows)),
    ]
    return write_html(
        output / "report.html", "Cloth flattening with a point-cloud action reward model", sections
    )
