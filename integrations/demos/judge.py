"""``mmreward demo --task judge``: train the quick-start critique judge on a CPU, from pixels, and report.

The judge is a tiny composite vision-language model (``judges.pixel_training.TinyPixelJudge``: the
t2i quick start's CLIP ResNet tower from random init, read out as a grid of image tokens, an MLP
projector, a two-layer LM) trained in two stages on the synthetic critique set
(``judges.critique_data``): stage 1 describes renders (captioning aligns the encoder and projector
with the LM); stage 2 teaches the judge pass, which reads the prompt and a description and writes
the seen line, the critique and the score, while a quarter of the captions are replayed so the
description pass keeps its words. It judges in two passes (``judges.describe_first``): it describes
the image from its pixels, then judges its own description. At judging time the judge gets the
prompt and the rendered image, nothing else: no scene text.

The demo writes ``metrics.json`` (held-out Spearman with the world's ratings, critique hit rate and
parse-failure rate, for the trained judge, for its untrained start, and for the trained judge on
images shuffled across prompts, the control that shows it looks) and ``report.html``. The settings
are those of ``configs/quickstart/judge.yaml`` (stage 2) and ``configs/composite/judge_caption.yaml``
(stage 1).
"""

from __future__ import annotations

import html
import random
import time
from pathlib import Path
from typing import Any

from judges.composite_backend import CompositeBackend
from judges.critique_data import CritiqueExample, CritiqueWorld, read_examples
from judges.describe_first import DescribeFirstJudge
from judges.evaluation import CritiqueEvaluation, evaluate_critique_judge
from judges.pixel_training import pixel_sample
from mmreward.data.synthetic.t2i import T2IWorld
from mmreward.report import figure, metrics_table, write_html, write_metrics

VISION_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
"""The judge's image encoder: open_clip's ModifiedResNet (64 px, one block per stage, base width 16),
its ``layer2`` and ``layer3`` maps read as 8 x 8 = 64 image tokens (``ClipResNetEncoder``); the text
part of the config is required by open_clip but not built into the judge."""

QUICKSTART = {
    "train_prompts": 2000,
    "val_prompts": 20,
    "test_prompts": 120,  # 600 held-out candidates: one unparsable output moves the rate by 0.0017
    "hidden_size": 64,
    "read_out": ["layer2", "layer3"],
    "caption_steps": 3200,
    "critique_steps": 5000,
    "caption_replay": 0.25,  # the share of stage-2 examples that also give their caption
    "batch_size": 32,
    "lr": 3e-3,
    "max_new_tokens": 96,  # the judge pass: the seen line, the critique and the score line
}
"""The quick-start settings (the two configs say the same)."""


def quickstart_judge(model: str | Path, batch_size: int = 50) -> DescribeFirstJudge:
    """The quick-start judge on a model folder: describe the image, then judge the description."""
    return DescribeFirstJudge(
        CompositeBackend(str(model), device="cpu", batch_size=batch_size),
        max_new_tokens=QUICKSTART["max_new_tokens"],
    )


def train_quickstart(
    run_dir: str | Path,
    caption_steps: int = QUICKSTART["caption_steps"],
    critique_steps: int = QUICKSTART["critique_steps"],
    seed: int = 0,
) -> Path:
    """Train the pixel judge; ``run_dir`` gets ``model/`` (trained), ``base/`` (untrained) and ``data/``.

    Args:
        run_dir: The run folder.
        caption_steps: Stage-1 optimizer steps (describe the image).
        critique_steps: Stage-2 optimizer steps (judge a description; captions replayed).
        seed: Seeds the world (its prompts, scenes and held-out split) and the training.
    """
    import lightning as L
    import torch

    from judges.pixel_training import PixelJudgeDataModule, PixelJudgeSFTModule, TinyPixelJudge
    from mmreward.heads import LinearHead
    from mmreward.models import RewardModel
    from mmreward.scoring import save_pretrained

    run_dir = Path(run_dir)
    L.seed_everything(seed, verbose=False)
    world = T2IWorld(
        QUICKSTART["train_prompts"], QUICKSTART["val_prompts"], QUICKSTART["test_prompts"], seed=seed
    )
    critique_set = CritiqueWorld(world, images=["train", "val", "test"])
    data = {
        task: PixelJudgeDataModule(
            critique_set,
            task,
            str(run_dir / "data"),
            batch_size=QUICKSTART["batch_size"],
            caption_replay=QUICKSTART["caption_replay"],
        )
        for task in ("caption", "describe_then_judge")
    }
    data["describe_then_judge"].setup()
    builder = TinyPixelJudge(
        VISION_CONFIG, QUICKSTART["hidden_size"], read_out=QUICKSTART["read_out"], seed=seed
    )
    model = builder.build(run_dir / "base-lm", data["describe_then_judge"].corpus())
    save_pretrained(RewardModel(model, LinearHead(), name="pixel-judge-untrained"), run_dir / "base")
    for task, steps in (("caption", caption_steps), ("describe_then_judge", critique_steps)):
        if steps <= 0:
            continue
        module = PixelJudgeSFTModule(
            model,
            optimizer=lambda params: torch.optim.AdamW(params, lr=QUICKSTART["lr"], weight_decay=0.01),
            scheduler=lambda optimizer, n=steps: torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=QUICKSTART["lr"], total_steps=n, pct_start=0.05
            ),
        )
        L.Trainer(
            max_steps=steps,
            default_root_dir=str(run_dir),
            limit_val_batches=0,
            enable_checkpointing=False,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            accelerator="cpu",
        ).fit(module, data[task])
    PixelJudgeSFTModule(model).export(run_dir / "model")
    return run_dir


