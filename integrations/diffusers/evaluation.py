"""Sample with fixed seeds and measure a reward: the held-out check every trainer reports."""

from __future__ import annotations

from typing import Any

import torch

from integrations.diffusers.reward import MultiReward, RewardFn
from integrations.diffusers.sampling import decode, denoise, encode_prompts, initial_latents


@torch.no_grad()
def generate(
    pipe: Any,
    prompts: list[str],
    num_inference_steps: int,
    guidance_scale: float,
    seed: int = 0,
    eta: float = 0.0,
) -> torch.Tensor:
    """(B, 3, H, W) images in [-1, 1] for ``prompts``, from noise drawn with ``seed``."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    embeds = encode_prompts(pipe, prompts, guidance_scale)
    latents = initial_latents(pipe, len(prompts), generator)
    trajectory = denoise(pipe, embeds, latents, num_inference_steps, guidance_scale, eta, generator=generator)
    return decode(pipe, trajectory.latents)


def mean_reward(
    pipe: Any,
    reward: RewardFn | MultiReward,
    prompts: list[str],
    num_inference_steps: int,
    guidance_scale: float,
    seed: int = 0,
) -> float:
    """Mean reward of one deterministic (DDIM, eta 0) sample per prompt, scored on 8-bit images."""
    images = generate(pipe, prompts, num_inference_steps, guidance_scale, seed)
    return float(reward.score_detached(images, prompts).score.float().mean())
