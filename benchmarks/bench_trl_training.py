"""Reward-model training against TRL's ``RewardTrainer``: pairs/s, peak RSS and held-out accuracy.

Both sides train the same tiny causal LM (built from a config with random weights, saved to a temp
folder and loaded back with ``from_pretrained``; the same word-level tokenizer and chat template) on
the same preference pairs (``mmreward.data.synthetic.text.EchoWorld``: repeat-the-words prompts,
the rejected response gets a word wrong or swaps two; test prompts are unseen word combinations),
with the same batch size, number of steps, learning rate (AdamW, constant, no weight decay) and
gradient clipping:

- TRL: ``RewardTrainer`` on ``AutoModelForSequenceClassification`` (``num_labels=1``), the data in
  TRL's conversational format with an explicit prompt (so the tokens equal ours), at each setting
  given with ``--trl`` (bf16 autocast and gradient checkpointing on or off; TRL's defaults are both
  on). TRL 1.16's ``RewardTrainer`` has no padding-free option.
- mmreward: ``mmreward fit`` itself (``mmreward.cli.run_lightning``) on a config naming
  ``RewardModule`` + ``RewardModel(LMBackbone, LinearHead)`` + ``RewardDataModule``, at each
  setting given with ``--mmreward`` (Lightning precision ``32-true`` or ``bf16-mixed``; the config's
  ``torch.optim.AdamW`` fused, as mmreward's default optimizer and configs and TRL's default
  ``adamw_torch_fused`` run, or unfused with ``+unfused``). ``LMBackbone`` packs a batch into prefix-tree
  rows: no padding between samples, and the tokens samples share from their start (a pair's prompt,
  the chat header of every sample) run once (exact; ``tests/test_lm_packing.py``); ``+unpacked``
  turns that off. ``+compile`` sets ``RewardModule(compile=True)``: the backbone's forward through
  ``torch.compile(dynamic=True)``, with a fresh inductor cache per run, so the run's warm-up (the
  wall time of its first ``--warmup`` steps, printed for every run) includes the compilation.

The model is a Qwen3 (``tests/vlm_helpers.build_tiny_causal_lm``), the Qwen2 architecture plus
q/k-norm: transformers loads a ``qwen2`` folder's tokenizer as its byte-level ``Qwen2Tokenizer``
whatever the folder holds, which would drop the word-level vocabulary.

Each run is its own subprocess (peak RSS does not mix). Pairs/s counts the steps after
``--warmup`` steps, wall time from the end of the warm-up step to the end of the last step, so it
includes fetching and collating each batch: on the fly for mmreward (chat template + tokenizer),
from the pre-tokenized dataset for TRL (its tokenization, done before training, is reported apart).
Held-out accuracy: the fraction of test pairs whose chosen response scores higher, with each
trained model in eval mode. Peak RSS: ``ru_maxrss`` at the end of training; "RSS before" is the
high-water mark before the first step (imports, model, data).

``--repeats N`` runs the whole list N times, interleaved, and reports medians (for busy machines).

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_trl_training.py [--threads 2] [--steps 300]
[--repeats 2]``
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from headline import record  # noqa: E402

TRL_SETTINGS = {
    "fp32": {"bf16": False, "gradient_checkpointing": False},
    "fp32+gc": {"bf16": False, "gradient_checkpointing": True},
    "bf16": {"bf16": True, "gradient_checkpointing": False},
    "bf16+gc": {"bf16": True, "gradient_checkpointing": True},  # TRL's defaults
}
MMREWARD_SETTINGS = {
    # AdamW fused, as mmreward's default optimizer and full-size configs (and TRL's adamw_torch_fused)
    "fp32": {"precision": "32-true", "optimizer": {"fused": True}, "backbone": {}},
    "bf16": {"precision": "bf16-mixed", "optimizer": {"fused": True}, "backbone": {}},
    # the backbone's forward through torch.compile(dynamic=True) (RewardModule(compile=True))
    "fp32+compile": {"precision": "32-true", "optimizer": {"fused": True}, "backbone": {}, "compile": True},
    "bf16+compile": {
        "precision": "bf16-mixed",
        "optimizer": {"fused": True},
        "backbone": {},
        "compile": True,
    },
    # without packing: every sample in its own padded row, as TRL does
    "fp32+unpacked": {
        "precision": "32-true",
        "optimizer": {"fused": True},
        "backbone": {"shared_prefix": False},
    },
    # torch.optim.AdamW unfused (a for-each loop over the tensors)
    "fp32+unfused": {"precision": "32-true", "optimizer": {"fused": False}, "backbone": {}},
}
# bf16-mixed with fused AdamW and clipping: RewardModule clips itself (Lightning's plugin refuses the pair)


def max_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def chat_ids(tokenizer, prompt: str, response: str) -> list[int]:
    """Token ids of one (prompt, response) chat, rendered as both trainers render it."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def warmup_seconds(start: float, stamps: list[float], warmup: int) -> float:
    """Wall time from the start of training to the end of the warm-up steps (compilation included)."""
    return stamps[warmup - 1] - start


