"""Pairwise judging with position swap, and rubric judging with user weights, on real MM-RLHF prompts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from judges.backends import Generation, Messages, SamplingParams
from judges.pairwise import PairwiseJudge, swap_report
from judges.rubric import RubricJudge
from mmreward.types import Sample
from tests.judge_helpers import RuleJudgeBackend, generation

FIXTURE = Path(__file__).parent / "fixtures" / "formats" / "mm_reward_bench_first5.jsonl"


def real_pairs(flawed: int) -> list[tuple[Sample, Sample]]:
    """MM-RLHF (prompt, chosen, rejected) pairs; the first ``flawed`` rejected responses get an error marked."""
    records = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    pairs = []
    for i, r in enumerate(records):
        rejected = r["rejected"] + (" (factual error)" if i < flawed else "")
        pairs.append(
            (Sample(prompt=r["prompt"], response=r["chosen"]), Sample(prompt=r["prompt"], response=rejected))
        )
    return pairs


def test_position_swap_exposes_a_biased_judge_and_combines_the_orders():
    pairs = real_pairs(flawed=3)  # 3 pairs a judge can decide, 2 it cannot
    backend = RuleJudgeBackend(position_bias=True)
    verdicts = PairwiseJudge(backend).compare(pairs)
    assert backend.calls == 1  # both orders went out in one batch
    decided, undecided = verdicts[:3], verdicts[3:]
    for v in decided:
        assert v.consistent and v.winner == "first"
        assert v.p_first == pytest.approx(0.8)
    for v in undecided:  # "A" both times: the first response wins once and loses once
        assert v.consistent is False
        assert v.p_first == pytest.approx(0.5) and v.winner == "tie"
    report = swap_report(verdicts)
    assert report.inconsistency_rate == pytest.approx(2 / 5)
    assert report.first_position_rate == pytest.approx(7 / 10)
    assert report.failure_rate == 0


def test_an_unbiased_judge_is_consistent_and_no_swap_halves_the_requests():
    verdicts = PairwiseJudge(RuleJudgeBackend(position_bias=False)).compare(real_pairs(flawed=3))
    assert swap_report(verdicts).inconsistency_rate == 0
    single = PairwiseJudge(RuleJudgeBackend(position_bias=True), swap=False).compare(real_pairs(flawed=0))
    assert all(v.swapped is None and v.consistent is None and v.winner == "first" for v in single)
    assert swap_report(single).inconsistency_rate is None


class FailingOnceBackend:
    """Answers one request of the batch with garbage, the rest like ``RuleJudgeBackend``."""

    def generate(self, requests: list[Messages], params: SamplingParams) -> list[Generation]:
        out = RuleJudgeBackend(position_bias=False).generate(requests, params)
        out[0] = Generation("I refuse to choose.", finish_reason="stop")
        return out


def test_a_failed_order_falls_back_to_the_other_and_is_not_counted_inconsistent():
    verdicts = PairwiseJudge(FailingOnceBackend()).compare(real_pairs(flawed=5))
    first = verdicts[0]
    assert first.forward.score is None and "no verdict" in first.forward.reason
    assert first.consistent is None and first.winner == "first"  # from the swapped order alone
    assert all(v.consistent for v in verdicts[1:])


class KeywordBackend:
    """A principle checker: P(yes) is 0.9 when the principle's last word is in the response, else 0.2."""

    def generate(self, requests: list[Messages], params: SamplingParams) -> list[Generation]:
        out = []
        for request in requests:
            text = request[-1]["content"]
            principle = text.split("Principle: ", 1)[1].split("\n", 1)[0]
            response = text.split("Response: ", 1)[1]
            if "unreadable" in principle:
                out.append(generation("Answer: perhaps"))
                continue
            p_yes = 0.9 if principle.split()[-1].lower() in response.lower() else 0.2
            word = "yes" if p_yes > 0.5 else "no"
            out.append(generation(f"Answer: {word}", {"yes": p_yes, "no": 1 - p_yes}, at=word))
        return out


def test_rubric_weights_aggregate_per_principle_probabilities():
    records = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    sample = Sample(prompt=records[0]["prompt"], response="Answer: C. The image shows a 3D graph.")
    rubric = {"It states the answer": 3.0, "It mentions the graph": 1.0, "It says sorry": 2.0}
    [result] = RubricJudge(KeywordBackend()).evaluate([sample], rubric)
    assert result.principles["It states the answer"].score == pytest.approx(0.9)
    assert result.principles["It says sorry"].score == pytest.approx(0.2)
    assert result.score == pytest.approx((3 * 0.9 + 1 * 0.9 + 2 * 0.2) / 6)
    assert result.passed == {
        "It states the answer": True,
        "It mentions the graph": True,
        "It says sorry": False,
    }
    [partial] = RubricJudge(KeywordBackend(), principles=["It mentions the graph", "unreadable"]).evaluate(
        [sample]
    )
    assert partial.failures == ["unreadable"] and partial.score == pytest.approx(0.9)
    with pytest.raises(ValueError, match="positive weights"):
        RubricJudge(KeywordBackend(), principles={"x": 0.0})
    assert not math.isnan(result.score)
