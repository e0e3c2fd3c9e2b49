"""ABLATION: the critique judge that reads a ground-truth scene description instead of the image.

The judge of ``judges.tiny.TinyJudgeLM`` reads the prompt and ``CritiqueExample.description`` (a
caption written from the rendered scene, ``judges.critique_data.describe_scene``) as the response.
The caption holds the answer, so this judge's figures measure text comparison, not seeing: it is
the upper bound the pixel judge (``judges.pixel_training``, ``mmreward demo --task judge``) would
reach with a perfect eye. It is out of the demo and out of the default config; never judge images
with it. Config: ``configs/composite/ablation_scene_text_judge.yaml``.
"""

from __future__ import annotations

from pathlib import Path

from judges.critique_data import CritiqueWorld
from judges.tiny import TinyJudgeLM
from mmreward.data.synthetic.t2i import T2IWorld

SETTINGS = {
    "train_prompts": 2000,
    "val_prompts": 20,
    "test_prompts": 30,
    "hidden_size": 64,
    "steps": 2000,
    "batch_size": 32,
    "lr": 3e-3,
}
"""The settings of the former quick start (held-out Spearman 0.91, docs/judges.md)."""


def train_scene_text_judge(run_dir: str | Path, steps: int = SETTINGS["steps"], seed: int = 0) -> Path:
    """Train the scene-text judge; ``run_dir`` gets ``model/`` and ``base/`` (``TransformersBackend``
    folders) and ``data/``. Judge it with ``CritiqueExample.sample()``, whose response is the caption."""
    import lightning as L
    import torch

    from judges.training import JudgeDataModule, JudgeSFTModule

    run_dir = Path(run_dir)
    L.seed_everything(seed, verbose=False)
    world = T2IWorld(SETTINGS["train_prompts"], SETTINGS["val_prompts"], SETTINGS["test_prompts"], seed=seed)
    data = JudgeDataModule(synthetic=CritiqueWorld(world, images=["test"]), batch_size=SETTINGS["batch_size"])
    module = JudgeSFTModule(
        TinyJudgeLM(hidden_size=SETTINGS["hidden_size"], seed=seed),
        optimizer=lambda params: torch.optim.AdamW(params, lr=SETTINGS["lr"], weight_decay=0.01),
        scheduler=lambda optimizer: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps),
    )
    L.Trainer(
        max_steps=steps,
        default_root_dir=str(run_dir),
        val_check_interval=500,
        check_val_every_n_epoch=None,
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    ).fit(module, data)
    module.export(run_dir / "model")
    return run_dir
