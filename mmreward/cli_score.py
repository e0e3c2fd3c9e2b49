"""``mmreward score``: score a data file, one JSON line per record, as it goes; across workers, by shards.

One worker: ``--output scores.jsonl``. N workers: each runs with ``--num-shards N --shard-index I``
(or under ``torchrun``, which sets ``RANK`` and ``WORLD_SIZE``) and writes ``scores.shard-I-of-N.jsonl``;
``--merge`` then joins them into ``scores.jsonl`` in input order (``mmreward.batch_scoring``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from mmreward.batch_scoring import Shard
from mmreward.cli_options import (
    HelpFormatter,
    add_common_options,
    build_reward,
    refuse_model_options_with_reward,
    torch_dtype,
)

TORCHRUN_ENV = (("RANK", "WORLD_SIZE"), ("LOCAL_RANK", "LOCAL_WORLD_SIZE"))


def score_parser() -> argparse.ArgumentParser:
    """The options of ``mmreward score``."""
    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="mmreward score",
        description="Score every record of a data file and write one JSON line per record, as it goes. "
        "Records need no labels: a prompt and a candidate (response, image, images, video, "
        "source_image + image, point_cloud + action) is enough; labelled records (preference, rating, "
        "ranking) are scored too, their labels echoed. Output schema per kind: docs/scoring.md.",
        epilog="Ends with a summary on stderr (records scored, skipped, bad, seconds, records/s) and the "
        "counts as JSON on stdout. Exit status 2 on bad input, naming file, line, id and field.",
    )
    source = parser.add_mutually_exclusive_group()  # one is required unless --merge: checked in score_main
    source.add_argument(
        "--model",
        metavar="DIR",
        help="a saved model: a folder from save_pretrained / mmreward fit, or a .ckpt",
    )
    source.add_argument(
        "--reward", metavar="CLASS_PATH",
        help="instead of --model, the import path of any reward class (mmreward.protocols.Reward), "
        "e.g. mypkg.rewards.MyReward",
    )  # fmt: skip
    parser.add_argument(
        "--reward-args", default="{}", metavar="JSON", help="the --reward class's init args as a JSON object"
    )
    parser.add_argument(
        "--input", metavar="FILE",
        help="records to score: .jsonl, .json, .csv or .parquet; media paths relative to the file",
    )  # fmt: skip
    parser.add_argument(
        "--output", required=True, metavar="FILE",
        help="JSONL file to write, one line per record (line, id, score, ...); replaced unless --resume",
    )  # fmt: skip
    parser.add_argument(
        "--resume", action="store_true",
        help="keep what --output already holds and score only the input lines not in it",
    )  # fmt: skip
    parser.add_argument(
        "--skip-bad", action="store_true",
        help="skip bad records (warned and counted, each named in OUTPUT's .bad.jsonl) instead of stopping",
    )  # fmt: skip
    parser.add_argument(
        "--media-root", default=None, metavar="DIR", help="refuse media paths that resolve outside DIR"
    )
    parser.add_argument(
        "--max-pixels", type=int, default=None, metavar="N",
        help="refuse images of more than N pixels, before decoding them (default 64 Mpx)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (it is drawn on stderr)")
    add_common_options(parser, "records")
    _shard_options(parser)
    return parser


def _shard_options(parser: argparse.ArgumentParser) -> None:
    workers = parser.add_argument_group("across workers")
    workers.add_argument(
        "--num-shards", type=int, default=None, metavar="N",
        help="split the input among N workers; each scores the records whose input line number is "
        "I mod N into its own file (scores.jsonl -> scores.shard-I-of-N.jsonl, and its own .bad.jsonl), "
        "resumable with --resume; then --merge (default under torchrun: WORLD_SIZE)",
    )  # fmt: skip
    workers.add_argument(
        "--shard-index", type=int, default=None, metavar="I",
        help="which of the N shards this worker scores, 0..N-1 (default under torchrun: RANK)",
    )  # fmt: skip
    workers.add_argument(
        "--merge", action="store_true",
        help="instead of scoring, join the N finished shards of --output into --output in input order "
        "(and their bad files into its .bad.jsonl); refuses a shard that is unfinished, missing lines "
        "or repeating them, naming it; needs --num-shards only",
    )  # fmt: skip


def shard_from(
    num_shards: int | None, shard_index: int | None, environ: Mapping[str, str] = os.environ
) -> tuple[Shard | None, str]:
    """This worker's shard: from the flags, else from torchrun's ``RANK``/``WORLD_SIZE`` (or
    ``LOCAL_RANK``/``LOCAL_WORLD_SIZE``) when there is more than one worker; ``None`` for one.

    Returns:
        The shard (or ``None``) and where it came from, for the line the command prints.
    """
    if num_shards is not None and shard_index is not None:
        return Shard(shard_index, num_shards), "--shard-index/--num-shards"
    if num_shards is not None or shard_index is not None:
        given = "--num-shards" if num_shards is not None else "--shard-index"
        raise ValueError(
            f"{given} was given alone; a sharded run needs both --num-shards N and --shard-index I "
            "(0..N-1) on each worker, or neither under torchrun (which sets RANK and WORLD_SIZE)."
        )
    for rank, size in TORCHRUN_ENV:
        if environ.get(rank) is not None and environ.get(size) is not None:
            index, count = _env_int(environ, rank), _env_int(environ, size)
            return (Shard(index, count) if count > 1 else None), f"torchrun's {rank}/{size}"
    return None, ""


def _env_int(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except ValueError as err:
        raise ValueError(
            f"The environment variable {name} must be an integer; got {environ[name]!r}."
        ) from err


def score_main(argv: list[str]) -> int:
    """Run ``mmreward score`` on ``argv`` (the arguments after ``score``)."""
    parser = score_parser()
    args = parser.parse_args(argv)
    refuse_model_options_with_reward(parser, args)
    if args.merge:
        return _merge(parser, args)
    if not (args.model or args.reward):
        parser.error("one of the arguments --model --reward is required")
    if not args.input:
        parser.error("the following arguments are required: --input")
    from mmreward.batch_scoring import bad_path, score_file
    from mmreward.data.validation import set_media_policy
    from mmreward.scoring import load

    shard, source = shard_from(args.num_shards, args.shard_index)
    device = args.device or _local_device()
    if shard is not None:
        on = f" on {device}" if device else ""
        print(
            f"mmreward score: {shard} (from {source}){on}; writing {shard.path(args.output)}", file=sys.stderr
        )
    set_media_policy(
        media_root=args.media_root, **({"max_pixels": args.max_pixels} if args.max_pixels else {})
    )
    if args.reward:
        scorer = build_reward(args.reward, args.reward_args)
    else:
        scorer = load(
            args.model, device=device, batch_size=args.batch_size, dtype=torch_dtype(args.dtype),
            trust_config=args.trust_config,
        )  # fmt: skip
    began = time.perf_counter()
    counts = score_file(
        scorer, args.input, args.output, args.resume, args.skip_bad, args.format,
        progress=not args.no_progress, batch_size=args.batch_size, shard=shard,
    )  # fmt: skip
    seconds = time.perf_counter() - began
    written = args.output if shard is None else shard.path(args.output)
    print(score_summary(counts, seconds, written, bad_path(written)), file=sys.stderr)
    if shard is not None:
        print(
            f"mmreward score: when all {shard.count} shards are done: "
            f"mmreward score --merge --output {args.output} --num-shards {shard.count}",
            file=sys.stderr,
        )
    print(json.dumps(counts))
    return 0


def _local_device() -> str | None:
    """``cuda:LOCAL_RANK`` for a worker torchrun started on a machine with GPUs (else the default)."""
    if os.environ.get("LOCAL_RANK") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return f"cuda:{_env_int(os.environ, 'LOCAL_RANK') % torch.cuda.device_count()}"


def _merge(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from mmreward.batch_scoring import bad_path, merge_shards

    if args.shard_index is not None:
        parser.error("--merge joins every shard; give it --num-shards N, not --shard-index")
    num_shards = args.num_shards
    if num_shards is None:
        shard, _ = shard_from(None, None)
        if shard is None:
            parser.error("--merge needs --num-shards N, the number of shards the workers wrote")
        num_shards = shard.count
    counts = merge_shards(args.output, num_shards)
    bad = f"; {counts['bad']} bad named in {bad_path(args.output)}" if counts["bad"] else ""
    print(
        f"mmreward score: merged {num_shards} shards, {counts['merged']} records{bad}; wrote {args.output} "
        "(the shard files are kept)",
        file=sys.stderr,
    )
    print(json.dumps(counts))
    return 0


def score_summary(counts: dict[str, int], seconds: float, output: str | Path, bad_file: str | Path) -> str:
    """The line ``mmreward score`` ends with: records scored, skipped, bad, seconds, records/s."""
    rate = counts["scored"] / seconds if seconds > 0 else float("inf")
    bad = f"{counts['bad']} bad" + (f" (named in {bad_file})" if counts["bad"] else "")
    return (
        f"mmreward score: {counts['scored']} records scored, {counts['skipped_done']} skipped "
        f"(already in the output), {bad}; {seconds:.1f} s, {rate:.1f} records/s; wrote {output}"
    )
