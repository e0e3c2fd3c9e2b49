"""Training on two processes (gloo, CPU) matches one process at the same global batch, and resumes.

Each multi-process run is a real ``mmreward fit --config`` launched as a subprocess (Lightning starts
the second rank); the one-process references run in this process. Every run traces, per rank and
micro-batch, the optimizer step, the loss and the record ids (``Trace``), so a test compares loss
curves and the data order step by step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

import mmreward as mr
from mmreward.cli import main
from mmreward.data.records import read_records
from mmreward.data.synthetic.text import EchoWorld
from mmreward.distributed import ResumableDataLoader, ResumableSampler
from tests.core_helpers import TINY_CLIP, write_colour_world
from tests.vlm_helpers import build_tiny_causal_lm, torch_threads

REPO = Path(__file__).resolve().parents[1]
STEPS, BATCH = 20, 4  # 4 records per device; one process accumulates 2 batches (the same global batch)
# Fused AdamW: its CPU kernel rounds each element alike wherever a tensor starts, so FSDP's flat shards
# update exactly as whole tensors do. The foreach kernel differs by ~1e-7 at shard boundaries. And heads
# without an output bias: a pairwise loss cannot see a shift of all scores, so the bias gets no gradient
# and Adam turns rounding noise there into full-size steps; with it, one-thread runs exported scores
# 2e-4 apart (losses 5e-8 apart).
OPTIMIZER = {"class_path": "torch.optim.AdamW", "init_args": {"fused": True}}
STRATEGIES = {
    "ddp": {"class_path": "lightning.pytorch.strategies.DDPStrategy", "init_args": {"process_group_backend": "gloo"}},
    "fsdp": {"class_path": "mmreward.distributed.RewardFSDPStrategy", "init_args": {"process_group_backend": "gloo"}},
}  # fmt: skip


class Trace(L.Callback):
    """Writes one JSON line per micro-batch and rank: optimizer step, the rank's loss, record ids."""

    def __init__(self, path: str, kill_at_step: int | None = None) -> None:
        self.path, self.kill_at_step = Path(path), kill_at_step

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        if trainer.global_step == self.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash: no teardown, no last checkpoint
        self.step = trainer.global_step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        line = {"step": self.step, "loss": float(outputs["loss"]), "ids": list(batch.ids)}
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")


def read_trace(path: Path) -> dict[int, dict]:
    """Per optimizer step: the global loss (mean over ranks, summed over accumulated micro-batches;
    Lightning divides each by the accumulation count) and the ids of every record in it."""
    steps: dict[int, dict] = {}
    ranks = sorted(path.glob("rank*.jsonl"))
    for rank in ranks:
        for line in map(json.loads, rank.read_text().splitlines()):
            step = steps.setdefault(line["step"], {"loss": 0.0, "ids": []})
            step["loss"] += line["loss"] / len(ranks)
            step["ids"] += line["ids"]
    return steps


def clip_model() -> dict:
    backbone = {
        "class_path": "modalities.backbones.clip.ClipBackbone",
        "init_args": {"model_name": "tiny", "model_config": TINY_CLIP},
    }
    head = {"class_path": "mmreward.heads.LinearHead", "init_args": {"bias": False}}
    return {"backbone": backbone, "head": head, "name": "colours"}


def lm_model(path: Path) -> dict:
    backbone = {
        "class_path": "modalities.backbones.lm.LMBackbone",
        "init_args": {"model_name_or_path": str(path), "pooling": "reward_token"},
    }
    head = {"class_path": "mmreward.heads.MLPHead", "init_args": {"hidden_size": 32, "bias": False}}
    return {"backbone": backbone, "head": head, "name": "echo"}


