"""Reward backpropagation (DRaFT-K) on a tiny pipeline raises the reward on held-out prompts."""

from __future__ import annotations

import pytest
import torch
from diffusers_helpers import HELD_OUT_PROMPTS, TRAIN_PROMPTS, load_pipe, one_thread, tiny_sd_dir  # noqa: F401

from integrations.diffusers.adapters import TrainSettings
from integrations.diffusers.backprop import BackpropConfig, RewardBackpropTrainer
from integrations.diffusers.evaluation import generate, mean_reward
from integrations.diffusers.reward import RewardFn
from integrations.diffusers.toy_rewards import BrightPixelCount, ColourReward

STEPS, GUIDANCE = 4, 3.0


def test_draft_raises_held_out_reward_and_lora_reloads(tiny_sd_dir, tmp_path) -> None:  # noqa: F811
    torch.manual_seed(0)
    pipe = load_pipe(tiny_sd_dir)
    reward = RewardFn(ColourReward(target=(1.0, 1.0, 1.0)))
    before = mean_reward(pipe, reward, HELD_OUT_PROMPTS, STEPS, GUIDANCE, seed=123)
    config = BackpropConfig(num_inference_steps=STEPS, truncation=1, guidance_scale=GUIDANCE, batch_size=4)
    trainer = RewardBackpropTrainer(pipe, reward, config, TrainSettings(learning_rate=1e-2))
    history = trainer.train(TRAIN_PROMPTS, steps=20)
    after = mean_reward(pipe, reward, HELD_OUT_PROMPTS, STEPS, GUIDANCE, seed=123)
    # the reward is minus a squared colour distance (about -1.1 at the start): a 0.15 rise is
    # many times the seed-to-seed spread of the starting model
    assert after > before + 0.15, (before, after)
    assert history[-1]["reward"] > history[0]["reward"]

    trainer.save_lora(tmp_path / "lora")
    reloaded = load_pipe(tiny_sd_dir)
    base_images = generate(reloaded, HELD_OUT_PROMPTS, STEPS, GUIDANCE, seed=7)
    reloaded.load_lora_weights(tmp_path / "lora")
    tuned = generate(pipe, HELD_OUT_PROMPTS, STEPS, GUIDANCE, seed=7)
    assert torch.allclose(generate(reloaded, HELD_OUT_PROMPTS, STEPS, GUIDANCE, seed=7), tuned, atol=1e-5)
    assert not torch.allclose(base_images, tuned, atol=1e-3)


def test_kl_guard_keeps_the_model_closer_to_the_base(tiny_sd_dir) -> None:  # noqa: F811
    distances = {}
    for kl_weight in (0.0, 50.0):
        pipe = load_pipe(tiny_sd_dir)
        base = generate(pipe, HELD_OUT_PROMPTS, STEPS, GUIDANCE, seed=5)
        config = BackpropConfig(
            num_inference_steps=STEPS, guidance_scale=GUIDANCE, batch_size=4, kl_weight=kl_weight
        )
        trainer = RewardBackpropTrainer(
            pipe, RewardFn(ColourReward()), config, TrainSettings(learning_rate=1e-2)
        )
        history = trainer.train(TRAIN_PROMPTS, steps=8)
        distances[kl_weight] = float(
            (generate(pipe, HELD_OUT_PROMPTS, STEPS, GUIDANCE, seed=5) - base).abs().mean()
        )
    assert history[-1]["kl"] > 0
    assert distances[50.0] < distances[0.0], distances


def test_a_reward_without_gradients_is_refused_with_the_alternative(tiny_sd_dir) -> None:  # noqa: F811
    with pytest.raises(TypeError, match="PolicyGradientTrainer"):
        RewardBackpropTrainer(load_pipe(tiny_sd_dir), RewardFn(BrightPixelCount()))


def test_refl_mode_scores_the_predicted_clean_image_and_raises_the_reward(tiny_sd_dir) -> None:  # noqa: F811
    pipe = load_pipe(tiny_sd_dir)
    reward = RewardFn(ColourReward(target=(1.0, 1.0, 1.0)))
    before = mean_reward(pipe, reward, HELD_OUT_PROMPTS, STEPS, GUIDANCE, seed=123)
    config = BackpropConfig(
        num_inference_steps=STEPS, guidance_scale=GUIDANCE, batch_size=4, refl_steps=(1, 3)
    )
    RewardBackpropTrainer(pipe, reward, config, TrainSettings(learning_rate=1e-2)).train(
        TRAIN_PROMPTS, steps=20
    )
    after = mean_reward(pipe, reward, HELD_OUT_PROMPTS, STEPS, GUIDANCE, seed=123)
    assert after > before + 0.1, (before, after)
    with pytest.raises(ValueError, match="refl_steps"):
        RewardBackpropTrainer(
            load_pipe(tiny_sd_dir), reward, BackpropConfig(num_inference_steps=4, refl_steps=(2, 9))
        )