def pairs_per_second(stamps: list[float], warmup: int, batch_size: int) -> float:
    """Pairs/s from the end-of-step times, counting the steps after the warm-up."""
    timed = len(stamps) - warmup
    if timed < 1:
        raise ValueError(f"--steps must exceed --warmup ({warmup}); got {len(stamps)} steps.")
    return timed * batch_size / (stamps[-1] - stamps[warmup - 1])


# -- TRL ------------------------------------------------------------------------------------------


def run_trl(args: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    from mmreward.data.records import read_records

    setting = TRL_SETTINGS[args.setting]

    def conversational(path: str) -> Dataset:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        return Dataset.from_list(
            [
                {
                    "prompt": [{"role": "user", "content": r["prompt"]}],
                    "chosen": [{"role": "assistant", "content": r["chosen"]}],
                    "rejected": [{"role": "assistant", "content": r["rejected"]}],
                }
                for r in rows
            ]
        )

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.stamps: list[float] = []
            self.start = 0.0

        def on_train_begin(self, *_, **__) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__) -> None:
            self.stamps.append(time.perf_counter())

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model_dir, num_labels=1, dtype=torch.float32
    )
    config = RewardConfig(
        output_dir=str(Path(args.workdir) / f"trl-{args.setting}"),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=args.seed,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=max(args.steps, 1),
        disable_tqdm=True,
        dataloader_num_workers=0,
        **setting,
    )
    clock = StepClock()
    start = time.perf_counter()
    trainer = RewardTrainer(
        model=model,
        args=config,
        train_dataset=conversational(args.train),
        processing_class=tokenizer,
        callbacks=[clock],
    )
    prep_s = time.perf_counter() - start
    rss_before = max_rss_mb()
    trainer.train()
    rss_peak = max_rss_mb()

    # the tokens TRL trains on must be the ones mmreward renders
    first = trainer.train_dataset[0]
    record = read_records(args.train)[0]
    assert first["chosen_ids"] == chat_ids(tokenizer, record.chosen.prompt, record.chosen.response)

    model = trainer.model.eval()
    test = read_records(args.test)
    hits = []
    with torch.no_grad():
        for i in range(0, len(test), 100):
            chunk = test[i : i + 100]
            ids = [chat_ids(tokenizer, p.chosen.prompt, p.chosen.response) for p in chunk]
            ids += [chat_ids(tokenizer, p.rejected.prompt, p.rejected.response) for p in chunk]
            batch = tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
            logits = model(**batch).logits.squeeze(-1)
            hits.append(logits[: len(chunk)] > logits[len(chunk) :])
    return {
        "pairs_per_s": pairs_per_second(clock.stamps, args.warmup, args.batch_size),
        "warmup_s": warmup_seconds(clock.start, clock.stamps, args.warmup),
        "accuracy": float(torch.cat(hits).float().mean()),
        "rss_before_mb": rss_before,
        "rss_peak_mb": rss_peak,
        "prep_s": prep_s,
        "steps": len(clock.stamps),
    }


# -- mmreward -------------------------------------------------------------------------------------


def mmreward_config(args: argparse.Namespace) -> dict:
    """The ``mmreward fit`` config of this run (what a user writes in YAML)."""
    setting = MMREWARD_SETTINGS[args.setting]
    return {
        "seed_everything": args.seed,
        "model": {
            "class_path": "mmreward.training.RewardModule",
            "init_args": {
                "model": {
                    "class_path": "mmreward.models.RewardModel",
                    "init_args": {
                        "backbone": {
                            "class_path": "modalities.backbones.lm.LMBackbone",
                            "init_args": {
                                "model_name_or_path": args.model_dir,
                                "pooling": "last",
                                **setting["backbone"],
                            },
                        },
                        "head": {"class_path": "mmreward.heads.LinearHead"},
                    },
                },
                "optimizer": {
                    "class_path": "torch.optim.AdamW",
                    "init_args": {"lr": args.lr, "weight_decay": 0.0, **setting["optimizer"]},
                },
                "compile": setting.get("compile", False),
            },
        },
        "data": {
            "class_path": "mmreward.training.RewardDataModule",
            "init_args": {"train": args.train, "batch_size": args.batch_size},
        },
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": args.steps,
            "precision": setting["precision"],
            "gradient_clip_val": 1.0,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": str(Path(args.workdir) / f"mmreward-{args.setting}"),
            "callbacks": [{"class_path": "bench_trl_training.LightningStepClock"}],
        },
    }


