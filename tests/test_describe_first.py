"""The describe-first judge: the image reaches the verdict only through the judge's own description."""

from __future__ import annotations

import math

import pytest

from judges.describe_first import DESCRIBE_REQUEST, DescribeFirstJudge
from mmreward.types import Sample
from tests.judge_helpers import generation


class ScriptedBackend:
    """Describes every image as two blue circles; scores a response 2 when it names blue, else 5."""

    def __init__(self):
        self.requests = []

    def generate(self, requests, params):
        self.requests.append(requests)
        out = []
        for request in requests:
            content = request[-1]["content"]
            if isinstance(content, list):  # the first pass: an image and the instruction
                assert content[-1]["text"] == DESCRIBE_REQUEST
                out.append(generation("two blue circles. Quality: clean."))
            else:
                wrong = "blue" in content.split("Response:")[1]
                score = "2" if wrong else "5"
                out.append(generation(f"Critique: {'Wrong color' if wrong else 'No problem'}.\nScore: {score}",
                                      {score: 0.9, "3": 0.1}, at=score))  # fmt: skip
        return out


def test_the_verdict_reads_the_description_and_text_samples_take_one_pass():
    backend = ScriptedBackend()
    image, text = Sample(prompt="two red circles", image="a.png"), Sample(prompt="say hi", response="hi")
    judged_image, judged_text = DescribeFirstJudge(backend).judge([image, text])
    first, second = backend.requests
    assert len(first) == 1  # only the image sample is described
    assert "Response: two blue circles. Quality: clean.\n" in second[0][-1]["content"]
    assert "Response: hi\n" in second[1][-1]["content"]
    assert judged_image.text.startswith("Image: two blue circles. Quality: clean. Critique: Wrong color.")
    assert judged_image.score == pytest.approx((2 * 0.9 + 3 * 0.1) / 1.0)
    assert judged_text.score == pytest.approx(5 * 0.9 + 3 * 0.1) and not judged_text.text.startswith("Image:")
    [reward] = DescribeFirstJudge(ScriptedBackend()).score_samples([image])
    assert reward.score == pytest.approx(judged_image.score) and reward.text.startswith("Image: two blue")


def test_an_image_with_a_text_response_is_refused_naming_the_sample():
    sample = Sample(prompt="p", response="an answer", image="a.png", meta={"id": "row-7"})
    with pytest.raises(ValueError, match=r"row-7.*response"):
        DescribeFirstJudge(ScriptedBackend()).judge([sample])


def test_each_sampled_judgement_samples_the_whole_chain():
    from judges.scaling import ScaledJudge

    backend = ScriptedBackend()
    [scaled] = ScaledJudge(DescribeFirstJudge(backend), k=3, temperature=1.0).judge(
        [Sample(prompt="two red circles", image="a.png")]
    )
    assert len(scaled.samples) == 3 and all(math.isclose(s.score, 2.1) for s in scaled.samples)
    # k descriptions, then k verdicts, each verdict reading its own description
    assert [sum(isinstance(r[-1]["content"], list) for r in call) for call in backend.requests] == [3, 0]


class FailingBackend:
    """Fails as a local VLM backend does on a missing file: its error names only the request's part."""

    def generate(self, requests, params):
        raise FileNotFoundError("judge request field 'image part 0': image file 'gone.png' does not exist.")


def test_an_image_error_in_either_pass_names_the_record_and_field():
    from judges.critique import CritiqueJudge

    sample = Sample(prompt="two red circles", image="gone.png", meta={"id": "row-9"})
    for judge in (DescribeFirstJudge(FailingBackend()), CritiqueJudge(FailingBackend())):
        with pytest.raises(FileNotFoundError, match=r"row-9.*image"):
            judge.judge([Sample(prompt="fine", response="text"), sample])
