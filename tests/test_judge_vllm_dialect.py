"""The OpenAI backend against a server that speaks vLLM's dialect (``tests/vllm_dialect_server.py``).

The server's "model" is a table (``verdict_logprobs``), so every judgement has a known answer:
the tests check that none is lost or reordered under 64 concurrent requests with injected 503s
and 429s, that the verdict's token probabilities arrive as the server sent them, and that ``n``,
``seed`` and a guided choice reach the server in the fields each dialect reads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import math
import socket
import warnings

import pytest

pytest.importorskip("httpx")

from judges.backends import OpenAIBackend, SamplingParams, generation_from_openai  # noqa: E402
from judges.critique import CritiqueJudge  # noqa: E402
from judges.openai_backend import JSON_VERDICT_MARKER  # noqa: E402
from judges.parsing import parse_score, read_choice, score_labels  # noqa: E402
from mmreward.types import Sample  # noqa: E402
from tests.vllm_dialect_server import (  # noqa: E402
    LABEL_MASS,
    LABELS,
    MODEL,
    choice,
    prompt_of,
    serve_vllm_dialect,
    share_fault,
    verdict_logprobs,
)

N = 64
SAMPLES = [
    Sample(prompt=f"a red circle number {i}", response=f"an image with {i % 7} circles") for i in range(N)
]


def fast_backend(url: str, **kwargs) -> OpenAIBackend:
    """Short backoff, so retries cost milliseconds."""
    return OpenAIBackend(
        url, model=MODEL, **{"backoff": 0.005, "max_backoff": 0.05, "max_retries": 4, **kwargs}
    )


def expected(prompt: str) -> tuple[float, dict[str, float]]:
    """The score and label distribution the server's table implies for a prompt."""
    probs = {k: math.exp(v) for k, v in verdict_logprobs(prompt).items()}
    total = sum(probs.values())
    distribution = {k: p / total for k, p in probs.items()}
    return sum(float(k) * p for k, p in distribution.items()), distribution


def assert_judgements_match(judge: CritiqueJudge, samples: list[Sample], judgements: list) -> None:
    """Every judgement present, in order: the score is the one the server's table gives its prompt."""
    assert len(judgements) == len(samples)
    for request, judgement in zip(judge.requests(samples), judgements):
        score, distribution = expected(prompt_of({"messages": request}))
        assert judgement.method == "logprobs", judgement.reason
        assert judgement.score == pytest.approx(score, abs=1e-9)
        assert judgement.distribution == pytest.approx(distribution, abs=1e-9)
        assert judgement.label_mass == pytest.approx(LABEL_MASS, abs=1e-9)


def assert_faults_were_survived(state, calls_expected_at_least: int) -> None:
    retried = [s for s in state.statuses if s != 200]
    assert {503, 429} <= set(retried), "the test must inject both statuses"
    assert state.statuses.count(200) == N  # each request answered exactly once
    assert len(state.statuses) == N + len(retried) >= calls_expected_at_least


def test_64_concurrent_requests_in_one_call_lose_nothing_and_keep_their_order():
    with serve_vllm_dialect(fault=share_fault(0.5, failures=2), delay_s=0.01) as (url, state):
        judge = CritiqueJudge(fast_backend(url, concurrency=16))
        judgements = judge.judge(SAMPLES)
    assert_judgements_match(judge, SAMPLES, judgements)
    assert_faults_were_survived(state, N + 20)
    assert 1 < state.peak <= 16


def test_64_client_threads_share_the_concurrency_limit_and_each_gets_its_own_judgement():
    with serve_vllm_dialect(fault=share_fault(0.5, failures=2), delay_s=0.02) as (url, state):
        judge = CritiqueJudge(fast_backend(url, concurrency=8))
        with concurrent.futures.ThreadPoolExecutor(N) as pool:
            judgements = [j for [j] in pool.map(lambda s: judge.judge([s]), SAMPLES)]
    assert_judgements_match(judge, SAMPLES, judgements)
    assert_faults_were_survived(state, N + 20)
    assert 1 < state.peak <= 8  # one backend, one limit, however many threads call it


