"""ScaledJudge asks for its k samples in one request (``SamplingParams.n``), and verdict-only judges
send their verdicts as ``guided_choice``."""

from __future__ import annotations

import dataclasses

import pytest

from judges.backends import Generation, Messages, SamplingParams
from judges.critique import CritiqueJudge
from judges.pairwise import PairwiseJudge
from judges.rubric import RubricJudge
from judges.scaling import ScaledJudge, supports_n
from judges.video import VideoJudge
from mmreward.types import Sample
from tests.judge_helpers import generation

TEMPLATE = "{prompt} {response} {min_score} {max_score}"
SCRIPT = {  # the samples each prompt gets, in order
    "p0": [(4, 0.6), (5, 0.7), (4, 0.9), (2, 0.5)],
    "p1": [(1, 0.8), (1, 0.4), (3, 0.6), (None, None)],
    "p2": [(3, 0.5), (2, 0.9), (2, 0.7), (5, 0.6)],
}


@dataclasses.dataclass
class ScriptedBackend:
    """Gives each prompt its scripted samples in order; counts calls and requests."""

    supports_n: bool = True
    calls: int = 0
    requests: int = 0
    params: list[SamplingParams] = dataclasses.field(default_factory=list)
    served: dict[str, int] = dataclasses.field(default_factory=dict)

    def _next(self, prompt: str) -> Generation:
        i = self.served.get(prompt, 0)
        self.served[prompt] = i + 1
        score, p = SCRIPT[prompt][i]
        if score is None:
            return generation("I cannot tell.")
        other = 1 if score != 1 else 2
        return generation(f"Fine. Score: {score}", {str(score): p, str(other): 1 - p}, at=str(score))

    def generate(self, requests: list[Messages], params: SamplingParams) -> list[Generation]:
        self.calls += 1
        self.requests += len(requests)
        self.params.append(params)
        out = []
        for request in requests:
            prompt = request[-1]["content"].split()[0]
            if params.n > 1:
                samples = [self._next(prompt) for _ in range(params.n)]
                out.append(dataclasses.replace(samples[0], samples=samples))
            else:
                out.append(self._next(prompt))
        return out


SAMPLES = [Sample(prompt=p, response="r") for p in SCRIPT]


@pytest.mark.parametrize("aggregate", ["mean", "majority", "confidence"])
def test_k_samples_come_from_one_request_and_aggregate_as_k_copies_do(aggregate):
    one = ScriptedBackend(supports_n=True)
    copies = ScriptedBackend(supports_n=False)
    new = ScaledJudge(CritiqueJudge(one, template=TEMPLATE), k=4, aggregate=aggregate).judge(SAMPLES)
    old = ScaledJudge(CritiqueJudge(copies, template=TEMPLATE), k=4, aggregate=aggregate).judge(SAMPLES)
    assert (one.calls, one.requests, one.params[0].n) == (1, 3, 4)
    assert (copies.calls, copies.requests, copies.params[0].n) == (1, 12, 1)
    assert one.params[0].temperature == copies.params[0].temperature == 0.7
    for a, b in zip(new, old):
        assert a.score == pytest.approx(b.score)
        assert (a.agreement, a.failures) == (b.agreement, b.failures)
        assert [s.score for s in a.samples] == [s.score for s in b.samples]
    assert new[1].failures == 1


def test_supports_n_knows_our_backends_and_a_flag():
    from judges.backends import OpenAIBackend

    assert supports_n(OpenAIBackend("http://127.0.0.1:9/v1", model="m"))
    assert supports_n(ScriptedBackend(supports_n=True)) and not supports_n(ScriptedBackend(supports_n=False))
    assert not supports_n(object())


def test_a_backend_that_ignores_n_is_caught():
    class IgnoresN(ScriptedBackend):
        def generate(self, requests, params):
            return super().generate(requests, dataclasses.replace(params, n=1))

    with pytest.raises(ValueError, match="returned 1 samples"):
        ScaledJudge(CritiqueJudge(IgnoresN(), template=TEMPLATE), k=4).judge(SAMPLES)


def test_a_failed_request_fails_all_k_samples():
    class Fails(ScriptedBackend):
        def generate(self, requests, params):
            return [Generation("", finish_reason="error", error="down") for _ in requests]

    [r] = ScaledJudge(CritiqueJudge(Fails(), template=TEMPLATE), k=3).judge(SAMPLES[:1])
    assert (r.score, r.failures, len(r.samples)) == (None, 3, 3)


