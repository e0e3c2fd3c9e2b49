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
        time.sleep(0.3)  # the long request is in the model now
        assert backend.calls == [1]
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
