"""A judge client for OpenAI-compatible chat-completions servers: vLLM, SGLang, LitServe, ours.

It speaks the dialect these servers share: ``logprobs: true`` with ``top_logprobs: k`` (read back
from ``choices[i].logprobs.content[j].top_logprobs[m].{token, logprob}`` into the token
probabilities ``judges.parsing`` reads a verdict from), ``n`` samples per request, ``seed``, and
a verdict constrained to its labels where the server can (``SamplingParams.guided_choice``, sent
in the field the server's dialect reads):

==========================  ====================================================================
``guided=``                 field sent
==========================  ====================================================================
``"none"``                  nothing (the output is free; a warning says the choice was dropped)
``"vllm"``                  ``structured_outputs: {"choice": [...]}`` (vLLM >= 0.10.2)
``"vllm_legacy"``           ``guided_choice: [...]`` (vLLM < 0.12, where it was removed)
``"sglang"``                ``regex: "(4|5|...)"`` (SGLang's constrained decoding)
``"openai_json_schema"``    ``response_format`` with a JSON schema ``{"verdict": one of [...]}``;
                            read the verdict with ``marker=JSON_VERDICT_MARKER``
==========================  ====================================================================

Every request is answered: a 429/5xx, a timeout or a dropped connection is retried with
exponential backoff and jitter (a ``Retry-After`` header is honoured), and a request that still
fails comes back as a ``Generation`` whose ``error`` names the request and the last status, so
the rest of the batch is kept. At most ``concurrency`` requests are in flight per backend, across
every thread and event loop that uses it; results come back in request order.

Example:
    >>> backend = OpenAIBackend("http://127.0.0.1:8000/v1", model="judge", concurrency=32, guided="vllm")
    >>> params = SamplingParams(max_new_tokens=1, top_logprobs=10, guided_choice=["1", "2", "3", "4", "5"])
    >>> [gen] = backend.generate([[{"role": "user", "content": "Rate 1-5. ..."}]], params)
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import email.utils
import io
import os
import random
import re
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Literal, get_args

from judges.generation import Generation, Messages, SamplingParams, merge_logprob
from mmreward.configurable import Configurable
from mmreward.optional import require

Guided = Literal["none", "vllm", "vllm_legacy", "sglang", "openai_json_schema"]

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
"""Statuses worth another try: timeouts, conflicts, rate limits and server errors."""

JSON_VERDICT_MARKER = r'"verdict"\s*:\s*"'
"""The ``read_choice`` marker for a verdict sent back as ``{"verdict": "4"}`` (``guided="openai_json_schema"``)."""


class ConcurrencyGate:
    """At most ``limit`` holders at once across threads and event loops.

    An ``asyncio.Semaphore`` belongs to one event loop, but ``OpenAIBackend.generate`` runs a fresh
    loop in every calling thread; this gate counts under a thread lock and wakes the next waiter
    on its own loop, first come first served.
    """

    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self._free = limit
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = (
            collections.deque()
        )

    async def __aenter__(self) -> None:
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return
            loop = asyncio.get_running_loop()
            waiter = (loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            await waiter[1]
        except asyncio.CancelledError:
            with self._lock:
                queued = waiter in self._waiters
                if queued:
                    self._waiters.remove(waiter)
            if not queued and not waiter[1].cancelled():
                self.release()  # the slot was granted just as we were cancelled: pass it on
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Hand the slot to the longest waiter (on its own loop), or free it."""
        with self._lock:
            while self._waiters:
                loop, future = self._waiters.popleft()
                if not loop.is_closed():
                    loop.call_soon_threadsafe(self._grant, future)
                    return
            self._free += 1

    def _grant(self, future: asyncio.Future) -> None:
        if future.cancelled():
            self.release()
        else:
            future.set_result(None)


