"""integrations.search: every method picks what it should, on toy generators and toy rewards.

The pools come from ``ToyReasoningWorld`` (chains that go wrong at a known step, a popular wrong
answer) scored by ``ToyPRM`` (informative, noisy step scores): no model, no training.
"""

from __future__ import annotations

import random

import pytest
import torch

from integrations.search import (
    EarlyRejection,
    Stage,
    Step,
    beam_search,
    best_of_n,
    cascade,
    first_wrong_step,
    majority_vote,
    refined_best_of_n,
    sample_best_of_n,
    total_stats,
    weighted_vote,
)
from integrations.search.synthetic import ToyPRM, ToyReasoningWorld
from mmreward.types import RewardOutput, Sample

WORLD = ToyReasoningWorld()
PROBLEMS = WORLD.problems(200)


class Fixed:
    """A reward that looks its outputs up by the sample's response; counts what it scored."""

    def __init__(self, table: dict[str, RewardOutput]) -> None:
        self.table, self.seen = table, []

    def score_samples(self, samples):
        self.seen.extend(s.response for s in samples)
        return [self.table[s.response] for s in samples]


def group(*names: str) -> list[Sample]:
    return [Sample("q", response=name) for name in names]


@pytest.fixture(scope="module")
def full_pools():
    return sample_best_of_n(WORLD.generator, ToyPRM(), PROBLEMS, n=8)


def accuracy(answers, problems=PROBLEMS) -> float:
    return sum(a == WORLD.truth(p) for a, p in zip(answers, problems, strict=True)) / len(problems)


def test_each_step_aggregate_picks_its_own_candidate():
    table = {
        "steady": RewardOutput(score=0.0, steps=[0.65, 0.65, 0.65]),  # best min, best product
        "strong_finish": RewardOutput(score=0.0, steps=[0.3, 0.9, 0.95]),  # best last
        "spiky": RewardOutput(score=0.0, steps=[0.99, 0.99, 0.2]),  # best mean
    }
    reward, candidates = Fixed(table), [group("steady", "strong_finish", "spiky")]
    picked = {
        how: best_of_n(reward, candidates, aggregate=how)[0].sample.response
        for how in ("min", "last", "mean", "product")
    }
    assert picked == {"min": "steady", "last": "strong_finish", "mean": "spiky", "product": "steady"}
    with pytest.raises(ValueError, match="Unknown step aggregate"):
        best_of_n(reward, candidates, aggregate="max")
    outcome = Fixed({"a": RewardOutput(score=1.0), "b": RewardOutput(score=2.0)})
    assert best_of_n(outcome, [group("a", "b")])[0].index == 1  # the outcome score by default
    with pytest.raises(ValueError, match="needs per-step scores"):
        best_of_n(outcome, [group("a", "b")], aggregate="min")


def test_lcb_prefers_the_candidate_the_reward_is_sure_about():
    table = {"bold": RewardOutput(score=1.0, sigma=0.5), "sure": RewardOutput(score=0.9, sigma=0.05)}
    reward = Fixed(table)
    assert best_of_n(reward, [group("bold", "sure")])[0].sample.response == "bold"
    lcb = best_of_n(reward, [group("bold", "sure")], select="lcb", k=1.0)[0]
    assert lcb.sample.response == "sure" and lcb.values == pytest.approx([0.5, 0.85])
    no_sigma = Fixed({"a": RewardOutput(score=1.0), "b": RewardOutput(score=0.0)})
    with pytest.raises(ValueError, match="sigma"):
        best_of_n(no_sigma, [group("a", "b")], select="lcb")


def test_nan_scores_are_passed_over_and_an_all_nan_group_is_named():
    nan = RewardOutput(score=float("nan"), provenance={"failure": "image unreadable"})
    reward = Fixed({"bad": nan, "ok": RewardOutput(score=-5.0)})
    assert best_of_n(reward, [group("bad", "ok")])[0].sample.response == "ok"
    with pytest.raises(ValueError, match="Group 1.*image unreadable"):
        best_of_n(reward, [group("ok"), group("bad", "bad")])
    with pytest.raises(ValueError, match="Group 0 has no candidates"):
        best_of_n(reward, [[]])


def test_cascade_ranks_only_what_the_cheap_stage_kept():
    cheap = Fixed({f"c{i}": RewardOutput(score=float(i)) for i in range(6)})  # likes high numbers
    expensive = Fixed({f"c{i}": RewardOutput(score=float(-abs(i - 3))) for i in range(6)})  # likes c3
    groups = [group(*(f"c{i}" for i in range(6))), group("c0", "c5")]
    picks = cascade(groups, [Stage(cheap, keep=3)], expensive)
    assert expensive.seen == ["c3", "c4", "c5", "c0", "c5"]  # 3 + 2 survivors, one call
    assert [p.sample.response for p in picks] == ["c3", "c5"]
    assert torch.isnan(torch.tensor(picks[0].values[:3])).all() and picks[0].outputs[0] is None
    narrow = cascade(groups, [Stage(cheap, keep=1)], expensive)  # the cheap stage alone decides
    assert [p.sample.response for p in narrow] == ["c5", "c5"]


