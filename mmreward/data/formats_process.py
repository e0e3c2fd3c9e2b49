"""Process-reward formats (reasoning chains with per-step labels) mapped onto the canonical
``process`` record: ``prompt`` (+ media), ``steps: [str]``, ``labels: [0/1 per step]``.

Formats (``PROCESS_FORMATS``, also in ``mmreward.data.formats.FORMATS``):

- ``prm800k``: OpenAI's PRM800K as shipped (``question.problem``, ``label.steps[].completions[]``
  with ratings -1/0/1, ``chosen_completion``). The chain follows the chosen completion at each
  step; at a step with none chosen (the labeller found an error, or wrote a step in by hand) the
  first completion rated -1 ends the chain as its wrong step. Rating 0 (neutral) counts as a
  correct step, as ProcessBench's first-error definition does (the first error is a -1).
- ``math-shepherd``: Math-Shepherd as shipped (``input`` with each step ended by the ``ки`` tag,
  ``label`` the same text with ``+``/``-`` in place of each tag). The question is the text before
  ``Step 1:``.
- ``processbench``: ProcessBench (``problem``, ``steps``, ``label``: index of the first wrong step,
  -1 when none). Steps after the first error are labelled 0 too (the chain is wrong from there on).
- ``visualprocessbench``: VisualProcessBench (``image``: a list of paths, ``question``,
  ``response.steps``, ``response.process_correctness``: 1 / -1 / 0 per step, 0 = neutral, read
  as correct).
"""

from __future__ import annotations

import json
from typing import Any

MATH_SHEPHERD_TAG = "ки"


def _steps_from_first_error(n: int, first_error: int) -> list[int]:
    return [1] * n if first_error < 0 else [1] * first_error + [0] * (n - first_error)


def prm800k(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """PRM800K (Lightman et al., 2023): one process record per labelled chain (see the module docstring)."""
    steps, labels = [], []
    for step in raw["label"]["steps"]:
        completions = step.get("completions") or []
        chosen = step.get("chosen_completion")
        if chosen is not None:
            completion = completions[chosen]
        else:
            completion = next((c for c in completions if c.get("rating") == -1), None)
            if completion is None:
                break
        steps.append(completion["text"])
        labels.append(0 if completion.get("rating") == -1 else 1)
        if labels[-1] == 0 and chosen is None:
            break
    question = raw["question"]
    record = {
        "prompt": question["problem"],
        "steps": steps,
        "labels": labels,
        "subset": raw["label"].get("finish_reason"),
    }
    if raw.get("id") is not None:
        record["id"] = raw["id"]
    return [record]


def math_shepherd(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Math-Shepherd (Wang et al., 2024): steps ended by ``ки`` in ``input``, ``+``/``-`` in ``label``."""
    text, marked = raw["input"], raw["label"]
    segments = text.split(MATH_SHEPHERD_TAG)[:-1]
    labels, position = [], 0
    for segment in segments:
        if marked[position : position + len(segment)] != segment:
            raise ValueError(f"'label' does not repeat 'input' around character {position}")
        mark = marked[position + len(segment)]
        if mark not in "+-":
            raise ValueError(f"expected '+' or '-' after step {len(labels) + 1} in 'label', got {mark!r}")
        labels.append(1 if mark == "+" else 0)
        position += len(segment) + 1
    first = segments[0] if segments else ""
    cut = first.find("Step 1:")
    prompt = first[:cut].strip() if cut > 0 else ""
    segments = [first[cut:] if cut > 0 else first] + segments[1:]
    return [
        {
            "prompt": prompt,
            "steps": [s.strip() for s in segments],
            "labels": labels,
            "subset": raw.get("task"),
        }
    ]


def processbench(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """ProcessBench (Zheng et al., 2024): ``label`` is the first wrong step's index, -1 for none."""
    steps = raw["steps"]
    return [
        {
            "id": raw.get("id"),
            "prompt": raw["problem"],
            "steps": steps,
            "labels": _steps_from_first_error(len(steps), int(raw["label"])),
            "subset": raw.get("generator"),
        }
    ]


def visualprocessbench(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """VisualProcessBench (Wang et al., 2025, VisualPRM): per-step correctness 1 / -1 / 0 (neutral)."""
    response = raw["response"]
    if isinstance(response, str):  # the dataset card types it as a string holding JSON
        response = json.loads(response)
    images = raw.get("image")
    record = {
        "id": raw.get("id"),
        "prompt": raw["question"],
        "steps": response["steps"],
        "labels": [0 if c == -1 else 1 for c in response["process_correctness"]],
        "subset": raw.get("data_source"),
    }
    if images:
        record["images" if isinstance(images, list) else "image"] = images
    return [record]


PROCESS_FORMATS = {
    "prm800k": prm800k,
    "math-shepherd": math_shepherd,
    "processbench": processbench,
    "visualprocessbench": visualprocessbench,
}
