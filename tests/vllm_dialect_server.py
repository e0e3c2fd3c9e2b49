"""A stand-in for a vLLM server: the OpenAI chat-completions dialect vLLM speaks, on 127.0.0.1.

Its "model" is a table, so tests know the answer to expect. For every prompt it holds a fixed
distribution over the verdict labels (``verdict_logprobs``) and writes ``Critique: ...
Score: <label>`` (greedy: the likeliest label; sampled: drawn with ``random.Random`` seeded by
``seed`` and the choice's index, so a seed gives the same answer every time). Like vLLM it:

- returns ``choices[i].logprobs.content[j] = {token, logprob, bytes, top_logprobs: [{token,
  logprob, bytes}, ...]}`` when ``logprobs`` is true, ``top_logprobs`` alternatives per position,
  most likely first, the sampled token added when it is not among them;
- answers ``n`` choices, each sampled on its own;
- constrains the output to ``guided_choice`` (vLLM < 0.12), ``structured_outputs.choice`` (newer),
  ``regex`` (SGLang) or a ``response_format`` JSON schema whose ``verdict`` is an enum, while the
  log-probabilities stay the model's raw ones (vLLM's default);
- refuses what it cannot do with 400, and, for the tests, answers 503 or 429 (with
  ``Retry-After``) when ``fault(prompt, attempt)`` says so.

Example:
    >>> with serve_vllm_dialect(fault=share_fault(0.3)) as (url, state):
    ...     OpenAIBackend(url, model=MODEL).generate(requests, SamplingParams())
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "vllm-dialect-judge"
LABELS = ("1", "2", "3", "4", "5")
LABEL_MASS = 0.9  # the rest goes to tokens that are no label, as a real judge's does
CRITIQUE = ["Crit", "ique", ":", " The", " image", " fits", ".\n", "Score", ":"]

Fault = Callable[[str, int], "int | None"]
"""``fault(prompt, attempt)`` -> an HTTP status to answer instead (503, 429, ...), or None."""


def verdict_logprobs(prompt: str, labels: tuple[str, ...] = LABELS) -> dict[str, float]:
    """The model's log-probability of each label for ``prompt`` (fixed by the prompt's text)."""
    rng = random.Random(zlib.crc32(f"{prompt}|{'|'.join(labels)}".encode()))
    logits = [rng.gauss(0.0, 2.0) for _ in labels]
    top = max(logits)
    norm = top + math.log(sum(math.exp(x - top) for x in logits))
    return {label: x - norm + math.log(LABEL_MASS) for label, x in zip(labels, logits)}


def share_fault(share: float, failures: int = 2, statuses: tuple[int, ...] = (503, 429)) -> Fault:
    """Fail ``share`` of the prompts (chosen by their text) ``failures`` times each, cycling ``statuses``."""

    def fault(prompt: str, attempt: int) -> int | None:
        chosen = zlib.crc32(prompt.encode()) % 1000 < share * 1000
        return statuses[attempt % len(statuses)] if chosen and attempt < failures else None

    return fault


@dataclass
class ServerState:
    """What the server saw: every body, attempts per prompt (with times), and in-flight counts."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    attempts: dict[str, list[float]] = field(default_factory=dict)
    statuses: list[int] = field(default_factory=list)
    inflight: int = 0
    peak: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


def _position(token: str, logprob: float, alternatives: dict[str, float], k: int) -> dict[str, Any]:
    """One ``logprobs.content`` entry: the chosen token and the top ``k`` alternatives."""
    ranked = sorted(alternatives.items(), key=lambda kv: kv[1], reverse=True)[:k]
    if token not in dict(ranked):
        ranked.append((token, logprob))
    return {**_entry(token, logprob), "top_logprobs": [_entry(t, lp) for t, lp in ranked]}


def constraint(body: dict[str, Any]) -> tuple[tuple[str, ...] | None, bool]:
    """The labels the output is held to (None: free) and whether it must be the JSON verdict object."""
    structured = body.get("structured_outputs") or {}
    if body.get("guided_choice") or structured.get("choice"):
        return tuple(body.get("guided_choice") or structured["choice"]), False
    if body.get("regex"):
        pattern = re.compile(body["regex"])
        alternatives = [a.replace("\\", "") for a in body["regex"].strip("()").split("|")]
        return tuple(a for a in alternatives if pattern.fullmatch(a)), False
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
    if schema:
        return tuple(schema["properties"]["verdict"]["enum"]), True
    return None, False


