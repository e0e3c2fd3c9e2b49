"""Implicit PRM (issue 14, item 2): step rewards as the policy/reference log ratio, trained from
outcome labels only (Yuan et al., 2024). The Q-values by hand, zero at the start (policy equals
reference), one forward equal to each prefix, outcome training on the real PRM800K/Math-Shepherd
records, and save -> load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mmreward as mr
from mmreward.data.records import read_records
from mmreward.prm import implicit_step_rewards, outcome_bce_loss
from mmreward.scoring import Scorer
from mmreward.types import Sample
from modalities.backbones.implicit_prm import ImplicitPRM
from tests.vlm_helpers import build_tiny_causal_lm, torch_threads

FIXTURES = Path(__file__).parent / "fixtures" / "process"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-implicit-lm") / "qwen3")


def test_implicit_q_values_by_hand():
    ratio = torch.tensor([[9.0, 1.0, 2.0, 9.0, 3.0, 9.0]])
    step_ids = torch.tensor([[-1, 0, 0, -1, 1, -1]])  # prompt, step 0 x2, joiner, step 1, end token
    q = implicit_step_rewards(ratio, step_ids, num_steps=2, beta=0.5)
    torch.testing.assert_close(q, torch.tensor([[1.5, 3.0]]))  # 0.5 * 3, then 0.5 * (3 + 3)


def test_starts_neutral_and_scores_each_prefix_in_one_forward(tiny_lm):
    model = ImplicitPRM(str(tiny_lm), beta=0.05)
    steps = ["three times four is 12", "two plus 12 is 14", "so the answer is 14"]
    sample = Sample(prompt="what is 2 + 3 * 4 ?", steps=steps)
    scorer = Scorer(model, device="cpu")
    (out,) = scorer.score_samples([sample])
    np.testing.assert_allclose(out.steps, [0.5, 0.5, 0.5], atol=1e-6)  # policy == reference
    with torch.no_grad():  # move the policy off the reference, then compare with each prefix
        for p in model.policy.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    (full,) = scorer.score_samples([sample])
    prefixes = scorer.score_samples([Sample(prompt=sample.prompt, steps=steps[:k]) for k in (1, 2, 3)])
    np.testing.assert_allclose(full.steps, [p.steps[-1] for p in prefixes], atol=1e-5)
    assert len(set(np.round(full.steps, 6))) > 1


def test_learns_from_outcome_labels_on_real_records_and_reloads(tiny_lm, tmp_path):
    records = read_records(FIXTURES / "prm800k.jsonl", "prm800k") + read_records(
        FIXTURES / "math_shepherd.jsonl", "math-shepherd"
    )
    samples = [r.sample for r in records]
    outcome = torch.tensor([float(r.labels[-1]) for r in records])  # the final step's label only
    torch.manual_seed(0)
    model = ImplicitPRM(str(tiny_lm), beta=0.5)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    inputs = model.collate(samples)
    last = inputs["step_counts"] - 1

    def loss() -> torch.Tensor:
        q = model(inputs).steps
        return outcome_bce_loss(q[torch.arange(len(q)), last], outcome)

    model.train()
    with torch_threads(1):
        before = float(loss())
        for _ in range(15):
            optimizer.zero_grad()
            value = loss()
            value.backward()
            optimizer.step()
        after = float(loss())
    print(f"outcome BCE {before:.3f} -> {after:.3f}")
    assert after < 0.5 * before, (before, after)
    assert all(not p.requires_grad for p in model.reference.parameters())
    scorer = Scorer(model, device="cpu")
    out = scorer.score_samples(samples)
    right = [o.steps[-1] for o, y in zip(out, outcome) if y == 1]
    wrong = [o.steps[-1] for o, y in zip(out, outcome) if y == 0]
    assert min(right) > max(wrong)  # the training chains are told apart by the final Q
    scorer.save_pretrained(tmp_path / "implicit")
    again = mr.load(tmp_path / "implicit", device="cpu").score_samples(samples)
    for a, b in zip(out, again):
        np.testing.assert_allclose(a.steps, b.steps, atol=1e-5)
