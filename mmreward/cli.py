"""The ``mmreward`` command: ``fit|validate|test|predict`` (LightningCLI), ``score``, ``eval``, ``demo``.

Errors: bad input (a record, a file, a flag) is one line, ``mmreward: error: FILE:LINE (id X) field F:
reason``, and exit status 2; ``--debug`` or ``MMREWARD_DEBUG=1`` shows the traceback. Anything else
is an internal error: its traceback, a request to report it, and exit status 1.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import textwrap
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, version
from pathlib import Path

from mmreward.cli_errors import DEBUG_ENV, DEBUG_HELP, EXIT_BAD_INPUT, report_error
from mmreward.cli_options import (
    HelpFormatter,
    add_common_options,
    build_reward,
    refuse_model_options_with_reward,
    torch_dtype,
)

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
COMMANDS = {
    "fit": "train a reward model from a LightningCLI config (--config FILE.yaml, overrides such as "
    "--data.train T.jsonl --trainer.max_epochs 3); ends by saving the best model to "
    "<trainer.default_root_dir>/model",
    "validate": "run a config's model over its validation data (LightningCLI)",
    "test": "run a config's model over its test data (LightningCLI)",
    "predict": "run a config's model over its predict data (LightningCLI)",
    "score": "score a data file with a saved model or any reward class, one JSON line per record; "
    "records need no labels (a prompt and an image, video, edit, point cloud + action or response)",
    "eval": "evaluate a saved model on labelled data (pair accuracy, rating correlations, ranking "
    "accuracy) in the canonical schema or a public format",
    "demo": "run a task's main job on its embedded default data, on a CPU, in minutes; writes "
    "metrics.json and report.html",
    "serve": "serve a saved model or any reward class over HTTP (/score, /rank, /health; OpenRLHF's "
    "remote reward body), batching concurrent requests; needs the serve extra",
}


def package_version() -> str:
    """The installed distribution's version (the source tree's when it is not installed)."""
    try:
        return version("mmreward")
    except PackageNotFoundError:
        from mmreward import __version__

        return __version__


def main_help() -> str:
    """``mmreward --help``: every command, the global options and the exit statuses, in words."""
    width = max(map(len, COMMANDS))
    indent = " " * (width + 4)
    commands = "\n".join(
        textwrap.fill(text, 100, initial_indent=f"  {name:<{width}}  ", subsequent_indent=indent)
        for name, text in COMMANDS.items()
    )
    return f"""usage: mmreward [--debug] [--version] COMMAND [OPTIONS]

Train, score and evaluate multimodal reward models (text-to-image, video, image edit, point-cloud
action preference, text and VLM rewards).

commands:
{commands}

options:
  -h, --help  show this help and exit; `mmreward COMMAND --help` describes a command's options
  --version   print mmreward's version and exit
  --debug     {DEBUG_HELP}

exit status: 0 done; 2 bad input or usage (the message names file, line, id and field);
1 an internal error (shown with its traceback: please report it); 130 interrupted.

examples:
  mmreward fit   --config configs/quickstart/t2i.yaml --trainer.default_root_dir runs/t2i
  mmreward score --model runs/t2i/model --input generations.jsonl --output scores.jsonl
  mmreward eval  --model runs/t2i/model --data test.jsonl --format pick-a-pic
  mmreward demo  --task video --output demo/
  mmreward serve --model runs/t2i/model --media-root generations/ --api-key "$KEY"