@functools.cache
def _lightning_step_clock() -> type:
    import lightning as L

    class LightningStepClock(L.Callback):
        """End-of-step times, and the peak RSS before the first step and after the last."""

        def __init__(self) -> None:
            self.stamps: list[float] = []
            self.rss_before = self.rss_peak = self.start = 0.0

        def on_train_start(self, *_) -> None:
            self.rss_before = max_rss_mb()
            self.start = time.perf_counter()

        def on_train_batch_end(self, *_) -> None:
            self.stamps.append(time.perf_counter())

        def on_train_end(self, *_) -> None:
            self.rss_peak = max_rss_mb()

    return LightningStepClock


def __getattr__(name: str):
    # built on first use (the config names it by import path), so the TRL runs never import lightning
    if name == "LightningStepClock":
        return _lightning_step_clock()
    raise AttributeError(name)


def run_mmreward(args: argparse.Namespace) -> dict:
    import torch
    import yaml

    from mmreward.cli import run_lightning
    from mmreward.data.records import read_records
    from mmreward.scoring import Scorer

    path = Path(args.workdir) / f"mmreward-{args.setting}.yaml"
    path.write_text(yaml.safe_dump(mmreward_config(args), sort_keys=False))
    cli = run_lightning(["fit", "--config", str(path)])
    clock = next(c for c in cli.trainer.callbacks if type(c).__name__ == "LightningStepClock")
    scorer = Scorer(cli.model.model, device="cpu", batch_size=200)
    test = read_records(args.test)
    hits = []
    for i in range(0, len(test), 100):
        chunk = test[i : i + 100]
        score = scorer.forward([p.chosen for p in chunk] + [p.rejected for p in chunk]).score
        hits.append(score[: len(chunk)] > score[len(chunk) :])
    return {
        "pairs_per_s": pairs_per_second(clock.stamps, args.warmup, args.batch_size),
        "warmup_s": warmup_seconds(clock.start, clock.stamps, args.warmup),
        "accuracy": float(torch.cat(hits).float().mean()),
        "rss_before_mb": clock.rss_before,
        "rss_peak_mb": clock.rss_peak,
        "prep_s": 0.0,
        "steps": len(clock.stamps),
    }


# -- driver ---------------------------------------------------------------------------------------


def summarize(results: list[dict]) -> dict[tuple[str, str], dict]:
    """Per (path, setting): median and best pairs/s over the repeats; accuracy and peak RSS (which do
    not depend on the machine's load) from the first run."""
    summary: dict[tuple[str, str], dict] = {}
    for r in results:
        row = summary.setdefault((r["path"], r["setting"]), {**r, "speeds": []})
        row["speeds"].append(r["pairs_per_s"])
    for row in summary.values():
        speeds = sorted(row["speeds"])
        mid = len(speeds) // 2
        row["median"] = speeds[mid] if len(speeds) % 2 else (speeds[mid - 1] + speeds[mid]) / 2
        row["best"] = speeds[-1]
    return summary


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    result = run_trl(args) if args.worker == "trl" else run_mmreward(args)
    result.update(path=args.worker, setting=args.setting, load=os.getloadavg()[0])
    print("RESULT " + json.dumps(result), flush=True)


def spawn(args: argparse.Namespace, path: str, setting: str, files: dict) -> dict:
    command = [
        sys.executable, str(Path(__file__).resolve()), "--worker", path, "--setting", setting,
        "--model-dir", files["model"], "--train", files["train"], "--test", files["test"],
        "--workdir", files["workdir"], "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--threads", str(args.threads),
        "--seed", str(args.seed),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    # a fresh inductor cache per run, so a compiled run's warm-up always includes the compilation
    env["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-", dir=files["workdir"])
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-5000:])
        raise RuntimeError(
            f"the {path} {setting} run failed (exit status {done.returncode}); its output is above."
        )
    return json.loads(lines[-1][len("RESULT ") :])