def test_votes_count_answers_and_weights():
    answers = {"a1": 1, "a2": 1, "a3": 1, "b1": 2, "b2": 2, "none": None}
    table = {
        name: RewardOutput(score=0.0, steps=[w])
        for name, w in {"a1": 0.1, "a2": 0.1, "a3": 0.1, "b1": 0.9, "b2": 0.8, "none": 1.0}.items()
    }
    candidates = [group("a1", "b1", "a2", "b2", "a3", "none")]
    answer = lambda s: answers[s.response]  # noqa: E731
    [plain] = majority_vote(candidates, answer)
    assert plain.answer == 1 and plain.tally == {1: 3.0, 2: 2.0}
    [weighted] = weighted_vote(Fixed(table), candidates, answer)
    assert weighted.answer == 2 and weighted.index == 1 and weighted.tally[2] == pytest.approx(1.7)
    negative = Fixed({n: RewardOutput(score=-1.0) for n in answers})
    with pytest.raises(ValueError, match="negative weights"):
        weighted_vote(negative, candidates, answer, aggregate=None)
    [squashed] = weighted_vote(negative, candidates, answer, aggregate=None, weight=torch.sigmoid)
    assert squashed.answer == 1


def test_prm_weighted_selection_beats_majority_and_random_where_majority_is_often_wrong(full_pools):
    pools = [[c.sample for c in r.chains] for r in full_pools]
    prm = ToyPRM()
    majority = accuracy([v.answer for v in majority_vote(pools, WORLD.answer)])
    weighted = accuracy([v.answer for v in weighted_vote(prm, pools, WORLD.answer, aggregate="min")])
    bon = accuracy([WORLD.answer(p.sample) for p in best_of_n(prm, pools, aggregate="min")])
    rng = random.Random(0)
    chance = accuracy([WORLD.answer(rng.choice(pool)) for pool in pools])
    assert majority < 0.5  # the pools are built so: the distractor often wins the vote
    assert weighted >= majority + 0.2 and weighted >= chance + 0.2, (weighted, majority, chance)
    assert bon >= majority + 0.3 and bon >= chance + 0.3, (bon, majority, chance)
    assert accuracy([WORLD.answer(r.sample) for r in full_pools]) == bon  # step-wise generation: same pick


def test_early_rejection_keeps_accuracy_within_two_points_and_expands_fewer_steps(full_pools):
    full_acc = accuracy([WORLD.answer(r.sample) for r in full_pools])
    early = sample_best_of_n(
        WORLD.generator, ToyPRM(), PROBLEMS, n=8, early_rejection=EarlyRejection(threshold=0.5, min_steps=1)
    )
    early_acc = accuracy([WORLD.answer(r.sample) for r in early])
    full_cost, early_cost = total_stats(full_pools), total_stats(early)
    assert early_acc >= full_acc - 0.02, (early_acc, full_acc)
    assert full_cost.steps_generated == 200 * 8 * WORLD.length
    assert early_cost.steps_generated <= 0.8 * full_cost.steps_generated, (early_cost, full_cost)
    assert early_cost.tokens_generated <= 0.8 * full_cost.tokens_generated
    assert early_cost.rejected > 0 and all(r.chains[r.index].alive for r in early)
    assert early_cost.reward_calls == WORLD.length  # one call per round, for all problems together


def test_early_rejection_never_rejects_every_chain_and_validates_its_rule():
    harsh = sample_best_of_n(
        WORLD.generator, ToyPRM(), PROBLEMS[:20], n=4, early_rejection=EarlyRejection(threshold=2.0, keep=2)
    )
    assert all(sum(c.alive for c in r.chains) == 2 for r in harsh)
    assert all(r.sample.steps and len(r.sample.steps) == WORLD.length for r in harsh)
    once = EarlyRejection(quantile=0.5, quantile_at=(1,))  # speculative rejection: one cut, after step 1
    cut_once = sample_best_of_n(WORLD.generator, ToyPRM(), PROBLEMS[:20], n=8, early_rejection=once)
    assert all(sum(c.alive for c in r.chains) == 4 for r in cut_once)  # half of 8, then never again
    assert all(len(c.sample.steps) == 1 for r in cut_once for c in r.chains if not c.alive)
    with pytest.raises(ValueError, match="threshold, a quantile"):
        EarlyRejection()
    with pytest.raises(ValueError, match="quantile must be in"):
        EarlyRejection(quantile=1.5)