def write_config(root: Path, model: dict, lr: float, devices: int, strategy: str, **trainer) -> Path:
    """A recipe like configs/scale/ with a tiny model; `accumulate` makes up the global batch on one process."""
    callbacks = trainer.pop("callbacks", [])
    config = {
        "seed_everything": 0,
        "model": {
            "class_path": "mmreward.training.RewardModule",
            "init_args": {
                "model": {"class_path": "mmreward.models.RewardModel", "init_args": model},
                "optimizer": {**OPTIMIZER, "init_args": {**OPTIMIZER["init_args"], "lr": lr}},
            },
        },
        "data": {
            "class_path": "mmreward.training.RewardDataModule",
            "init_args": {
                "train": str(root / "train.jsonl"),
                "val": str(root / "val.jsonl"),
                "batch_size": BATCH,
            },
        },
        "trainer": {
            "accelerator": "cpu",
            "devices": devices,
            "strategy": STRATEGIES.get(strategy, strategy),
            "accumulate_grad_batches": 2 // devices,
            "max_steps": STEPS,
            "num_sanity_val_steps": 0,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "callbacks": callbacks,
            **trainer,
        },
    }
    path = root / f"{strategy}-{devices}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def trace(path: Path, **kwargs) -> dict:
    return {"class_path": "tests.test_distributed.Trace", "init_args": {"path": str(path), **kwargs}}


def fit_one_process(root: Path, model: dict, lr: float) -> Path:
    """The reference: one process, the same global batch (4 records x 2 accumulated micro-batches)."""
    run = root / "one"
    config = write_config(root, model, lr, 1, "auto", callbacks=[trace(run / "trace")])
    with torch_threads(1):
        main(["fit", "--config", str(config), "--trainer.default_root_dir", str(run)])
    return run


