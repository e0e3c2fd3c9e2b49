"""The contract every reward model keeps (diffusers' tester-mixin idea), run on each head type."""

from pathlib import Path

import pytest
import torch

import mmreward as mr
from mmreward.types import Sample
from tests.core_helpers import colour_image, tiny_reward_model

HEADS = ["linear", "mlp", "aspects"]


def samples(n: int = 6) -> list[Sample]:
    colours = ["red", "green", "blue"]
    return [
        Sample(prompt=f"a {colours[i % 3]} picture", image=colour_image(colours[(i + 1) % 3], i))
        for i in range(n)
    ]


@pytest.mark.parametrize("head", HEADS)
def test_scores_are_finite_and_deterministic_in_eval(head: str):
    model = tiny_reward_model(head).eval()
    inputs = model.collate(samples())
    with torch.no_grad():
        first, second = model(inputs), model(inputs)
    assert torch.isfinite(first.score).all()
    torch.testing.assert_close(first.score, second.score)


@pytest.mark.parametrize("head", HEADS)
def test_gradients_reach_both_towers_and_the_head(head: str):
    model = tiny_reward_model(head)
    model(model.collate(samples())).score.sum().backward()
    for name in ("backbone.model.visual", "backbone.model.transformer", "head"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name) and p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), name


@pytest.mark.parametrize("head", HEADS)
def test_save_then_load_reproduces_scores(head: str, tmp_path: Path):
    scorer = mr.Scorer(tiny_reward_model(head, seed=3), device="cpu")
    before = scorer.score(samples=samples(), aspects=True)
    scorer.save_pretrained(tmp_path / "m")
    after = mr.load(tmp_path / "m", device="cpu").score(samples=samples(), aspects=True)
    for b, a in zip(before, after):
        assert b.keys() == a.keys()
        assert all(b[k] == pytest.approx(a[k], abs=1e-6) for k in b)


@pytest.mark.parametrize("head", HEADS)
def test_batch_order_and_batch_company_do_not_change_a_score(head: str):
    scorer = mr.Scorer(tiny_reward_model(head), device="cpu", batch_size=4)
    items = samples(6)
    together = scorer.score(samples=items)
    alone = [scorer.score(samples=[s])[0] for s in items]
    reversed_ = scorer.score(samples=items[::-1])[::-1]
    assert together == pytest.approx(alone, abs=1e-5)
    assert together == pytest.approx(reversed_, abs=1e-5)


@pytest.mark.parametrize("head", HEADS)
def test_pairwise_preference_is_antisymmetric(head: str):
    model = tiny_reward_model(head).eval()
    a, b = samples(2)
    with torch.no_grad():
        ab = model(model.collate([a, b])).score
        ba = model(model.collate([b, a])).score
    torch.testing.assert_close(ab[0] - ab[1], -(ba[0] - ba[1]))


def test_shared_prompt_is_encoded_once():
    model = tiny_reward_model()
    inputs = model.collate([Sample(prompt="a red picture", image=colour_image("red", i)) for i in range(5)])
    assert inputs["input_ids"].shape[0] == 1 and inputs["text_index"].tolist() == [0] * 5
    calls = []
    handle = model.backbone.model.transformer.register_forward_hook(lambda *args: calls.append(1))
    model(inputs)
    handle.remove()
    assert len(calls) == 1
