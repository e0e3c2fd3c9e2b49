"""Best-of-N for diffusion pipelines: N samples per prompt, scored in one batch, best one kept.

Each prompt is encoded once and its embedding shared by its N samples; the N*P finished images go
to the reward in batches, where a CLIP-style reward encodes each distinct prompt once too.
Two ways to spend less than N full samples: *early rejection* scores the clean image predicted at
an intermediate step and stops sampling the worst candidates, and a *cascade* scores all finished
images with a cheap reward and only the survivors with the expensive one.

What is chosen, and what survives a stage, is decided by ``integrations.search.selection`` (the
rules every search method shares); this module only draws, decodes and scores the images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from integrations.diffusers.reward import ImageReward, RewardBatch, image_reward
from integrations.diffusers.sampling import decode, denoise, encode_prompts, initial_latents, to_unit
from integrations.search.cascade import Stage
from integrations.search.selection import Selection, best_index, selection_values, top_k_mask
from mmreward.protocols import Reward


@dataclass
class EarlyRejection:
    """Score the predicted clean image after ``at_step`` steps and finish only the best ``keep``.

    Attributes:
        at_step: Denoising steps run before the candidates are scored (>= 1).
        keep: Candidates per prompt that are sampled to the end.
    """

    at_step: int
    keep: int


@dataclass
class BestOfNResult:
    """What ``best_of_n`` returns.

    Attributes:
        images: (P, 3, H, W) the chosen image per prompt, in [0, 1].
        best_index: Per prompt, the index (0..N-1) of the chosen candidate.
        scores: (P, N) final-stage score of every candidate; NaN marks candidates that were
            rejected before the final stage (see ``survivors``).
        sigmas: (P, N) the final-stage standard deviations, when the reward model has them.
        selection_scores: (P, N) the values the choice maximised (score, or score - k * sigma).
        survivors: Per prompt, the candidate indices that reached the final stage.
        early_scores: (P, N) the scores at the early-rejection step, when early rejection ran.
    """

    images: torch.Tensor
    best_index: list[int]
    scores: torch.Tensor
    sigmas: torch.Tensor | None
    selection_scores: torch.Tensor
    survivors: list[list[int]]
    early_scores: torch.Tensor | None = None


def _score_alive(
    reward: ImageReward, images: torch.Tensor, prompts: list[str], alive: torch.Tensor
) -> RewardBatch:
    """Score the alive candidates (rows of the flattened (P*N) batch) in one batched call."""
    rows = alive.flatten().nonzero().squeeze(1)
    return reward.score(images[rows], [prompts[int(r)] for r in rows])


def _scatter(values: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    out = torch.full(alive.shape, float("nan"), dtype=torch.float32)
    out[alive.cpu()] = values.float().cpu()
    return out


@torch.no_grad()
def best_of_n(
    pipe: Any,
    prompts: list[str],
    reward: ImageReward | Reward,
    n: int = 8,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    select: Selection = "mean",
    k: float = 1.0,
    early_rejection: EarlyRejection | None = None,
    cascade: list[Stage] | None = None,
    seed: int = 0,
) -> BestOfNResult:
    """Sample ``n`` images per prompt and keep the one the reward likes best.

    Args:
        pipe: A Stable-Diffusion-style pipeline with a DDIM scheduler.
        prompts: P prompts.
        reward: The final (most trusted) reward: any reward (``mmreward.protocols.Reward``), or a
            ``RewardFn``/``MultiReward``.
        n: Candidates per prompt.
        num_inference_steps: DDIM steps per sample.
        guidance_scale: Classifier-free guidance scale.
        select: Selection rule (see ``Selection``).
        k: Width of the lower confidence bound, in standard deviations.
        early_rejection: Stop sampling the worst candidates mid-way.
        cascade: Cheaper rewards run, in order, on the finished images before ``reward``
            (``integrations.search.Stage``: a reward, or a ``RewardFn``/``MultiReward``, and ``keep``).
        seed: Seed for the starting noise.
    """
    if early_rejection is not None and not 1 <= early_rejection.at_step < num_inference_steps:
        raise ValueError(
            f"EarlyRejection.at_step must be in [1, {num_inference_steps - 1}]; got {early_rejection.at_step}."
        )
    reward = image_reward(reward)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    flat_prompts = [p for p in prompts for _ in range(n)]
    embeds = encode_prompts(pipe, prompts, guidance_scale).repeat(n)  # each prompt encoded once
    noise = initial_latents(pipe, len(flat_prompts), generator)
    alive = torch.ones(len(prompts), n, dtype=torch.bool)
    early_scores = None
    if early_rejection is None:
        latents = denoise(pipe, embeds, noise, num_inference_steps, guidance_scale).latents
    else:
        head = denoise(pipe, embeds, noise, num_inference_steps, guidance_scale, stop=early_rejection.at_step)
        early_scores = (
            reward.score(decode(pipe, head.x0), flat_prompts).score.view(len(prompts), n).float().cpu()
        )
        alive = top_k_mask(early_scores, alive, early_rejection.keep)
        rows = alive.flatten().nonzero().squeeze(1).to(noise.device)
        tail = denoise(
            pipe,
            embeds.select(rows),
            head.latents[rows],
            num_inference_steps,
            guidance_scale,
            start=early_rejection.at_step,
        )
        latents = torch.zeros_like(head.latents)
        latents[rows] = tail.latents
    images = _decode_alive(pipe, latents, alive)
    for stage in cascade or []:
        stage_scores = _scatter(
            _score_alive(image_reward(stage.reward), images, flat_prompts, alive).score, alive
        )
        alive = top_k_mask(stage_scores, alive, stage.keep)
    final = _score_alive(reward, images, flat_prompts, alive)
    return _select(images, final, alive, select, k, early_scores)


def _decode_alive(pipe: Any, latents: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """(P*N, 3, H, W) images in [-1, 1]: the alive candidates decoded, the rest left at zero."""
    rows = alive.flatten().nonzero().squeeze(1)
    decoded = decode(pipe, latents[rows.to(latents.device)]).float().cpu()
    images = torch.zeros(alive.numel(), *decoded.shape[1:])
    images[rows] = decoded
    return images


def _select(
    images: torch.Tensor,
    final: RewardBatch,
    alive: torch.Tensor,
    select: Selection,
    k: float,
    early: torch.Tensor | None,
) -> BestOfNResult:
    scores = _scatter(final.score, alive)
    sigmas = None if final.sigma is None else _scatter(final.sigma, alive)
    selection = selection_values(scores, sigmas, select, k)
    best = best_index(selection)
    n = alive.shape[1]
    chosen = images.view(alive.shape[0], n, *images.shape[1:])[torch.arange(alive.shape[0]), best]
    survivors = [row.nonzero().squeeze(1).tolist() for row in alive]
    return BestOfNResult(to_unit(chosen), best.tolist(), scores, sigmas, selection, survivors, early)
