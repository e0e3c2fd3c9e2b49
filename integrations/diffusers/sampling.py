"""The denoising loop the trainers, guidance and best-of-N share: prompts encoded once, DDIM steps
with log-probabilities, and gradients kept for the last K steps only.

The DDIM step is written out here (rather than calling ``scheduler.step``) because the
policy-gradient path needs the Gaussian the step samples from: with ``eta > 0`` each step draws
``x_{t-1} ~ N(mean, std^2)``, whose log-density DDPO (Black et al. 2023) uses as the policy's
log-probability.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint


@dataclass
class PromptEmbeds:
    """Text conditioning for a batch, one row per sample.

    Attributes:
        cond: (B, L, D) prompt embeddings.
        uncond: (B, L, D) negative-prompt embeddings, or None without classifier-free guidance.
    """

    cond: torch.Tensor
    uncond: torch.Tensor | None = None

    def repeat(self, n: int) -> PromptEmbeds:
        """Each row n times in a row (prompt i's samples are rows i*n ... i*n+n-1)."""
        uncond = None if self.uncond is None else self.uncond.repeat_interleave(n, dim=0)
        return PromptEmbeds(self.cond.repeat_interleave(n, dim=0), uncond)

    def select(self, index: torch.Tensor) -> PromptEmbeds:
        """The rows in ``index``."""
        return PromptEmbeds(self.cond[index], None if self.uncond is None else self.uncond[index])


def encode_prompts(
    pipe: Any, prompts: list[str], guidance_scale: float, negative_prompt: str | None = None
) -> PromptEmbeds:
    """Run the pipeline's text encoder once over the distinct ``prompts`` (and the negative prompt).

    Args:
        pipe: A Stable-Diffusion-style pipeline (``encode_prompt``, ``text_encoder``).
        prompts: One prompt per row.
        guidance_scale: Classifier-free guidance scale; > 1 also encodes the negative prompt.
        negative_prompt: Text to steer away from; None uses the empty prompt.
    """
    if not hasattr(pipe, "encode_prompt"):
        raise TypeError(
            f"{type(pipe).__name__} has no encode_prompt(); these loops support Stable-Diffusion-style "
            "pipelines (UNet + one CLIP text encoder). Load one with StableDiffusionPipeline.from_pretrained."
        )
    cfg = guidance_scale > 1.0
    negative = None if negative_prompt is None else [negative_prompt] * len(prompts)
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(list(prompts), pipe.unet.device, 1, cfg, negative)
    return PromptEmbeds(cond, uncond if cfg else None)


def predict_noise(
    unet: torch.nn.Module, latents: torch.Tensor, t: torch.Tensor, embeds: PromptEmbeds, guidance_scale: float
) -> torch.Tensor:
    """The (classifier-free guided) noise prediction for ``latents`` at timestep ``t``."""
    if embeds.uncond is None:
        return unet(latents, t, encoder_hidden_states=embeds.cond).sample
    both = unet(
        torch.cat([latents, latents]), t, encoder_hidden_states=torch.cat([embeds.uncond, embeds.cond])
    ).sample
    uncond, cond = both.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


@dataclass
class StepOutput:
    """One DDIM step.

    Attributes:
        prev: (B, C, h, w) the next (less noisy) latents.
        x0: (B, C, h, w) the predicted clean latents.
        log_prob: (B,) log-density of ``prev`` under the step's Gaussian, averaged over latent
            entries (as DDPO does); zeros when ``eta == 0`` (a deterministic step).
    """

    prev: torch.Tensor
    x0: torch.Tensor
    log_prob: torch.Tensor


def ddim_step(
    scheduler: Any,
    eps: torch.Tensor,
    t: int,
    prev_t: int,
    latents: torch.Tensor,
    eta: float,
    prev: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> StepOutput:
    """A DDIM step from ``t`` to ``prev_t`` (-1 for the last), sampling ``prev`` unless it is given.

    Args:
        scheduler: A diffusers scheduler with ``alphas_cumprod`` and ``final_alpha_cumprod`` (DDIM).
        eps: (B, C, h, w) predicted noise.
        t: Current timestep.
        prev_t: Next timestep, or -1 at the end of the trajectory.
        latents: (B, C, h, w) current latents.
        eta: DDIM's noise scale: 0 is deterministic, 1 is DDPM-like.
        prev: Latents to score instead of sampling new ones (re-evaluating a stored trajectory).
        generator: Random generator for the step noise.
    """
    alphas = scheduler.alphas_cumprod.to(latents.device, torch.float32)
    a_t = alphas[t]
    a_prev = (
        alphas[prev_t] if prev_t >= 0 else scheduler.final_alpha_cumprod.to(latents.device, torch.float32)
    )
    x0 = (latents - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    std = eta * variance.clamp(min=0).sqrt()
    mean = a_prev.sqrt() * x0 + (1 - a_prev - std**2).clamp(min=0).sqrt() * eps
    if prev is None:
        noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
        prev = mean + std * noise
    if eta == 0:
        return StepOutput(prev, x0, torch.zeros(latents.shape[0], device=latents.device))
    log_prob = (
        -((prev.detach() - mean) ** 2) / (2 * std**2)
        - torch.log(std)
        - 0.5 * torch.log(torch.tensor(2 * torch.pi))
    )
    return StepOutput(prev, x0, log_prob.flatten(1).mean(dim=1))


@dataclass
class Trajectory:
    """What ``denoise`` returns.

    Attributes:
        latents: (B, C, h, w) final latents (with a graph through the last ``grad_steps`` steps).
        x0: (B, C, h, w) the clean latents predicted at the last step run.
        timesteps: The T timesteps visited.
        states: T + 1 detached latents, x_T ... x_0 (when ``keep_states``).
        log_probs: (B, T) per-step log-probabilities (when ``keep_states``).
    """

    latents: torch.Tensor
    x0: torch.Tensor
    timesteps: list[int]
    states: list[torch.Tensor] = field(default_factory=list)
    log_probs: torch.Tensor | None = None


StepHook = Callable[[int, int, torch.Tensor, torch.Tensor], torch.Tensor | None]
"""``hook(i, t, latents, x0) -> new latents or None``, called after step i."""


def initial_latents(pipe: Any, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard-normal starting latents of the pipeline's latent shape."""
    unet = pipe.unet
    size = unet.config.sample_size
    shape = (batch, unet.config.in_channels, size, size)
    return (
        torch.randn(shape, generator=generator, device=unet.device, dtype=unet.dtype)
        * pipe.scheduler.init_noise_sigma
    )


def denoise(
    pipe: Any,
    embeds: PromptEmbeds,
    latents: torch.Tensor,
    num_steps: int,
    guidance_scale: float,
    eta: float = 0.0,
    grad_steps: int = 0,
    gradient_checkpointing: bool = False,
    keep_states: bool = False,
    generator: torch.Generator | None = None,
    hook: StepHook | None = None,
    start: int = 0,
    stop: int | None = None,
) -> Trajectory:
    """Run the DDIM sampler from ``latents``; keep a graph through the last ``grad_steps`` steps.

    Args:
        pipe: A Stable-Diffusion-style pipeline whose ``scheduler`` has DDIM's ``alphas_cumprod``.
        embeds: Conditioning, one row per latent.
        latents: (B, C, h, w) starting noise.
        num_steps: Number of denoising steps.
        guidance_scale: Classifier-free guidance scale.
        eta: DDIM noise scale (> 0 for per-step log-probabilities).
        grad_steps: Keep gradients through this many final steps (DRaFT-K); earlier steps run
            without a graph.
        gradient_checkpointing: Recompute each differentiable UNet call in the backward pass
            instead of storing its activations.
        keep_states: Record every latent and the per-step log-probabilities (policy gradient).
        generator: Random generator for the step noise.
        hook: Called after each step; may return replacement latents (guidance).
        start: First step to run (to resume a trajectory stopped with ``stop``).
        stop: Step to stop before; None runs to the end (early rejection pauses mid-way).
    """
    check_scheduler(pipe.scheduler)
    pipe.scheduler.set_timesteps(num_steps, device=latents.device)
    timesteps = [int(t) for t in pipe.scheduler.timesteps]
    states, log_probs, x0 = [latents.detach()], [], latents
    for i in range(start, len(timesteps) if stop is None else stop):
        t = timesteps[i]
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        differentiable = i >= len(timesteps) - grad_steps
        if not differentiable:
            latents = latents.detach()
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            t_in = torch.tensor(t, device=latents.device)
            if differentiable and gradient_checkpointing:
                eps = checkpoint(
                    predict_noise, pipe.unet, latents, t_in, embeds, guidance_scale, use_reentrant=False
                )
            else:
                eps = predict_noise(pipe.unet, latents, t_in, embeds, guidance_scale)
            step = ddim_step(pipe.scheduler, eps, t, prev_t, latents, eta, generator=generator)
        latents, x0 = step.prev, step.x0
        if keep_states:
            states.append(latents.detach())
            log_probs.append(step.log_prob.detach())
        if hook is not None:
            replaced = hook(i, t, latents, step.x0)
            latents = latents if replaced is None else replaced
    stacked = torch.stack(log_probs, dim=1) if log_probs else None
    return Trajectory(latents, x0, timesteps, states, stacked)


def check_scheduler(scheduler: Any) -> None:
    """Fail early unless ``scheduler`` has DDIM's ``alphas_cumprod`` and predicts noise (epsilon)."""
    prediction = getattr(scheduler.config, "prediction_type", "epsilon")
    if not hasattr(scheduler, "alphas_cumprod") or prediction != "epsilon":
        raise ValueError(
            f"These samplers need a DDIM-style scheduler with epsilon prediction; got {type(scheduler).__name__} "
            f"(prediction_type={prediction!r}). Set pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config) "
            "for an epsilon model."
        )


def decode(pipe: Any, latents: torch.Tensor) -> torch.Tensor:
    """VAE-decode latents to (B, 3, H, W) images in [-1, 1] (differentiable)."""
    vae = pipe.vae
    return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] to [0, 1], clamped."""
    return (images / 2 + 0.5).clamp(0, 1)
