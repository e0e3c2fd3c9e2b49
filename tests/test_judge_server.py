"""The OpenAI-compatible judge server under load and abuse: auth, caps, a bounded queue, batching.

A fake backend stands in for the model: it sleeps ``max_new_tokens`` x 10 ms per call, so a long
request is simply one that asks for many tokens. The server binds 127.0.0.1 only.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from integrations.serving.openai_server import ServerLimits, create_app, serve_in_thread  # noqa: E402
from judges.backends import Generation  # noqa: E402

KEY = "s3cret"
AUTH = {"Authorization": f"Bearer {KEY}"}


class SlowBackend:
    """Answers ``Score: 4`` to every prompt after ``max_new_tokens`` x 10 ms; records each call's size."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def generate(self, requests, params):
        assert self.lock.acquire(blocking=False), "generate must never run concurrently"
        try:
            self.calls.append(len(requests))
            time.sleep(params.max_new_tokens * 0.01)
            return [Generation(text="Score: 4", tokens=[], logprobs=[], top_logprobs=[]) for _ in requests]
        finally:
            self.lock.release()


def body(tokens: int = 1, n: int = 1, text: str = "judge this") -> dict:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": tokens, "n": n}


@pytest.fixture()
def server():
    backend = SlowBackend()
    limits = ServerLimits(api_key=KEY, max_n=4, max_tokens=200, max_body_bytes=4096, timeout_s=5, max_queue=3)
    app = create_app(backend, "judge", limits)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client, backend


