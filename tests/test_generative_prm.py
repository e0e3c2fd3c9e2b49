"""The generative PRM (issue 14 item 4): per-step analysis and verdict, and a corrected first wrong step."""

from __future__ import annotations

import math
import re

import pytest

from judges.backends import Generation, Messages, SamplingParams
from judges.generative_prm import GenerativePRM, generative_prm_request, parse_step_verdicts
from judges.tiny import pieces
from mmreward.types import Sample
from tests.judge_helpers import generation

OUTPUT = (
    "Step 1: The image shows 4 red squares, as stated. Verdict: correct\n"
    "Step 2: 4 + 3 is 7, not 8. Verdict: incorrect\n"
    "Step 3: It carries the wrong 8 on. Verdict: incorrect\n"
    "Correction: 4 + 3 = 7."
)
CHAIN = Sample(
    prompt="Count the red and blue shapes. Add them.",
    image=None,
    steps=["There are 4 red shapes.", "4 + 3 = 8.", "The answer is 8."],
)


def with_verdicts(text: str, probs: list[float]) -> Generation:
    """``text`` as tokens, with P(correct) = probs[k] at the k-th verdict token."""
    tokens = pieces(text)
    assert "".join(tokens) == text
    logprobs, tops = [math.log(0.9)] * len(tokens), [{t: math.log(0.9)} for t in tokens]
    at = [i for i, t in enumerate(tokens) if t.strip() in ("correct", "incorrect")]
    for i, p in zip(at, probs):
        tops[i] = {" correct": math.log(p), " incorrect": math.log(1 - p)}
        logprobs[i] = math.log(p if tokens[i].strip() == "correct" else 1 - p)
    return Generation(text, tokens, logprobs, tops, "stop")


def test_reads_each_step_its_analysis_and_the_correction_from_text():
    j = parse_step_verdicts(Generation(OUTPUT), 3)
    assert j.steps == [1.0, 0.0, 0.0] and j.first_error == 1 and j.score == 0.0
    assert j.correction == "4 + 3 = 7." and j.analyses[1] == "4 + 3 is 7, not 8."


def test_verdict_probabilities_come_from_the_logprobs():
    j = parse_step_verdicts(with_verdicts(OUTPUT, [0.8, 0.3, 0.1]), 3)
    assert [round(p, 6) for p in j.steps] == [0.8, 0.3, 0.1]
    assert j.verdicts[0].method == "logprobs" and j.first_error == 1 and abs(j.score - 0.1) < 1e-9


def test_missing_or_unreadable_steps_are_nan_with_a_reason():
    j = parse_step_verdicts(Generation("Step 1: fine. Verdict: correct\nStep 3: hmm, maybe"), 3)
    assert j.steps[0] == 1.0 and math.isnan(j.steps[1]) and math.isnan(j.steps[2])
    assert "Step 2" in j.reasons[1] and "verdict" in j.reasons[2]
    assert j.first_error == -1 and j.correction is None and j.score == 1.0


def test_the_request_numbers_the_steps_and_puts_the_image_first():
    request = generative_prm_request(Sample(prompt="How many?", image="img.png", steps=["a", "b"]))
    content = request[-1]["content"]
    assert content[0] == {"type": "image", "image": "img.png"}
    assert "Step 1: a\nStep 2: b" in content[1]["text"]


class ScriptedChecker:
    """Stand-in judge model: it checks each "a op b = c." step's arithmetic and writes GM-PRM's layout."""

    def generate(self, requests: list[Messages], params: SamplingParams) -> list[Generation]:
        out = []
        for request in requests:
            steps = re.findall(r"^Step \d+: (.*)$", request[-1]["content"], re.MULTILINE)
            lines, correction = [], None
            for k, step in enumerate(steps):
                m = re.fullmatch(r"(\d+) ([-+*]) (\d+) = (\d+)\.", step)
                right = m is None or eval(f"{m[1]}{m[2]}{m[3]}") == int(m[4])
                if not right and correction is None:
                    correction = f"{m[1]} {m[2]} {m[3]} = {eval(f'{m[1]}{m[2]}{m[3]}')}."
                lines.append(f"Step {k + 1}: checked. Verdict: {'correct' if right else 'incorrect'}")
            text = "\n".join(lines + ([f"Correction: {correction}"] if correction else []))
            out.append(generation(text))
        return out


def test_judge_returns_step_scores_through_the_reward_contract():
    prm = GenerativePRM(ScriptedChecker())
    right = Sample(prompt="q", steps=["There are 4 red shapes.", "4 + 3 = 7.", "The answer is 7."])
    outs = prm.score_samples([CHAIN, right])
    assert outs[0].steps == [1.0, 0.0, 1.0] and outs[0].score == 0.0
    assert outs[0].provenance["first_error"] == 1 and outs[0].provenance["correction"] == "4 + 3 = 7."
    assert (
        outs[1].steps == [1.0, 1.0, 1.0] and outs[1].score == 1.0 and "correction" not in outs[1].provenance
    )


def test_the_correction_is_spliced_into_refined_best_of_n():
    """``correct_first_error`` is refined best-of-N's hook: the judge repairs the step the search found."""
    from integrations.search import refined_best_of_n

    prm = GenerativePRM(ScriptedChecker())
    assert prm.correct_first_error(CHAIN, 1) == "4 + 3 = 7."
    assert prm.correct_first_error(CHAIN, 0) is None  # the judge finds no error at step 1
    with pytest.raises(ValueError, match="index 5 is outside the chain's 3 steps"):
        prm.correct_first_error(CHAIN, 5)

    def policy(partials: list[Sample]) -> list[str]:
        """Always slips on the sum; after a repaired sum, states the answer it carries."""
        out = []
        for p in partials:
            done = p.steps or []
            if not done:
                out.append("There are 4 red shapes.")
            elif len(done) == 1:
                out.append("4 + 3 = 8.")
            else:
                out.append(f"The answer is {done[-1].split(' = ')[1].rstrip('.')}.")
        return out

    [result] = refined_best_of_n(
        policy, prm, [Sample(prompt="Add 4 and 3.")], correct=prm.correct_first_error, n=2, max_steps=3
    )
    assert result.sample.steps == ["There are 4 red shapes.", "4 + 3 = 7.", "The answer is 7."]
