"""Lightning training for any reward model: ``RewardModule`` and ``RewardDataModule``.

One module trains on pairs (Bradley-Terry family), ratings (regression), rankings
(Plackett-Luce) and process records (per-step BCE, ``mmreward.prm``): the batch's kind picks the loss term. Validation and test metrics are computed
from every rank's predictions (gathered across processes), so DDP reports the full-set figures.
Training data is drawn by ``mmreward.distributed.ResumableSampler``: the same global batches on any
number of processes, and a mid-epoch resume continues the epoch's order (docs/scale-out.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from mmreward.configurable import Configurable, to_config
from mmreward.data.collate import Collator, PairBatch, ProcessBatch, RankingBatch, RatingBatch
from mmreward.data.records import Record, read_records
from mmreward.distributed import ResumableDataLoader, ResumableSampler, data_seed, global_batch_size
from mmreward.guards import check_loss
from mmreward.losses import RewardLoss
from mmreward.metrics import (
    correlations,
    first_error_f1,
    first_error_index,
    grouped_accuracy,
    pairwise_accuracy,
    ranking_pair_accuracy,
    step_auroc,
)

log = logging.getLogger(__name__)

OptimizerCallable = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerCallable = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


def _adamw(params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """AdamW at lr 1e-4, fused (one kernel per step instead of a loop over tensors, as TRL's default
    ``adamw_torch_fused``) where every parameter sits on a CPU or CUDA device; unfused elsewhere."""
    params = list(params)
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=1e-4, fused=fused or None)


def _host(value: Any) -> Any:
    """A prediction as a NumPy array (floats in float32; indices and masks keep their dtype) or a list."""
    if not isinstance(value, torch.Tensor):
        return list(value)
    value = value.detach()
    return (value.float() if value.is_floating_point() else value).cpu().numpy()


class _Accumulator:
    """Collects one epoch's predictions and labels, then computes metrics over all ranks."""

    def __init__(self) -> None:
        self.parts: dict[str, list[Any]] = {}

    def add(self, **arrays: Any) -> None:
        for key, value in arrays.items():
            self.parts.setdefault(key, []).append(value)

    def gathered(self) -> dict[str, Any]:
        local = {
            k: (np.concatenate(v) if isinstance(v[0], np.ndarray) else sum(v, []))
            for k, v in self.parts.items()
        }
        self.parts = {}
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return local
        everyone: list[dict[str, Any]] = [{} for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather_object(everyone, local)
        merged = {}
        for key in local:
            values = [part[key] for part in everyone if key in part]
            merged[key] = np.concatenate(values) if isinstance(values[0], np.ndarray) else sum(values, [])
        return merged


def pair_metrics(data: dict[str, Any], aspects: list[str]) -> dict[str, float]:
    """Accuracy overall, per subset and per aspect from accumulated pair predictions."""
    metrics = {"accuracy": pairwise_accuracy(data["diff"], data["label"]), "pairs": float(len(data["diff"]))}
    for subset, acc in grouped_accuracy(data["diff"], data["label"], data["subsets"]).items():
        metrics[f"accuracy/{subset}"] = acc
    if "aspect_diff" in data:
        for j, name in enumerate(aspects):
            metrics[f"accuracy_{name}"] = pairwise_accuracy(
                data["aspect_diff"][:, j], data["aspect_label"][:, j]
            )
    metrics["metric"] = metrics["accuracy"]
    return metrics


def process_metrics(data: dict[str, Any]) -> dict[str, float]:
    """Step AUROC and ProcessBench's first-error F1 (steps below P = 0.5 count as errors)."""
    f1 = first_error_f1(data["pred_first"], data["true_first"])
    return {"step_auroc": step_auroc(data["step_prob"], data["step_label"]), **f1, "metric": f1["f1"]}


def _process_step(model: nn.Module, batch: ProcessBatch) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Per-step BCE on a ``ProcessBatch`` (plus the model's ``auxiliary_losses``, if it has any), and the
    step and first-error predictions for the metrics."""
    from mmreward.prm import step_bce_loss

    out = model(batch.inputs)
    if out.steps is None:
        raise TypeError(
            f"{type(model).__name__} returns no per-step scores, so it cannot train on process records; "
            "use mmreward.prm.ProcessRewardModel."
        )
    labels = batch.labels.to(out.steps.device)
    terms = {"step_bce": step_bce_loss(out.steps, labels)}
    auxiliary = getattr(model, "auxiliary_losses", None)
    if auxiliary is not None:
        terms.update(auxiliary(labels))
    loss = sum(terms.values())
    labelled = ~torch.isnan(batch.labels)
    probs = torch.sigmoid(out.steps.detach()).cpu()
    preds = {
        "step_prob": probs[labelled],
        "step_label": batch.labels[labelled],
        "pred_first": torch.tensor([first_error_index(p[m]) for p, m in zip(probs, labelled)]),
        "true_first": torch.tensor([first_error_index(y[m]) for y, m in zip(batch.labels, labelled)]),
    }
    return {**terms, "loss": loss}, preds


def rating_metrics(data: dict[str, Any], aspects: list[str]) -> dict[str, float]:
    """Rank correlations of scores with ratings, overall and per aspect."""
    metrics: dict[str, float] = {"ratings": float(len(data["score"]))}
    main = []
    if not np.isnan(data["target"]).all():
        for name, value in correlations(data["score"], data["target"]).items():
            metrics[name] = float(value)
        main.append(metrics["spearman"])
    if "aspect_score" in data:
        for j, name in enumerate(aspects):
            corr = correlations(data["aspect_score"][:, j], data["aspect_target"][:, j])
            metrics[f"spearman_{name}"] = corr["spearman"]
            main.append(corr["spearman"])
    finite = [m for m in main if not math.isnan(m)]
    metrics["metric"] = float(np.mean(finite)) if finite else float("nan")
    return metrics


class RewardModule(L.LightningModule):
    """Train any reward model (see ``mmreward.types``) on pairs, ratings or rankings.

    Args:
        model: The reward model (e.g. ``mmreward.models.RewardModel``).
        loss: The objective; see ``mmreward.losses.RewardLoss``.
        optimizer: Builds the optimizer from the trainable parameters (LightningCLI's
            ``OptimizerCallable``; in YAML, ``class_path: torch.optim.AdamW``).
        scheduler: Builds a learning-rate scheduler from the optimizer, stepped every step.
        compile: Compile the backbone's forward with ``torch.compile(dynamic=True)`` for the fit
            (``True``, or the keyword arguments of ``torch.compile``); eager again when the fit ends,
            for scoring and export. It pays on long runs only: compiling a 4-layer LM took about a
            minute on the 2-core CPU of ``benchmarks/results/trl_training.md`` (inductor needs a C++
            compiler on CPU).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: RewardLoss | None = None,
        optimizer: OptimizerCallable = _adamw,
        scheduler: SchedulerCallable | None = None,
        compile: bool | dict[str, Any] = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss if loss is not None else RewardLoss()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.compile_options = {"dynamic": True} if compile is True else (compile or None)
        self._metrics = {"val": _Accumulator(), "test": _Accumulator()}

    def _compiled(self) -> nn.Module:
        """The module whose forward ``compile`` replaces: the model's backbone, else the model."""
        return getattr(self.model, "backbone", self.model)

    def on_fit_start(self) -> None:
        if self.compile_options is not None:
            module = self._compiled()
            module.forward = torch.compile(module.forward, **self.compile_options)

    def teardown(self, stage: str) -> None:
        module = self._compiled()
        if self.compile_options is not None and "forward" in vars(module):
            del module.forward  # the class's eager forward again, also after a failed fit

    @property
    def aspects(self) -> list[str]:
        return list(getattr(self.model, "aspects", []))

    def forward(self, inputs: dict[str, Any]):
        return self.model(inputs)

    def _step(
        self, batch: PairBatch | RatingBatch | RankingBatch | ProcessBatch
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Loss terms and the predictions that the metrics need, for one batch of any kind."""
        if isinstance(batch, ProcessBatch):
            return _process_step(self.model, batch)
        out = self.model(batch.inputs)
        if isinstance(batch, PairBatch):
            b = len(batch.label)
            chosen, rejected = out[:b], out[b:]
            preds = {"diff": (chosen.score - rejected.score), "label": batch.label, "subsets": batch.subsets}
            if chosen.aspects is not None and batch.aspect_labels is not None:
                preds.update(aspect_diff=chosen.aspects - rejected.aspects, aspect_label=batch.aspect_labels)
            return self.loss.pairs(chosen, rejected, batch), preds
        if isinstance(batch, RatingBatch):
            preds = {"score": out.score, "target": batch.score}
            if out.aspects is not None and batch.aspect_scores is not None:
                preds.update(aspect_score=out.aspects, aspect_target=batch.aspect_scores)
            return self.loss.ratings(out, batch), preds
        scores = out.score[batch.index].masked_fill(~batch.mask, 0.0)  # (B, K)
        return self.loss.rankings(scores, batch), {"scores": scores, "order": batch.order, "mask": batch.mask}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        terms, _ = self._step(batch)
        check_loss(terms["loss"], self.global_step, batch_idx, batch.ids)
        size = len(batch.subsets)
        for name, value in terms.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=size)
        return terms["loss"]

    def _eval_step(self, batch, stage: str) -> None:
        terms, preds = self._step(batch)
        self.log(f"{stage}/loss", terms["loss"], sync_dist=True, batch_size=len(batch.subsets))
        self._metrics[stage].add(**{k: _host(v) for k, v in preds.items()})

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_epoch_end(self, stage: str) -> None:
        data = self._metrics[stage].gathered()
        if not data:
            return
        if "diff" in data:
            metrics = pair_metrics(data, self.aspects)
        elif "step_label" in data:
            metrics = process_metrics(data)
        elif "scores" in data:
            acc = ranking_pair_accuracy(data["scores"], data["order"], data["mask"])
            metrics = {"ranking_accuracy": acc, "metric": acc}
        else:
            metrics = rating_metrics(data, self.aspects)
        for name, value in metrics.items():
            # already reduced over all ranks: every rank logs the same number
            self.log(f"{stage}/{name}", float(value), sync_dist=False, rank_zero_only=False)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.model(batch.inputs).score

    def configure_optimizers(self):
        optimizer = self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "step"},
        }

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """Lightning's clipping; under FSDP, clipping by the norm over every rank's shard; and under
        ``bf16-mixed``, clipping for a fused optimizer too.

        Lightning's mixed-precision plugin refuses to clip for an optimizer that unscales gradients in
        its own step (fused AdamW), which is right for fp16's loss scaling; bf16 has no scaler, so the
        gradients are already true ones and are clipped here directly.
        """
        from lightning.fabric.plugins.precision.amp import _optimizer_handles_unscaling
        from torch.distributed.fsdp import FullyShardedDataParallel

        root = self.trainer.strategy.model
        by_norm = gradient_clip_val and gradient_clip_algorithm in (None, "norm")
        if by_norm and isinstance(root, FullyShardedDataParallel):  # Lightning's FSDP plugin refuses it
            root.clip_grad_norm_(gradient_clip_val)
            return
        unscaled = getattr(self.trainer.precision_plugin, "scaler", False) is None
        if gradient_clip_val and unscaled and _optimizer_handles_unscaling(optimizer):
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if by_norm:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["mmreward"] = {"model": to_config(self.model)}


class RewardDataModule(L.LightningDataModule):
    """Canonical data files, or a synthetic world that writes them, for ``RewardModule``.

    Explicit files win: when any of ``train``/``val``/``test`` is given, ``synthetic`` is not used,
    so ``--data.train T.jsonl --data.val V.jsonl`` swaps a quick start's data for your own.

    Args:
        train: Training file (JSONL, JSON array or Parquet; canonical schema or ``field_map``).
        val: Validation file.
        test: Test file.
        synthetic: A world with ``write(root) -> {split: path}`` (``mmreward.data.synthetic``).
        data_root: Where the synthetic world writes; default ``<default_root_dir>/data``.
        field_map: Renames or a format name (see ``mmreward.data.records.read_records``).
        batch_size: Records per batch on each device (a pair counts once; it is two samples in one
            forward). An optimizer step sees ``batch_size x devices x accumulate_grad_batches`` records.
        eval_batch_size: Records per validation/test batch; default ``batch_size``.
        num_workers: Data-loader worker processes (media decoding runs there).
        skip_bad: Skip records that do not parse, with a warning, instead of failing.
        seed: Seed of the training order (a permutation per epoch, the same on every rank); default
            the job's ``seed_everything`` value, else 0.
    """

    def __init__(
        self,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        synthetic: Configurable | None = None,
        data_root: str | None = None,
        field_map: dict[str, str] | str | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        skip_bad: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.files = {"train": train, "val": val, "test": test}
        self.synthetic = synthetic if not any(self.files.values()) else None
        if synthetic is None and not any(self.files.values()):
            raise ValueError(
                "RewardDataModule needs data: pass --data.train/--data.val files or a synthetic world."
            )
        self.data_root, self.field_map = data_root, field_map
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.skip_bad, self.seed = num_workers, skip_bad, seed
        self.records: dict[str, list[Record]] = {}

    def _root(self) -> Path:
        if self.data_root is not None:
            return Path(self.data_root)
        base = self.trainer.default_root_dir if self.trainer is not None else "."
        return Path(base) / "data"

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            self.synthetic.write(self._root())

    def setup(self, stage: str | None = None) -> None:
        files = dict(self.files)
        if self.synthetic is not None:
            files.update({k: str(v) for k, v in self.synthetic.write(self._root()).items() if k in files})
        for split, path in files.items():
            if path is not None and split not in self.records:
                self.records[split] = read_records(path, self.field_map, skip_bad=self.skip_bad)

    def _collator(self) -> Collator:
        model = self.trainer.lightning_module.model
        return Collator(model.collate, getattr(model, "aspects", []))

    def _records(self, split: str) -> list[Record]:
        if split not in self.records:
            raise ValueError(
                f"No {split} data: pass --data.{split} or a synthetic world that writes a {split} split."
            )
        return self.records[split]

    def _loader_args(self) -> dict[str, Any]:
        workers = self.num_workers
        return {"collate_fn": self._collator(), "num_workers": workers, "persistent_workers": workers > 0}

    def _eval_loader(self, split: str) -> DataLoader:
        # under DDP/FSDP Lightning shards it with a DistributedSampler (padded so every rank runs alike)
        return DataLoader(self._records(split), batch_size=self.eval_batch_size, **self._loader_args())

    def train_dataloader(self) -> ResumableDataLoader:
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        records = self._records("train")
        sampler = ResumableSampler(records, replicas, rank, self.batch_size, seed=data_seed(self.seed))
        if trainer is not None:
            log.info(
                "global batch: %d records per optimizer step = %d per device x %d processes x %d accumulated",
                global_batch_size(self.batch_size, trainer), self.batch_size, replicas,
                trainer.accumulate_grad_batches,
            )  # fmt: skip
        return ResumableDataLoader(records, sampler, batch_size=self.batch_size, **self._loader_args())

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader("val") if "val" in self.records else []

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
