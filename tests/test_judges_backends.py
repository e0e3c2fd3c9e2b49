"""Backends: batched local generation with log-probabilities, and the OpenAI-compatible HTTP path."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest

pytest.importorskip("transformers")
fastapi = pytest.importorskip("fastapi")

from integrations.serving.openai_server import create_app, serve_in_thread  # noqa: E402
from judges.backends import OpenAIBackend, SamplingParams, TransformersBackend  # noqa: E402
from judges.critique import CritiqueJudge  # noqa: E402
from judges.tiny import TinyJudgeLM  # noqa: E402
from mmreward.types import Sample  # noqa: E402

PROMPTS = [
    "two red circles",
    "a small blue square above a large green triangle",
    "one yellow circle",
    "three purple squares",
]
RESPONSES = [
    "an image of two blue circles",
    "an image of a square",
    "a yellow circle",
    "three purple squares at top left",
]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    corpus = [*PROMPTS, *RESPONSES, "Critique: The circles are blue, not red.\nScore: 2"]
    return TinyJudgeLM(hidden_size=32, num_layers=2, seed=3).build(
        tmp_path_factory.mktemp("lm") / "tiny", corpus
    )


@pytest.fixture(scope="module")
def requests_():
    judge = CritiqueJudge(backend=None)
    return judge.requests([Sample(prompt=p, response=r) for p, r in zip(PROMPTS, RESPONSES)])


PARAMS = SamplingParams(max_new_tokens=10, temperature=0.0, top_logprobs=5)


def test_batched_left_padded_generation_equals_one_at_a_time(tiny_lm, requests_):
    batched = TransformersBackend(str(tiny_lm), batch_size=4).generate(requests_, PARAMS)
    single = TransformersBackend(str(tiny_lm), batch_size=1)
    for request, together in zip(requests_, batched):
        [alone] = single.generate([request], PARAMS)
        assert alone.tokens == together.tokens
        assert alone.logprobs == pytest.approx(together.logprobs, abs=1e-4)


def test_generation_tokens_spell_the_text_and_greedy_picks_the_top_alternative(tiny_lm, requests_):
    gens = TransformersBackend(str(tiny_lm)).generate(requests_, PARAMS)
    assert any(g.tokens for g in gens)
    for g in gens:
        assert "".join(g.tokens) == g.text
        assert g.finish_reason in ("stop", "length")
        assert len(g.logprobs) == len(g.top_logprobs) == len(g.tokens)
        for token, logprob, top in zip(g.tokens, g.logprobs, g.top_logprobs):
            assert logprob <= 0 and len(top) <= 5
            assert max(top.values()) == pytest.approx(logprob, abs=1e-5)
            assert top[token] == pytest.approx(logprob, abs=1e-5)
            assert sum(math.exp(v) for v in top.values()) <= 1 + 1e-5


def test_http_backend_returns_what_the_local_backend_generates(tiny_lm, requests_):
    local = TransformersBackend(str(tiny_lm), batch_size=4)
    expected = local.generate(requests_, PARAMS)
    with serve_in_thread(create_app(local, "tiny")) as url:
        got = OpenAIBackend(url, model="tiny", concurrency=2).generate(requests_, PARAMS)
        wrong_model = OpenAIBackend(url, model="other", max_retries=0).generate(requests_[:1], PARAMS)
    for a, b in zip(expected, got):
        assert (b.text, b.tokens, b.finish_reason) == (a.text, a.tokens, a.finish_reason)
        assert b.logprobs == pytest.approx(a.logprobs, abs=1e-6)
        assert [sorted(t) for t in b.top_logprobs] == [sorted(t) for t in a.top_logprobs]
    assert wrong_model[0].error and "404" in wrong_model[0].error


def flaky_app(fail_first: int, delay: float = 0.0):
    """A chat endpoint that answers 503 ``fail_first`` times, sleeps ``delay`` s, and counts concurrency."""
    app = fastapi.FastAPI()
    state = {"calls": 0, "inflight": 0, "peak": 0}
    lock = threading.Lock()

    @app.post("/v1/chat/completions")
    async def chat(body: dict):
        with lock:
            state["calls"] += 1
            call = state["calls"]
            state["inflight"] += 1
            state["peak"] = max(state["peak"], state["inflight"])
        try:
            await asyncio.sleep(delay)
            if call <= fail_first:
                return fastapi.responses.JSONResponse({"error": "busy"}, status_code=503)
            if body["messages"][0]["content"] == "bad":
                return fastapi.responses.JSONResponse({"error": "bad request"}, status_code=400)
            text = "Score: 4"
            return {"choices": [{"message": {"content": text}, "finish_reason": "stop", "logprobs": None}]}
        finally:
            with lock:
                state["inflight"] -= 1

    return app, state


def test_retries_recover_from_503_and_a_bad_request_does_not_sink_the_batch():
    app, state = flaky_app(fail_first=2)
    with serve_in_thread(app) as url:
        backend = OpenAIBackend(url, model="m", max_retries=3, backoff=0.01, concurrency=1)
        gens = backend.generate([[{"role": "user", "content": c}] for c in ("ok", "bad", "ok")], PARAMS)
    assert [g.text for g in gens] == ["Score: 4", "", "Score: 4"]
    assert gens[1].finish_reason == "error" and "HTTP 400" in gens[1].error
    assert state["calls"] == 2 + 3  # two 503s retried, then one call each (400 is not retried)


def test_concurrency_limit_and_timeouts_are_enforced():
    app, state = flaky_app(fail_first=0, delay=0.2)
    with serve_in_thread(app) as url:
        requests = [[{"role": "user", "content": "ok"}]] * 6
        ok = OpenAIBackend(url, model="m", concurrency=2).generate(requests, PARAMS)
        assert state["peak"] == 2 and all(g.text == "Score: 4" for g in ok)
        slow = OpenAIBackend(url, model="m", timeout=0.05, max_retries=1, backoff=0.01).generate(
            requests[:2], PARAMS
        )
    assert all(g.error and "Timeout" in g.error for g in slow)


def test_images_reach_a_vision_language_model_locally_and_over_http(tmp_path):
    from PIL import Image

    from tests.vlm_helpers import build_tiny_qwen2_5_vl

    vlm = TransformersBackend(str(build_tiny_qwen2_5_vl(tmp_path / "vlm")), batch_size=2)
    red, blue = Image.new("RGB", (56, 56), (215, 35, 35)), Image.new("RGB", (56, 56), (35, 75, 215))
    judge = CritiqueJudge(vlm, max_new_tokens=6)
    samples = [Sample(prompt="a red square", image=red), Sample(prompt="a red square", image=blue)]
    requests = judge.requests(samples)
    assert [p["type"] for p in requests[0][0]["content"]] == ["image", "text"]
    local = vlm.generate(requests, PARAMS)
    with serve_in_thread(create_app(vlm, "vlm")) as url:
        remote = OpenAIBackend(url, model="vlm").generate(requests, PARAMS)
    assert [g.text for g in remote] == [g.text for g in local]
    assert all(g.finish_reason in ("stop", "length") and g.tokens for g in local)
    assert local[0].logprobs != pytest.approx(local[1].logprobs)  # the pixels changed what the model saw
    with pytest.raises(ValueError, match="text-only"):
        TransformersBackend.from_model(vlm.model, vlm.tokenizer).generate(requests[:1], PARAMS)


def test_local_backend_samples_n_outputs_per_request_and_warns_that_it_cannot_guide(tiny_lm, requests_):
    backend = TransformersBackend(str(tiny_lm), batch_size=8)
    params = SamplingParams(max_new_tokens=6, temperature=1.0, top_logprobs=2, seed=0, n=3)
    gens = backend.generate(requests_[:2], params)
    assert [len(g.samples) for g in gens] == [3, 3]
    assert all(g.samples[0].text == g.text and g.samples[0].tokens == g.tokens for g in gens)
    again = backend.generate(requests_[:2], params)
    assert [[s.text for s in g.samples] for g in gens] == [[s.text for s in g.samples] for g in again]
    with pytest.warns(UserWarning, match="guided_choice is ignored"):
        backend.generate(requests_[:1], SamplingParams(max_new_tokens=2, guided_choice=["1", "2"]))
