"""DDPO-style policy gradient: group-relative advantages, and learning a reward with no gradient."""

from __future__ import annotations

import pytest
import torch
from diffusers_helpers import HELD_OUT_PROMPTS, TRAIN_PROMPTS, load_pipe, one_thread, tiny_sd_dir  # noqa: F401

from integrations.diffusers.adapters import LoraSettings, TrainSettings
from integrations.diffusers.evaluation import mean_reward
from integrations.diffusers.policy_gradient import (
    PolicyGradientConfig,
    PolicyGradientTrainer,
    group_advantages,
)
from integrations.diffusers.reward import RewardFn
from integrations.diffusers.toy_rewards import BrightPixelCount

STEPS, GUIDANCE = 4, 3.0
CONV_AND_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "conv_out")


def test_group_advantages_standardise_each_prompt_on_its_own() -> None:
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0])
    adv = group_advantages(rewards, group_size=4)
    first = (rewards[:4] - 2.5) / rewards[:4].std(unbiased=False)
    assert torch.allclose(adv[:4], first, atol=1e-5)
    assert torch.equal(adv[4:], torch.zeros(4))  # a group of equal rewards teaches nothing
    shifted = rewards + torch.tensor([100.0] * 4 + [-7.0] * 4)  # a per-prompt offset changes nothing
    assert torch.allclose(group_advantages(shifted, 4), adv, atol=1e-5)
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(rewards, group_size=3)


def test_ddpo_raises_a_count_reward_that_has_no_gradient(tiny_sd_dir) -> None:  # noqa: F811
    pipe = load_pipe(tiny_sd_dir)
    reward = RewardFn(BrightPixelCount(threshold=0.5))
    held_out = HELD_OUT_PROMPTS * 3  # 12 samples: the seed-to-seed spread of the mean is about 0.02
    before = mean_reward(pipe, reward, held_out, STEPS, GUIDANCE, seed=123)
    config = PolicyGradientConfig(
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        prompts_per_step=2,
        group_size=8,
        shared_start_noise=True,
    )
    settings = TrainSettings(learning_rate=3e-2, lora=LoraSettings(target_modules=CONV_AND_ATTENTION))
    history = PolicyGradientTrainer(pipe, reward, config, settings).train(TRAIN_PROMPTS, steps=12)
    after = mean_reward(pipe, reward, held_out, STEPS, GUIDANCE, seed=123)
    # the share of bright pixels starts near 0.27
    assert after > before + 0.05, (before, after)
    assert sum(h["reward"] for h in history[-4:]) > sum(h["reward"] for h in history[:4])