def choice(body: dict[str, Any], prompt: str, index: int) -> dict[str, Any]:
    """``choices[index]`` for a request: critique + verdict, or the constrained verdict alone."""
    labels, as_json = constraint(body)
    free = labels is None
    table = verdict_logprobs(prompt, labels or LABELS)
    if float(body.get("temperature", 1.0)) == 0:
        label = max(table, key=table.get)
    else:
        rng = random.Random(f"{body['seed']}-{index}") if body.get("seed") is not None else random.Random()
        label = rng.choices(list(table), weights=[math.exp(v) for v in table.values()])[0]
    space = " " if free else ""  # a free verdict follows "Score:", as " 4" in most vocabularies
    alternatives = {space + k: v for k, v in table.items()} | {" N/A": math.log(1 - LABEL_MASS)}
    k = int(body.get("top_logprobs") or 0)
    verdict = _position(space + label, table[label], alternatives, k)
    if free:
        content = [_position(t, -0.05, {t: -0.05, " the": -3.0}, k) for t in CRITIQUE] + [verdict]
    elif as_json:
        content = [_position(t, 0.0, {t: 0.0}, k) for t in ('{"', "verdict", '":', ' "')]
        content += [verdict, _position('"}', 0.0, {'"}': 0.0}, k)]
    else:
        content = [verdict]
    limit = int(body.get("max_tokens") or 256)
    finish = "length" if len(content) > limit else "stop"
    content = content[:limit]
    return {
        "index": index,
        "message": {"role": "assistant", "content": "".join(c["token"] for c in content)},
        "logprobs": {"content": content} if body.get("logprobs") else None,
        "finish_reason": finish,
    }


def prompt_of(body: dict[str, Any]) -> str:
    """The text of the last user message (the key the table and the faults use)."""
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many clients connect at once; the default backlog of 5 refuses them


class Handler(BaseHTTPRequestHandler):
    """``POST /v1/chat/completions`` in vLLM's dialect; ``server.state``, ``.fault``, ``.delay_s`` set up."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        state, prompt, status = self.server.state, prompt_of(body), 500
        with state.lock:
            state.bodies.append(body)
            attempt = len(state.attempts.setdefault(prompt, []))
            state.attempts[prompt].append(time.monotonic())
            state.inflight += 1
            state.peak = max(state.peak, state.inflight)
        try:
            time.sleep(self.server.delay_s)
            status, payload, headers = self._answer(body, prompt, attempt)
        finally:  # counted out before the client can read the answer, so in-flight never overcounts
            with state.lock:
                state.inflight -= 1
                state.statuses.append(status)
        self._send(status, payload, headers)

    def _answer(
        self, body: dict[str, Any], prompt: str, attempt: int
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        status = self.server.fault(prompt, attempt) if self.server.fault else None
        if status is None and body.get("model") != MODEL:
            status = 404
        if status is None and not 1 <= int(body.get("n", 1)) <= 8:
            status = 400
        if status is not None:
            headers = {"Retry-After": self.server.retry_after} if status == 429 else {}
            error = {"message": f"injected {status}", "type": "server_busy", "code": status}
            return status, {"object": "error", **error}, headers
        choices = [choice(body, prompt, i) for i in range(int(body.get("n", 1)))]
        return (
            200,
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": MODEL,
                "choices": choices,
            },
            {},
        )


@contextlib.contextmanager
def serve_vllm_dialect(
    fault: Fault | None = None, delay_s: float = 0.0, retry_after: str = "0"
) -> Iterator[tuple[str, ServerState]]:
    """Serve on a free port of 127.0.0.1 in a thread; yields ``(base_url, state)``."""
    server = _Server(("127.0.0.1", 0), Handler)
    server.state, server.fault, server.delay_s, server.retry_after = (
        ServerState(),
        fault,
        delay_s,
        retry_after,
    )
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), daemon=True, name="vllm-dialect-server"
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", server.state
    finally:
        server.shutdown()
        server.server_close()
