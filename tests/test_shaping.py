"""RL reward shaping from process rewards (mmreward.transforms): Clip and Delta (Gao et al., 2024)
bound what a chain can earn by adding steps; success gating (Posterior-GRPO) pays for reasoning only
when the answer is right; each round-trips through JSON."""

from __future__ import annotations

import json

import pytest
import torch

from mmreward.configurable import instantiate, to_config
from mmreward.transforms import ProcessClip, ProcessDelta, SuccessGated, aggregate_steps
from mmreward.types import RewardOutput

STEPS = [0.9, 0.2, 0.6]


def test_aggregates_of_step_scores():
    assert aggregate_steps(STEPS, "min") == pytest.approx(0.2)
    assert aggregate_steps(STEPS, "last") == pytest.approx(0.6)
    assert aggregate_steps(STEPS, "mean") == pytest.approx(1.7 / 3)
    assert aggregate_steps(STEPS, "product") == pytest.approx(0.108)
    assert aggregate_steps([], "min") != aggregate_steps([], "min")  # NaN for an empty chain
    with pytest.raises(ValueError, match="Did you mean .min."):
        aggregate_steps(STEPS, "minimum")


def test_clip_gives_min_of_score_minus_eta_and_zero_and_adds_success_at_the_end():
    shaped = ProcessClip(eta=0.5)([STEPS], success=[1.0])
    assert shaped.steps[0].tolist() == pytest.approx([0.0, -0.3, 1.0])  # last: min(0.6-0.5, 0) + 1
    assert shaped.returns.tolist() == pytest.approx([0.7])
    scaled = ProcessClip(eta=0.5, alpha=2.0)([STEPS])
    assert scaled.steps[0].tolist() == pytest.approx([0.0, -0.1, 0.0])


def test_delta_telescopes_to_first_minus_last_step():
    shaped = ProcessDelta()([STEPS], success=[1.0])
    assert shaped.steps[0].tolist() == pytest.approx([0.7, -0.4, 1.0])
    assert shaped.returns.item() == pytest.approx(STEPS[0] - STEPS[-1] + 1.0)
    clip_delta = ProcessDelta(clip_eta=0.5)([STEPS])  # clipped scores [0, -0.3, 0] differenced
    assert clip_delta.steps[0].tolist() == pytest.approx([0.3, -0.3, 0.0])


@pytest.mark.parametrize("shaping", [ProcessClip(eta=0.5), ProcessDelta(), ProcessDelta(clip_eta=0.5)])
def test_padding_a_chain_with_good_steps_does_not_raise_its_return(shaping):
    """The reward hacking Gao et al. found: repeating correct but useless steps. The raw sum of step
    scores grows with every repeat; the shaped return does not."""
    honest = [0.8, 0.7, 0.9]
    padded = [0.8, 0.7] + [0.95] * 20 + [0.9]
    assert sum(padded) > 5 * sum(honest)
    shaped = shaping([honest, padded], success=[1.0, 1.0])
    assert shaped.returns[1] <= shaped.returns[0] + 1e-6


def test_success_gated_pays_for_reasoning_only_when_the_answer_is_right():
    gated = SuccessGated(weight=0.5)
    hacked, honest = [0.99, 0.99, 0.99], [0.6, 0.7, 0.5]  # the PRM loves the wrong chain's prose
    shaped = gated([hacked, honest], success=[0.0, 1.0])
    assert shaped.returns.tolist() == pytest.approx([0.0, 1.0 + 0.5 * 0.6])
    assert shaped.steps[0].tolist() == [0.0, 0.0, 0.0]
    assert shaped.steps[1].sum() == pytest.approx(shaped.returns[1])
    by_min = SuccessGated(weight=1.0, aggregate="min")([honest], success=[1.0])
    assert by_min.steps[0].tolist() == pytest.approx([0.0, 0.0, 1.5])
    partial = SuccessGated(threshold=1.0)([honest], success=[0.8])  # 80% of tests: no process reward
    assert partial.returns.tolist() == pytest.approx([0.8])
    with pytest.raises(ValueError, match="outcome reward of every chain"):
        gated([honest])
    with pytest.raises(ValueError, match="Unknown step aggregate"):
        SuccessGated(aggregate="median")


def test_shaping_reads_prm_outputs_and_names_bad_input():
    outputs = [RewardOutput(score=0.2, steps=STEPS), RewardOutput(score=0.5, steps=[0.5])]
    shaped = ProcessClip(eta=0.5).from_outputs(outputs, success=[1.0, 0.0])
    assert shaped.returns.tolist() == pytest.approx([0.7, 0.0])
    with pytest.raises(ValueError, match="Output 1 has no per-step scores"):
        ProcessDelta().from_outputs([outputs[0], RewardOutput(score=1.0)])
    with pytest.raises(ValueError, match="2 chains but 1 success"):
        ProcessClip()([STEPS, STEPS], success=[1.0])
    with pytest.raises(ValueError, match="Chain 1 has step scores"):
        ProcessClip()([STEPS, [float("nan")]])


@pytest.mark.parametrize(
    "shaping",
    [ProcessClip(eta=0.4, alpha=2.0), ProcessDelta(clip_eta=0.3), SuccessGated(weight=0.2, aggregate="last")],
)
def test_shaping_round_trips_through_json(shaping):
    again = instantiate(json.loads(json.dumps(to_config(shaping))))
    assert type(again) is type(shaping) and vars(again) == vars(shaping)
    a, b = shaping([STEPS], success=[1.0]), again([STEPS], success=[1.0])
    assert torch.equal(a.returns, b.returns)
