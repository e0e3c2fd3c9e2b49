"""Reward backpropagation: fine-tune the denoiser's LoRA by differentiating the reward through the
last K sampling steps (DRaFT-K, Clark et al. 2023; AlignProp, Prabhudesai et al. 2023), or through
the clean image predicted at a random late step (ReFL, Xu et al. 2023, via ``refl_steps``).

Two guards against reward hacking: ``reward_clip`` caps the reward so the optimiser gains nothing
past a level, and ``kl_weight`` penalises the squared distance between the adapted and the frozen
denoiser's noise predictions at the differentiated steps. For DDIM steps with equal variance this
distance is proportional to the KL divergence between the two models' step distributions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from integrations.diffusers.adapters import LoraTrainer, TrainSettings, adapters_disabled, cycled_prompts
from integrations.diffusers.reward import MultiReward, RewardFn
from integrations.diffusers.sampling import (
    PromptEmbeds,
    ddim_step,
    decode,
    denoise,
    encode_prompts,
    initial_latents,
    predict_noise,
)


@dataclass
class BackpropConfig:
    """Settings of reward backpropagation.

    Attributes:
        num_inference_steps: DDIM steps per sample; 50 in DRaFT (Clark et al. 2023).
        truncation: K, the number of final steps the gradient flows through; DRaFT-1 (K=1) was
            the most efficient setting in Clark et al. 2023.
        guidance_scale: Classifier-free guidance during training samples; 7.5 as in DRaFT.
        eta: DDIM noise scale of the training sampler (0: deterministic, as in DRaFT).
        batch_size: Prompts per step.
        gradient_checkpointing: Recompute the differentiated UNet calls in the backward pass.
        kl_weight: Weight of the noise-prediction distance to the frozen model (0: off).
        reward_clip: Cap on the reward before it is maximised (None: off).
        refl_steps: ReFL mode (Xu et al. 2023) when set: stop the sampler k steps before the end,
            k drawn uniformly from ``[low, high]``, run that one step with a graph and score the
            clean image the denoiser predicts there (``truncation`` is then unused).
    """

    num_inference_steps: int = 50
    truncation: int = 1
    guidance_scale: float = 7.5
    eta: float = 0.0
    batch_size: int = 4
    gradient_checkpointing: bool = True
    kl_weight: float = 0.0
    reward_clip: float | None = None
    refl_steps: tuple[int, int] | None = None


class RewardBackpropTrainer(LoraTrainer):
    """Fine-tune a Stable-Diffusion-style pipeline's denoiser (LoRA) on a differentiable reward.

    Args:
        pipe: The pipeline (``StableDiffusionPipeline.from_pretrained(...)``); trained in place.
        reward: A ``RewardFn`` or ``MultiReward`` with a gradient path.
        config: The method's settings.
        settings: Optimiser, LoRA and accelerate settings.
    """

    def __init__(
        self,
        pipe: Any,
        reward: RewardFn | MultiReward,
        config: BackpropConfig | None = None,
        settings: TrainSettings | None = None,
    ) -> None:
        if not reward.differentiable:
            raise TypeError(
                "Reward backpropagation needs a differentiable reward, but this reward model has no "
                "tensor_inputs(). Use PolicyGradientTrainer (DDPO) or DiffusionDPOTrainer instead."
            )
        self.config = config or BackpropConfig()
        if not 1 <= self.config.truncation <= self.config.num_inference_steps:
            raise ValueError(
                f"truncation must be in [1, num_inference_steps={self.config.num_inference_steps}]; "
                f"got {self.config.truncation}."
            )
        refl = self.config.refl_steps
        if refl is not None and not 1 <= refl[0] <= refl[1] <= self.config.num_inference_steps:
            raise ValueError(
                f"refl_steps must satisfy 1 <= low <= high <= num_inference_steps={self.config.num_inference_steps}; "
                f"got {refl}."
            )
        self.reward = reward
        super().__init__(pipe, settings or TrainSettings())

    def _graph_steps(
        self,
        latents: torch.Tensor,
        embeds: PromptEmbeds,
        timesteps: list[int],
        first: int,
        last: int,
        clean: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run steps ``first .. last-1`` with a graph; return the final latents (or, with ``clean``,
        the clean latents predicted at the last of them) and the KL-style penalty."""
        cfg, unet = self.config, self.pipe.unet
        penalty = torch.zeros((), device=latents.device)
        for i in range(first, last):
            t, prev_t = timesteps[i], timesteps[i + 1] if i + 1 < len(timesteps) else -1
            t_in = torch.tensor(t, device=latents.device)
            if cfg.gradient_checkpointing:
                eps = checkpoint(
                    predict_noise, unet, latents, t_in, embeds, cfg.guidance_scale, use_reentrant=False
                )
            else:
                eps = predict_noise(unet, latents, t_in, embeds, cfg.guidance_scale)
            if cfg.kl_weight > 0:
                with torch.no_grad(), adapters_disabled(unet):
                    eps_ref = predict_noise(unet, latents.detach(), t_in, embeds, cfg.guidance_scale)
                penalty = penalty + ((eps.float() - eps_ref.float()) ** 2).flatten(1).mean(1).mean()
            step = ddim_step(self.pipe.scheduler, eps, t, prev_t, latents, cfg.eta, generator=self.generator)
            latents = step.x0 if clean and i == last - 1 else step.prev
        return latents, penalty

    def _window(self) -> tuple[int, int, bool]:
        """The steps that carry a graph: ``(first, last, score the predicted clean image)``."""
        cfg = self.config
        if cfg.refl_steps is None:
            return cfg.num_inference_steps - cfg.truncation, cfg.num_inference_steps, False
        low, high = cfg.refl_steps
        k = int(torch.randint(low, high + 1, (1,), generator=self.generator))
        return cfg.num_inference_steps - k, cfg.num_inference_steps - k + 1, True

    def step(self, prompts: list[str]) -> dict[str, float]:
        """One optimisation step on a batch of prompts; returns the logged values."""
        cfg, prep = self.config, self.prepared
        embeds = encode_prompts(self.pipe, prompts, cfg.guidance_scale)
        with prep.accelerator.accumulate(self.pipe.unet), prep.accelerator.autocast():
            noise = initial_latents(self.pipe, len(prompts), self.generator)
            first, last, clean = self._window()
            with torch.no_grad():
                head = denoise(
                    self.pipe,
                    embeds,
                    noise,
                    cfg.num_inference_steps,
                    cfg.guidance_scale,
                    cfg.eta,
                    generator=self.generator,
                    stop=first,
                )
            latents, penalty = self._graph_steps(head.latents, embeds, head.timesteps, first, last, clean)
            batch = self.reward.evaluate(decode(self.pipe, latents), prompts)
            reward = batch.score.float()
            if cfg.reward_clip is not None:
                reward = reward.clamp(max=cfg.reward_clip)
            loss = -reward.mean() + cfg.kl_weight * penalty
            prep.accelerator.backward(loss)
            if prep.accelerator.sync_gradients:
                prep.accelerator.clip_grad_norm_(prep.params, self.settings.max_grad_norm)
            prep.optimizer.step()
            prep.optimizer.zero_grad()
        logs = {
            "loss": float(loss.detach()),
            "reward": float(batch.score.detach().float().mean()),
            "kl": float(penalty.detach()),
        }
        logs.update({f"reward/{n}": float(v.detach().float().mean()) for n, v in batch.components.items()})
        return logs

    def train(self, prompts: list[str], steps: int) -> list[dict[str, float]]:
        """Run ``steps`` optimisation steps, cycling through ``prompts``; return the per-step logs."""
        return [self.step(cycled_prompts(prompts, s, self.config.batch_size)) for s in range(steps)]
