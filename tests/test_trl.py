"""TRL reward functions: the numbers of Scorer.score, None where a reward does not apply,
conversational and plain rows, batching, the async variant, and real GRPO steps of TRL's
GRPOTrainer on a tiny causal LM rewarded by a saved mmreward text reward model."""

from __future__ import annotations

import asyncio
import math

import pytest
import torch

import mmreward as mr
from integrations.trl import AsyncRewardFunc, RewardFunc, samples_from_rows
from mmreward.heads import LinearHead
from mmreward.models import RewardModel
from mmreward.scoring import Scorer
from mmreward.types import RewardOutput
from modalities.backbones.lm import LMBackbone
from tests.core_helpers import colour_image, tiny_reward_model
from tests.vlm_helpers import build_tiny_causal_lm, torch_threads

PROMPTS = ["repeat the word cat", "what is 12 plus 7", "describe the red circle"]
RESPONSES = ["cat", "19", "a big red circle on the left"]


def chat(text: str, system: str | None = None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("trl-lm") / "qwen3", hidden_size=32, num_layers=1)


@pytest.fixture(scope="module")
def text_rm_dir(tiny_lm, tmp_path_factory):
    """A tiny text reward model, saved as a user's model dir is."""
    torch.manual_seed(0)
    model = RewardModel(LMBackbone(str(tiny_lm)), LinearHead(), name="tiny-text-rm")
    return Scorer(model, device="cpu").save_pretrained(tmp_path_factory.mktemp("trl-rm") / "model")


@pytest.fixture(scope="module")
def text_rm(text_rm_dir):
    return mr.load(text_rm_dir, device="cpu", batch_size=8)


class Recorder:
    """A reward that records each score_samples call; NaN (with a reason) for an empty response."""

    def __init__(self) -> None:
        self.calls: list[list[mr.Sample]] = []

    def score_samples(self, samples):
        self.calls.append(list(samples))
        return [
            RewardOutput(score=float(len(s.response)), provenance={"model": "length"})
            if s.response
            else RewardOutput(score=math.nan, provenance={"failure": "empty response"})
            for s in samples
        ]


def test_text_rewards_equal_scorer_scores_for_plain_and_conversational_rows(text_rm, text_rm_dir):
    expected = text_rm.score(prompts=PROMPTS, responses=RESPONSES)
    reward = RewardFunc(text_rm, batch_size=2)
    plain = reward(prompts=PROMPTS, completions=RESPONSES, completion_ids=[[0]] * 3)
    conversational = reward(
        prompts=[chat(p, system="you are helpful") for p in PROMPTS],
        completions=[[{"role": "assistant", "content": r}] for r in RESPONSES],
    )
    assert plain == pytest.approx(expected, abs=1e-6)
    assert conversational == pytest.approx(expected, abs=1e-6)
    assert reward.__name__ == "mmreward_tiny-text-rm"
    loaded = RewardFunc.from_pretrained(text_rm_dir, device="cpu", name="rm", batch_size=2)
    assert loaded(prompts=PROMPTS, completions=RESPONSES) == pytest.approx(expected, abs=1e-6)
    assert loaded.__name__ == "rm" and loaded.reward.batch_size == 2


def test_image_reward_gives_none_on_rows_without_an_image_and_scorer_scores_elsewhere():
    scorer = Scorer(tiny_reward_model(), device="cpu")
    images = [colour_image("red", 0), None, colour_image("blue", 1), colour_image("green", 2)]
    prompts = ["a red picture", "a dog", "a blue picture", "a green picture"]
    reward = RewardFunc(scorer, name="t2i", requires=("image",), batch_size=2)
    got = reward(prompts=prompts, completions=["ok"] * 4, image=images)
    kept = [i for i, im in enumerate(images) if im is not None]
    expected = scorer.score(prompts=[prompts[i] for i in kept], images=[images[i] for i in kept])
    assert got[1] is None
    assert [got[i] for i in kept] == pytest.approx(expected, abs=1e-6)
    # a VLM row as TRL passes it: the images column as lists, and image parts in the prompt
    conv = [
        [{"role": "user", "content": [{"type": "image", "image": images[0]}, {"type": "text", "text": p}]}]
        for p in ("a red picture", "a dog")
    ]
    assert reward(prompts=conv, completions=["ok", "ok"], images=[[images[0]], []]) == [
        pytest.approx(expected[0], abs=1e-6),
        None,
    ]
    assert reward(prompts=conv, completions=["ok", "ok"])[0] == pytest.approx(expected[0], abs=1e-6)


