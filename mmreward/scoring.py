"""``Scorer`` and ``load``: score samples with a trained reward model, in batches, and save it.

A saved model is a folder with ``config.json`` (the model as ``class_path``/``init_args``, plus
an optional transform and calibration) and ``model.safetensors``. ``load`` also takes the
Lightning ``.ckpt`` files that ``mmreward fit`` writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmreward.configurable import instantiate, to_config
from mmreward.guards import check_scores
from mmreward.types import HeadOutput, RewardOutput, Sample

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
# keyword of Scorer.score -> Sample field
SAMPLE_KEYWORDS = {
    "images": "image",
    "responses": "response",
    "videos": "video",
    "source_images": "source_image",
    "point_clouds": "point_cloud",
    "actions": "action",
    "steps": "steps",
}


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Scorer:
    """Batched scoring with a reward model.

    Args:
        model: A reward model (``collate``, ``forward -> HeadOutput``, ``aspects``).
        batch_size: Samples per forward.
        device: Where to run; default CUDA when present, else CPU.
        dtype: ``torch.bfloat16`` runs under autocast; default bf16 on CUDA devices that have it,
            fp32 elsewhere. On a CPU with native bf16 (AVX512-BF16 or AMX) the weights of the
            layers autocast runs in bf16 (linear, convolution, attention) are also cast to bf16
            once, in place: the same numbers, without a cast of every weight on every forward
            (2x faster on a ViT-B/32). The model then wants autocast, as the ``Scorer`` runs it.
        transform: A callable ``(score, aspects, sigma) -> result with .score and .components``
            (``mmreward.transforms``), applied to every batch.
        calibration: A callable ``raw -> calibrated`` (``mmreward.calibration``).
        metadata: Free-form provenance (name, revision) stored with the model.
        prefetch: Collate the next batch (decode, resize, tokenize) on a worker thread while the
            current one runs through the model. Off if ``model.collate`` must not run in a thread.
    """

    def __init__(
        self,
        model: nn.Module,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        transform: Any | None = None,
        calibration: Any | None = None,
        metadata: dict[str, Any] | None = None,
        prefetch: bool = True,
    ) -> None:
        self.device = torch.device(device) if device is not None else _default_device()
        self.model = model.to(self.device).eval()
        self.batch_size = batch_size
        if dtype is None and self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            dtype = torch.bfloat16
        self.dtype = dtype
        if dtype == torch.bfloat16 and self.device.type == "cpu" and cpu_has_native_bf16():
            cast_autocast_weights(self.model, dtype)
        self.prefetch = prefetch
        self.transform = transform
        self.calibration = calibration
        self.metadata = dict(metadata or {})

    @property
    def aspects(self) -> list[str]:
        return list(getattr(self.model, "aspects", []))

    # -- forward ---------------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype in (None, torch.float32):
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def forward(self, samples: Sequence[Sample]) -> HeadOutput:
        """Raw model outputs for ``samples``, batched; tensors on the CPU in float32."""
        if not samples:
            raise ValueError("Nothing to score: got an empty list of samples.")
        if not getattr(self.model, "reads_steps", False):
            _refuse_steps(samples)
        parts: list[HeadOutput] = []
        with torch.inference_mode(), self._autocast():
            for start, batch in self._batches(samples):
                parts.append(self.model(_to_device(batch, self.device)))
                for name in ("score", "aspects", "log_sigma"):  # fail fast, naming the record
                    check_scores(name, getattr(parts[-1], name), samples, start)
                _check_steps(parts[-1].steps, samples, start)
        return HeadOutput(
            score=torch.cat([p.score.float().cpu() for p in parts]),
            aspects=None if parts[0].aspects is None else torch.cat([p.aspects.float().cpu() for p in parts]),
            log_sigma=None
            if parts[0].log_sigma is None
            else torch.cat([p.log_sigma.float().cpu() for p in parts]),
            steps=None if parts[0].steps is None else _cat_padded([p.steps for p in parts]),
        )

    def _batches(self, samples: Sequence[Sample]) -> Iterator[tuple[int, Any]]:
        """``(start, model.collate(batch))`` for each batch in order; with ``prefetch`` the next batch
        is collated on a worker thread while the caller runs the current one."""
        starts = range(0, len(samples), self.batch_size)

        def collate(start: int) -> Any:
            # the same modes on the worker thread as on this one (they are thread-local); inputs are
            # prepared at full precision
            with torch.inference_mode(), torch.autocast(self.device.type, enabled=False):
                return self.model.collate(list(samples[start : start + self.batch_size]))

        if not self.prefetch or len(starts) == 1:
            for start in starts:
                yield start, collate(start)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="mmreward-prefetch") as pool:
            pending = pool.submit(collate, starts[0])
            for i, start in enumerate(starts):
                batch = pending.result()  # re-raises a collate error (it names the record)
                if i + 1 < len(starts):
                    pending = pool.submit(collate, starts[i + 1])
                yield start, batch

    def score_samples(self, samples: Sequence[Sample]) -> list[RewardOutput]:
        """Score samples and return one ``RewardOutput`` each (raw, transformed, calibrated, sigma;
        for a process reward model ``steps``, P(step correct) per step, and the chain's aggregate)."""
        out = self.forward(samples)
        aspects = None if out.aspects is None else dict(zip(self.aspects, out.aspects.unbind(-1)))
        sigma = None if out.log_sigma is None else out.log_sigma.exp()
        final, components = out.score, {}
        if self.transform is not None:
            result = self.transform(out.score, aspects, sigma)
            final, components = result.score, dict(result.components)
        calibrated = None if self.calibration is None else self.calibration(out.score)
        check_scores("transformed score", final, samples)
        check_scores("calibrated score", calibrated, samples)
        provenance = self.provenance()
        results = []
        for i in range(len(out.score)):
            prov = dict(provenance)
            if components:
                prov["components"] = {k: float(v[i]) for k, v in components.items()}
            results.append(
                RewardOutput(
                    score=float(final[i]),
                    raw=float(out.score[i]),
                    aspects=None if aspects is None else {k: float(v[i]) for k, v in aspects.items()},
                    sigma=None if sigma is None else float(sigma[i]),
                    steps=None if out.steps is None else _step_probabilities(out.steps[i]),
                    calibrated=None if calibrated is None else float(calibrated[i]),
                    provenance=prov,
                )
            )
        return results

    def provenance(self) -> dict[str, Any]:
        """Model name and revision, preprocessing, and the transform and calibration applied."""
        return {
            "model": self.metadata.get("name", getattr(self.model, "name", type(self.model).__name__)),
            "revision": self.metadata.get("revision", "unsaved"),
            "preprocessing": dict(getattr(self.model, "preprocessing", {})),
            "transform": None if self.transform is None else type(self.transform).__name__,
            "calibration": None if self.calibration is None else type(self.calibration).__name__,
        }

    # -- convenience -----------------------------------------------------------------------------

    def build_samples(
        self, prompts: str | Sequence[str] | None = None, **media: Sequence[Any] | None
    ) -> list[Sample]:
        """Zip ``prompts`` with media lists into samples; one prompt is shared by all items."""
        unknown = set(media) - set(SAMPLE_KEYWORDS)
        if unknown:
            raise TypeError(
                f"Unknown keyword(s) {sorted(unknown)}; use {sorted(SAMPLE_KEYWORDS)} or samples=."
            )
        given = {k: list(v) for k, v in media.items() if v is not None}
        n = max([len(v) for v in given.values()] + [1 if isinstance(prompts, str) else len(prompts or [])])
        prompt_list = [prompts] * n if isinstance(prompts, str) or prompts is None else list(prompts)
        if len(prompt_list) == 1 and n > 1:
            prompt_list = prompt_list * n
        for name, values in {"prompts": prompt_list, **given}.items():
            if len(values) != n:
                raise ValueError(
                    f"{name} has {len(values)} items but another input has {n}; pass equal lengths."
                )
        samples = []
        for i in range(n):
            prompt = prompt_list[i] or ""
            fields = {SAMPLE_KEYWORDS[k]: v[i] for k, v in given.items()}
            samples.append(Sample(prompt=prompt, meta={"source": "score() input", "line": i}, **fields))
        return samples

    def score(
        self,
        samples: Sequence[Sample] | None = None,
        prompts: str | Sequence[str] | None = None,
        aspects: bool = False,
        **media: Sequence[Any] | None,
    ) -> list[float] | list[dict[str, float]]:
        """Score samples, or prompts zipped with media (``images=``, ``videos=``, ``responses=``, ...).

        Returns:
            One float per sample, or with ``aspects=True`` one dict ``{"score": s, aspect: v, ...}``.
        """
        if samples is None:
            samples = self.build_samples(prompts, **media)
        outputs = self.score_samples(samples)
        if not aspects:
            return [o.score for o in outputs]
        return [{"score": o.score, **(o.aspects or {})} for o in outputs]

    def score_records(self, records: str | Path | Sequence[Any]) -> list[dict[str, Any]]:
        """Score records of any kind: unlabelled candidates, preferences, ratings, rankings.

        Args:
            records: Records from ``read_records`` (``Candidate``, ``Preference``, ...), or a data
                file, read with ``read_records(path, unlabeled=True)``.

        Returns:
            One dict per record in the output schema of ``mmreward score`` (docs/scoring.md):
            ``id`` and ``score``/``raw``/... for a candidate or a rating, ``chosen``/``rejected``
            for a preference, ``candidates`` for a ranking; given labels under ``labels``.
        """
        from mmreward.batch_scoring import score_records
        from mmreward.data.records import read_records

        if isinstance(records, (str, Path)):
            records = read_records(records, unlabeled=True)
        return score_records(self, list(records), self.batch_size)

    def rank(self, prompt: str, **media: Sequence[Any]) -> list[int]:
        """Indices of the candidates for one prompt, best first."""
        scores = torch.tensor(self.score(prompts=prompt, **media))
        return torch.argsort(scores, descending=True, stable=True).tolist()

    # -- saving ----------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``directory``; ``load`` reads them back."""
        return save_pretrained(self.model, directory, self.transform, self.calibration, self.metadata)


def save_pretrained(
    model: nn.Module,
    directory: str | Path,
    transform: Any | None = None,
    calibration: Any | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Save a reward model (and its transform and calibration) as ``config.json`` + ``model.safetensors``."""
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "format": "mmreward",
        "format_version": FORMAT_VERSION,
        "model": to_config(model, directory, "model"),
        "transform": None if transform is None else to_config(transform),
        "calibration": None if calibration is None else to_config(calibration),
        "metadata": {k: v for k, v in (metadata or {}).items() if k != "revision"},
    }
    save_model(model, str(directory / WEIGHTS_NAME))
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return directory


AUTOCAST_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (x86 ``avx512_bf16`` or ``amx_bf16``; Arm ``bf16``),
    read from Linux's ``/proc/cpuinfo``; False where that cannot be read. Without it oneDNN emulates
    bf16 and casting the weights gains nothing."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return bool({"avx512_bf16", "amx_bf16", "bf16"} & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return False


def cast_autocast_weights(model: nn.Module, dtype: torch.dtype) -> int:
    """Cast, in place, the floating parameters of the layers that autocast runs in ``dtype`` (linear,
    convolution, attention); under autocast they compute the same numbers as before. Returns how many
    parameters were cast. Norms, embeddings and heads' other parameters keep their dtype."""
    count = 0
    for module in model.modules():
        if isinstance(module, AUTOCAST_LAYERS):
            for param in module.parameters(recurse=False):
                if param.is_floating_point() and param.dtype != dtype:
                    param.data = param.data.to(dtype)
                    count += param.numel()
    if count:
        logger.info("Cast %d weights of linear/conv/attention layers to %s for autocast.", count, dtype)
    return count


def _refuse_steps(samples: Sequence[Sample]) -> None:
    """Refuse reasoning steps for a model that does not read them: it would score the rest of the
    sample as if they were not there."""
    for sample in samples:
        if sample.steps is not None:
            raise ValueError(
                f"{sample.where('steps')}: this model does not read reasoning steps (it has no per-step "
                "scores). Score them with a process reward model (mmreward.prm.ProcessRewardModel), or "
                "drop 'steps' (or put the text in 'response')."
            )


def _check_steps(steps: torch.Tensor | None, samples: Sequence[Sample], offset: int) -> None:
    """Per-step logits must be finite on each chain's real steps (NaN marks the padding after them)."""
    if steps is None:
        return
    for i, row in enumerate(steps):
        count = len(samples[offset + i].steps or [])
        check_scores("step scores", row[None, :count], samples, offset + i)


def _cat_padded(parts: list[torch.Tensor]) -> torch.Tensor:
    """(N, S) per-step outputs of several batches, NaN-padded to the widest."""
    width = max(p.shape[1] for p in parts)
    return torch.cat(
        [torch.nn.functional.pad(p.float().cpu(), (0, width - p.shape[1]), value=float("nan")) for p in parts]
    )


def _step_probabilities(row: torch.Tensor) -> list[float]:
    """P(step correct) for a chain's real steps, from its NaN-padded logits."""
    return torch.sigmoid(row[~torch.isnan(row)]).tolist()


def _to_device(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device, non_blocking=True)
    if isinstance(inputs, dict):
        return {k: _to_device(v, device) for k, v in inputs.items()}
    if isinstance(inputs, (list, tuple)):
        return type(inputs)(_to_device(v, device) for v in inputs)
    if hasattr(inputs, "to") and callable(inputs.to):  # e.g. transformers' BatchFeature
        return inputs.to(device)
    return inputs


def _revision(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def _load_dir(directory: Path, trust_config: bool = False, **scorer_args: Any) -> Scorer:
    from safetensors.torch import load_model

    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{str(directory)!r} has no {CONFIG_NAME}; pass a folder written by save_pretrained or a .ckpt."
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{config_path} is not a readable JSON config ({err}); re-save the model.") from err
    if not isinstance(config, dict) or config.get("format") != "mmreward":
        raise ValueError(f'{config_path} is not an mmreward model config (no "format": "mmreward").')
    build = {"root": directory, "trust": trust_config, "source": str(config_path)}
    model = instantiate(config["model"], **build)
    load_model(model, str(directory / WEIGHTS_NAME), strict=True)
    metadata = {**config.get("metadata", {}), "revision": _revision(directory / WEIGHTS_NAME)}
    return Scorer(
        model,
        transform=instantiate(config.get("transform"), **build),
        calibration=instantiate(config.get("calibration"), **build),
        metadata=metadata,
        **scorer_args,
    )


def _load_ckpt(path: Path, trust_config: bool = False, **scorer_args: Any) -> Scorer:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if "mmreward" not in checkpoint:
        raise ValueError(
            f"{path} was not written by mmreward's RewardModule (no 'mmreward' entry); cannot rebuild it."
        )
    model = instantiate(checkpoint["mmreward"]["model"], trust=trust_config, source=str(path))
    state = {
        k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")
    }
    model.load_state_dict(state, strict=True)
    return Scorer(
        model, metadata={"name": getattr(model, "name", path.stem), "revision": path.name}, **scorer_args
    )


def load(
    path: str | Path,
    device: str | torch.device | None = None,
    batch_size: int = 32,
    dtype: torch.dtype | None = None,
    trust_config: bool = False,
    checkpoint: str | Path | None = None,
    **hub_args: Any,
) -> Scorer:
    """Load a reward model saved by ``Scorer.save_pretrained`` (a folder) or by training (a ``.ckpt``),
    or a published one by name (``mmreward.hub.HUB``: ``"pickscore"``, ``"hpsv2"``, ...).

    Args:
        path: The folder, the checkpoint file, or a hub model name (an existing path wins).
        device: Where to run; default CUDA when present.
        batch_size: Samples per forward.
        dtype: Autocast dtype (default bf16 on capable GPUs, fp32 elsewhere).
        trust_config: Build any class the config names. By default only classes of the packages in
            ``mmreward.configurable.ALLOWED_PREFIXES`` are built, so a downloaded folder runs no code.
        checkpoint: For a hub name: a local copy of the published weights file (no network then).
        **hub_args: For a hub name: init args of its model to change (``mmreward.hub.model_config``).
    """
    from mmreward.hub import HUB, build, close_names_hint, unknown_name

    args = {"device": device, "batch_size": batch_size, "dtype": dtype}
    if not Path(path).exists() and str(path).lower() in HUB:
        model, metadata = build(str(path), checkpoint, **hub_args)
        return Scorer(model, metadata=metadata, **args)
    path = Path(path)
    if not path.exists():
        if path.suffix or len(path.parts) > 1:  # meant as a path
            raise FileNotFoundError(
                f"No model at {str(path)!r}: pass a folder from save_pretrained or a .ckpt file."
                + close_names_hint(str(path))
            )
        raise unknown_name(str(path))
    if checkpoint is not None or hub_args:
        raise TypeError(
            f"checkpoint= and model arguments apply to hub model names ({', '.join(sorted(HUB))}); "
            f"{str(path)!r} is a saved model, which is rebuilt from its own config."
        )
    load_from = _load_ckpt if path.is_file() else _load_dir
    return load_from(path, trust_config=trust_config, **args)
