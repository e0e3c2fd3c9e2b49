"""Training through the CLI on a user's own data, checkpoint export, and DDP metric reduction."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import mmreward as mr
from mmreward.cli import main
from mmreward.data.records import read_records
from mmreward.evaluation import evaluate
from tests.core_helpers import TINY_CLIP, write_colour_world


def colour_config(root: Path, seed: int = 0, **trainer) -> Path:
    """A config that names no data: the test passes its files with --data.train/--data.val."""
    config = {
        "seed_everything": seed,
        "model": {
            "class_path": "mmreward.training.RewardModule",
            "init_args": {
                "model": {
                    "class_path": "mmreward.models.RewardModel",
                    "init_args": {
                        "backbone": {
                            "class_path": "modalities.backbones.clip.ClipBackbone",
                            "init_args": {"model_name": "tiny", "model_config": TINY_CLIP},
                        },
                        "head": {"class_path": "mmreward.heads.LinearHead"},
                        "name": "colours",
                    },
                },
                "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.002}},
            },
        },
        "data": {"class_path": "mmreward.training.RewardDataModule", "init_args": {"batch_size": 32}},
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "enable_progress_bar": False,
            "logger": False,
            **trainer,
        },
    }
    path = root / "colours.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    seed = int(os.environ.get("MMREWARD_SEED", "0"))  # the seed sweep's other seeds (conftest.learning_seed)
    root = tmp_path_factory.mktemp("colours")
    train = write_colour_world(root, 192, seed=1 + 10 * seed, name="train")
    val = write_colour_world(root, 48, seed=2 + 10 * seed, name="val")
    config = colour_config(root, seed, max_epochs=3)
    main(
        [
            "fit",
            "--config",
            str(config),
            "--data.train",
            str(train),
            "--data.val",
            str(val),
            "--trainer.default_root_dir",
            str(root / "run"),
        ]
    )
    return root


def test_fit_on_own_data_exports_a_model_that_ranks_held_out_pairs(
    trained: Path, learning_seed, record_property
):
    test = write_colour_world(trained, 64, seed=3 + 10 * learning_seed, name="test")
    scorer = mr.load(trained / "run" / "model", device="cpu")
    metrics = evaluate(scorer, read_records(test))
    record_property("training.colour.heldout_accuracy", metrics["pairs"]["accuracy"])
    assert metrics["pairs"]["accuracy"] >= 0.9, metrics


def test_checkpoint_and_exported_folder_score_alike(trained: Path):
    ckpt = next((trained / "run").rglob("best.ckpt"))
    records = read_records(trained / "val.jsonl")[:10]
    samples = [r.chosen for r in records] + [r.rejected for r in records]
    from_dir = mr.load(trained / "run" / "model", device="cpu").score(samples=samples)
    from_ckpt = mr.load(ckpt, device="cpu").score(samples=samples)
    assert from_dir == pytest.approx(from_ckpt, abs=1e-5)


def test_score_command_writes_as_it_goes_resumes_and_skips_bad(trained: Path, capsys: pytest.CaptureFixture):
    data = trained / "score_in.jsonl"
    lines = (trained / "val.jsonl").read_text().splitlines()[:6]
    bad = json.loads(lines[1])
    bad["chosen"]["image"] = "img/nope.png"
    (trained / "img" / "corrupt.png").write_bytes(b"garbage")
    corrupt = json.loads(lines[3])
    corrupt["rejected"]["image"] = "img/corrupt.png"
    data.write_text(
        "\n".join([lines[0], json.dumps(bad), lines[2], json.dumps(corrupt), lines[4], lines[5]]) + "\n"
    )
    out = trained / "scores.jsonl"
    model = str(trained / "run" / "model")
    with pytest.raises(FileNotFoundError, match=r"score_in.jsonl:2 \(id val-1\) field 'chosen.image'"):
        main(["score", "--model", model, "--input", str(data), "--output", str(out)])
    main(
        [
            "score",
            "--model",
            model,
            "--input",
            str(data),
            "--output",
            str(out),
            "--skip-bad",
            "--batch-size",
            "2",
        ]
    )
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts == {"scored": 4, "skipped_done": 0, "bad": 2}
    written = [json.loads(x) for x in out.read_text().splitlines()]
    assert [w["line"] for w in written] == [1, 3, 5, 6]
    assert all(w["chosen"]["score"] > w["rejected"]["score"] for w in written)
    # an interrupted run: drop the last two lines and cut the next; --resume scores only what is missing
    kept = out.read_text().splitlines(keepends=True)[:2]
    out.write_text("".join(kept) + '{"line": 5, "chos')
    main(["score", "--model", model, "--input", str(data), "--output", str(out), "--skip-bad", "--resume"])
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts["scored"] == 2 and counts["skipped_done"] == 2
    assert [json.loads(x)["line"] for x in out.read_text().splitlines()] == [1, 3, 5, 6]


DDP_SCRIPT = """
import json, sys
import lightning as L
from mmreward.training import RewardDataModule, RewardModule
from tests.core_helpers import tiny_reward_model