"""


def export_trained(trainer, module) -> Path | None:
    """Save the best checkpoint's weights (else the last) to ``<default_root_dir>/model``; rank 0 writes.

    Every rank calls it: under FSDP and DeepSpeed the weights are gathered from all of them
    (``mmreward.distributed.trained_model``). A module with its own ``export(directory)`` (e.g. a
    judge's SFT module) is asked to do it; otherwise its ``model`` is saved with
    ``mmreward.scoring.save_pretrained``.
    """
    import torch

    from mmreward.distributed import best_checkpoint, trained_model
    from mmreward.scoring import save_pretrained

    best = best_checkpoint(trainer)
    directory = Path(trainer.default_root_dir) / "model"
    if callable(getattr(module, "export", None)):
        if not trainer.is_global_zero:
            return None
        if best:
            module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
        module.export(directory)
    else:
        model = trained_model(trainer, module)
        if model is None:
            return None
        metadata = {"name": getattr(model, "name", "reward-model"), "checkpoint": best}
        save_pretrained(model, directory, metadata=metadata)
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


def _score(argv: list[str]) -> int:
    from mmreward.cli_score import score_main

    return score_main(argv)


def _eval(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="mmreward eval",
        description="Evaluate a saved model, a judge or any reward on labelled data: pair accuracy with and "
        "without ties (overall, per subset, per aspect), Acc+ and ECE for preferences; Pearson/Spearman/"
        "Kendall and pairwise accuracy for ratings; pair accuracy for rankings. Prints the metrics as "
        "JSON; --output DIR also writes report.json and report.html.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model", metavar="DIR", help="a folder from save_pretrained / mmreward fit, or a .ckpt"
    )
    source.add_argument(
        "--reward", metavar="CLASS_PATH",
        help="instead of --model, the import path of any reward class (a judge, mmreward.protocols.Reward)",
    )  # fmt: skip
    parser.add_argument(
        "--reward-args", default="{}", metavar="JSON", help="the --reward class's init args as a JSON object"
    )
    parser.add_argument(
        "--data", required=True, metavar="FILE",
        help="labelled records (.jsonl, .json, .csv, .parquet): preferences, ratings or rankings",
    )  # fmt: skip
    parser.add_argument(
        "--output", default=None, metavar="DIR",
        help="write DIR/report.json and DIR/report.html (tables; plots with mmreward[plot]); "
        "a path ending in .json gets the metrics alone",
    )  # fmt: skip
    parser.add_argument(
        "--no-media-check", action="store_true",
        help="read the records without checking that their media files exist (benchmarks ship without "
        "media; for rewards that do not open them)",
    )  # fmt: skip
    parser.add_argument(
        "--skip-bad", action="store_true", help="skip bad records (logged and counted) instead of stopping"
    )
    add_common_options(parser, "samples")
    args = parser.parse_args(argv)
    refuse_model_options_with_reward(parser, args)
    from mmreward.data.records import read_records
    from mmreward.eval_report import write_report
    from mmreward.evaluation import evaluate
    from mmreward.report import _plain, write_metrics
    from mmreward.scoring import load

    if args.reward:
        scorer = build_reward(args.reward, args.reward_args)
    else:
        scorer = load(
            args.model, device=args.device, batch_size=args.batch_size, dtype=torch_dtype(args.dtype),
            trust_config=args.trust_config,
        )  # fmt: skip
    records = read_records(
        args.data, args.format, skip_bad=args.skip_bad, check_media=not args.no_media_check
    )
    points: dict = {}
    metrics = evaluate(scorer, records, points=points)
    if args.output and args.output.endswith(".json"):
        write_metrics(args.output, metrics)
    elif args.output:
        meta = {
            "model": args.model or args.reward, "data": args.data, "format": args.format or "canonical",
            "records": len(records),
        }  # fmt: skip
        write_report(args.output, metrics, points, meta)
    print(json.dumps(_plain(metrics), indent=2, default=str))  # NaN as null: strict JSON
    return 0


DEMO_GROUP = "mmreward.demos"


def find_demos() -> dict[str, EntryPoint]:
    """The demos installed in the ``mmreward.demos`` entry-point group, by task name.

    The core never imports a demo's package: ``pyproject.toml`` names each ``run`` function, and
    any installed distribution can add its own.
    """
    return {ep.name: ep for ep in entry_points(group=DEMO_GROUP)}


COMMAND_GROUP = "mmreward.commands"


def find_commands() -> dict[str, EntryPoint]:
    """Commands that live above the core (``serve``), from the ``mmreward.commands`` entry-point group.

    Each names a ``main(argv: list[str]) -> int``; like the demos, the core never imports them.
    """
    return {ep.name: ep for ep in entry_points(group=COMMAND_GROUP)}


def _demo(argv: list[str]) -> int:
    demos = find_demos()
    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="mmreward demo",
        description="Run a task's main job on its embedded default data, on a CPU, in minutes: train "
        "(or load) the task's reward, evaluate it on held-out data, write DIR/metrics.json (the "
        "held-out figures) and DIR/report.html, and print the metrics as JSON.",
    )
    parser.add_argument(
        "--task", default="t2i", metavar="NAME",
        help=f"the demo to run (default t2i); one of: {', '.join(sorted(demos)) or 'none installed'}",
    )  # fmt: skip
    parser.add_argument(
        "--output",
        default="demo",
        metavar="DIR",
        help="folder for metrics.json and report.html (default demo/)",
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
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

    Run as the command (no ``argv``), an error is reported by ``report_error`` (a one-line message
    and exit status 2 for bad input; a traceback and 1 for a bug). Called with ``argv`` (from
    Python), it raises.
    """
    if argv is not None:
        return _main(list(argv))
    argv = sys.argv[1:]
    debug = "--debug" in argv or any(os.environ.get(name) for name in DEBUG_ENV)
    try:
        return _main(argv)
    except (Exception, KeyboardInterrupt) as err:
        return report_error(err, debug)


def _main(argv: list[str]) -> int:
    argv = [a for a in argv if a != "--debug"]  # global, anywhere on the line; main reads it
    if not argv or argv[0] in ("-h", "--help"):
        print(main_help())
        return 0
    if argv[0] == "--version":
        print(f"mmreward {package_version()}")
        return 0
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        run_lightning(argv)
        return 0
    handlers = {"score": _score, "eval": _eval, "demo": _demo}
    plugins = find_commands()
    if command in plugins and command not in handlers:
        return plugins[command].load()(rest)
    if command not in handlers:
        close = difflib.get_close_matches(command, [*LIGHTNING_COMMANDS, *handlers, *plugins], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        print(
            f"mmreward: error: unknown command {command!r}.{hint} Commands: {', '.join(COMMANDS)}; "
            "see `mmreward --help`.",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    return handlers[command](rest)


if __name__ == "__main__":
    sys.exit(main())
