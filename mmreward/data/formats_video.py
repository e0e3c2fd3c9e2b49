"""Public video, image and edit rating formats mapped onto the canonical schema.

Each converter takes one raw record and returns the canonical records it holds, like the
converters of ``mmreward.data.formats`` (a list: one GenAI-Bench prompt holds a rating for each
model). Media are not shipped with these benchmarks; the converters write the paths their own
loaders use, relative to the data file, so a folder laid out like the benchmark's release reads
as is (``read_records(..., check_media=False)`` parses the records without the media).

``read_records(path, format=...)`` reads these files as they ship, including a JSON object keyed by
record id (GenAI-Bench) and CSV (VideoAlign); ``convert_file`` writes a whole file as canonical JSONL.

Formats (``VIDEO_FORMATS``):
    ``genai-bench-image``, ``genai-bench-video``: GenAI-Bench (Li et al., 2024) human 1-5 ratings
        per model; ``t2vscore``: T2VScore's per-prompt model ratings;
    ``genai-bench-video-arena``: GenAI-Bench video arena votes (left, right, tie, both bad);
    ``editreward``: EditReward's pairwise edit preferences (GenAI-Bench image_edition);
    ``videoalign``: VideoAlign's pairs with per-aspect labels VQ/MQ/TA;
    ``videofeedback``: VideoFeedback (VideoScore) per-aspect 1-4 ratings.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmreward.data.files import iter_raw, write_jsonl
from mmreward.data.formats_fields import check_fields

Converter = Callable[[dict[str, Any]], list[dict[str, Any]]]

VIDEOFEEDBACK_ASPECTS: dict[str, str] = {
    "visual quality": "visual_quality",
    "temporal consistency": "temporal_consistency",
    "dynamic degree": "dynamic_degree",
    "text-to-video alignment": "alignment",
    "factual consistency": "factual_consistency",
}
"""VideoFeedback's five rated aspects (He et al., 2024, VideoScore) and the names used here."""

VIDEOALIGN_ASPECTS: dict[str, str] = {"VQ": "visual_quality", "MQ": "motion_quality", "TA": "alignment"}
"""VideoAlign's (Liu et al., 2025) per-aspect pair labels and the names used here."""

ARENA_VOTES: dict[str, tuple[str, float]] = {
    "leftvote": ("left", 1.0),
    "rightvote": ("right", 1.0),
    "tievote": ("left", 0.5),
    "bothbad_vote": ("left", 0.5),
}
"""GenAI-Bench arena vote -> (which side is ``chosen``, label); ties and "both bad" are label 0.5."""


def _human(value: Any, where: str) -> float:
    """A human rating as stored: a number, a numeric string, or a list of raters' numbers (averaged)."""
    if isinstance(value, dict):
        value = value.get("human")
    if isinstance(value, list) and value:
        return sum(float(v) for v in value) / len(value)
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{where}: expected a human rating (a number or a list of numbers); got {value!r}."
        ) from err


def _genai_bench(raw: dict[str, Any], media: str, extension: str) -> list[dict[str, Any]]:
    record_id = f"{int(raw['id']):05d}" if str(raw.get("id", "")).isdigit() else str(raw.get("id"))
    out = []
    for model, value in raw["models"].items():
        out.append(
            {
                "id": f"{record_id}-{model}",
                "prompt": raw["prompt"],
                media: f"{model}/{record_id}.{extension}",
                "score": _human(value, f"record {record_id} field models.{model}"),
                "subset": model,
            }
        )
    return out