def test_beam_search_follows_the_prm_to_the_right_chain():
    def generator(partials):  # two ways on from every chain: branch 0 is right, branch 1 wrong
        return [
            Step(f"{'ok' if p.meta['branch'] == 0 else 'bad'}{len(p.steps)}", final=len(p.steps) == 2)
            for p in partials
        ]

    class PrefersOk:
        def score_samples(self, samples):
            return [
                RewardOutput(score=0.0, steps=[0.9 if s.startswith("ok") else 0.1 for s in x.steps])
                for x in samples
            ]

    [result] = beam_search(generator, PrefersOk(), [Sample("q")], beam_width=2, expand=2)
    assert result.sample.steps == ["ok0", "ok1", "ok2"] and result.value == pytest.approx(0.9)
    assert result.stats.steps_generated == 2 + 4 + 4 and result.stats.rejected == 0 + 2 + 2


def test_beam_search_beats_a_single_chain_on_the_toy_world(full_pools):
    results = beam_search(WORLD.generator, ToyPRM(), PROBLEMS[:100], beam_width=4, expand=2)
    beam = accuracy([WORLD.answer(r.sample) for r in results], PROBLEMS[:100])
    single = accuracy([WORLD.answer(r.chains[0].sample) for r in full_pools[:100]], PROBLEMS[:100])
    assert beam >= single + 0.3, (beam, single)
    assert all(len(r.chains) <= 4 and all(c.done for c in r.chains) for r in results)


def test_refined_best_of_n_repairs_from_the_first_wrong_step():
    assert first_wrong_step([0.9, 0.2, 0.1], 0.5) == 1 and first_wrong_step([0.9, 0.8], 0.5) is None
    hard = ToyReasoningWorld(error_rates=(0.4, 0.5))
    problems = hard.problems(100)
    calls = []

    def correct(chain, index):
        calls.append((chain.steps[index], index))
        return hard.correct(chain, index)

    plain = sample_best_of_n(hard.generator, ToyPRM(), problems, n=8)
    refined = refined_best_of_n(hard.generator, ToyPRM(), problems, correct=correct, n=8)
    plain_acc = accuracy([hard.answer(r.sample) for r in plain], problems)
    refined_acc = accuracy([hard.answer(r.sample) for r in refined], problems)
    assert refined_acc >= plain_acc + 0.1, (refined_acc, plain_acc)
    real = sum(" bad " in f" {step} " for step, _ in calls) / len(calls)
    assert real >= 0.9, real  # the PRM's first wrong step is, nearly always, a real error
    assert all(len(r.chains) <= 8 for r in refined)
    outcome_only = type(
        "Outcome", (), {"score_samples": lambda self, s: [RewardOutput(score=1.0) for _ in s]}
    )()
    with pytest.raises(ValueError, match="needs per-step scores"):
        refined_best_of_n(hard.generator, outcome_only, problems[:1], correct=correct)


def test_a_generator_that_returns_the_wrong_number_of_steps_is_named():
    with pytest.raises(ValueError, match="returned 0 steps for 2 partial chains"):
        sample_best_of_n(lambda partials: [], ToyPRM(), PROBLEMS[:1], n=2)
    with pytest.raises(TypeError, match="score_samples"):
        beam_search(WORLD.generator, object(), PROBLEMS[:1])


def test_a_real_process_reward_model_drives_every_search(tmp_path):
    """The plumbing with mmreward's own PRM (a tiny random LM behind ``Scorer``): partial chains of any
    length are scored, best-of-N's value is the aggregate of the returned step scores, and the
    step-level searches run on it unchanged."""
    from mmreward.heads import LinearHead
    from mmreward.prm import ProcessRewardModel
    from mmreward.scoring import Scorer
    from modalities.backbones.lm import LMBackbone
    from modalities.backbones.steps import StepBackbone
    from tests.vlm_helpers import build_tiny_causal_lm

    torch.manual_seed(0)
    backbone = StepBackbone(LMBackbone(str(build_tiny_causal_lm(tmp_path / "lm"))))
    prm = Scorer(ProcessRewardModel(backbone, LinearHead(), aggregation="min"), device="cpu")
    problems = WORLD.problems(2)
    pools = sample_best_of_n(WORLD.generator, ToyPRM(), problems, n=3)
    groups = [[c.sample for c in r.chains] for r in pools]
    picks = best_of_n(prm, groups, aggregate="product")
    for pick in picks:
        by_hand = [float(torch.tensor(o.steps, dtype=torch.float64).prod()) for o in pick.outputs]
        assert pick.values == pytest.approx(by_hand, rel=1e-4) and pick.values[pick.index] == max(pick.values)
    assert all(v.answer is not None for v in weighted_vote(prm, groups, WORLD.answer))
    early = sample_best_of_n(
        WORLD.generator, prm, problems, n=3, early_rejection=EarlyRejection(quantile=0.5)
    )
    beams = beam_search(WORLD.generator, prm, problems, beam_width=2, expand=2)
    for result in (*early, *beams):
        assert len(result.sample.steps) == WORLD.length and 0 < result.value < 1
