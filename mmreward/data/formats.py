"""Public data formats mapped onto the canonical schema: one explicit dict of converters.

A converter takes one raw record and returns the canonical records it holds (a list: some
formats keep several candidates in one record). Plain renames need no converter; pass a
``field_map`` dict to ``read_records`` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmreward.data.benchmarks import BENCHMARK_FORMATS
from mmreward.data.formats_fields import checked
from mmreward.data.formats_process import PROCESS_FORMATS
from mmreward.data.formats_video import VIDEO_FORMATS

Converter = Callable[[dict[str, Any]], list[dict[str, Any]]]


def canonical(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Records already in the canonical schema."""
    return [raw]


def hh_rlhf(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Anthropic HH-RLHF: two full dialogues; the prompt is everything up to the last assistant turn."""
    chosen, rejected = raw["chosen"], raw["rejected"]
    cut = chosen.rfind("\n\nAssistant:") + len("\n\nAssistant:")
    if cut < len("\n\nAssistant:") or chosen[:cut] != rejected[:cut]:
        # the dialogues part before the last assistant turn; fall back to their common prefix
        cut = next(
            (i for i, (a, b) in enumerate(zip(chosen, rejected)) if a != b), min(len(chosen), len(rejected))
        )
    return [
        {
            "prompt": chosen[:cut].strip(),
            "chosen": chosen[cut:].strip(),
            "rejected": rejected[cut:].strip(),
            "id": raw.get("id"),
        }
    ]


def mm_rlhf(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """MM-RLHF reward bench: ``image`` or ``video``, ``prompt``, text ``chosen``/``rejected``."""
    media = {k: raw[k] for k in ("image", "video") if raw.get(k)}
    return [
        {
            "id": raw.get("id"),
            "prompt": raw["prompt"],
            "chosen": {"response": raw["chosen"], **media},
            "rejected": {"response": raw["rejected"], **media},
            "subset": "video" if "video" in media else "image",
        }
    ]


def imagereward(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """ImageRewardDB test set: ``generations`` with an expert ``ranking`` (1 = best; ties kept in order)."""
    ranks = raw["ranking"]
    order = sorted(range(len(ranks)), key=lambda i: ranks[i])
    return [
        {
            "id": raw.get("id"),
            "prompt": raw["prompt"],
            "candidates": [{"image": g} for g in raw["generations"]],
            "ranking": order,
        }
    ]


def pick_a_pic(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Pick-a-Pic: ``caption``, ``jpg_0``/``jpg_1`` (paths), ``label_0`` (1, 0 or 0.5 for a tie)."""
    label_0 = float(raw["label_0"])
    first_wins = label_0 >= 0.5
    a, b = (raw["jpg_0"], raw["jpg_1"]) if first_wins else (raw["jpg_1"], raw["jpg_0"])
    return [
        {
            "id": raw.get("ranking_id", raw.get("id")),
            "prompt": raw["caption"],
            "chosen": {"image": a},
            "rejected": {"image": b},
            "label": max(label_0, 1.0 - label_0),
        }
    ]


def rewardbench(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """RewardBench: ``prompt``, text ``chosen``/``rejected``, ``subset``."""
    return [{k: raw.get(k) for k in ("id", "prompt", "chosen", "rejected", "subset")}]


_CONVERTERS: dict[str, Converter] = {
    "hh-rlhf": hh_rlhf,
    "mm-rlhf": mm_rlhf,
    "imagereward": imagereward,
    "pick-a-pic": pick_a_pic,
    "rewardbench": rewardbench,
    **PROCESS_FORMATS,  # PRM800K, Math-Shepherd, ProcessBench, VisualProcessBench (formats_process)
    **VIDEO_FORMATS,  # GenAI-Bench, T2VScore, VideoAlign, VideoFeedback, EditReward (mmreward.data.formats_video)
    **BENCHMARK_FORMATS,  # VL-RewardBench, Multimodal RewardBench, VideoGen-RewardBench, RewardBench 2, SeeTRUE
}

FORMATS: dict[str, Converter] = {
    "canonical": canonical,
    # each converter first checks the fields it needs, so a wrong --format names the one that fits
    **{name: checked(name, convert) for name, convert in _CONVERTERS.items()},
}