def test_a_key_is_required_when_set(server):
    client, backend = server
    assert client.post("/chat/completions", json=body()).status_code == 401
    wrong = client.post("/chat/completions", json=body(), headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "API key" in wrong.json()["error"]["message"]
    assert client.get("/models").status_code == 401
    ok = client.post("/chat/completions", json=body(), headers=AUTH)
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "Score: 4"
    assert backend.calls == [1]


@pytest.mark.parametrize(
    ("request_body", "status", "words"),
    [
        (body(n=5), 400, "n must be an integer between 1 and 4"),
        (body(tokens=201), 400, "max_tokens must be between 1 and 200"),
        ({**body(), "max_completion_tokens": 10_000}, 400, "max_tokens must be between 1 and 200"),
        (body(text="x" * 5000), 413, "over 4096 bytes"),
        ({"messages": []}, 400, "non-empty list"),
    ],
)
def test_requests_over_the_caps_are_refused_before_any_work(server, request_body, status, words):
    client, backend = server
    response = client.post("/chat/completions", json=request_body, headers=AUTH)
    assert response.status_code == status and words in response.json()["error"]["message"]
    assert backend.calls == []


def test_other_clients_are_answered_while_a_long_request_runs(server):
    client, backend = server
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        long = pool.submit(client.post, "/chat/completions", json=body(tokens=150), headers=AUTH)  # 1.5 s
        deadline = time.monotonic() + 10  # a loaded machine may take longer than 0.3 s to get it there
        while backend.calls != [1] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backend.calls == [1], "the long request is in the model now"
        started = time.monotonic()
        assert client.get("/models", headers=AUTH).status_code == 200
        assert client.post("/chat/completions", json=body(n=9), headers=AUTH).status_code == 400
        assert time.monotonic() - started < 0.5, "the event loop must not wait for the model"
        # three short requests fill the queue while the long one runs; a fourth is turned away at once
        short = [
            pool.submit(client.post, "/chat/completions", json=body(n=2), headers=AUTH) for _ in range(3)
        ]
        time.sleep(0.3)
        started = time.monotonic()
        busy = client.post("/chat/completions", json=body(), headers=AUTH)
        assert busy.status_code == 503 and time.monotonic() - started < 0.5
        assert long.result().status_code == 200
        answers = [f.result() for f in short]
    assert all(a.status_code == 200 and len(a.json()["choices"]) == 2 for a in answers)
    assert backend.calls == [1, 6], "the three waiting requests go to the model in one batch"


def test_a_request_past_its_timeout_gets_504():
    backend = SlowBackend()
    limits = ServerLimits(max_tokens=500, timeout_s=0.5)
    with (
        serve_in_thread(create_app(backend, "judge", limits)) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        started = time.monotonic()
        response = client.post("/chat/completions", json=body(tokens=150))
        assert response.status_code == 504 and time.monotonic() - started < 1.2
        time.sleep(1.2)  # the model finishes the abandoned call; the server goes on serving
        assert client.post("/chat/completions", json=body()).status_code == 200


# ---- streaming (stream=True), with the official openai client ---------------------------------


def _openai_client(url: str, key: str = KEY):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=20)


def test_openai_client_streams_the_same_text_as_without_streaming():
    backend = SlowBackend()
    with serve_in_thread(create_app(backend, "judge", ServerLimits(api_key=KEY))) as url:
        client = _openai_client(url)
        messages = [{"role": "user", "content": "judge this"}]
        whole = client.chat.completions.create(model="judge", messages=messages, max_tokens=1)
        chunks = list(
            client.chat.completions.create(model="judge", messages=messages, max_tokens=1, stream=True, n=2)
        )
    assert all(c.object == "chat.completion.chunk" and c.model == "judge" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    for index in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices[0].index == index]
        assert mine[0].delta.role == "assistant"
        assert "".join(c.delta.content or "" for c in mine) == whole.choices[0].message.content == "Score: 4"
        assert len(mine) > 3  # role, a piece per word, finish
        assert [c.finish_reason for c in mine][-1] == "stop" and all(
            c.finish_reason is None for c in mine[:-1]
        )


def test_sse_body_ends_with_done():
    with (
        serve_in_thread(create_app(SlowBackend(), "judge")) as url,
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        response = http.post("/chat/completions", json={**body(), "stream": True})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"stream": "yes"}, "stream must be true or false"),
        ({"stream": True, "stream_options": {"include_usage": True}}, "include_usage"),
    ],
)
def test_bad_stream_requests_are_refused(extra, words):
    with (
        serve_in_thread(create_app(SlowBackend(), "judge")) as url,
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        response = http.post("/chat/completions", json={**body(), **extra})
    assert response.status_code == 400 and words in response.json()["error"]["message"]


def test_errors_reach_a_streaming_client_as_errors():
    openai = pytest.importorskip("openai")
    with serve_in_thread(create_app(SlowBackend(), "judge", ServerLimits(api_key=KEY))) as url:
        with pytest.raises(openai.AuthenticationError):
            list(
                _openai_client(url, key="nope").chat.completions.create(
                    model="judge", messages=[{"role": "user", "content": "x"}], stream=True
                )
            )
        with pytest.raises(openai.NotFoundError):
            list(
                _openai_client(url).chat.completions.create(
                    model="other", messages=[{"role": "user", "content": "x"}], stream=True
                )
            )


def test_a_real_judge_streams_token_by_token_with_logprobs(tmp_path):
    """A tiny transformers judge behind the server: a critique request streamed token by token gives
    the non-streamed completion's text, tokens and log-probabilities."""
    pytest.importorskip("transformers")
    from judges.backends import TransformersBackend
    from judges.critique import CritiqueJudge
    from judges.tiny import TinyJudgeLM
    from mmreward.types import Sample

    corpus = [
        "two red circles",
        "an image of two blue circles",
        "Critique: The circles are blue, not red.\nScore: 2",
    ]
    model = TinyJudgeLM(hidden_size=32, num_layers=2, seed=3).build(tmp_path / "tiny", corpus)
    [request] = CritiqueJudge(backend=None).requests(
        [Sample(prompt="two red circles", response="an image of two blue circles")]
    )
    request_body = dict(
        model="tiny", messages=request, max_tokens=12, temperature=0.0, logprobs=True, top_logprobs=3
    )
    with serve_in_thread(create_app(TransformersBackend(str(model)), "tiny")) as url:
        client = _openai_client(url)
        whole = client.chat.completions.create(**request_body).choices[0]
        chunks = [c.choices[0] for c in client.chat.completions.create(**request_body, stream=True)]
    tokens = [c for c in chunks if c.delta.content]
    assert len(tokens) > 1
    assert "".join(c.delta.content for c in tokens) == whole.message.content
    assert [c.logprobs.content[0].token for c in tokens] == [t.token for t in whole.logprobs.content]
    assert [c.logprobs.content[0].logprob for c in tokens] == pytest.approx(
        [t.logprob for t in whole.logprobs.content]
    )
    assert chunks[-1].finish_reason == whole.finish_reason
