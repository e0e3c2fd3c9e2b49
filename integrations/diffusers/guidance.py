"""Reward-guided sampling without training: a ``callback_on_step_end`` that nudges the latents along
the reward's gradient after every denoising step.

After step i the callback predicts the clean image from the current latents (one extra denoiser
call, with a graph), decodes and scores it, and moves the latents by
``strength_i * grad / rms(grad)``. Normalising by the gradient's root-mean-square makes
``strength`` a step size in units of the latents' own scale, whatever the reward's scale is.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from integrations.diffusers.reward import MultiReward, RewardFn
from integrations.diffusers.sampling import check_scheduler, decode

Schedule = Literal["constant", "decay", "ramp"]
"""``constant``: the same strength every step; ``decay``: cosine from full strength to zero (steer
the layout early); ``ramp``: cosine from zero to full (steer the details late)."""


def schedule_weight(schedule: Schedule, step: int, num_steps: int) -> float:
    """The schedule's multiplier of ``strength`` at ``step`` of ``num_steps``, in [0, 1]."""
    progress = step / max(1, num_steps - 1)
    if schedule == "constant":
        return 1.0
    if schedule == "decay":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "ramp":
        return 0.5 * (1 - math.cos(math.pi * progress))
    raise ValueError(f"Unknown schedule {schedule!r}; use 'constant', 'decay' or 'ramp'.")


class RewardGuidance:
    """A pipeline callback that steers sampling towards higher reward.

    Use it as ``pipe(prompts, callback_on_step_end=RewardGuidance(reward, prompts),
    callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])``.

    Args:
        reward: A differentiable ``RewardFn`` or ``MultiReward``.
        prompts: The prompts passed to the pipeline (repeated to match ``num_images_per_prompt``).
        strength: Step size per denoising step, in units of the latents' scale.
        schedule: How the strength changes over the steps.
        through_denoiser: Predict the clean latents with one denoiser call before scoring (better
            gradients, one extra forward and backward a step); False scores the current latents
            as if they were clean (cheaper, noisier early on).
    """

    def __init__(
        self,
        reward: RewardFn | MultiReward,
        prompts: list[str],
        strength: float = 0.1,
        schedule: Schedule = "decay",
        through_denoiser: bool = True,
    ) -> None:
        if not reward.differentiable:
            raise TypeError(
                "Reward guidance needs a differentiable reward (a model with tensor_inputs); this one has none. "
                "Use best_of_n(...) to improve samples with a reward that has no gradient."
            )
        self.reward, self.prompts = reward, list(prompts)
        self.strength, self.schedule, self.through_denoiser = strength, schedule, through_denoiser
        self.history: list[float] = []

    def _clean_estimate(
        self, pipe: Any, step: int, latents: torch.Tensor, prompt_embeds: torch.Tensor | None
    ) -> torch.Tensor:
        timesteps = pipe.scheduler.timesteps
        if not self.through_denoiser or step + 1 >= len(timesteps) or prompt_embeds is None:
            return latents
        check_scheduler(pipe.scheduler)
        t_next = timesteps[step + 1]
        cond = prompt_embeds.chunk(2)[1] if prompt_embeds.shape[0] == 2 * latents.shape[0] else prompt_embeds
        eps = pipe.unet(latents, t_next, encoder_hidden_states=cond).sample
        alpha = pipe.scheduler.alphas_cumprod.to(latents.device)[int(t_next)]
        return (latents - (1 - alpha).sqrt() * eps) / alpha.sqrt()

    def __call__(
        self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """Return ``callback_kwargs`` with the latents moved up the reward gradient."""
        latents = callback_kwargs["latents"]
        weight = self.strength * schedule_weight(self.schedule, step, len(pipe.scheduler.timesteps))
        if weight == 0:
            return callback_kwargs
        repeats = latents.shape[0] // len(self.prompts)
        prompts = [p for p in self.prompts for _ in range(repeats)]
        with torch.enable_grad():
            x = latents.detach().float().requires_grad_(True)
            clean = self._clean_estimate(pipe, step, x, callback_kwargs.get("prompt_embeds"))
            reward = self.reward(decode(pipe, clean), prompts)
            (grad,) = torch.autograd.grad(reward.sum(), x)
        self.history.append(float(reward.detach().mean()))
        rms = grad.flatten(1).pow(2).mean(dim=1).sqrt().clamp(min=1e-12).view(-1, 1, 1, 1)
        callback_kwargs["latents"] = (x.detach() + weight * grad / rms).to(latents.dtype)
        return callback_kwargs
