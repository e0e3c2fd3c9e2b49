"""What the ``score`` and ``eval`` commands share: options, help layout, building a named reward."""

from __future__ import annotations

import argparse
import json
import textwrap

from mmreward.cli_errors import DEBUG_HELP

TRUST_HELP = (
    "build any class the model's config names, not only mmreward's own (only for a model folder you trust)"
)


DTYPES = {"auto": None, "fp32": "float32", "bf16": "bfloat16"}
"""``--dtype`` choices and the ``torch`` dtype each names (``auto``: the ``Scorer``'s default)."""


def torch_dtype(name: str | None):
    """The ``torch.dtype`` a ``--dtype`` choice names, or ``None`` for ``auto`` (or an unset flag)."""
    import torch

    return None if name is None or DTYPES[name] is None else getattr(torch, DTYPES[name])


def refuse_model_options_with_reward(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """An argparse error (exit 2) for ``--dtype`` or ``--device`` given with ``--reward``: both name
    how a saved model is loaded, and a reward class would silently ignore them."""
    if not getattr(args, "reward", None):
        return
    given = [
        flag for flag, value in (("--dtype", args.dtype), ("--device", args.device)) if value is not None
    ]
    if given:
        flags = " and ".join(given)
        parser.error(
            f"{flags} {'apply' if len(given) > 1 else 'applies'} to a saved model (--model), not to --reward "
            f"{args.reward}; drop {flags} and set the reward class's device or precision in --reward-args "
            "if it takes them."
        )


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help, without breaking names such as ``genai-bench-video`` at their hyphens."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


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


def _formats_help() -> str:
    from mmreward.data.formats import FORMATS

    return ", ".join(sorted(FORMATS))


def add_dtype_option(parser: argparse.ArgumentParser, default: str | None = None, note: str = "") -> None:
    """``--dtype``, as ``score``, ``eval`` and ``serve`` take it (``DTYPES``'s choices; ``note`` ends its help).

    The default ``None`` tells an unset flag from ``--dtype auto`` (``refuse_model_options_with_reward``);
    ``torch_dtype`` reads it as ``auto``.
    """
    parser.add_argument(
        "--dtype", default=default, choices=sorted(DTYPES),
        help="the model's compute dtype: auto (bf16 on GPUs that have it, else fp32), fp32, or bf16 (on a "
        "CPU with native bf16, such as avx512_bf16 or AMX, about 2.5x fp32: benchmarks/RESULTS.md; "
        f"scores move by about 1e-3 of their scale){note}",
    )  # fmt: skip


def add_common_options(parser: argparse.ArgumentParser, records: str) -> None:
    """The options ``score`` and ``eval`` share: batching, device, format, bad records, trust."""
    parser.add_argument(
        "--batch-size", type=int, default=32, metavar="N",
        help=f"{records} per batch sent to the model (default 32); lower it if the device runs out of memory",
    )  # fmt: skip
    parser.add_argument(
        "--device", default=None, metavar="DEVICE",
        help="where the model runs: cpu, cuda, cuda:1, mps, ... (default: cuda when available, else cpu; "
        "bf16 autocast on GPUs that have it)",
    )  # fmt: skip
    add_dtype_option(parser, note="; --model only, default auto")
    parser.add_argument(
        "--format", default=None, metavar="NAME",
        help="read the data file in a public format instead of the canonical schema (docs/data.md); "
        f"one of: {_formats_help()}",
    )  # fmt: skip
    parser.add_argument("--trust-config", action="store_true", help=TRUST_HELP)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
