"""Guards on model outputs: a NaN or inf score stops the run and names the record, never reaches a file."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class NonFiniteError(FloatingPointError):
    """A model produced NaN or inf; the message names the record (scoring) or the step and batch (training)."""


def first_non_finite(values: torch.Tensor) -> int | None:
    """Index (along dim 0) of the first row holding a NaN or inf, or None."""
    bad = ~torch.isfinite(values.detach().float()).reshape(len(values), -1).all(-1)
    return int(bad.nonzero()[0]) if bad.any() else None


def check_scores(name: str, values: torch.Tensor | None, samples: Sequence[Any], offset: int = 0) -> None:
    """Raise ``NonFiniteError`` naming the sample whose ``name`` output is not finite.

    Args:
        name: Which output ("score", "aspects", "log_sigma", "transformed score", ...).
        values: (N, ...) outputs, row i for ``samples[offset + i]``.
        samples: The samples scored (``Sample.where`` names each).
    """
    if values is None:
        return
    index = first_non_finite(values)
    if index is None:
        return
    sample = samples[offset + index]
    where = sample.where() if hasattr(sample, "where") else f"sample {offset + index}"
    raise NonFiniteError(
        f"{where}: the model's {name} is {values[index].tolist()}, not a finite number; nothing was written "
        "for it. Check the weights (a diverged checkpoint) and the input, or score in float32 (dtype=torch.float32)."
    )


def check_loss(loss: torch.Tensor, step: int, batch_idx: int, ids: Sequence[str] | None = None) -> None:
    """Raise ``NonFiniteError`` naming the step, the batch and its record ids when the loss is NaN or inf."""
    if torch.isfinite(loss.detach()).all():
        return
    shown = ", ".join(repr(i) for i in list(ids or [])[:8] if i) or "no ids"
    more = f" and {len(ids) - 8} more" if ids and len(ids) > 8 else ""
    raise NonFiniteError(
        f"Training step {step}, batch {batch_idx}: the loss is {loss.detach().float().item()} (records {shown}{more}). "
        "Lower the learning rate, enable gradient clipping (--trainer.gradient_clip_val 1.0), or check "
        "those records' labels and media."
    )