def test_rows_are_scored_in_chunks_and_nan_becomes_none():
    recorder = Recorder()
    reward = RewardFunc(recorder, name="length", batch_size=4)
    metrics: dict[str, float] = {}
    completions = ["a", "bb", "", "dddd", "e", "ff", "ggg", "", "i", "jj"]
    got = reward(prompts=["q"] * 10, completions=completions, log_metric=metrics.__setitem__)
    assert [len(c) for c in recorder.calls] == [4, 4, 2]
    assert got == [len(c) or None for c in completions]
    assert metrics == {"length/scored_frac": 0.8}
    samples = samples_from_rows([chat("x")], [[{"role": "assistant", "content": "y"}]], {"video": ["v.mp4"]})
    assert (samples[0].prompt, samples[0].response, samples[0].video) == ("x", "y", "v.mp4")
    with pytest.raises(ValueError, match="not Sample fields"):
        RewardFunc(recorder, requires=("imgae",))


def test_async_variant_matches_the_sync_one_and_awaits_a_client():
    from trl.trainer.utils import is_async_callable

    recorder = Recorder()
    sync, run_async = RewardFunc(recorder), AsyncRewardFunc(recorder, batch_size=3)
    assert is_async_callable(run_async) and not is_async_callable(sync)
    completions = ["a", "", "ccc", "dd", "e"]
    expected = sync(prompts=["q"] * 5, completions=completions)
    assert asyncio.run(run_async(prompts=["q"] * 5, completions=completions)) == expected

    class Client(Recorder):  # the shape of a reward server's async client
        async def score_samples_async(self, samples):
            await asyncio.sleep(0)
            return self.score_samples(samples)

    client = Client()
    got = asyncio.run(AsyncRewardFunc(client, batch_size=2)(prompts=["q"] * 5, completions=completions))
    assert got == expected and sorted(len(c) for c in client.calls) == [1, 2, 2]


def test_grpo_trainer_runs_steps_with_an_mmreward_reward_function(tiny_lm, text_rm, tmp_path):
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    calls: list[tuple[list, list]] = []

    class Spy(RewardFunc):
        def __call__(self, prompts, completions, **kwargs):
            rewards = super().__call__(prompts, completions, **kwargs)
            calls.append((list(completions), rewards))
            return rewards

    reward = Spy(text_rm, name="text_rm")
    length = Recorder()  # beside it, an async reward function, awaited on TRL's event loop
    data = datasets.Dataset.from_dict({"prompt": [chat(p) for p in PROMPTS + ["say yes", "count to three"]]})
    config = GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=6,
        max_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
        dataloader_num_workers=0,
    )
    with torch_threads(1):
        trainer = GRPOTrainer(
            model=str(tiny_lm),
            reward_funcs=[reward, AsyncRewardFunc(length, name="length")],
            args=config,
            train_dataset=data,
        )
        trainer.train()
    assert trainer.state.global_step == 2
    from transformers import AutoModelForCausalLM

    before = AutoModelForCausalLM.from_pretrained(tiny_lm).state_dict()
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k].cpu()) for k in before)  # the policy was updated
    assert len(calls) == 2
    for completions, rewards in calls:  # four sampled chat completions per step, all scored
        assert len(completions) == 4 and all(c[0]["role"] == "assistant" for c in completions)
        assert all(r is not None and math.isfinite(r) for r in rewards)
    logged = [
        row["rewards/text_rm/mean"] for row in trainer.state.log_history if "rewards/text_rm/mean" in row
    ]
    # TRL logs the mean of what the reward function returned, step by step
    assert logged == pytest.approx([sum(r) / len(r) for _, r in calls], abs=1e-5)
    assert [[s.response for s in c] for c in length.calls] == [[x[0]["content"] for x in c] for c, _ in calls]
    assert sum("rewards/length/mean" in row for row in trainer.state.log_history) == 2


def test_grpo_on_a_tiny_vlm_scores_the_images_of_the_dataset(tmp_path):
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    from tests.vlm_helpers import build_tiny_qwen2_5_vl

    policy = build_tiny_qwen2_5_vl(tmp_path / "qwen-vl", min_pixels=56 * 56, max_pixels=56 * 56)
    scorer = Scorer(tiny_reward_model(), device="cpu")
    calls: list[tuple[list, list]] = []

    class Spy(RewardFunc):
        def __call__(self, prompts, completions, **kwargs):
            rewards = super().__call__(prompts, completions, **kwargs)
            calls.append(([self.prompt_text(p) for p in prompts], rewards))
            return rewards

    images = {"a red picture": colour_image("red", 0), "a blue picture": colour_image("blue", 1)}
    data = datasets.Dataset.from_dict({"prompt": [chat(p) for p in images], "image": list(images.values())})
    config = GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=4,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
    )
    reward = Spy(scorer, name="t2i", requires=("image",))
    with torch_threads(1):
        trainer = GRPOTrainer(model=str(policy), reward_funcs=[reward], args=config, train_dataset=data)
        trainer.train()
    assert trainer.state.global_step == 2 and len(calls) == 2
    for prompts, rewards in calls:  # each row scored with its own image, as Scorer.score scores it
        expected = scorer.score(prompts=prompts, images=[images[p] for p in prompts])
        assert rewards == pytest.approx(expected, abs=1e-5)
