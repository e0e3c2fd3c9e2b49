"""Checks for process records (a reasoning chain with a 0/1 label per step) and their ``steps``.

A process record is ``prompt`` (+ media), ``steps: [str, ...]`` and ``labels: [0/1 per step]``
(DESIGN.md); ``mmreward.data.records.parse_record`` reads it into ``mmreward.types.Process``. Every
error names the file, the line, the id and the field (``steps.2``, ``labels``).
"""

from __future__ import annotations

from typing import Any

from mmreward.data.files import RecordError


def check_steps(steps: Any, where: Any, field: str = "steps") -> list[str]:
    """``steps`` must be a non-empty list of non-empty strings; returns it.

    Args:
        steps: The field's value.
        where: A ``_Where`` of the record (``where(field) -> "file:line (id) field 'f'"``).
        field: The field's dotted name, for the message.
    """
    if not isinstance(steps, list) or not steps:
        raise RecordError(
            f"{where(field)}: expected a non-empty list of step strings, got {type(steps).__name__} "
            f"{str(steps)[:60]!r}. Write the chain as one string a step."
        )
    for i, step in enumerate(steps):
        if not isinstance(step, str):
            raise RecordError(f"{where(f'{field}.{i}')}: expected a step string, got {type(step).__name__}.")
        if not step.strip():
            raise RecordError(
                f"{where(f'{field}.{i}')}: step {i} is empty. Drop the empty step (and its label) or fill it in."
            )
    return steps


def check_labels(labels: Any, steps: list[str] | None, where: Any) -> list[int]:
    """``labels`` must hold one 0 or 1 per step; returns them as ints."""
    if steps is None:
        raise RecordError(
            f"{where('steps')}: a process record (it has 'labels') needs 'steps', a list of step strings."
        )
    check_steps(steps, where)
    if not isinstance(labels, list):
        raise RecordError(f"{where('labels')}: expected a list of 0/1 labels, one per step; got {labels!r}.")
    if len(labels) != len(steps):
        raise RecordError(
            f"{where('labels')}: {len(labels)} labels for {len(steps)} steps. Give one 0/1 label per step."
        )
    for i, label in enumerate(labels):
        if isinstance(label, bool) or label not in (0, 1):
            raise RecordError(
                f"{where(f'labels.{i}')}: expected 0 (a wrong step) or 1 (a correct step), got {label!r}. "
                "Map other scales (PRM800K's -1/0/1, Math-Shepherd's +/-) with a named format."
            )
    return [int(label) for label in labels]
