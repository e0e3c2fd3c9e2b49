"""Score extraction: distributions at the score token, text fallback, and bad outputs that never raise."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from judges.backends import Generation
from judges.parsing import parse_score, parse_verdict, parse_yes_no
from judges.scaling import aggregate_scores
from judges.video import VideoJudge
from tests.judge_helpers import generation

MMRB = Path("/work/shared/data/real/preferences/multimodal_rewardbench/outputs_example.jsonl")


def test_expected_score_and_confidence_come_from_the_score_token():
    gen = generation(
        "Critique: The circles are blue, not red.\nScore: 2", {"2": 0.6, "3": 0.3, "1": 0.1}, at="2"
    )
    j = parse_score(gen)
    assert j.method == "logprobs"
    assert j.score == pytest.approx(0.6 * 2 + 0.3 * 3 + 0.1 * 1)
    assert j.confidence == pytest.approx(0.6)
    assert j.critique == "The circles are blue, not red."
    assert j.distribution == pytest.approx({"2": 0.6, "3": 0.3, "1": 0.1})


def test_non_label_alternatives_are_renormalised_away_and_mass_reported():
    gen = generation("Score: 4", {"4": 0.5, "5": 0.25, "banana": 0.25}, at="4")
    j = parse_score(gen)
    assert j.label_mass == pytest.approx(0.75)
    assert j.score == pytest.approx((4 * 0.5 + 5 * 0.25) / 0.75)


def test_last_score_line_wins_over_an_earlier_mention():
    gen = generation("Score: 1 was my first thought. Final Score: 5", {"5": 0.7, "4": 0.3}, at="5")
    assert parse_score(gen).score == pytest.approx(4.7)


def test_text_fallback_without_logprobs_and_for_multi_token_labels():
    plain = parse_score(Generation("Critique: fine.\nScore: 4"))
    assert (plain.score, plain.method, plain.confidence) == (4.0, "text", None)
    ten = parse_score(generation("Score: 10", {"1": 0.9, "9": 0.1}, at="1"), min_score=1, max_score=10)
    assert (ten.score, ten.method) == (10.0, "text")
    assert "single token" in ten.reason


@pytest.mark.parametrize(
    ("text", "finish", "why"),
    [
        ("Critique: the circles are blue. Score: ", "length", "cut off"),
        ("Critique: the circles are blue.", "stop", "no verdict"),
        ("Score: seven", "stop", "no verdict"),
        ("Score: 9", "stop", "no verdict"),  # out of the 1-5 scale
        ("", "stop", "no verdict"),
        ("\x00\ufffd Score :: ##", "stop", "no verdict"),
    ],
)
def test_malformed_and_truncated_outputs_give_none_with_a_reason(text, finish, why):
    j = parse_score(generation(text, finish=finish))
    assert j.score is None and j.method == "none"
    assert why in j.reason


def test_backend_errors_become_failed_judgements():
    j = parse_score(Generation("", finish_reason="error", error="HTTP 503: overloaded"))
    assert j.score is None and "HTTP 503" in j.reason


def test_tokens_that_do_not_spell_the_text_fall_back_to_text():
    gen = Generation("Score: 3", tokens=["Sc", "ore", "3"], logprobs=[0.0] * 3, top_logprobs=[{}] * 3)
    j = parse_score(gen)
    assert (j.score, j.method) == (3.0, "text")


def test_verdict_and_yes_no_probabilities():
    v = parse_verdict(generation("B is vaguer. Final verdict: [[A]]", {"A": 0.7, "B": 0.3}, at="A"))
    assert v.score == pytest.approx(0.7) and v.method == "logprobs"
    y = parse_yes_no(generation("Answer: No", {"No": 0.8, "Yes": 0.2}, at="No"))
    assert y.score == pytest.approx(0.2)


@pytest.mark.skipif(
    not MMRB.is_file(), reason="Multimodal RewardBench example outputs (CC BY-NC) are not present"
)
def test_real_multimodal_rewardbench_outputs_parse_to_their_verdicts():
    records = [json.loads(line) for line in MMRB.read_text().splitlines() if line.strip()]
    for record in records:
        j = parse_verdict(Generation(record["output"]))
        verdict = "A" if j.score == 1.0 else "B"
        assert record["output"].rstrip().endswith(f"[[{verdict}]]")
        assert len(j.critique) > 100 and "[[" not in j.critique


def test_multi_aspect_video_parse_reads_each_aspect_and_survives_a_missing_one():
    judge = VideoJudge(backend=None, aspects=("visual quality", "text alignment"))
    text = "<think>The motion is smooth but the dog is missing.</think>\nvisual quality: 4\ntext alignment: 2"
    gen = generation(text, {"2": 0.5, "1": 0.5}, at="2")
    j = judge.safe_parse(None, gen)
    assert j.aspects["visual quality"].score == 4.0  # only "4" among its alternatives
    assert j.aspects["text alignment"].score == pytest.approx(1.5)
    assert j.score == pytest.approx((4.0 + 1.5) / 2)
    assert j.critique == "The motion is smooth but the dog is missing."
    partial = judge.safe_parse(None, Generation("<think>hmm</think>\nvisual quality: 3\ntext alignment:"))
    assert partial.score == 3.0 and "text alignment" in partial.reason


def test_scaling_aggregates_and_reports_agreement():
    def j(score, conf):
        return parse_score(generation(f"Score: {score}", {str(score): conf, "1": 1 - conf}, at=str(score)))

    samples = [j(4, 0.9), j(4, 0.9), j(2, 0.6), parse_score(Generation("garbled"))]
    scores = [s.score for s in samples[:3]]
    majority = aggregate_scores(samples, "majority")
    assert majority.score == round(scores[0]) and majority.failures == 1
    assert majority.agreement == pytest.approx(2 / 3)
    assert aggregate_scores(samples, "mean").score == pytest.approx(sum(scores) / 3)
    weights = [0.9, 0.9, 0.6]
    expected = sum(w * s for w, s in zip(weights, scores)) / sum(weights)
    assert aggregate_scores(samples, "confidence").score == pytest.approx(expected)
    assert aggregate_scores(samples[3:], "mean").score is None
    assert not math.isnan(majority.agreement)
