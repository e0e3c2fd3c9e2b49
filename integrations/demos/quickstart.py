"""What the quick-start demos share: fit a config, reload the model, evaluate, write the results.

``mmreward demo --task NAME`` finds its demos in the ``mmreward.demos`` entry-point group of
``pyproject.toml``; each is a function ``run(output: Path) -> dict`` that runs the task's main job
on its embedded default, writes ``output/metrics.json`` and ``output/report.html``, and returns the
metrics. The t2i, video and edit demos are ``run_quickstart`` with their own evaluation and report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmreward.report import write_metrics


@dataclass
class QuickstartRun:
    """A fitted quick start: the reloaded scorer, the run folder and the training wall time."""

    scorer: Any
    run_dir: Path
    train_seconds: float


def fit_quickstart(config: Path, output: Path, extra_args: tuple[str, ...] = ()) -> QuickstartRun:
    """``mmreward fit --config CONFIG`` into ``output/run``, then ``mmreward.load`` the exported model.

    Args:
        config: The quick-start config.
        output: The demo folder; the run goes to ``output/run`` (its synthetic data to ``run/data``).
        extra_args: More LightningCLI flags (e.g. ``--trainer.max_steps=50``).
    """
    from mmreward.cli import run_lightning
    from mmreward.scoring import load

    if not Path(config).is_file():
        raise FileNotFoundError(
            f"The quick-start config {str(config)!r} is missing; run the demo from a clone of the repository."
        )
    run_dir = Path(output) / "run"
    started = time.perf_counter()
    run_lightning(["fit", "--config", str(config), "--trainer.default_root_dir", str(run_dir), *extra_args])
    train_seconds = time.perf_counter() - started
    return QuickstartRun(load(run_dir / "model"), run_dir, round(train_seconds, 1))


def run_quickstart(
    config: Path,
    output: Path,
    extra_args: tuple[str, ...],
    evaluate: Callable[[Any, Path], dict[str, Any]],
    write_report: Callable[[Path, Any, dict[str, Any], Path], Path],
) -> dict[str, Any]:
    """Fit ``config`` (``fit_quickstart``), evaluate the reloaded model on its synthetic data, and write
    ``output/metrics.json`` and ``output/report.html``; return the metrics.

    Args:
        config: The quick-start config.
        output: The demo folder (the training run goes to ``output/run``, its data to ``run/data``).
        extra_args: More LightningCLI flags (e.g. ``--trainer.max_steps=50``).
        evaluate: ``(scorer, data folder) -> metrics`` on the held-out split.
        write_report: ``(path, scorer, metrics, data folder) -> path`` writes the HTML report.
    """
    fitted = fit_quickstart(config, output, extra_args)
    output, data = Path(output), fitted.run_dir / "data"
    metrics = evaluate(fitted.scorer, data)
    metrics.update(train_seconds=fitted.train_seconds, model_dir=str(fitted.run_dir / "model"))
    write_metrics(output / "metrics.json", metrics)
    write_report(output / "report.html", fitted.scorer, metrics, data)
    return metrics
