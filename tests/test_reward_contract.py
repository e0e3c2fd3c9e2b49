"""One reward contract: a user's class that implements only ``score_samples`` plugs into every consumer.

``UserReward`` below is what a user writes: no base class, no registration, no model. The same
class, unchanged, drives generic best-of-N, diffusers best-of-N through ``RewardFn``, the robot
``ActionSelector`` and ``mmreward score``; the library's own rewards (``Scorer``, judges, wrappers)
satisfy the same protocol.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers_helpers import load_pipe, one_thread, tiny_sd_dir  # noqa: F401
from judge_helpers import RuleJudgeBackend, generation

from mmreward.protocols import Reward
from mmreward.types import RewardOutput, Sample


class UserReward:
    """Brightness for images, closeness of the pick to ``target`` for actions, length for text."""

    def __init__(self, target: float = 0.0) -> None:
        self.target, self.calls = target, 0

    def score_samples(self, samples: list[Sample]) -> list[RewardOutput]:
        self.calls += 1
        return [RewardOutput(score=self.value(s), sigma=0.5, provenance={"model": "user"}) for s in samples]

    def value(self, s: Sample) -> float:
        if s.image is not None:
            return float(np.asarray(s.image, dtype=float).mean() / 255)
        if s.action is not None:
            return -float(np.abs(np.asarray(s.action["pick"], dtype=float) - self.target).sum())
        return float(len(s.response or ""))


def test_user_reward_satisfies_the_protocol_and_a_plain_object_does_not():
    assert isinstance(UserReward(), Reward)
    assert not isinstance(object(), Reward)


def test_generic_best_of_n_keeps_each_groups_best_in_one_call():
    from integrations.search import best_of_n

    reward = UserReward()
    groups = [
        [Sample("q1", response="ab"), Sample("q1", response="abcd"), Sample("q1", response="a")],
        [Sample("q2", response="xyz"), Sample("q2", response="x")],
    ]
    picks = best_of_n(reward, groups)
    assert [p.index for p in picks] == [1, 0] and reward.calls == 1
    assert picks[0].sample.response == "abcd" and picks[0].values == [2.0, 4.0, 1.0]
    lcb = best_of_n(reward, groups, select="lcb", k=2.0)  # sigma 0.5 each: the same order
    assert lcb[0].values == [1.0, 3.0, 0.0]
    with pytest.raises(TypeError, match="score_samples"):
        best_of_n(object(), groups)


def test_diffusers_reward_fn_scores_images_with_the_user_reward():
    from integrations.diffusers.reward import RewardFn

    reward = RewardFn(UserReward())
    images = torch.stack([torch.full((3, 8, 8), v) for v in (-1.0, 0.0, 1.0)])  # dark, grey, white
    batch = reward.score(images, ["a", "b", "c"])
    assert batch.score.tolist() == pytest.approx([0.0, 128 / 255, 1.0], abs=1e-6)
    assert batch.sigma.tolist() == [0.5, 0.5, 0.5]
    assert not reward.differentiable
    with pytest.raises(TypeError, match="cannot be differentiated"):
        reward.evaluate(images, ["a", "b", "c"])


def test_diffusers_best_of_n_takes_the_user_reward_as_it_is(tiny_sd_dir):  # noqa: F811
    from integrations.diffusers.best_of_n import best_of_n

    result = best_of_n(load_pipe(tiny_sd_dir), ["a cat"], UserReward(), n=4, num_inference_steps=2)
    best = result.best_index[0]
    assert result.scores[0, best] == result.scores[0].max()
    brightness = float((result.images[0] * 255).round().mean() / 255)  # the chosen image, 8-bit as scored
    assert brightness == pytest.approx(float(result.scores[0, best]), abs=1e-3)


def test_diffusion_dpo_labels_pairs_with_the_user_reward(tiny_sd_dir):  # noqa: F811
    from integrations.diffusers.dpo import DPOConfig, label_pairs
    from integrations.diffusers.sampling import decode

    pipe = load_pipe(tiny_sd_dir)
    pairs = label_pairs(pipe, ["a cat", "a dog"], UserReward(), DPOConfig(num_inference_steps=2))
    brightness = [decode(pipe, x).float().mean(dim=(1, 2, 3)) for x in (pairs.chosen, pairs.rejected)]
    assert torch.all(brightness[0] >= brightness[1] - 1e-3) and torch.all(pairs.margin >= 0)


def test_action_selector_chooses_with_the_user_reward():
    from integrations.robotics.selector import ActionSelector

    cloud = np.zeros((16, 3), dtype=np.float32)
    candidates = [
        {"primitive": "pick_place", "pick": [x, 0.0], "place": [0.0, 0.0]} for x in (0.4, -0.1, 0.3)
    ]
    reward = UserReward(target=0.0)
    selector = ActionSelector(reward)
    index, scores = selector.select(cloud, candidates)
    assert index == 1 and scores.tolist() == pytest.approx([-0.4, -0.1, -0.3])
    assert selector.latency().candidates == 3 and reward.calls == 1  # one call for the decision
    index, _ = ActionSelector(UserReward(target=0.35)).select(cloud, candidates)
    assert index == 2


def test_mmreward_score_runs_the_user_reward(tmp_path: Path):
    from mmreward.cli import main

    data = tmp_path / "data.jsonl"
    records = [
        {"prompt": "p", "response": "four", "score": 1.0},
        {"prompt": "p", "chosen": "longer one", "rejected": "short"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "scores.jsonl"
    args = ["score", "--reward", f"{__name__}.UserReward", "--input", str(data), "--output", str(out)]
    assert main(args) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["score"] == 4.0 and lines[0]["provenance"] == {"model": "user"}
    assert (lines[1]["chosen"]["score"], lines[1]["rejected"]["score"]) == (10.0, 5.0)
    with pytest.raises(TypeError, match="score_samples"):
        main(["score", "--reward", "pathlib.Path", "--input", str(data), "--output", str(out)])


def test_library_rewards_implement_the_same_protocol():
    from robotics_helpers import tiny_action_model

    from integrations.diffusers.toy_rewards import ColourReward
    from judges.critique import CritiqueJudge
    from judges.pairwise import PairwiseJudge
    from judges.rubric import RubricJudge
    from judges.scaling import ScaledJudge
    from judges.video import VideoJudge
    from mmreward.calibration import Calibration
    from mmreward.rewards import Calibrated, Transformed
    from mmreward.scoring import Scorer
    from mmreward.transforms import ZNormalize

    backend = RuleJudgeBackend()
    rewards = [
        Scorer(tiny_action_model(), device="cpu"),  # the action preference model's scorer
        Scorer(ColourReward(), device="cpu"),
        CritiqueJudge(backend, template="{prompt} {response} {min_score} {max_score}"),
        PairwiseJudge(backend),
        RubricJudge(backend, principles=["short"], template="{principle} {prompt} {response}"),
        VideoJudge(backend, template="{prompt} {aspects} {min_score} {max_score}"),
        ScaledJudge(CritiqueJudge(backend, template="{prompt} {response} {min_score} {max_score}"), k=2),
        Transformed(UserReward(), ZNormalize()),
        Calibrated(UserReward(), Calibration()),
    ]
    assert all(isinstance(r, Reward) for r in rewards)


class ScriptedBackend:
    """Answers each request with the next scripted generation."""

    def __init__(self, outputs) -> None:
        self.outputs = list(outputs)

    def generate(self, requests, params):
        return [self.outputs.pop(0) for _ in requests]


def test_critique_judge_rewards_carry_the_critique_and_flag_failures():
    from judges.critique import CritiqueJudge

    backend = ScriptedBackend(
        [
            generation("The cube is blue. Score: 4", {"4": 0.5, "2": 0.5}, at="4"),
            generation("no verdict here"),
        ]
    )
    judge = CritiqueJudge(backend, template="{prompt} {response} {min_score} {max_score}")
    good, bad = judge.score_samples([Sample("a red cube", response="x"), Sample("a red cube", response="y")])
    assert good.score == pytest.approx(3.0) and "blue" in good.text
    assert good.provenance["judge"] == "CritiqueJudge" and len(good.provenance["revision"]) == 12
    assert math.isnan(bad.score) and bad.provenance["failure"]


def test_pairwise_judge_scores_samples_by_round_robin_within_a_prompt():
    from judges.pairwise import PairwiseJudge

    judge = PairwiseJudge(RuleJudgeBackend(position_bias=True))
    samples = [
        Sample("q", response="error error"),
        Sample("q", response="fine"),
        Sample("q", response="one error"),
        Sample("alone", response="fine"),
    ]
    outputs = judge.score_samples(samples)
    scores = [o.score for o in outputs[:3]]
    assert scores[1] > scores[2] > scores[0]  # fewer errors, higher score
    assert outputs[1].provenance["comparisons"] == 2
    assert math.isnan(outputs[3].score) and "has one" in outputs[3].provenance["failure"]


def test_wrappers_transform_and_calibrate_any_reward():
    from mmreward.calibration import Calibration
    from mmreward.rewards import Calibrated, Transformed
    from mmreward.transforms import ZNormalize

    samples = [Sample("p", response="ab"), Sample("p", response="abcdef")]
    z = Transformed(UserReward(), ZNormalize(mean=2.0, std=2.0)).score_samples(samples)
    assert [o.score for o in z] == [0.0, 2.0] and [o.raw for o in z] == [2.0, 6.0]
    assert z[0].provenance["transform"] == "ZNormalize"
    c = Calibrated(Transformed(UserReward(), ZNormalize(mean=2.0, std=2.0)), Calibration(2.0, 1.0))
    out = c.score_samples(samples)
    assert [o.score for o in out] == [-0.5, 0.5] and out[1].calibrated == 0.5 and out[1].raw == 6.0