def guided_fields(guided: Guided, choices: list[str]) -> dict[str, Any]:
    """The request fields that constrain the output to one of ``choices`` in a server's dialect."""
    if guided == "vllm":
        return {"structured_outputs": {"choice": list(choices)}}
    if guided == "vllm_legacy":
        return {"guided_choice": list(choices)}
    if guided == "sglang":
        return {"regex": "(" + "|".join(re.escape(c) for c in choices) + ")"}
    if guided == "openai_json_schema":
        schema = {
            "type": "object",
            "properties": {"verdict": {"type": "string", "enum": list(choices)}},
            "required": ["verdict"],
            "additionalProperties": False,
        }
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "verdict", "schema": schema, "strict": True},
            }
        }
    return {}


def retry_after(headers: Any) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (seconds or an HTTP date), or None."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _load_image(image: Any) -> Any:  # twin of judges.backends._load_image
    pil = require("PIL.Image", "vlm")
    return pil.open(image).convert("RGB") if isinstance(image, (str, Path)) else image


def image_url(image: Any) -> str:
    """A ``data:image/png;base64,...`` URL for a path or PIL image (an ``http(s)``/``data`` URL passes through)."""
    if isinstance(image, str) and image.startswith(("http://", "https://", "data:")):
        return image
    buffer = io.BytesIO()
    _load_image(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def openai_messages(messages: Messages) -> list[dict[str, Any]]:
    """Messages in the OpenAI wire format: image parts become ``image_url`` parts."""
    out = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = [
                {"type": "image_url", "image_url": {"url": image_url(p["image"])}}
                if p.get("type") == "image"
                else p
                for p in content
            ]
        out.append({"role": message["role"], "content": content})
    return out


class OpenAIBackend(Configurable):
    """A client for any OpenAI-compatible chat-completions server; see the module docstring.

    Args:
        base_url: The server's API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: The model name the server expects.
        api_key: Bearer token; None reads ``OPENAI_API_KEY`` (or sends none).
        timeout: Seconds per request.
        max_retries: Retries after the first try.
        concurrency: Most requests in flight at once, over all threads using this backend.
        backoff: First retry delay in seconds; it doubles each retry, times a jitter in [0.5, 1.5).
        max_backoff: Longest wait between tries, ``Retry-After`` included.
        guided: The server's dialect for ``SamplingParams.guided_choice`` (see the module table).
        extra_body: More fields for every request body (e.g. ``{"top_k": 20}``,
            ``{"chat_template_kwargs": {"enable_thinking": False}}``).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        concurrency: int = 8,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        guided: Guided = "none",
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        require("httpx", "serve")
        if concurrency < 1 or max_retries < 0:
            raise ValueError(
                f"OpenAIBackend needs concurrency >= 1 and max_retries >= 0; got {concurrency} and {max_retries}."
            )
        if guided not in get_args(Guided):
            raise ValueError(f"Unknown guided dialect {guided!r}; use one of {', '.join(get_args(Guided))}.")
        self.base_url, self.model = base_url.rstrip("/"), model
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self.timeout, self.max_retries, self.concurrency = timeout, max_retries, concurrency
        self.backoff, self.max_backoff, self.guided = backoff, max_backoff, guided
        self.extra_body = dict(extra_body or {})
        self.gate = ConcurrencyGate(concurrency)

    def generate(self, requests: list[Messages], params: SamplingParams) -> list[Generation]:
        """Send all requests (concurrently) and wait for the answers, in request order.

        Safe to call from many threads at once: they share this backend's ``concurrency`` limit.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agenerate(requests, params))
        raise RuntimeError(
            "OpenAIBackend.generate was called inside a running event loop. "
            "Use `await backend.agenerate(requests, params)` there instead."
        )

    async def agenerate(self, requests: list[Messages], params: SamplingParams) -> list[Generation]:
        """The async form of ``generate``."""
        httpx = require("httpx", "serve")
        if params.n < 1:
            raise ValueError(f"SamplingParams.n must be >= 1; got {params.n}.")
        if params.guided_choice and self.guided == "none":
            warnings.warn(
                "SamplingParams.guided_choice is set but OpenAIBackend(guided='none') does not send it, "
                "so the output is unconstrained. Pass guided='vllm', 'vllm_legacy', 'sglang' or "
                "'openai_json_schema' to match the server.",
                stacklevel=2,
            )
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=self.timeout, limits=limits
        ) as client:
            total = len(requests)
            jobs = (self._request(client, r, params, i, total) for i, r in enumerate(requests))
            return list(await asyncio.gather(*jobs))

    def payload(self, request: Messages, params: SamplingParams, index: int = 0) -> dict[str, Any]:
        """The JSON body of one chat-completions call."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": openai_messages(request),
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": params.n,
            "logprobs": params.top_logprobs > 0,
            **self.extra_body,
        }
        if params.top_logprobs > 0:
            body["top_logprobs"] = params.top_logprobs
        if params.seed is not None:
            body["seed"] = params.seed + index  # one seed per request, so k copies differ
        if params.guided_choice:
            body.update(guided_fields(self.guided, params.guided_choice))
        return body

    async def _request(
        self, client: Any, request: Messages, params: SamplingParams, index: int, total: int
    ) -> Generation:
        httpx = require("httpx", "serve")
        body, last, tries = self.payload(request, params, index), "", 0
        for attempt in range(self.max_retries + 1):
            tries, asked = attempt + 1, None
            try:
                async with self.gate:  # held for the call only, not while backing off
                    response = await client.post("/chat/completions", json=body)
            except (httpx.TimeoutException, httpx.TransportError) as err:
                last = f"{type(err).__name__}: {err or 'no detail'}"
            else:
                if response.status_code == 200:
                    return self._read(response, index, total)
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code not in RETRY_STATUS:
                    break
                asked = retry_after(response.headers)
            if attempt < self.max_retries:
                await asyncio.sleep(self._delay(attempt, asked))
        word = "try" if tries == 1 else "tries"
        return Generation(
            "",
            finish_reason="error",
            error=f"Request {index} of {total} to {self.base_url}/chat/completions failed after {tries} {word}; "
            f"last answer: {last}",
        )

    def _delay(self, attempt: int, asked: float | None) -> float:
        """Seconds before the next try: what the server asked for, else exponential with jitter."""
        delay = asked if asked is not None else self.backoff * 2**attempt * (0.5 + random.random())
        return min(delay, self.max_backoff)

    def _read(self, response: Any, index: int, total: int) -> Generation:
        try:
            return generation_from_openai(response.json())
        except (ValueError, KeyError, IndexError, TypeError) as err:  # one odd answer must not sink the batch
            return Generation(
                "",
                finish_reason="error",
                error=f"Request {index} of {total}: the server's answer is not a chat completion "
                f"({type(err).__name__}: {err}); it began {response.text[:200]!r}.",
            )


def generation_from_openai(data: dict[str, Any]) -> Generation:
    """A ``Generation`` from a chat-completions response body: its first choice, every choice in ``samples`` when n > 1."""
    choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
    if not choices:
        raise ValueError("the answer has no choices")
    generations = [_choice_generation(c) for c in choices]
    if len(generations) == 1:
        return generations[0]
    return dataclasses.replace(generations[0], samples=generations)


def _choice_generation(choice: dict[str, Any]) -> Generation:
    """One ``choices[i]``: its text and, when present, ``logprobs.content[j].{token, logprob, top_logprobs}``."""
    text = (choice.get("message") or {}).get("content") or ""
    content = (choice.get("logprobs") or {}).get("content") or []
    tokens = [c["token"] for c in content]
    logprobs = [float(c["logprob"]) for c in content]
    tops = []
    for c in content:
        alternatives: dict[str, float] = {}
        for t in c.get("top_logprobs") or []:  # two ids may spell the same string: add them up
            alternatives[t["token"]] = merge_logprob(alternatives.get(t["token"]), float(t["logprob"]))
        tops.append(alternatives)
    finish = "length" if choice.get("finish_reason") == "length" else "stop"
    return Generation(text, tokens, logprobs, tops, finish)
