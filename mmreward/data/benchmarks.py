"""Reward-benchmark layouts mapped onto the canonical schema, one converter per benchmark.

Like the converters of ``mmreward.data.formats``, each takes one raw record and returns the
canonical records it holds. Media are not shipped with the benchmarks' annotation files; the paths
are kept as the release writes them, relative to the data file (``mmreward eval --no-media-check``
reads the records without them, for rewards that do not open media).

Formats (``BENCHMARK_FORMATS``):
    ``vl-rewardbench``: VL-RewardBench (Li et al., 2024): ``query``, two ``response``s and their
        ``human_ranking`` (0 = better); subsets general / hallucination / reasoning, as its
        evaluation groups the sources, and the macro average over them.
    ``multimodal-rewardbench``: Multimodal RewardBench (Yasunaga et al., 2025): ``Text``, ``Image``,
        ``Output1``/``Output2`` and ``Better``; subset from ``Category`` (or ``Meta.Category``).
    ``videogen-rewardbench``: VideoGen-RewardBench (Liu et al., 2025): ``path_A``/``path_B`` with
        ``A``/``B``/``same`` labels for ``Overall`` and per aspect VQ, MQ, TA; "same" is a tie,
        so accuracy comes with and without ties.
    ``rewardbench-2``: RewardBench 2 (Malik et al., 2025): one ``chosen`` and several ``rejected``
        per prompt; every chosen x rejected pair is a preference of the same query, so Acc+ is
        its best-of-4 accuracy (chosen above all rejected).
    ``seetrue``: SeeTRUE (Yarom et al., 2023): ``image``, ``text`` and a 0/1 alignment ``label``,
        read as a rating (AUROC and correlations); subset ``dataset_source``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmreward.data.formats_video import VIDEOALIGN_ASPECTS

Converter = Callable[[dict[str, Any]], list[dict[str, Any]]]

VL_REWARDBENCH_GROUPS: dict[str, tuple[str, ...]] = {
    "reasoning": ("mathverse", "mmmu"),
    "hallucination": ("hallucination", "povid", "rlhf", "rlaif"),
}
"""VL-RewardBench's source prefixes per category; every other source is ``general``."""

ABS = {"A": 1.0, "B": 0.0, "same": 0.5}
"""VideoGen-RewardBench's A/B/same labels as P(A preferred)."""


def _vl_group(raw: dict[str, Any]) -> str:
    source = str(raw.get("query_source") or raw.get("id") or "").lower()
    for group, prefixes in VL_REWARDBENCH_GROUPS.items():
        if source.startswith(prefixes):
            return group
    return "general"


def vl_rewardbench(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """VL-RewardBench: ``id``, ``query``, ``response`` (two), ``human_ranking`` (a rank per
    response, 0 = better), ``image`` or ``image_path``; equal ranks are a tie (label 0.5)."""
    first, second = raw["response"]
    rank_first, rank_second = raw["human_ranking"]
    chosen, rejected = (first, second) if rank_first <= rank_second else (second, first)
    media = raw.get("image_path") or raw.get("image")
    if isinstance(media, dict):  # an HF Image column: {"bytes", "path"}
        media = media.get("path")
    if media is not None and not isinstance(media, str):
        raise ValueError(
            f"record {raw.get('id')} field image: expected an image path; got {type(media).__name__}. "
            "Save the images to files and give their paths in image_path."
        )
    sample = {"image": media} if media else {}
    return [
        {
            "id": raw.get("id"),
            "prompt": raw["query"],
            "chosen": {"response": chosen, **sample},
            "rejected": {"response": rejected, **sample},
            "label": 0.5 if rank_first == rank_second else 1.0,
            "subset": _vl_group(raw),
        }
    ]


def multimodal_rewardbench(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Multimodal RewardBench: ``ID``, ``Text``, ``Image``, ``Output1``/``Output2``, ``Better``
    (``Output1`` or ``Output2``), ``Category`` or ``Meta.Category``."""
    better = raw["Better"]
    if better not in ("Output1", "Output2"):
        raise ValueError(
            f"record {raw.get('ID')} field Better: expected 'Output1' or 'Output2'; got {better!r}."
        )
    worse = "Output2" if better == "Output1" else "Output1"
    category = raw.get("Category") or (raw.get("Meta") or {}).get("Category")
    image = {"image": raw["Image"]} if raw.get("Image") else {}
    return [
        {
            "id": raw.get("ID"),
            "prompt": raw["Text"],
            "chosen": {"response": raw[better], **image},
            "rejected": {"response": raw[worse], **image},
            "subset": category,
        }
    ]


def videogen_rewardbench(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """VideoGen-RewardBench: ``path_A``/``path_B``, ``prompt``, ``Overall`` and the aspects
    ``VQ``/``MQ``/``TA``, each ``A``, ``B`` or ``same``; ``chosen`` is A and each label P(A better)."""
    labels = {}
    for column, name in {"Overall": "overall", **VIDEOALIGN_ASPECTS}.items():
        value = str(raw.get(column, "")).strip()
        if value not in ABS:
            raise ValueError(
                f"record {raw.get('id')} field {column}: expected 'A', 'B' or 'same'; got {value!r}."
            )
        labels[name] = ABS[value]
    models = f"{raw['A_model']} vs {raw['B_model']}" if raw.get("A_model") and raw.get("B_model") else None
    return [
        {
            "id": raw.get("id"),
            "prompt": raw["prompt"],
            "chosen": {"video": raw["path_A"].removeprefix("./")},
            "rejected": {"video": raw["path_B"].removeprefix("./")},
            "label": labels.pop("overall"),
            "aspects": labels,
            **({"subset": models} if models else {}),
        }
    ]


def rewardbench_2(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """RewardBench 2: ``id``, ``prompt``, ``chosen`` and ``rejected`` (lists of text), ``subset``;
    one preference per chosen x rejected pair, ids ``<id>/<k>``."""
    chosen = raw["chosen"] if isinstance(raw["chosen"], list) else [raw["chosen"]]
    rejected = raw["rejected"] if isinstance(raw["rejected"], list) else [raw["rejected"]]
    pairs = [(c, r) for c in chosen for r in rejected]
    return [
        {
            "id": f"{raw.get('id')}/{k}",
            "prompt": raw["prompt"],
            "chosen": c,
            "rejected": r,
            "subset": raw.get("subset"),
        }
        for k, (c, r) in enumerate(pairs)
    ]


def seetrue(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """SeeTRUE: ``image``, ``text``, ``label`` (1 = the image matches the text), ``dataset_source``."""
    label = float(raw["label"])
    if label not in (0.0, 1.0):
        raise ValueError(f"record {raw.get('id')} field label: expected 0 or 1; got {raw['label']!r}.")
    return [
        {
            "id": raw.get("original_dataset_id") or raw.get("id"),
            "prompt": raw["text"],
            "image": raw["image"],
            "score": label,
            "subset": raw.get("dataset_source"),
        }
    ]


BENCHMARK_FORMATS: dict[str, Converter] = {
    "vl-rewardbench": vl_rewardbench,
    "multimodal-rewardbench": multimodal_rewardbench,
    "videogen-rewardbench": videogen_rewardbench,
    "rewardbench-2": rewardbench_2,
    "seetrue": seetrue,
}
