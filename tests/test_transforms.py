"""Reward transforms: each does what its paper says, logs its components, and round-trips
through JSON (to_config + instantiate), alone and in a Chain, and through a saved Scorer."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import mmreward as mr
from mmreward.configurable import Configurable, instantiate, to_config
from mmreward.scoring import Scorer
from mmreward.transforms import (
    AspectSum,
    Chain,
    Clip,
    Gate,
    GroupNormalize,
    LogSigmoid,
    LowerConfidenceBound,
    WeightedSum,
    ZNormalize,
)
from mmreward.types import HeadOutput, Sample

SCORES = torch.tensor([-2.0, 0.0, 1.0, 3.0])
ASPECTS = {"alignment": torch.tensor([-1.0, 0.5, 2.0, -0.2]), "quality": torch.tensor([1.0, 0.0, -1.0, 4.0])}
SIGMA = torch.tensor([0.5, 1.0, 2.0, 0.1])


def roundtrip(transform: Configurable) -> Configurable:
    return instantiate(json.loads(json.dumps(to_config(transform))))


ALL = [
    ZNormalize(mean=0.5, std=2.0),
    LogSigmoid(reference=0.7),
    AspectSum(references={"alignment": 0.2, "quality": -0.1}, weights={"quality": 0.5}),
    WeightedSum({"alignment": 0.7, "quality": 0.3, "score": 0.1}),
    LowerConfidenceBound(kappa=1.5),
    Clip(low=-1.0, high=2.0),
    Gate("alignment", threshold=0.0, value=-5.0),
    GroupNormalize(group_size=2),
    Chain([Gate("alignment", 0.0), LogSigmoid(0.5), GroupNormalize()]),
]


@pytest.mark.parametrize("transform", ALL, ids=lambda t: type(t).__name__)
def test_every_transform_round_trips_through_json(transform):
    rebuilt = roundtrip(transform)
    assert type(rebuilt) is type(transform)
    a, b = transform(SCORES, ASPECTS, SIGMA), rebuilt(SCORES, ASPECTS, SIGMA)
    assert torch.equal(a.score, b.score)
    assert a.components.keys() == b.components.keys() and a.components
    assert all(v.shape == SCORES.shape for v in a.components.values())


def test_znormalize_fit_stores_statistics_that_standardise_the_reference():
    reference = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 3 + 7
    transform = roundtrip(ZNormalize.fit(reference))
    z = transform(reference).score
    assert abs(float(z.mean())) < 1e-5 and abs(float(z.std()) - 1) < 1e-5
    assert transform(torch.tensor([7.0])).score.item() == pytest.approx(
        (7 - transform.mean) / transform.std, rel=1e-5
    )


def test_log_sigmoid_saturates_gains_and_keeps_losses_steep():
    transform = LogSigmoid(reference=1.0)
    out = transform(torch.tensor([1.0, 3.0, 5.0, -1.0, -3.0])).score
    assert out[0].item() == pytest.approx(math.log(0.5))
    gain_high, gain_low = (out[2] - out[1]).item(), (out[1] - out[0]).item()
    assert 0 < gain_high < 0.2 * gain_low  # going further above the reference adds little
    assert (out[3] - out[4]).item() > 1.5  # below it, each point still costs nearly a point
    fitted = LogSigmoid.fit(torch.arange(101.0), quantile=0.85)
    assert fitted.reference == pytest.approx(85.0)


def test_aspect_sum_is_a_soft_and_of_the_aspects():
    transform = AspectSum(references={"alignment": 0.0, "quality": 0.0})
    balanced = {"alignment": torch.tensor([2.0]), "quality": torch.tensor([2.0])}
    lopsided = {"alignment": torch.tensor([6.0]), "quality": torch.tensor([-2.0])}
    # the same raw sum (4), but failing one aspect costs more than excelling at the other gains
    assert transform(torch.zeros(1), balanced).score > transform(torch.zeros(1), lopsided).score
    out = transform(torch.zeros(1), balanced)
    assert out.components["aspect.alignment"].item() == pytest.approx(math.log(1 / (1 + math.exp(-2))))


def test_gate_zeroes_misaligned_samples_and_says_which():
    out = Gate("alignment", threshold=0.0)(SCORES, ASPECTS)
    assert out.score.tolist() == [0.0, 0.0, 1.0, 0.0]
    assert out.components["gate_open"].tolist() == [0.0, 1.0, 1.0, 0.0]
    with pytest.raises(
        ValueError, match=r"needs the aspect 'realism', but the model gives alignment, quality"
    ):
        Gate("realism", 0.0)(SCORES, ASPECTS)


def test_weighted_sum_lcb_and_clip_compute_what_they_say():
    weighted = WeightedSum({"alignment": 0.5, "quality": 2.0})(SCORES, ASPECTS).score
    assert torch.allclose(weighted, 0.5 * ASPECTS["alignment"] + 2.0 * ASPECTS["quality"])
    lcb = LowerConfidenceBound(kappa=2.0)(SCORES, None, SIGMA)
    assert torch.allclose(lcb.score, SCORES - 2 * SIGMA)
    with pytest.raises(ValueError, match="needs a sigma"):
        LowerConfidenceBound()(SCORES)
    clipped = Clip(low=-1.0, high=2.0)(SCORES)
    assert clipped.score.tolist() == [-1.0, 0.0, 1.0, 2.0] and clipped.components["clipped"].tolist() == [
        1,
        0,
        0,
        1,
    ]


def test_group_normalize_standardises_each_group_of_completions():
    scores = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 40.0])
    out = GroupNormalize(group_size=3)(scores).score.reshape(2, 3)
    assert torch.allclose(out.mean(dim=1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(out.std(dim=1), torch.ones(2), atol=1e-3)
    assert out[0].argmax() == 2 and out[1].argmax() == 2
    centred = GroupNormalize(group_size=3, scale="none")(scores).score
    assert centred.tolist() == pytest.approx([-1.0, 0.0, 1.0, -10.0, -10.0, 20.0])
    with pytest.raises(ValueError, match="not a multiple of the group size"):
        GroupNormalize(group_size=4)(scores)


def test_chain_applies_steps_in_order_and_names_each_component():
    chain = Chain([Clip(high=2.0), ZNormalize(mean=1.0, std=2.0)])
    out = chain(SCORES)
    assert torch.allclose(out.score, (SCORES.clamp(max=2.0) - 1.0) / 2.0)
    assert set(out.components) == {"0.Clip.clipped", "0.Clip.out", "1.ZNormalize.z", "1.ZNormalize.out"}


class AspectModel(nn.Module, Configurable):
    """A fixed two-aspect model: alignment = len(prompt) - 3, quality = 1 (enough for the scorer path)."""

    aspects = ["alignment", "quality"]

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))

    def collate(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        return {"length": torch.tensor([len(s.prompt) for s in samples], dtype=torch.float32)}

    def forward(self, inputs: dict[str, torch.Tensor]) -> HeadOutput:
        alignment = inputs["length"] - 3 + self.bias
        aspects = torch.stack([alignment, torch.ones_like(alignment)], dim=-1)
        return HeadOutput(score=aspects.mean(-1), aspects=aspects)


def test_a_saved_scorer_keeps_its_transform_and_logs_components(tmp_path):
    transform = Chain([Gate("alignment", threshold=0.0), Clip(high=1.5)])
    scorer = Scorer(AspectModel(), device="cpu", transform=transform)
    samples = [Sample(prompt="ab"), Sample(prompt="abcd"), Sample(prompt="abcdefgh")]
    before = scorer.score_samples(samples)
    assert [o.score for o in before] == [0.0, 1.0, 1.5]  # gated, passed, clipped
    assert [o.raw for o in before] == [0.0, 1.0, 3.0]
    assert before[0].provenance["components"]["0.Gate.gate_open"] == 0.0
    scorer.save_pretrained(tmp_path)
    after = mr.load(tmp_path, device="cpu", trust_config=True).score_samples(samples)
    assert [o.score for o in after] == [o.score for o in before]
    assert after[2].provenance["components"] == before[2].provenance["components"]
