"""``mmreward demo --task judge``: train the quick-start critique judge on a CPU and report on it.

The judge is a tiny from-scratch causal LM (``judges.tiny.TinyJudgeLM``) fine-tuned on the
synthetic critique set (``judges.critique_data``): it reads a text-to-image prompt and a scene
description of the candidate image, writes a critique naming what is wrong, then a score. The
settings are those of ``configs/quickstart/judge.yaml``. The demo writes ``metrics.json``
(Spearman with the ground truth, critique hit rate and parse-failure rate on held-out prompts,
for the trained judge and for its untrained start) and ``report.html`` (images, critiques, scores).
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

from judges.backends import TransformersBackend
from judges.critique import CritiqueJudge
from judges.critique_data import CritiqueExample, CritiqueWorld, read_examples
from judges.evaluation import CritiqueEvaluation, evaluate_critique_judge
from judges.tiny import TinyJudgeLM
from mmreward.data.synthetic.t2i import T2IWorld
from mmreward.report import figure, metrics_table, write_html, write_metrics

QUICKSTART = {
    "train_prompts": 2000,
    "val_prompts": 20,
    "test_prompts": 30,
    "hidden_size": 64,
    "steps": 2000,
    "batch_size": 32,
    "lr": 3e-3,
    "max_new_tokens": 96,  # the seen line, the critique and the score line
}
"""The quick-start settings (``configs/quickstart/judge.yaml`` says the same)."""


def train_quickstart(run_dir: str | Path, steps: int = QUICKSTART["steps"], seed: int = 0) -> Path:
    """Train the quick-start judge; ``run_dir`` gets ``model/`` (trained), ``base/`` (untrained) and ``data/``.

    Args:
        run_dir: The run folder.
        steps: Optimizer steps.
        seed: Seeds the world (its prompts, scenes and held-out split) and the training.
    """
    import lightning as L
    import torch

    from judges.training import JudgeDataModule, JudgeSFTModule

    run_dir = Path(run_dir)
    L.seed_everything(seed, verbose=False)
    world = T2IWorld(
        QUICKSTART["train_prompts"], QUICKSTART["val_prompts"], QUICKSTART["test_prompts"], seed=seed
    )
    data = JudgeDataModule(
        synthetic=CritiqueWorld(world, images=["test"]), batch_size=QUICKSTART["batch_size"]
    )
    module = JudgeSFTModule(
        TinyJudgeLM(hidden_size=QUICKSTART["hidden_size"], seed=seed),
        optimizer=lambda params: torch.optim.AdamW(params, lr=QUICKSTART["lr"], weight_decay=0.01),
        scheduler=lambda optimizer: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps),
    )
    trainer = L.Trainer(
        max_steps=steps,
        default_root_dir=str(run_dir),
        val_check_interval=500,
        check_val_every_n_epoch=None,
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, data)
    module.export(run_dir / "model")
    return run_dir


def _rows(examples: list[CritiqueExample], result: CritiqueEvaluation, root: Path, limit: int = 15) -> str:
    cells = []
    for example, judgement in list(zip(examples, result.judgements))[:limit]:
        image = figure(root / example.image, example.prompt) if example.image else ""
        score = (
            "parse failure"
            if judgement.score is None
            else f"{judgement.score:.2f} (conf {judgement.confidence or 0:.2f})"
        )
        cells.append(
            f"<tr><td>{image}</td><td>{html.escape(example.corruption)}</td><td>{html.escape(example.critique)}</td>"
            f"<td>{html.escape(judgement.critique)}</td><td>{score}</td><td>{example.label}</td></tr>"
        )
    head = "<tr><th>image</th><th>corruption</th><th>reference</th><th>judge's critique</th><th>expected score</th><th>true label</th></tr>"
    return "<table>" + head + "".join(cells) + "</table>"


def run(output: Path) -> dict[str, Any]:
    """Train, evaluate on held-out prompts, and write ``output/metrics.json`` and ``output/report.html``."""
    output = Path(output)
    start = time.perf_counter()
    run_dir = train_quickstart(output / "run")
    return write_report(run_dir, output, train_seconds=time.perf_counter() - start)


def write_report(run_dir: Path, output: Path, train_seconds: float | None = None) -> dict[str, Any]:
    """Evaluate the trained and untrained judges of ``run_dir`` on its test split; write the demo files."""
    test = read_examples(run_dir / "data" / "test.jsonl")
    results = {
        name: evaluate_critique_judge(
            CritiqueJudge(
                TransformersBackend(str(run_dir / name), batch_size=32),
                max_new_tokens=QUICKSTART["max_new_tokens"],
            ),
            test,
        )
        for name in ("model", "base")
    }
    metrics = {
        "trained": results["model"].metrics(),
        "untrained": results["base"].metrics(),
        "train_seconds": None if train_seconds is None else round(train_seconds, 1),
        "judge_input": "prompt + scene caption (not pixels)",
    }
    write_metrics(Path(output) / "metrics.json", metrics)
    write_html(
        Path(output) / "report.html",
        "mmreward demo: critique-then-score judge",
        [
            ("Held-out metrics", metrics_table(metrics)),
            ("Trained judge on held-out prompts", _rows(test, results["model"], run_dir / "data")),
            ("Untrained judge (same start)", _rows(test, results["base"], run_dir / "data", limit=5)),
        ],
    )
    return metrics