def shuffled_images(examples: list[CritiqueExample], seed: int = 0) -> list[str]:
    """Each example's image path replaced by that of an example of another prompt (the control)."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    prompt = [e.prompt for e in examples]
    for i in range(len(order)):  # swap until no example keeps an image of its own prompt
        tries = 0
        while prompt[order[i]] == prompt[i] and tries < len(order):
            j = (i + 1 + tries) % len(order)
            order[i], order[j] = order[j], order[i]
            tries += 1
    return [examples[k].image for k in order]


def evaluate(
    judge: DescribeFirstJudge, examples: list[CritiqueExample], root: Path, images: list[str] | None = None
) -> CritiqueEvaluation:
    """Judge each example from its prompt and image (``images`` replaces the images) and score the result."""
    samples = [pixel_sample(e, root, None if images is None else images[i]) for i, e in enumerate(examples)]
    return evaluate_critique_judge(judge, examples, judge.judge(samples))


def described_colours_rate(evaluation: CritiqueEvaluation, examples: list[CritiqueExample]) -> float:
    """Share of outputs whose own description of the image (``Image: ... Quality:``) names exactly the
    colours that the world's caption of the example's render names: how well the judge's eye reads colour."""
    from mmreward.data.synthetic.scenes import PALETTE

    def colours(text: str) -> set[str]:
        return {w.strip(".,") for w in text.split()} & set(PALETTE)

    hits = [
        colours(j.text.split("Quality:")[0]) == colours(e.description)
        for j, e in zip(evaluation.judgements, examples)
    ]
    return sum(hits) / len(hits)


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
            f"<td>{html.escape(judgement.text)}</td><td>{score}</td><td>{example.label}</td></tr>"
        )
    head = "<tr><th>image</th><th>corruption</th><th>reference</th><th>judge's output</th><th>expected score</th><th>true label</th></tr>"
    return "<table>" + head + "".join(cells) + "</table>"


def run(output: Path) -> dict[str, Any]:
    """Train, evaluate on held-out prompts, and write ``output/metrics.json`` and ``output/report.html``."""
    output = Path(output)
    start = time.perf_counter()
    run_dir = train_quickstart(output / "run")
    return write_report(run_dir, output, train_seconds=time.perf_counter() - start)


def write_report(run_dir: Path, output: Path, train_seconds: float | None = None) -> dict[str, Any]:
    """Evaluate the trained and untrained judges of ``run_dir`` on its test split, from pixels, with
    the shuffled-image control; write the demo files."""
    root = Path(run_dir) / "data"
    test = read_examples(root / "test.jsonl")
    judges = {name: quickstart_judge(Path(run_dir) / name) for name in ("model", "base")}
    results = {name: evaluate(judge, test, root) for name, judge in judges.items()}
    shuffled = evaluate(judges["model"], test, root, shuffled_images(test))
    metrics = {
        "trained": {
            **results["model"].metrics(),
            "described_colours_rate": described_colours_rate(results["model"], test),
        },
        "untrained": results["base"].metrics(),
        "control_shuffled_images": {
            **shuffled.metrics(),
            "described_colours_rate": described_colours_rate(shuffled, test),
        },
        "margin_over_controls": {
            "shuffled_images_spearman": results["model"].spearman - shuffled.spearman,
            "shuffled_images_hit_rate": results["model"].hit_rate - shuffled.hit_rate,
        },
        "train_seconds": None if train_seconds is None else round(train_seconds, 1),
        "judge_input": "prompt + rendered image (pixels), two passes: the judge describes the image, "
        "then judges its own description; no scene text",
    }
    write_metrics(Path(output) / "metrics.json", metrics)
    write_html(
        Path(output) / "report.html",
        "mmreward demo: critique-then-score judge from pixels",
        [
            ("Held-out metrics", metrics_table(metrics)),
            ("Trained judge on held-out prompts", _rows(test, results["model"], root)),
            ("Control: the same judge, images shuffled across prompts", _rows(test, shuffled, root, limit=5)),
            ("Untrained judge (same start)", _rows(test, results["base"], root, limit=5)),
        ],
    )
    return metrics