def test_agenerate_under_64_concurrent_coroutines_with_503s():
    judge = CritiqueJudge(backend=None)
    requests = judge.requests(SAMPLES)
    with serve_vllm_dialect(fault=share_fault(0.5, failures=3, statuses=(503,)), delay_s=0.01) as (
        url,
        state,
    ):
        backend = fast_backend(url, concurrency=32)

        async def main():  # two batches at once on one loop, sharing the backend's limit
            return await asyncio.gather(
                backend.agenerate(requests[: N // 2], judge.params()),
                backend.agenerate(requests[N // 2 :], judge.params()),
            )

        first, second = asyncio.run(main())
    judgements = [judge.parse(s, g) for s, g in zip(SAMPLES, first + second)]
    assert_judgements_match(judge, SAMPLES, judgements)
    assert state.statuses.count(200) == N and state.statuses.count(503) > 20
    assert state.peak <= 32


def test_score_token_probabilities_are_the_servers():
    params = SamplingParams(max_new_tokens=32, top_logprobs=4)
    with serve_vllm_dialect() as (url, state):
        [gen] = fast_backend(url).generate([[{"role": "user", "content": "judge this"}]], params)
    table = verdict_logprobs("judge this")
    alternatives = {" " + k: v for k, v in table.items()} | {" N/A": math.log(1 - LABEL_MASS)}
    ranked = dict(sorted(alternatives.items(), key=lambda kv: kv[1], reverse=True)[:4])
    assert gen.top_logprobs[-1] == pytest.approx(ranked, abs=0)  # floats survive the JSON round trip
    assert gen.tokens[-1] == max(ranked, key=ranked.get) and gen.logprobs[-1] == max(ranked.values())
    assert "".join(gen.tokens) == gen.text and gen.text.endswith("Score: " + gen.tokens[-1].strip())
    assert state.bodies[0]["logprobs"] is True and state.bodies[0]["top_logprobs"] == 4
    judgement = parse_score(gen)
    top4 = {k.strip(): math.exp(v) for k, v in ranked.items() if k != " N/A"}
    assert judgement.distribution == pytest.approx({k: p / sum(top4.values()) for k, p in top4.items()})


def test_two_alternatives_that_spell_the_same_token_add_up():
    top = [{"token": "4", "logprob": math.log(0.3)}, {"token": "4", "logprob": math.log(0.2)}]
    content = [{"token": "4", "logprob": math.log(0.3), "top_logprobs": top}]
    gen = generation_from_openai(
        {"choices": [{"message": {"content": "4"}, "logprobs": {"content": content}}]}
    )
    assert math.exp(gen.top_logprobs[0]["4"]) == pytest.approx(0.5)


def test_n_and_seed_reach_the_server_and_every_sample_comes_back():
    requests = [[{"role": "user", "content": f"prompt {i}"}] for i in range(8)]
    params = SamplingParams(max_new_tokens=32, temperature=1.0, top_logprobs=2, seed=7, n=4)
    with serve_vllm_dialect() as (url, state):
        backend = fast_backend(url)
        gens = backend.generate(requests, params)
        again = backend.generate(requests, params)
        other = backend.generate(requests, dataclasses.replace(params, seed=1000))
    bodies = {body["messages"][0]["content"]: body for body in state.bodies[:8]}
    for i, (request, gen) in enumerate(zip(requests, gens)):
        body = bodies[request[0]["content"]]
        assert body["n"] == 4 and body["seed"] == 7 + i  # one seed per request, so k copies differ
        assert len(gen.samples) == 4 and gen.samples[0].text == gen.text
        assert [s.text for s in gen.samples] == [
            choice(body, f"prompt {i}", j)["message"]["content"] for j in range(4)
        ]
    assert [[s.text for s in g.samples] for g in gens] == [[s.text for s in g.samples] for g in again]
    assert [[s.text for s in g.samples] for g in gens] != [[s.text for s in g.samples] for g in other]
    assert all(parse_score(s).method == "logprobs" for g in gens for s in g.samples)


@pytest.mark.parametrize(
    ("guided", "field", "sent"),
    [
        ("vllm", "structured_outputs", {"choice": list(LABELS)}),
        ("vllm_legacy", "guided_choice", list(LABELS)),
        ("sglang", "regex", "(1|2|3|4|5)"),
    ],
)
def test_guided_choice_is_sent_in_the_dialects_field_and_the_verdict_is_read(guided, field, sent):
    params = SamplingParams(max_new_tokens=4, top_logprobs=10, guided_choice=list(LABELS))
    with serve_vllm_dialect() as (url, state):
        [gen] = fast_backend(url, guided=guided).generate([[{"role": "user", "content": "rate it"}]], params)
    assert state.bodies[0][field] == sent
    table = verdict_logprobs("rate it")
    assert gen.text == max(table, key=table.get)  # the output is the verdict alone
    found = read_choice(gen, "^", score_labels(1, 5))
    assert found.method == "logprobs"
    assert found.distribution == pytest.approx({k: math.exp(v) / LABEL_MASS for k, v in table.items()})


def test_guided_choice_as_an_openai_json_schema():
    params = SamplingParams(max_new_tokens=8, top_logprobs=10, guided_choice=["yes", "no"])
    with serve_vllm_dialect() as (url, state):
        [gen] = fast_backend(url, guided="openai_json_schema").generate(
            [[{"role": "user", "content": "ok?"}]], params
        )
    schema = state.bodies[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["verdict"]["enum"] == ["yes", "no"]
    table = verdict_logprobs("ok?", ("yes", "no"))
    assert gen.text == f'{{"verdict": "{max(table, key=table.get)}"}}'
    found = read_choice(gen, JSON_VERDICT_MARKER, {"yes": 1.0, "no": 0.0})
    assert found.method == "logprobs" and found.value == pytest.approx(math.exp(table["yes"]) / LABEL_MASS)


def test_a_guided_choice_the_backend_cannot_send_warns_and_sends_nothing():
    params = SamplingParams(max_new_tokens=32, guided_choice=list(LABELS))
    with serve_vllm_dialect() as (url, state), pytest.warns(UserWarning, match="guided='none'"):
        [gen] = fast_backend(url).generate([[{"role": "user", "content": "rate it"}]], params)
    assert not {"structured_outputs", "guided_choice", "regex", "response_format"} & set(state.bodies[0])
    assert gen.text.startswith("Critique:")


def test_after_the_last_retry_the_error_names_the_request_and_the_status():
    requests = [[{"role": "user", "content": c}] for c in ("a", "b", "doomed", "c", "d")]
    with serve_vllm_dialect(fault=lambda prompt, attempt: 503 if prompt == "doomed" else None) as (
        url,
        state,
    ):
        gens = fast_backend(url, max_retries=2).generate(requests, SamplingParams(max_new_tokens=32))
    assert [g.error is None for g in gens] == [True, True, False, True, True]
    assert (
        "Request 2 of 5" in gens[2].error and "after 3 tries" in gens[2].error and "HTTP 503" in gens[2].error
    )
    assert len(state.attempts["doomed"]) == 3
    judgement = parse_score(gens[2])  # the judge says why there is no score, the batch goes on
    assert judgement.score is None and "Request 2 of 5" in judgement.reason


def test_retry_after_is_honoured_up_to_max_backoff():
    def once(prompt, attempt):
        return 429 if attempt == 0 else None

    request = [[{"role": "user", "content": "x"}]]
    with serve_vllm_dialect(fault=once, retry_after="0.3") as (url, state):
        fast_backend(url, backoff=0.001, max_backoff=5.0).generate(request, SamplingParams(max_new_tokens=32))
        waited = state.attempts["x"][1] - state.attempts["x"][0]
        state.attempts.clear()
        fast_backend(url, backoff=0.001, max_backoff=0.02).generate(
            request, SamplingParams(max_new_tokens=32)
        )
        capped = state.attempts["x"][1] - state.attempts["x"][0]
    assert waited >= 0.29 and capped < 0.2


def test_connect_errors_are_retried_then_named():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        [gen] = fast_backend(f"http://127.0.0.1:{port}/v1", max_retries=1).generate(
            [[{"role": "user", "content": "x"}]], SamplingParams()
        )
    assert "Request 0 of 1" in gen.error and "after 2 tries" in gen.error and "ConnectError" in gen.error


def test_the_test_server_answers_in_the_shape_the_official_openai_client_reads():
    openai = pytest.importorskip("openai")
    httpx = pytest.importorskip("httpx")
    body = OpenAIBackend("http://unused/v1", model=MODEL).payload(
        [{"role": "user", "content": "shape"}], SamplingParams(max_new_tokens=32, top_logprobs=3, n=2)
    )
    with serve_vllm_dialect() as (url, _), httpx.Client(base_url=url) as client:
        data = client.post("/chat/completions", json=body).json()
    parsed = openai.types.chat.ChatCompletion.model_validate(data)
    assert [c.index for c in parsed.choices] == [0, 1]
    token = parsed.choices[0].logprobs.content[-1]
    assert token.bytes == list(token.token.encode()) and len(token.top_logprobs) == 3
    gen = generation_from_openai(data)
    assert gen.tokens[-1] == token.token and gen.top_logprobs[-1] == {
        t.token: t.logprob for t in token.top_logprobs
    }
