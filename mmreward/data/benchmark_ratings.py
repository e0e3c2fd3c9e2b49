"""Human-rating benchmarks whose ratings are spread over several files or rows: the raters'
ratings are joined and averaged into canonical rating records (then ``mmreward eval --data``).

A per-record converter (``mmreward.data.benchmarks``) sees one raw record at a time; these two
benchmarks need the whole set first:

- ImagenHub (Ku et al., 2024): one TSV per rater, a row per sample ``uid``, a column per model,
  each cell ``[SC, PQ]`` (semantic consistency, perceptual quality; 0, 0.5 or 1, spacing as it
  comes). The overall rating is ImagenHub's ``O = sqrt(SC * PQ)``, averaged over raters.
- TIFA160 (Hu et al., 2023) as rated in DSG (Cho et al., 2024): one CSV row per worker's 1-5
  Likert answer (``source_id``, ``model_type``, ``answer``), joined to ``tifa160.json``'s items
  (``text_id``, ``image_path``, ``text``); the rating is the workers' mean.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from mmreward.data.files import iter_raw, write_jsonl

IMAGENHUB_ASPECTS = ("semantic_consistency", "perceptual_quality")
"""ImagenHub's two rated aspects, in the order of its ``[SC, PQ]`` cells."""

TIFA_MODELS: dict[str, str] = {
    "mini-dalle": "mini_dalle",
    "sd1dot1": "stable_diffusion_v1_1",
    "sd1dot5": "stable_diffusion_v1_5",
    "sd2dot1": "stable_diffusion_v2_1",
    "vq-diffusion": "vq_diffusion",
}
"""DSG's ``model_type`` names -> the model suffix of TIFA160's item keys."""


def imagenhub_cell(cell: str, where: str) -> tuple[float, float]:
    """``"[0.5, 1]"``, ``"[0,1]"`` or ``"[1 , 1]"`` -> (SC, PQ); anything else is named."""
    parts = str(cell).strip().removeprefix("[").removesuffix("]").split(",")
    try:
        sc, pq = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"{where}: expected an [SC, PQ] pair such as [0.5, 1]; got {cell!r}.") from None
    return sc, pq


def imagenhub_ratings(
    rater_files: list[str | Path], prompts: dict[str, str], output: str | Path | None = None
) -> list[dict[str, Any]]:
    """Canonical ratings from ImagenHub's rater TSVs: one record per (uid, model).

    Args:
        rater_files: ``<task>_rater{1,2,3}.tsv`` of one task.
        prompts: uid -> the sample's prompt or instruction (from ImagenHub's dataset; the rating
            files do not hold them).
        output: Write the records here as JSONL (beside the media: images are ``<model>/<uid>``).
    Returns:
        Records with ``scores`` (SC and PQ, raters' mean), ``score`` (raters' mean of sqrt(SC * PQ)),
        ``subset`` (the model) and ``id`` ``<uid>/<model>``.
    """
    cells: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for path in rater_files:
        for line, raw in iter_raw(path):
            uid = str(raw["uid"]).strip()
            for model, cell in raw.items():
                if model in ("uid", "id") or cell in (None, ""):
                    continue
                cells[uid, model.strip()].append(imagenhub_cell(cell, f"{path}:{line} field {model!r}"))
    missing = sorted({uid for uid, _ in cells} - prompts.keys())
    if missing:
        raise ValueError(
            f"No prompt for ImagenHub sample(s) {', '.join(missing[:5])}; add them to `prompts`."
        )
    records = []
    for (uid, model), rated in cells.items():
        n = len(rated)
        records.append(
            {
                "id": f"{uid}/{model}",
                "prompt": prompts[uid],
                "image": f"{model}/{uid}",
                "score": sum(math.sqrt(sc * pq) for sc, pq in rated) / n,
                "scores": {a: sum(r[i] for r in rated) / n for i, a in enumerate(IMAGENHUB_ASPECTS)},
                "subset": model,
            }
        )
    if output is not None:
        write_jsonl(output, records)
    return records


def tifa160_ratings(
    annotations: str | Path, items: str | Path, output: str | Path | None = None
) -> list[dict[str, Any]]:
    """Canonical ratings of TIFA160's images: the workers' mean 1-5 answer per (text, model).

    Args:
        annotations: DSG's ``dsg_tifa160_anns.csv``.
        items: ``tifa160.json`` (``{key: {text_id, image_path, text}}``).
        output: Write the records here as JSONL (beside the images).
    """
    table = json.loads(Path(items).read_text(encoding="utf-8"))
    answers: dict[str, list[float]] = defaultdict(list)
    for line, raw in iter_raw(annotations):
        model = TIFA_MODELS.get(raw["model_type"])
        if model is None:
            raise ValueError(
                f"{annotations}:{line} field 'model_type': unknown model {raw['model_type']!r}; "
                f"expected one of {', '.join(TIFA_MODELS)}."
            )
        key = f"{raw['source_id']}_{model}"
        if key not in table:
            raise ValueError(f"{annotations}:{line}: no item {key!r} in {items}.")
        answers[key].append(float(raw["answer"]))
    records = [
        {
            "id": key,
            "prompt": table[key]["text"],
            "image": table[key]["image_path"],
            "score": sum(values) / len(values),
            "subset": key.removeprefix(table[key]["text_id"] + "_"),
        }
        for key, values in answers.items()
    ]
    if output is not None:
        write_jsonl(output, records)
    return records