def test_verdict_only_judges_send_their_verdicts_as_guided_choice():
    from judges.backends import OpenAIBackend

    request = [{"role": "user", "content": "x"}]
    backend = OpenAIBackend("http://127.0.0.1:9/v1", model="m", guided="vllm")
    rubric = RubricJudge(backend, principles=["short"])
    body = backend.payload(request, rubric.params())
    assert body["structured_outputs"] == {"choice": ["Answer: yes", "Answer: no"]}
    legacy = OpenAIBackend("http://127.0.0.1:9/v1", model="m", guided="vllm_legacy")
    assert legacy.payload(request, RubricJudge(legacy).params(0.7))["guided_choice"] == [
        "Answer: yes",
        "Answer: no",
    ]
    # scaled: the n samples are constrained too
    params = dataclasses.replace(RubricJudge(backend).params(0.7), n=4)
    assert backend.payload(request, params)["structured_outputs"]["choice"] == ["Answer: yes", "Answer: no"]

    # free-text judges, a custom template, and a backend that would not send it: nothing
    free = [
        CritiqueJudge(backend),
        PairwiseJudge(backend),
        VideoJudge(backend),
        RubricJudge(backend, template="{principle} {prompt} {response}"),
        RubricJudge(OpenAIBackend("http://127.0.0.1:9/v1", model="m")),
        RubricJudge(ScriptedBackend()),
    ]
    for judge in free:
        assert judge.params().guided_choice is None, type(judge).__name__
        if isinstance(judge.backend, OpenAIBackend):
            body = judge.backend.payload(request, judge.params())
            assert "structured_outputs" not in body and "guided_choice" not in body


def test_the_guided_verdicts_parse():
    from judges.parsing import parse_yes_no

    for text, p_yes in [("Answer: yes", 1.0), ("Answer: no", 0.0)]:
        assert parse_yes_no(Generation(text)).score == p_yes


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    pytest.importorskip("transformers")
    from integrations.serving.openai_server import create_app, serve_in_thread
    from judges.backends import TransformersBackend
    from judges.tiny import TinyJudgeLM

    corpus = ["two red circles", "Critique: The circles are blue, not red.\nScore: 2", "Answer: yes no"]
    model = TinyJudgeLM(hidden_size=32, num_layers=2, seed=3).build(tmp_path_factory.mktemp("tiny"), corpus)
    backend = TransformersBackend(str(model), device="cpu")
    with serve_in_thread(create_app(backend, "tiny")) as url:
        yield url, backend


def choice_logliks(backend, request, choices):
    """Each choice's log-likelihood after the prompt, by a plain forward pass over prompt + choice."""
    import torch

    prompt = backend.tokenizer(backend._template(request), add_special_tokens=False)["input_ids"]
    out = {}
    for choice in choices:
        ids = backend.tokenizer(choice, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = backend.model(input_ids=torch.tensor([prompt + ids])).logits[0].float().log_softmax(-1)
        out[choice] = sum(float(logits[len(prompt) - 1 + i, t]) for i, t in enumerate(ids))
    return out


@pytest.mark.parametrize("guided", ["vllm", "vllm_legacy"])
def test_the_server_answers_with_the_likeliest_choice_and_its_logprobs(tiny_server, guided):
    from judges.backends import OpenAIBackend
    from judges.parsing import read_choice, score_labels

    url, backend = tiny_server
    request = [{"role": "user", "content": "two red circles"}]
    labels = ["1", "2", "3", "4", "5"]
    client = OpenAIBackend(url, model="tiny", guided=guided)
    [gen] = client.generate([request], SamplingParams(max_new_tokens=4, top_logprobs=2, guided_choice=labels))
    logliks = choice_logliks(backend, request, labels)
    assert gen.text == max(logliks, key=logliks.get) and gen.finish_reason == "stop"
    assert gen.logprobs == pytest.approx([logliks[gen.text]], abs=1e-4)
    assert set(labels) <= {t.strip() for t in gen.top_logprobs[0]}  # every label's probability is there
    for label in labels:
        assert gen.top_logprobs[0][label] == pytest.approx(logliks[label], abs=1e-4)
    assert read_choice(gen, "", score_labels(1, 5)).method == "logprobs"


def test_sampled_choices_are_choices_and_bad_constraints_are_refused(tiny_server):
    import httpx

    from judges.backends import OpenAIBackend

    url, _ = tiny_server
    request = [{"role": "user", "content": "two red circles"}]
    choices = ["Answer: yes", "Answer: no"]
    client = OpenAIBackend(url, model="tiny", guided="vllm")
    [gen] = client.generate([request], SamplingParams(temperature=1.0, n=6, seed=1, guided_choice=choices))
    assert len(gen.samples) == 6 and all(s.text in choices for s in gen.samples)
    body = {"messages": request, "structured_outputs": {"regex": "a|b"}}
    refused = httpx.post(f"{url}/chat/completions", json=body, timeout=30)
    assert refused.status_code == 400 and "choice" in refused.json()["error"]["message"]
    empty = httpx.post(f"{url}/chat/completions", json={"messages": request, "guided_choice": []}, timeout=30)
    assert empty.status_code == 400
