"""Training on many processes: a resumable sharded sampler, FSDP wrapping, and the trained weights.

- ``ResumableSampler`` / ``ResumableDataLoader``: one seeded permutation per epoch, dealt to the ranks
  a global batch at a time, so a step holds the same records whatever the number of processes (and
  ``R`` processes make the micro-batches of one process accumulating ``R``). The loader is stateful in the way Lightning's fit
  loop asks for (``state_dict``/``load_state_dict``, saved in every checkpoint), so a run resumed
  mid-epoch from a checkpoint continues with the records it had not seen, in the same order.
- ``RewardFSDPStrategy``: Lightning's ``FSDPStrategy`` that wraps each transformer block by itself
  (``block_classes``) and leaves frozen scalar parameters (open_clip's ``logit_scale``) unsharded.
- ``trained_model``: the trained weights in a plain, unwrapped model on rank 0 (gathered under FSDP
  and DeepSpeed), for ``mmreward fit``'s export.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

log = logging.getLogger(__name__)

# open_clip's transformer block (both towers); transformers models name theirs in `_no_split_modules`
OPEN_CLIP_BLOCKS = ("ResidualAttentionBlock", "CustomResidualAttentionBlock")


class ResumableSampler(DistributedSampler):
    """A seeded permutation per epoch, dealt to the ranks a global batch at a time; can start mid-epoch.

    Epoch ``e`` uses ``torch.randperm(N)`` seeded with ``seed + e`` (as ``DistributedSampler``), padded
    with its first indices to a multiple of the rank count. It is cut into global batches of
    ``batch_size x num_replicas`` records, and rank ``r`` takes the ``r``-th slice of each: so ``R``
    processes make exactly the micro-batches that one process makes with ``accumulate_grad_batches=R``.
    Records are dealt whole: a preference pair is one index, its chosen and rejected never split.

    Args:
        dataset: The records (anything with a length).
        num_replicas: Number of processes (``trainer.world_size``).
        rank: This process's global rank.
        batch_size: Records per batch on each process.
        seed: Seed of the epoch permutations; the same on every rank.
        shuffle: Permute each epoch (otherwise the file's order).
    """

    def __init__(
        self, dataset: Any, num_replicas: int, rank: int, batch_size: int, seed: int = 0, shuffle: bool = True
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.batch_size = batch_size
        self.skip = 0  # indices of the current epoch this rank has already consumed (set on resume)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(len(self.dataset), generator=generator).tolist()
        else:
            order = list(range(len(self.dataset)))
        while len(order) < self.total_size:  # pad to a multiple of R, as DistributedSampler does
            order += order[: self.total_size - len(order)]
        mine, step = [], self.batch_size * self.num_replicas
        for start in range(0, self.total_size, step):
            block = order[start : start + step]
            share = len(block) // self.num_replicas
            mine += block[self.rank * share : (self.rank + 1) * share]
        start, self.skip = self.skip, 0  # a resume skips once, in the epoch it was saved in
        return iter(mine[start:])


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a ``ResumableSampler`` whose position is saved in Lightning checkpoints.

    ``state_dict()`` records the epoch and the number of records the whole job (all ranks) has drawn in
    it; ``load_state_dict`` makes the next pass start right after them. A job resumed with another
    number of processes continues at the same global position when it divides evenly.
    """

    def __init__(self, dataset: Any, sampler: ResumableSampler, **kwargs: Any) -> None:
        super().__init__(dataset, sampler=sampler, **kwargs)
        self._batches = 0  # batches yielded in the current pass, counting those skipped on resume
        self._resume_batches = 0

    def __iter__(self) -> Iterator[Any]:
        self._batches, self._resume_batches = self._resume_batches, 0
        return self._counted(super().__iter__())

    def _counted(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """The epoch and how far into it the job is (rank 0's copy is the one a checkpoint keeps)."""
        sampler = self.sampler
        return {
            "epoch": sampler.epoch,
            "batches": self._batches,
            "samples": self._batches * self.batch_size * sampler.num_replicas,
            "seed": sampler.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Start the next pass where ``state`` left off (the next epoch if it had finished one)."""
        sampler = self.sampler
        if state["seed"] != sampler.seed:
            warnings.warn(
                f"Resuming with data seed {sampler.seed}, but the checkpoint's run used {state['seed']}: "
                "the rest of the epoch is drawn from a different order. Set --data.seed to the old value "
                "to continue it exactly.",
                stacklevel=2,
            )
        epoch, samples = state["epoch"], state["samples"]
        if state["batches"] >= len(self):
            epoch, samples = epoch + 1, 0
        per_rank, left = divmod(samples, sampler.num_replicas)
        if left or per_rank % self.batch_size:
            raise ValueError(
                f"Cannot resume mid-epoch: the checkpoint's job had drawn {samples} records of epoch {epoch}, "
                f"which does not split into batches of {self.batch_size} on {sampler.num_replicas} processes. "
                "Resume with the old batch size and process count, or from an end-of-epoch checkpoint."
            )
        sampler.set_epoch(epoch)
        sampler.skip = per_rank
        self._resume_batches = per_rank // self.batch_size


def block_classes(model: nn.Module) -> set[type[nn.Module]]:
    """The transformer-block classes in ``model``: the unit FSDP shards and gathers one at a time.

    Those that transformers models name in ``_no_split_modules`` (an LM's decoder layers, a VLM's
    decoder layers and vision blocks) and open_clip's ``ResidualAttentionBlock`` (both CLIP towers).
    """
    names = set(OPEN_CLIP_BLOCKS)
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return {type(m) for m in model.modules() if type(m).__name__ in names}


class RewardFSDPStrategy(FSDPStrategy):
    """Lightning's ``FSDPStrategy``, set up for reward models; takes the same arguments.

    - ``auto_wrap_policy`` defaults to the model's own transformer blocks (``block_classes``), so each
      decoder layer / CLIP block is its own FSDP unit; pass one to override.
    - Frozen 0-dimensional parameters (open_clip's ``logit_scale``, which FSDP cannot shard) are left
      out of sharding (``ignored_states``); a trainable one is refused.
    - Runs on CPU with the gloo backend too (Lightning's own class refuses ``accelerator="cpu"``), so an
      FSDP setup can be tested without GPUs. On GPUs it behaves exactly as ``FSDPStrategy``.
    """

    def _setup_model(self, model: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        if not any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            if self.kwargs.get("auto_wrap_policy") is None:
                blocks = block_classes(model)
                log.info("FSDP wraps each of: %s", ", ".join(sorted(c.__name__ for c in blocks)) or "nothing")
                if blocks:
                    self.kwargs["auto_wrap_policy"] = ModuleWrapPolicy(blocks)
            self.kwargs["ignored_states"] = [*self.kwargs.get("ignored_states", []), *_frozen_scalars(model)]
        if self.root_device.type != "cpu":
            return super()._setup_model(model)
        # Lightning passes device_id=None on CPU, which FSDP reads as "find an accelerator"
        from lightning.pytorch.strategies.fsdp import _setup_activation_checkpointing

        if not any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            model = FullyShardedDataParallel(
                module=model,
                cpu_offload=self.cpu_offload,
                mixed_precision=self.mixed_precision_config,
                sharding_strategy=self.sharding_strategy,
                device_id=torch.device("cpu"),
                **self.kwargs,
            )
        _setup_activation_checkpointing(model, self._activation_checkpointing_kwargs)
        return model


def _frozen_scalars(model: nn.Module) -> list[nn.Parameter]:
    scalars = [(name, p) for name, p in model.named_parameters() if p.dim() == 0]
    trainable = [name for name, p in scalars if p.requires_grad]
    if trainable:
        raise ValueError(
            f"FSDP cannot shard 0-dimensional parameters and {trainable[0]!r} is trainable. "
            "Freeze it (requires_grad_(False)) or make it a 1-element tensor."
        )
    return [p for _, p in scalars]


def best_checkpoint(trainer: Any) -> str:
    """The best checkpoint of the first ``ModelCheckpoint`` that monitors a metric, else of the first one.

    A recipe may add a periodic checkpoint (for resuming) beside the best-model one; exports want the best.
    """
    callbacks = trainer.checkpoint_callbacks
    ranked = [c for c in callbacks if getattr(c, "monitor", None)] + list(callbacks)
    return getattr(ranked[0], "best_model_path", "") if ranked else ""


def trained_model(trainer: Any, module: Any) -> nn.Module | None:
    """The trained reward model with its best (else last) weights, unwrapped; ``None`` except on rank 0.

    Every rank must call it: under FSDP and DeepSpeed ZeRO-3 the weights are gathered collectively.
    Under one process or DDP the live ``module`` gets the best checkpoint's weights and its ``model`` is
    returned; under a sharding strategy a plain copy is rebuilt from the model's config and given the
    full weights (the best checkpoint's, or the live ones gathered from every rank).
    """
    from lightning.pytorch.strategies import DeepSpeedStrategy

    best = best_checkpoint(trainer)
    sharded = isinstance(trainer.strategy, (FSDPStrategy, DeepSpeedStrategy))
    if best:
        state = _checkpoint_state(best) if trainer.is_global_zero else None
    elif sharded:
        state = _gathered_state(trainer, module)  # collective
    else:
        state = None
    if not trainer.is_global_zero:
        return None
    if not sharded:
        if state is not None:
            module.load_state_dict(state)
        return module.model
    from mmreward.configurable import instantiate, to_config

    model = instantiate(to_config(module.model), trust=True, source="the trained model's config")
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    return model


def _checkpoint_state(path: str) -> dict[str, torch.Tensor]:
    """A checkpoint's full state dict: a Lightning ``.ckpt`` file, or a DeepSpeed checkpoint folder."""
    if Path(path).is_dir():
        from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

        single = Path(path) / "mmreward-fp32.ckpt"
        if not single.exists():
            convert_zero_checkpoint_to_fp32_state_dict(path, str(single))
        path = str(single)
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _gathered_state(trainer: Any, module: Any) -> dict[str, torch.Tensor]:
    """The live weights, full, on rank 0 (FSDP: a full state dict; DeepSpeed: the partitions gathered)."""
    from lightning.pytorch.strategies import DeepSpeedStrategy

    if isinstance(trainer.strategy, DeepSpeedStrategy):
        import deepspeed

        params = list(module.parameters())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    return trainer.strategy.lightning_module_state_dict()


def global_batch_size(batch_size: int, trainer: Any) -> int:
    """Records per optimizer step: per-device batch x processes x gradient-accumulation steps."""
    return batch_size * trainer.world_size * trainer.accumulate_grad_batches


def data_seed(seed: int | None) -> int:
    """``seed``, else the job's ``seed_everything`` value (``PL_GLOBAL_SEED``), else 0."""
    return seed if seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
