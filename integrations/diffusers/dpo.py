"""Diffusion-DPO (Wallace et al. 2023) from preference pairs that a reward model labels.

For each prompt the pipeline samples two images and the reward says which one wins; the denoiser
then learns to lower its noise-prediction error on the winner more than on the loser, measured
against the frozen model (the LoRA switched off), with the DPO logistic loss. Nothing is
differentiated through the reward, so any reward works (``mmreward.protocols.Reward``, or a ``RewardFn``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from integrations.diffusers.adapters import LoraTrainer, TrainSettings, adapters_disabled
from integrations.diffusers.reward import ImageReward, image_reward
from integrations.diffusers.sampling import decode, denoise, encode_prompts, initial_latents
from mmreward.protocols import Reward


@dataclass
class DPOConfig:
    """Settings of Diffusion-DPO.

    Attributes:
        beta: Strength of the KL regularisation to the frozen model; Wallace et al. 2023 train
            Stable Diffusion 1.5 with beta = 5000 (tiny models want far less).
        num_inference_steps: DDIM steps when sampling the candidate pairs.
        guidance_scale: Classifier-free guidance when sampling the candidate pairs.
        eta: DDIM noise scale when sampling the pairs (> 0 makes the two candidates differ more).
        batch_size: Pairs per optimisation step.
    """

    beta: float = 5000.0
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    eta: float = 1.0
    batch_size: int = 4


@dataclass
class PreferencePairs:
    """Labelled pairs in latent space.

    Attributes:
        prompts: One prompt per pair.
        chosen: (P, C, h, w) clean latents of the preferred samples.
        rejected: (P, C, h, w) clean latents of the other samples.
        margin: (P,) reward of chosen minus reward of rejected (>= 0).
    """

    prompts: list[str]
    chosen: torch.Tensor
    rejected: torch.Tensor
    margin: torch.Tensor


@torch.no_grad()
def label_pairs(
    pipe: Any, prompts: list[str], reward: ImageReward | Reward, config: DPOConfig, seed: int = 0
) -> PreferencePairs:
    """Sample two images per prompt and let ``reward`` pick the winner of each pair."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    embeds = encode_prompts(pipe, prompts, config.guidance_scale).repeat(2)
    noise = initial_latents(pipe, 2 * len(prompts), generator)
    latents = denoise(
        pipe,
        embeds,
        noise,
        config.num_inference_steps,
        config.guidance_scale,
        config.eta,
        generator=generator,
    ).latents
    prompt_pairs = [p for p in prompts for _ in range(2)]
    scores = image_reward(reward).score(decode(pipe, latents), prompt_pairs).score.float().view(-1, 2)
    first_wins = (scores[:, 0] >= scores[:, 1]).to(latents.device)
    pairs = latents.view(len(prompts), 2, *latents.shape[1:])
    chosen = torch.where(first_wins.view(-1, 1, 1, 1), pairs[:, 0], pairs[:, 1])
    rejected = torch.where(first_wins.view(-1, 1, 1, 1), pairs[:, 1], pairs[:, 0])
    return PreferencePairs(list(prompts), chosen, rejected, (scores[:, 0] - scores[:, 1]).abs().cpu())


class DiffusionDPOTrainer(LoraTrainer):
    """Fine-tune the denoiser's LoRA on preference pairs with the Diffusion-DPO loss.

    Args:
        pipe: A Stable-Diffusion-style pipeline; trained in place.
        config: The method's settings.
        settings: Optimiser, LoRA and accelerate settings.
    """

    def __init__(
        self, pipe: Any, config: DPOConfig | None = None, settings: TrainSettings | None = None
    ) -> None:
        self.config = config or DPOConfig()
        super().__init__(pipe, settings or TrainSettings())

    def loss(
        self, prompts: list[str], chosen: torch.Tensor, rejected: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The DPO loss on a batch of pairs, and the share of pairs the model already prefers correctly."""
        unet, scheduler = self.pipe.unet, self.pipe.scheduler
        cond = encode_prompts(self.pipe, prompts, guidance_scale=1.0).cond.repeat(2, 1, 1)
        n = len(prompts)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=self.generator).to(
            chosen.device
        )
        noise = torch.randn(chosen.shape, generator=self.generator).to(chosen.device, chosen.dtype)
        latents = torch.cat([chosen, rejected])
        noisy = scheduler.add_noise(latents, noise.repeat(2, 1, 1, 1), t.repeat(2))
        error = (
            (
                (
                    unet(noisy, t.repeat(2), encoder_hidden_states=cond).sample.float()
                    - noise.repeat(2, 1, 1, 1)
                )
                ** 2
            )
            .flatten(1)
            .mean(1)
        )
        with torch.no_grad(), adapters_disabled(unet):
            ref = (
                (
                    (
                        unet(noisy, t.repeat(2), encoder_hidden_states=cond).sample.float()
                        - noise.repeat(2, 1, 1, 1)
                    )
                    ** 2
                )
                .flatten(1)
                .mean(1)
            )
        # how much more the model improved on the winner than on the loser, relative to the reference
        gap = (error[:n] - ref[:n]) - (error[n:] - ref[n:])
        return -F.logsigmoid(-0.5 * self.config.beta * gap).mean(), (gap < 0).float().mean()

    def train(self, pairs: PreferencePairs, steps: int) -> list[dict[str, float]]:
        """Run ``steps`` optimisation steps over shuffled batches of ``pairs``; return the logs."""
        prep, size, history = self.prepared, self.config.batch_size, []
        for _ in range(steps):
            index = torch.randperm(len(pairs.prompts), generator=self.generator)[:size]
            with prep.accelerator.accumulate(self.pipe.unet), prep.accelerator.autocast():
                loss, accuracy = self.loss(
                    [pairs.prompts[i] for i in index], pairs.chosen[index], pairs.rejected[index]
                )
                prep.accelerator.backward(loss)
                if prep.accelerator.sync_gradients:
                    prep.accelerator.clip_grad_norm_(prep.params, self.settings.max_grad_norm)
                prep.optimizer.step()
                prep.optimizer.zero_grad()
            history.append({"loss": float(loss.detach()), "accuracy": float(accuracy)})
        return history

    @torch.no_grad()
    def evaluate(self, pairs: PreferencePairs, seed: int = 0, draws: int = 4) -> dict[str, float]:
        """DPO loss and preference accuracy over all ``pairs``, averaged over ``draws`` noise and
        timestep draws fixed by ``seed`` (one draw per pair is a noisy estimate)."""
        generator, self.generator = self.generator, torch.Generator(device="cpu").manual_seed(seed)
        try:
            results = [self.loss(pairs.prompts, pairs.chosen, pairs.rejected) for _ in range(draws)]
        finally:
            self.generator = generator
        return {
            "loss": sum(float(r[0]) for r in results) / draws,
            "accuracy": sum(float(r[1]) for r in results) / draws,
        }