def fit_two_processes(
    config: Path, run: Path, *extra: str, check: bool = True
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "mmreward.cli", "fit", "--config", str(config)]
    done = subprocess.run(
        [*command, "--trainer.default_root_dir", str(run), *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, done.stderr[-4000:]
    return done


def assert_same_training(one: dict, two: dict, steps: range) -> None:
    for step in steps:
        assert sorted(two[step]["ids"]) == sorted(one[step]["ids"]), f"step {step} saw other records"
        assert two[step]["loss"] == pytest.approx(one[step]["loss"], abs=1e-3), f"step {step}"
    gap = max(abs(two[s]["loss"] - one[s]["loss"]) for s in steps)
    print(f"steps {steps.start}-{steps.stop - 1}: loss {one[steps.start]['loss']:.4f} -> "
          f"{one[steps.stop - 1]['loss']:.4f}, largest gap to one process {gap:.2e}")  # fmt: skip


def assert_same_scores(run: Path, reference: Path, data: Path) -> None:
    records = read_records(data)
    gap = float((exported_scores(run, records) - exported_scores(reference, records)).abs().max())
    print(f"exported scores: largest gap to one process {gap:.2e}")
    assert gap < 1e-5


def exported_scores(run: Path, records) -> torch.Tensor:
    scorer = mr.load(run / "model", device="cpu")
    return scorer.forward([r.chosen for r in records] + [r.rejected for r in records]).score


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("colours")
    write_colour_world(root, 48, seed=1, name="train")  # 6 steps an epoch at 8 records a step
    write_colour_world(root, 8, seed=2, name="val")
    return root


@pytest.fixture(scope="module")
def clip_reference(colours: Path) -> Path:
    return fit_one_process(colours, clip_model(), lr=2e-3)


def test_ddp_matches_one_process_and_resumes_after_a_kill_mid_epoch(colours: Path, clip_reference: Path):
    run = colours / "ddp"
    periodic = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"every_n_train_steps": 5, "save_top_k": -1, "filename": "{step}", "dirpath": str(run / "steps")},
    }  # fmt: skip
    killed = write_config(
        colours, clip_model(), 2e-3, 2, "ddp", callbacks=[periodic, trace(run / "a", kill_at_step=12)]
    )
    done = fit_two_processes(killed, run, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr[-4000:]
    assert not (run / "model").exists()
    last = run / "steps" / "step=10.ckpt"  # epoch 2 of 6 batches, 4 batches in: mid-epoch
    resumed = write_config(colours, clip_model(), 2e-3, 2, "ddp", callbacks=[periodic, trace(run / "b")])
    fit_two_processes(resumed, run, "--ckpt_path", str(last))

    one, before, after = read_trace(clip_reference / "trace"), read_trace(run / "a"), read_trace(run / "b")
    assert sorted(after) == list(range(10, STEPS))  # it went on from step 10, not from the start
    assert_same_training(one, before, range(10))
    assert_same_training(one, after, range(10, STEPS))  # same order, same optimizer state
    assert_same_scores(run, clip_reference, colours / "val.jsonl")


def test_fsdp_matches_one_process(colours: Path, clip_reference: Path):
    run = colours / "fsdp"
    config = write_config(colours, clip_model(), 2e-3, 2, "fsdp", callbacks=[trace(run / "trace")])
    fit_two_processes(config, run)
    assert_same_training(read_trace(clip_reference / "trace"), read_trace(run / "trace"), range(STEPS))
    assert_same_scores(run, clip_reference, colours / "val.jsonl")


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("echo")
    paths = EchoWorld(train_pairs=48, val_pairs=8, test_pairs=1, seed=0).write(root / "data")
    for split in ("train", "val"):
        (root / f"{split}.jsonl").write_text(Path(paths[split]).read_text())
    lm = build_tiny_causal_lm(root / "lm", hidden_size=32)
    return root, fit_one_process(root, lm_model(lm), lr=3e-3)


@pytest.mark.parametrize("strategy", [pytest.param("ddp", marks=pytest.mark.slow), "fsdp"])
def test_lm_reward_model_on_two_processes_matches_one(echo: tuple[Path, Path], strategy: str):
    root, reference = echo
    run = root / strategy
    config = write_config(root, lm_model(root / "lm"), 3e-3, 2, strategy, callbacks=[trace(run / "trace")])
    fit_two_processes(config, run)
    assert_same_training(read_trace(reference / "trace"), read_trace(run / "trace"), range(STEPS))
    assert_same_scores(run, reference, root / "val.jsonl")


def test_ranks_deal_out_one_process_micro_batches_and_resume_at_any_world_size():
    records = list(range(30))
    one = ResumableSampler(records, num_replicas=1, rank=0, batch_size=4, seed=3)
    one.set_epoch(2)
    order = list(one)
    ranks = [ResumableSampler(records, num_replicas=2, rank=r, batch_size=4, seed=3) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(2)
    shards = [list(s) for s in ranks]
    assert sorted(order) == records and [len(s) for s in shards] == [15, 15]
    for step in range(3):  # one process accumulating 2 batches of 4 == rank 0's batch, then rank 1's
        assert shards[0][4 * step : 4 * step + 4] == order[8 * step : 8 * step + 4]
        assert shards[1][4 * step : 4 * step + 4] == order[8 * step + 4 : 8 * step + 8]
    assert shards[0][12:] + shards[1][12:] == order[24:]  # the last, short global batch split evenly
    # two ranks stop after 2 batches of 4; one process with batches of 8 resumes at record 16 of the epoch
    loader = ResumableDataLoader(records, ranks[0], batch_size=4)
    iterator = iter(loader)
    next(iterator), next(iterator)
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches": 2, "samples": 16, "seed": 3}
    again = ResumableDataLoader(records, ResumableSampler(records, 1, 0, batch_size=8, seed=3), batch_size=8)
    again.load_state_dict(state)
    assert [b.tolist() for b in again][0] == order[16:24]
    assert again.state_dict()["batches"] == 4  # the skipped batches count: the epoch is 4 batches long
    odd = ResumableDataLoader(records, ResumableSampler(records, 1, 0, batch_size=5, seed=3), batch_size=5)
    with pytest.raises(ValueError, match="does not split into batches of 5"):
        odd.load_state_dict(state)


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "configs" / "scale").glob("*.yaml")))
def test_scale_recipes_parse(recipe: str, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(REPO / "configs" / "scale" / recipe), "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    trainer = printed["trainer"]
    assert trainer["precision"] == "bf16-mixed"
    assert trainer["callbacks"][0]["init_args"]["every_n_train_steps"]