def genai_bench_image(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """GenAI-Bench image: one rating per model; ``score`` is the raters' mean 1-5 ``human`` score.

    Images are ``<model>/<id:05d>.jpeg`` next to the file, as t2v_metrics' GenAI-Bench loader keeps them.
    """
    return _genai_bench(raw, "image", "jpeg")


def genai_bench_video(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """GenAI-Bench video: one rating per model from the ``human`` field; videos ``<model>/<id:05d>.mp4``."""
    return _genai_bench(raw, "video", "mp4")


def t2vscore(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """T2VScore human scores: ``{prompt, models: {model: [score]}}``; videos ``<model>/<id>.mp4``.

    The id is the key of the record in the file (``convert_file`` adds it as ``id``).
    """
    return _genai_bench(raw, "video", "mp4")


def genai_bench_video_arena(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """GenAI-Bench video arena: ``video_left``/``video_right`` and a ``vote_type`` (see ``ARENA_VOTES``)."""
    vote = raw["vote_type"]
    if vote not in ARENA_VOTES:
        raise ValueError(
            f"record {raw.get('id')} field vote_type: unknown vote {vote!r}; expected one of {', '.join(ARENA_VOTES)}."
        )
    side, label = ARENA_VOTES[vote]
    left, right = {"video": raw["video_left"]}, {"video": raw["video_right"]}
    chosen, rejected = (left, right) if side == "left" else (right, left)
    return [
        {
            "id": raw.get("id"),
            "prompt": raw["prompt"],
            "chosen": chosen,
            "rejected": rejected,
            "label": label,
            "subset": vote,
        }
    ]


def editreward(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """EditReward pairs: instruction ``prompt``, ``path_src``, ``path1``/``path2`` with human
    ``model{1,2}_dim1_score``; the higher-rated edit is ``chosen`` (equal ratings: label 0.5)."""
    one = {"source_image": raw["path_src"], "image": raw["path1"], "score": float(raw["model1_dim1_score"])}
    two = {"source_image": raw["path_src"], "image": raw["path2"], "score": float(raw["model2_dim1_score"])}
    chosen, rejected = (one, two) if one["score"] >= two["score"] else (two, one)
    models = (raw["model1"], raw["model2"]) if chosen is one else (raw["model2"], raw["model1"])
    return [
        {
            "id": raw.get("id"),
            "prompt": raw["prompt"],
            "chosen": chosen,
            "rejected": rejected,
            "label": 0.5 if one["score"] == two["score"] else 1.0,
            "subset": f"{models[0]}>{models[1]}",
        }
    ]


def videoalign(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """VideoAlign pairs: ``path_A``/``path_B`` with per-aspect labels ``A``, ``B`` or ``same``.

    ``chosen`` is A; each aspect label is 1 (A better), 0 (B better) or 0.5 (same); the overall
    label is the mean of the aspect labels.
    """
    labels = {}
    for column, aspect in VIDEOALIGN_ASPECTS.items():
        value = str(raw[column]).strip()
        if value not in ("A", "B", "same"):
            raise ValueError(
                f"record {raw.get('id')} field {column}: expected 'A', 'B' or 'same'; got {value!r}."
            )
        labels[aspect] = {"A": 1.0, "B": 0.0, "same": 0.5}[value]
    path_b = raw["path_B"][2:] if raw["path_B"].startswith("./") else raw["path_B"]
    return [
        {
            "id": raw.get("id"),
            "prompt": raw["prompt"],
            "chosen": {"video": raw["path_A"]},
            "rejected": {"video": path_b},
            "label": sum(labels.values()) / len(labels),
            "aspects": labels,
        }
    ]


def videofeedback(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """VideoFeedback: ``text prompt``, ``video link`` (or ``images`` frames) and five 1-4 aspect ratings."""
    scores = {
        name: float(raw[key]) for key, name in VIDEOFEEDBACK_ASPECTS.items() if raw.get(key) is not None
    }
    if not scores:
        raise ValueError(
            f"record {raw.get('id')}: no aspect rating; expected some of {', '.join(VIDEOFEEDBACK_ASPECTS)}."
        )
    media = {"video": raw["video link"]} if raw.get("video link") else {"images": raw.get("images")}
    return [
        {
            "id": raw.get("id"),
            "prompt": raw.get("text prompt") or raw.get("prompt"),
            **media,
            "scores": scores,
        }
    ]


VIDEO_FORMATS: dict[str, Converter] = {
    "genai-bench-image": genai_bench_image,
    "genai-bench-video": genai_bench_video,
    "t2vscore": t2vscore,
    "genai-bench-video-arena": genai_bench_video_arena,
    "editreward": editreward,
    "videoalign": videoalign,
    "videofeedback": videofeedback,
}


def convert_file(path: str | Path, format: str, output: str | Path | None = None) -> list[dict[str, Any]]:
    """Convert every record of a public-format file; write canonical JSONL to ``output`` if given.

    Media paths stay relative, so write ``output`` into the same folder as ``path`` (or next to the
    media) for ``read_records`` to resolve them.

    Raises:
        ValueError: an unknown format, or a record that does not fit it (named by line and field).
    """
    if format not in VIDEO_FORMATS:
        import difflib

        close = difflib.get_close_matches(format, VIDEO_FORMATS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown format {format!r}.{hint} Available: {', '.join(sorted(VIDEO_FORMATS))}.")
    convert, records = VIDEO_FORMATS[format], []
    for line, raw in iter_raw(path):
        try:
            check_fields(format, raw)
            records.extend(convert(raw))
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(
                f"{path}:{line}: record does not fit the {format!r} format ({err!s}). Check the file's columns."
            ) from err
    if output is not None:
        write_jsonl(output, records)
    return records


def merge_aspect_ratings(files: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Join single-score ratings of the same items from several files into per-aspect ``scores``.

    Args:
        files: ``{aspect: canonical rating records}``, e.g. T2VScore's alignment and quality files.
    Returns:
        One record per id found in every file, with ``scores: {aspect: score}`` and their mean as ``score``.
    """
    by_id: dict[str, dict[str, Any]] = {}
    for aspect, records in files.items():
        for record in records:
            merged = by_id.setdefault(
                str(record["id"]), {k: v for k, v in record.items() if k != "score"} | {"scores": {}}
            )
            merged["scores"][aspect] = record["score"]
    complete = [r for r in by_id.values() if len(r["scores"]) == len(files)]
    for record in complete:
        record["score"] = sum(record["scores"].values()) / len(files)
    return complete
