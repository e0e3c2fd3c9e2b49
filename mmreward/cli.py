"""The ``mmreward`` command: ``fit|validate|test|predict`` (LightningCLI), ``score``, ``eval``, ``demo``."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
USAGE = """usage: mmreward COMMAND ...

commands:
  fit|validate|test|predict --config CONFIG.yaml [--data.train T.jsonl ...]   (LightningCLI)
  score   --model DIR --input DATA.jsonl --output SCORES.jsonl [--resume] [--skip-bad]
  eval    --model DIR --data FILE [--format NAME] [--output METRICS.json]
  demo    [--task NAME] [--output DIR]
"""
TRUST_HELP = "build any class the model's config names (only for a model folder you trust)"


def export_trained(trainer, module) -> Path | None:
    """Load the best checkpoint's weights into ``module`` and save it to ``<default_root_dir>/model``.

    A module with its own ``export(directory)`` (e.g. a judge's SFT module) is asked to do it;
    otherwise its ``model`` is saved with ``mmreward.scoring.save_pretrained``.
    """
    import torch

    from mmreward.scoring import save_pretrained

    if not trainer.is_global_zero:
        return None
    callback = trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "") if callback is not None else ""
    if best:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    directory = Path(trainer.default_root_dir) / "model"
    if callable(getattr(module, "export", None)):
        module.export(directory)
    else:
        save_pretrained(
            module.model,
            directory,
            metadata={"name": getattr(module.model, "name", "reward-model"), "checkpoint": best},
        )
    print(f"mmreward: exported the {'best' if best else 'last'} model to {directory}")
    return directory


def run_lightning(argv: list[str]):
    """Run LightningCLI in subclass mode: a config names its LightningModule and DataModule."""
    import warnings

    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    class RewardCLI(LightningCLI):
        def after_fit(self) -> None:
            export_trained(self.trainer, self.model)

    # `args` is how the console script passes its own argv; Lightning warns about that on purpose
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    checkpoint = ModelCheckpoint(monitor="val/metric", mode="max", save_top_k=1, filename="best")
    return RewardCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,
        trainer_defaults={"callbacks": [checkpoint]},
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


def build_reward(path: str, init_args: str = "{}"):
    """The reward ``mmreward score --reward PATH --reward-args JSON`` names: its class, built with the args."""
    from mmreward.configurable import import_path
    from mmreward.protocols import check_reward

    try:
        kwargs = json.loads(init_args)
    except json.JSONDecodeError as err:
        raise ValueError(f"--reward-args must be a JSON object; got {init_args!r} ({err.msg}).") from err
    if not isinstance(kwargs, dict):
        raise ValueError(f"--reward-args must be a JSON object such as '{{\"k\": 1}}'; got {init_args!r}.")
    return check_reward(import_path(path)(**kwargs), f"mmreward score --reward {path}")


def _score(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="mmreward score", description="Score a data file with a saved model."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a folder from save_pretrained or a .ckpt")
    source.add_argument("--reward", help="import path of any reward class (mmreward.protocols.Reward)")
    parser.add_argument("--reward-args", default="{}", help="JSON object of the --reward class's init args")
    parser.add_argument("--input", required=True, help="JSONL/JSON/Parquet records (canonical schema)")
    parser.add_argument("--output", required=True, help="JSONL file to write, one line per record")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None)
    parser.add_argument("--format", default=None, help="a public format name (mmreward.data.formats)")
    parser.add_argument("--resume", action="store_true", help="skip input lines already in --output")
    parser.add_argument(
        "--skip-bad", action="store_true", help="warn about and count bad records instead of stopping"
    )
    parser.add_argument("--trust-config", action="store_true", help=TRUST_HELP)
    parser.add_argument("--media-root", default=None, help="refuse media paths that resolve outside DIR")
    parser.add_argument("--max-pixels", type=int, default=None, help="refuse images with more pixels")
    args = parser.parse_args(argv)
    from mmreward.batch_scoring import bad_path, score_file
    from mmreward.data.validation import set_media_policy
    from mmreward.scoring import load

    set_media_policy(
        media_root=args.media_root, **({"max_pixels": args.max_pixels} if args.max_pixels else {})
    )
    if args.reward:
        scorer = build_reward(args.reward, args.reward_args)
    else:
        scorer = load(
            args.model, device=args.device, batch_size=args.batch_size, trust_config=args.trust_config
        )
    counts = score_file(
        scorer, args.input, args.output, args.resume, args.skip_bad, args.format, batch_size=args.batch_size
    )
    if counts["bad"]:
        print(
            f"mmreward score: skipped {counts['bad']} bad record(s), named in {bad_path(args.output)}",
            file=sys.stderr,
        )
    print(json.dumps(counts))
    return 0


def _eval(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="mmreward eval", description="Evaluate a saved model on labelled data."
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument(
        "--format", default=None, help="a public format name (mmreward.data.formats) or canonical"
    )
    parser.add_argument("--output", default=None, help="write the metrics here as JSON")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None)
    parser.add_argument("--skip-bad", action="store_true")
    parser.add_argument("--trust-config", action="store_true", help=TRUST_HELP)
    args = parser.parse_args(argv)
    from mmreward.data.records import read_records
    from mmreward.evaluation import evaluate
    from mmreward.report import write_metrics
    from mmreward.scoring import load

    scorer = load(args.model, device=args.device, batch_size=args.batch_size, trust_config=args.trust_config)
    metrics = evaluate(scorer, read_records(args.data, args.format, skip_bad=args.skip_bad))
    if args.output:
        write_metrics(args.output, metrics)
    print(json.dumps(metrics, indent=2, default=str))
    return 0


DEMO_GROUP = "mmreward.demos"


def find_demos() -> dict[str, EntryPoint]:
    """The demos installed in the ``mmreward.demos`` entry-point group, by task name.

    The core never imports a demo's package: ``pyproject.toml`` names each ``run`` function, and
    any installed distribution can add its own.
    """
    return {ep.name: ep for ep in entry_points(group=DEMO_GROUP)}


def _demo(argv: list[str]) -> int:
    demos = find_demos()
    parser = argparse.ArgumentParser(
        prog="mmreward demo", description="Run a task's main job on its embedded default."
    )
    parser.add_argument("--task", default="t2i", help=f"one of: {', '.join(sorted(demos))}")
    parser.add_argument("--output", default="demo", help="folder for metrics.json and report.html")
    args = parser.parse_args(argv)
    if not demos:
        parser.error(
            f"no demos are installed (entry-point group {DEMO_GROUP!r} is empty); "
            "reinstall the package with `pip install -e .`."
        )
    if args.task not in demos:
        close = difflib.get_close_matches(args.task, demos, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        parser.error(f"unknown task {args.task!r}.{hint} Available: {', '.join(sorted(demos))}.")
    metrics = demos[args.task].load()(Path(args.output))
    print(json.dumps(metrics, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mmreward`` console script.

    Run as the command (no ``argv``), a failure prints its message, not a traceback, and exits 1;
    ``MMREWARD_TRACEBACK=1`` shows the traceback. Called with ``argv`` (from Python), it raises.
    """
    if argv is not None:
        return _main(list(argv))
    try:
        return _main(sys.argv[1:])
    except Exception as err:  # the user gets the message (file, line, field), not our stack
        if os.environ.get("MMREWARD_TRACEBACK"):
            raise
        command = sys.argv[1] if len(sys.argv) > 1 else ""
        print(f"mmreward {command}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        run_lightning(argv)
        return 0
    handlers = {"score": _score, "eval": _eval, "demo": _demo}
    if command not in handlers:
        close = difflib.get_close_matches(command, [*LIGHTNING_COMMANDS, *handlers], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        print(f"mmreward: unknown command {command!r}.{hint}\n\n{USAGE}", file=sys.stderr)
        return 2
    return handlers[command](rest)


if __name__ == "__main__":
    sys.exit(main())
