"""LoRA adapters on the denoiser and the training setup every trainer shares (accelerate, optimizer,
the seeded sampling generator: ``LoraTrainer``).

Follows the conventions of diffusers' ``train_text_to_image_lora.py``: the base weights are frozen,
LoRA goes on the attention projections, only the adapter weights are trained (in fp32 when the
rest of the model runs in half precision), and the adapter is saved in diffusers' LoRA format so
``pipe.load_lora_weights(dir)`` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from mmreward.optional import require


@dataclass
class LoraSettings:
    """LoRA on the denoiser.

    Attributes:
        rank: Adapter rank; 4 as in AlignProp (Prabhudesai et al. 2023).
        alpha: LoRA scaling numerator (``alpha / rank`` multiplies the update).
        target_modules: Names of the layers that get an adapter (diffusers' attention
            projections by default; add ``conv1``/``conv2`` to adapt the ResNet blocks too).
    """

    rank: int = 4
    alpha: float = 4.0
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass
class TrainSettings:
    """Optimisation and device settings shared by the trainers.

    Attributes:
        learning_rate: AdamW learning rate for the adapter weights; 1e-3 as in AlignProp
            (Prabhudesai et al. 2023).
        weight_decay: AdamW weight decay.
        max_grad_norm: Gradient clipping norm (1.0 as diffusers' training scripts use).
        mixed_precision: accelerate's mixed-precision mode (``"bf16"`` on recent GPUs).
        gradient_accumulation_steps: Batches per optimizer step.
        seed: Seed for sampling noise and adapter initialisation.
        lora: The adapter.
    """

    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    max_grad_norm: float = 1.0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_accumulation_steps: int = 1
    seed: int = 0
    lora: LoraSettings = field(default_factory=LoraSettings)


def add_lora(unet: torch.nn.Module, settings: LoraSettings) -> list[torch.nn.Parameter]:
    """Freeze ``unet`` and add a trainable LoRA adapter; return the adapter's parameters."""
    peft = require("peft", "diffusers")
    unet.requires_grad_(False)
    config = peft.LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        init_lora_weights="gaussian",
        target_modules=list(settings.target_modules),
    )
    unet.add_adapter(config)
    params = [p for p in unet.parameters() if p.requires_grad]
    if not params:
        raise ValueError(
            f"No layer of the denoiser matched target_modules={list(settings.target_modules)}. "
            "Pass names of its Linear/Conv layers (e.g. 'to_q', 'to_v', 'conv1')."
        )
    for param in params:
        param.data = param.data.float()
    return params


@dataclass
class Prepared:
    """What ``prepare`` hands a trainer.

    Attributes:
        accelerator: The ``accelerate.Accelerator`` (devices, mixed precision, accumulation).
        params: The trainable adapter parameters.
        optimizer: AdamW over ``params``.
    """

    accelerator: Any
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer


def prepare(pipe: Any, settings: TrainSettings) -> Prepared:
    """Freeze the pipeline, add LoRA to its denoiser and set up accelerate and the optimizer."""
    accelerate = require("accelerate", "diffusers")
    accelerator = accelerate.Accelerator(
        mixed_precision=settings.mixed_precision,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
    )
    torch.manual_seed(settings.seed)
    for name in ("vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.requires_grad_(False)
    pipe.to(accelerator.device)
    params = add_lora(pipe.unet, settings.lora)
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    pipe.unet, optimizer = accelerator.prepare(pipe.unet, optimizer)
    pipe.set_progress_bar_config(disable=True)
    return Prepared(accelerator, params, optimizer)


def save_lora(pipe: Any, directory: str | Path, accelerator: Any | None = None) -> Path:
    """Write the denoiser's LoRA weights in diffusers' format (``pytorch_lora_weights.safetensors``).

    Load them into a fresh pipeline with ``pipe.load_lora_weights(directory)``.
    """
    peft_utils = require("peft.utils", "diffusers")
    diffusers_utils = require("diffusers.utils", "diffusers")
    unet = accelerator.unwrap_model(pipe.unet) if accelerator is not None else pipe.unet
    state = diffusers_utils.convert_state_dict_to_diffusers(peft_utils.get_peft_model_state_dict(unet))
    if not state:
        raise ValueError(
            "The pipeline's denoiser has no LoRA adapter to save; train one with a trainer first."
        )
    directory = Path(directory)
    type(pipe).save_lora_weights(directory, unet_lora_layers=state, safe_serialization=True)
    return directory


class LoraTrainer:
    """What the denoiser trainers share: the pipeline with a LoRA adapter set up by ``prepare``, a
    seeded CPU generator for their sampling noise, and ``save_lora``.

    Subclasses: ``RewardBackpropTrainer``, ``PolicyGradientTrainer``, ``DiffusionDPOTrainer``.

    Args:
        pipe: A Stable-Diffusion-style pipeline; trained in place.
        settings: Optimiser, LoRA and accelerate settings.
    """

    def __init__(self, pipe: Any, settings: TrainSettings) -> None:
        self.settings, self.pipe = settings, pipe
        self.prepared: Prepared = prepare(pipe, settings)
        self.generator = torch.Generator(device="cpu").manual_seed(settings.seed)

    def save_lora(self, directory: str) -> None:
        """Save the adapter in diffusers' LoRA format; reload with ``pipe.load_lora_weights``."""
        save_lora(self.pipe, directory, self.prepared.accelerator)


def cycled_prompts(prompts: list[str], step: int, size: int) -> list[str]:
    """The ``size`` prompts of batch ``step`` when training cycles through ``prompts`` in order."""
    if not prompts:
        raise ValueError("Training got no prompts; pass a list of training prompts.")
    return [prompts[(step * size + j) % len(prompts)] for j in range(size)]


class adapters_disabled:  # noqa: N801 (a context manager reads as a clause)
    """Context manager: run the denoiser without its LoRA adapter (the frozen reference model)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet = getattr(unet, "module", unet)

    def __enter__(self) -> None:
        self.unet.disable_adapters()

    def __exit__(self, *exc: object) -> None:
        self.unet.enable_adapters()