def prepare(args: argparse.Namespace, workdir: Path) -> dict:
    from mmreward.data.synthetic.text import EchoWorld
    from tests.vlm_helpers import build_tiny_causal_lm

    model = build_tiny_causal_lm(
        workdir / "lm", hidden_size=args.hidden, num_layers=args.layers, seed=args.seed
    )
    paths = EchoWorld(
        train_pairs=args.train_pairs, val_pairs=0, test_pairs=args.test_pairs, seed=args.seed
    ).write(workdir / "data")
    return {
        "model": str(model),
        "train": str(paths["train"]),
        "test": str(paths["test"]),
        "workdir": str(workdir),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20, help="steps left out of pairs/s")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--train-pairs", type=int, default=2000)
    parser.add_argument("--test-pairs", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--trl",
        default="fp32,bf16",
        help=f"TRL settings, of {list(TRL_SETTINGS)} (gradient checkpointing only slows a step: it is "
        "left out by default)",
    )
    parser.add_argument(
        "--mmreward",
        default="fp32,fp32+compile,fp32+unpacked",
        help=f"mmreward settings, of {list(MMREWARD_SETTINGS)}",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="run the whole list this many times, interleaved; ratios are of medians",
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    # internal: one run in a subprocess
    parser.add_argument("--worker", choices=["trl", "mmreward"], help=argparse.SUPPRESS)
    parser.add_argument("--setting", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--train", help=argparse.SUPPRESS)
    parser.add_argument("--test", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    runs = [("trl", s) for s in args.trl.split(",") if s] + [
        ("mmreward", s) for s in args.mmreward.split(",") if s
    ]
    for path, setting in runs:
        known = TRL_SETTINGS if path == "trl" else MMREWARD_SETTINGS
        if setting not in known:
            parser.error(f"unknown --{path} setting {setting!r}; choose from {', '.join(known)}")
    print(
        f"{args.steps} steps x {args.batch_size} pairs (pairs/s after {args.warmup} warm-up steps), lr {args.lr}, "
        f"Qwen3 hidden {args.hidden} x {args.layers} layers, {args.threads} threads, {args.repeats} repeat(s), "
        f"load {os.getloadavg()}"
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        files = prepare(args, Path(tmp))
        for repeat in range(args.repeats):
            for path, setting in runs:
                r = spawn(args, path, setting, files)
                results.append({**r, "repeat": repeat})
                print(
                    f"{path:>8} {setting:<20} {r['pairs_per_s']:8.1f} pairs/s  acc {r['accuracy']:.3f}  "
                    f"first {args.warmup} steps {r['warmup_s']:.1f} s  "
                    f"RSS before {r['rss_before_mb']:6.0f} MiB, peak {r['rss_peak_mb']:6.0f} MiB  "
                    f"prep {r['prep_s']:.2f} s  load {r['load']:.2f}",
                    flush=True,
                )
    summary = summarize(results)
    if args.repeats > 1:
        print("median (best) pairs/s over the repeats:")
        for (path, setting), row in summary.items():
            print(f"{path:>8} {setting:<20} {row['median']:8.1f} ({row['best']:.1f})")
    trl = {k: v for k, v in summary.items() if k[0] == "trl"}
    ours = {k: v for k, v in summary.items() if k[0] == "mmreward"}
    if trl and ours:
        best_key = max(trl, key=lambda k: trl[k]["median"])
        best = trl[best_key]
        for (_, setting), row in ours.items():
            print(
                f"mmreward {setting} / TRL best ({best_key[1]}): {row['median'] / best['median']:.2f}x pairs/s "
                f"(best runs {row['best'] / best['best']:.2f}x), accuracy {row['accuracy']:.3f} vs "
                f"{best['accuracy']:.3f}, peak RSS {row['rss_peak_mb']:.0f} vs {best['rss_peak_mb']:.0f} MiB"
            )
            record(
                f"mmreward_{setting}_vs_trl_best",
                f"pairs/s, `mmreward fit` ({setting}) vs TRL `RewardTrainer` at its best setting here "
                f"({best_key[1]}), Qwen3 hidden {args.hidden} x {args.layers} layers, echo world, "
                f"{args.steps} steps x {args.batch_size} pairs, medians of {args.repeats} interleaved run(s)",
                row["median"] / best["median"],
                ours=row["median"],
                baseline=best["median"],
                unit="pairs/s",
                details="results/trl_training.md",
                threads=args.threads,
                extra={
                    "best runs": f"{row['best'] / best['best']:.2f}x",
                    "held-out accuracy": f"{row['accuracy']:.3f} vs {best['accuracy']:.3f}",
                    "peak RSS": f"{row['rss_peak_mb']:.0f} vs {best['rss_peak_mb']:.0f} MiB",
                    f"first {args.warmup} steps": f"{row['warmup_s']:.1f} vs {best['warmup_s']:.1f} s",
                },
            )
    print(f"load average at the end: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
