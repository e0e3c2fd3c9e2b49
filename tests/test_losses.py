"""Each loss against a value computed by hand."""

import math

import pytest
import torch

from mmreward import losses
from mmreward.data.collate import PairBatch, RatingBatch
from mmreward.types import HeadOutput


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_bradley_terry_matches_hand_value():
    c, r = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    expected = (-math.log(sig(1.0)) - math.log(sig(-1.0))) / 2
    assert losses.bradley_terry_loss(c, r).item() == pytest.approx(expected, rel=1e-6)


def test_margin_shifts_the_difference():
    c, r, m = torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([0.5])
    assert losses.margin_bradley_terry_loss(c, r, m).item() == pytest.approx(-math.log(sig(0.5)), rel=1e-6)


def test_label_smoothing_mixes_both_directions():
    c, r = torch.tensor([3.0]), torch.tensor([1.0])
    expected = -(0.9 * math.log(sig(2.0)) + 0.1 * math.log(sig(-2.0)))
    assert losses.label_smoothed_bradley_terry_loss(c, r, 0.1).item() == pytest.approx(expected, rel=1e-6)


def test_tie_label_is_minimised_at_equal_scores():
    tie = torch.tensor([True])
    at_equal = losses.tie_bradley_terry_loss(torch.tensor([1.0]), torch.tensor([1.0]), tie).item()
    apart = losses.tie_bradley_terry_loss(torch.tensor([2.0]), torch.tensor([1.0]), tie).item()
    assert at_equal == pytest.approx(math.log(2), rel=1e-6)
    assert apart > at_equal


def test_regression_and_hybrid():
    assert losses.regression_loss(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 3.0])).item() == pytest.approx(
        0.5
    )
    hybrid = losses.bt_regression_loss(
        torch.tensor([2.0]),
        torch.tensor([1.0]),
        torch.tensor([2.0]),
        torch.tensor([0.0]),
        regression_weight=0.5,
    )
    assert hybrid.item() == pytest.approx(-math.log(sig(1.0)) + 0.5 * (0 + 1) / 2, rel=1e-6)


def test_plackett_luce_matches_hand_value_and_masks_padding():
    scores = torch.tensor([[1.0, 2.0, 0.0]])
    order = torch.tensor([[1, 0, 2]])  # candidate 1 best, then 0, then 2
    e = [math.exp(v) for v in (1.0, 2.0, 0.0)]
    expected = -(math.log(e[1] / (e[0] + e[1] + e[2])) + math.log(e[0] / (e[0] + e[2])))
    assert losses.plackett_luce_loss(scores, order).item() == pytest.approx(expected, rel=1e-6)
    # a padded 2-candidate ranking gives the BT loss of its pair
    padded = losses.plackett_luce_loss(
        torch.tensor([[2.0, 1.0, 9.0]]), torch.tensor([[0, 1, 0]]), torch.tensor([[True, True, False]])
    )
    assert padded.item() == pytest.approx(-math.log(sig(1.0)), rel=1e-6)


def test_plackett_luce_with_two_candidates_is_bradley_terry():
    c, r = torch.tensor([0.3, -1.0]), torch.tensor([0.1, 0.5])
    pl = losses.plackett_luce_loss(torch.stack([c, r], 1), torch.tensor([[0, 1], [0, 1]]))
    assert pl.item() == pytest.approx(losses.bradley_terry_loss(c, r).item(), rel=1e-6)


def test_centering_penalises_the_pair_sum():
    assert losses.centering_loss(torch.tensor([1.0]), torch.tensor([2.0])).item() == pytest.approx(9.0)


def _pairs(label, margin=float("nan"), targets=(float("nan"), float("nan")), aspects=None):
    return PairBatch(
        inputs={},
        label=torch.tensor([label]),
        margin=torch.tensor([margin]),
        chosen_target=torch.tensor([targets[0]]),
        rejected_target=torch.tensor([targets[1]]),
        aspect_labels=aspects,
        subsets=["a"],
        ids=["0"],
    )


def test_reward_loss_combines_terms_from_the_batch():
    loss = losses.RewardLoss(centering=0.01, regression_weight=1.0)
    chosen = HeadOutput(score=torch.tensor([2.0]), aspects=torch.tensor([[1.0, 0.0]]))
    rejected = HeadOutput(score=torch.tensor([1.0]), aspects=torch.tensor([[0.0, 0.0]]))
    batch = _pairs(1.0, margin=0.5, targets=(2.0, 0.0), aspects=torch.tensor([[1.0, float("nan")]]))
    terms = loss.pairs(chosen, rejected, batch)
    assert terms["bt"].item() == pytest.approx(-math.log(sig(0.5)), rel=1e-6)
    assert terms["centering"].item() == pytest.approx(0.09, rel=1e-6)
    assert terms["regression"].item() == pytest.approx(0.5, rel=1e-6)
    assert terms["aspects"].item() == pytest.approx(-math.log(sig(1.0)), rel=1e-6)  # NaN aspect left out
    assert terms["loss"].item() == pytest.approx(
        sum(v.item() for k, v in terms.items() if k != "loss"), rel=1e-6
    )


def test_reward_loss_ratings_ignores_missing_targets_and_refuses_empty():
    loss = losses.RewardLoss()
    out = HeadOutput(score=torch.tensor([1.0, 5.0]))
    batch = RatingBatch(
        inputs={},
        score=torch.tensor([2.0, float("nan")]),
        aspect_scores=None,
        subsets=["a", "a"],
        ids=["", ""],
    )
    assert loss.ratings(out, batch)["loss"].item() == pytest.approx(1.0)
    empty = RatingBatch(
        inputs={}, score=torch.tensor([float("nan")]), aspect_scores=None, subsets=["a"], ids=[""]
    )
    with pytest.raises(ValueError, match="neither scores"):
        loss.ratings(HeadOutput(score=torch.tensor([1.0])), empty)