class Capture(L.Callback):
    def on_validation_end(self, trainer, module):
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        open(sys.argv[2] + f"/rank{trainer.global_rank}.json", "w").write(json.dumps(metrics))

data = RewardDataModule(train=sys.argv[1] + "/train.jsonl", val=sys.argv[1] + "/val.jsonl", batch_size=8)
trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=2, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, callbacks=[Capture()])
trainer.fit(RewardModule(tiny_reward_model()), datamodule=data)
"""


def test_two_process_ddp_reduces_metrics_over_all_ranks(tmp_path: Path):
    write_colour_world(tmp_path, 16, seed=1, name="train")
    write_colour_world(tmp_path, 20, seed=2, name="val")  # 10 pairs per rank
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    repo = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(tmp_path)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": str(repo)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank0["val/pairs"] == 20.0  # each rank saw 10 pairs; the metric counts all 20
    assert rank0["val/accuracy"] == pytest.approx(rank1["val/accuracy"])


def test_rankings_train_and_validate_with_plackett_luce(tmp_path: Path):
    import lightning as L

    from mmreward.training import RewardDataModule, RewardModule
    from tests.core_helpers import tiny_reward_model

    pairs = [
        json.loads(x) for x in write_colour_world(tmp_path, 12, seed=4, name="r").read_text().splitlines()
    ]
    rankings = [
        {
            "prompt": p["prompt"],
            "candidates": [p["rejected"], p["chosen"], q["rejected"]],
            "ranking": [1, 0, 2],
        }
        for p, q in zip(pairs, pairs[1:] + pairs[:1])
    ]
    path = tmp_path / "rankings.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rankings))
    seen = {}

    class Capture(L.Callback):
        def on_validation_end(self, trainer, module):
            seen.update({k: float(v) for k, v in trainer.callback_metrics.items()})

    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[Capture()],
    )
    trainer.fit(
        RewardModule(tiny_reward_model()),
        datamodule=RewardDataModule(train=str(path), val=str(path), batch_size=4),
    )
    assert 0.0 <= seen["val/ranking_accuracy"] <= 1.0 and seen["val/metric"] == seen["val/ranking_accuracy"]
    assert seen["train/plackett_luce"] > 0


class _NormRecordingAdamW(torch.optim.AdamW):
    """Fused AdamW that records the gradient norm it steps on (after Lightning's clipping)."""

    def __init__(self, params, **kwargs) -> None:
        super().__init__(params, fused=True, **kwargs)
        self.norms: list[float] = []

    def step(self, closure=None):
        loss = closure() if closure is not None else None  # backward, then clipping
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([x.norm() for x in grads]))))
        super().step()
        return loss


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_fused_adamw_is_the_default_and_clips_under_bf16(tmp_path: Path, precision: str):
    """Lightning's mixed-precision plugin refuses clipping with a fused optimizer; with bf16 (no loss
    scaler) ``RewardModule`` clips itself, so the norm each step sees is at most the clip value."""
    import lightning as L

    from mmreward.training import RewardDataModule, RewardModule, _adamw
    from tests.core_helpers import tiny_reward_model

    assert _adamw(tiny_reward_model().parameters()).defaults["fused"] is True
    path = write_colour_world(tmp_path, 16, seed=5, name="clip")
    made = []

    def optimizer(params):
        made.append(_NormRecordingAdamW(params, lr=1e-3))
        return made[-1]

    trainer = L.Trainer(
        accelerator="cpu", max_steps=3, precision=precision, gradient_clip_val=1e-3, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(
        RewardModule(tiny_reward_model(), optimizer=optimizer),
        datamodule=RewardDataModule(train=str(path), batch_size=4),
    )
    norms = made[0].norms
    assert len(norms) == 3 and all(0 < n <= 1e-3 * 1.01 for n in norms), norms
