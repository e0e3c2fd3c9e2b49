"""Guided sampling and best-of-N on a tiny pipeline."""

from __future__ import annotations

import pytest
import torch
from diffusers_helpers import HELD_OUT_PROMPTS, load_pipe, one_thread, tiny_clip_scorer, tiny_sd_dir  # noqa: F401

from integrations.diffusers.best_of_n import EarlyRejection, Stage, best_of_n
from integrations.diffusers.guidance import RewardGuidance, schedule_weight
from integrations.diffusers.reward import RewardFn
from integrations.diffusers.toy_rewards import BrightPixelCount, ColourReward
from mmreward.types import HeadOutput

STEPS = 4


def _sample(pipe, prompts, callback=None):  # noqa: ANN001, ANN202
    generator = torch.Generator().manual_seed(11)
    kwargs = {
        "callback_on_step_end": callback,
        "callback_on_step_end_tensor_inputs": ["latents", "prompt_embeds"],
    }
    return pipe(
        prompts,
        num_inference_steps=STEPS,
        guidance_scale=3.0,
        generator=generator,
        output_type="pt",
        **kwargs,
    ).images


def test_guided_sampling_raises_the_reward_with_the_same_seeds(tiny_sd_dir) -> None:  # noqa: F811
    pipe = load_pipe(tiny_sd_dir)
    reward = RewardFn(ColourReward(target=(1.0, 0.0, 0.0)))
    plain = _sample(pipe, HELD_OUT_PROMPTS)
    guidance = RewardGuidance(reward, HELD_OUT_PROMPTS, strength=0.5, schedule="constant")
    guided = _sample(pipe, HELD_OUT_PROMPTS, guidance)
    plain_reward = reward.score(plain, HELD_OUT_PROMPTS, "unit").score
    guided_reward = reward.score(guided, HELD_OUT_PROMPTS, "unit").score
    assert torch.all(guided_reward > plain_reward), (plain_reward, guided_reward)
    assert len(guidance.history) == STEPS
    # zero strength leaves the sampler untouched
    untouched = _sample(pipe, HELD_OUT_PROMPTS, RewardGuidance(reward, HELD_OUT_PROMPTS, strength=0.0))
    assert torch.equal(untouched, plain)


def test_schedules_run_from_full_to_zero_strength_or_back() -> None:
    assert schedule_weight("decay", 0, 10) == 1.0 and schedule_weight("decay", 9, 10) == pytest.approx(0.0)
    assert schedule_weight("ramp", 0, 10) == pytest.approx(0.0) and schedule_weight("ramp", 9, 10) == 1.0
    assert schedule_weight("constant", 5, 10) == 1.0


class _CountingHook:
    def __init__(self) -> None:
        self.calls, self.rows = 0, 0

    def __call__(self, module, args, kwargs) -> None:  # noqa: ANN001
        ids = args[0] if args else kwargs["input_ids"]
        self.calls, self.rows = self.calls + 1, self.rows + ids.shape[0]


def test_best_of_n_picks_its_top_candidate_and_encodes_each_prompt_once(tiny_sd_dir) -> None:  # noqa: F811
    pipe, scorer = load_pipe(tiny_sd_dir), tiny_clip_scorer()
    prompts, n = ["a cat", "a dog on grass"], 6
    pipe_hook, reward_hook = _CountingHook(), _CountingHook()
    pipe.text_encoder.register_forward_pre_hook(pipe_hook, with_kwargs=True)
    text_tower = scorer.model.backbone.model.transformer  # open_clip's text transformer
    text_tower.register_forward_pre_hook(reward_hook, with_kwargs=True)
    result = best_of_n(pipe, prompts, RewardFn(scorer), n=n, num_inference_steps=STEPS, guidance_scale=1.0)
    assert pipe_hook.rows == len(prompts)  # one text-encoder row per prompt, not one per image
    # the reward's text tower ran once, on the distinct prompts, for all P*N images
    assert (reward_hook.calls, reward_hook.rows) == (1, len(prompts))
    for p, best in enumerate(result.best_index):
        assert result.scores[p, best] == result.scores[p].max()
    # the returned image is the chosen candidate: scoring it again gives its recorded score
    again = RewardFn(scorer).score(result.images, prompts, "unit").score
    assert torch.allclose(again, result.scores[torch.arange(2), result.best_index], atol=1e-5)


class _UncertainColour(ColourReward):
    """ColourReward with a made-up sigma that is large for bright images."""

    def forward(self, inputs):  # noqa: ANN001, ANN201
        out = super().forward(inputs)
        return HeadOutput(score=out.score, log_sigma=(inputs["pixels"].mean(dim=(1, 2, 3)) * 20).log())


def test_lower_confidence_bound_trades_score_for_certainty(tiny_sd_dir) -> None:  # noqa: F811
    pipe, reward = load_pipe(tiny_sd_dir), RewardFn(_UncertainColour(target=(1.0, 1.0, 1.0)))
    by_mean = best_of_n(pipe, ["a cat"], reward, n=6, num_inference_steps=STEPS, guidance_scale=3.0)
    by_lcb = best_of_n(
        pipe, ["a cat"], reward, n=6, num_inference_steps=STEPS, guidance_scale=3.0, select="lcb", k=1.0
    )
    lcb = by_lcb.scores - by_lcb.sigmas
    assert by_lcb.best_index[0] == int(lcb[0].argmax())
    assert by_mean.best_index[0] == int(by_mean.scores[0].argmax())
    assert by_lcb.best_index[0] != by_mean.best_index[0]  # the brightest (best mean) is the least certain
    with pytest.raises(ValueError, match="uncertainty head"):
        best_of_n(pipe, ["a cat"], RewardFn(ColourReward()), n=2, num_inference_steps=STEPS, select="lcb")


def test_early_rejection_and_cascade_finish_only_the_survivors(tiny_sd_dir) -> None:  # noqa: F811
    pipe, reward = load_pipe(tiny_sd_dir), RewardFn(ColourReward(target=(1.0, 1.0, 1.0)))
    full = best_of_n(pipe, HELD_OUT_PROMPTS[:2], reward, n=6, num_inference_steps=STEPS, guidance_scale=3.0)
    early = best_of_n(
        pipe,
        HELD_OUT_PROMPTS[:2],
        reward,
        n=6,
        num_inference_steps=STEPS,
        guidance_scale=3.0,
        early_rejection=EarlyRejection(at_step=2, keep=2),
    )
    assert all(len(s) == 2 for s in early.survivors)
    assert int(early.scores.isnan().sum()) == 2 * 4
    for p, kept in enumerate(early.survivors):
        assert set(kept) == set(early.early_scores[p].topk(2).indices.tolist())
        # finishing a survivor gives the same image as in the full run (same noise, same steps)
        assert torch.allclose(early.scores[p, kept], full.scores[p, kept], atol=1e-5)
    cheap = Stage(RewardFn(BrightPixelCount(threshold=0.5)), keep=3)
    cascaded = best_of_n(
        pipe,
        HELD_OUT_PROMPTS[:2],
        reward,
        n=6,
        num_inference_steps=STEPS,
        guidance_scale=3.0,
        cascade=[cheap],
    )
    assert all(len(s) == 3 for s in cascaded.survivors)
    assert torch.allclose(cascaded.scores.nan_to_num(0), full.scores.where(~cascaded.scores.isnan(), 0))
