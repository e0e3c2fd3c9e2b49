"""An OpenAI-compatible chat-completions server for a local transformers model, with log-probabilities.

For users with no vLLM or SGLang, and for tests: ``create_app`` puts a ``TransformersBackend``
behind ``POST /v1/chat/completions`` (``messages`` with text and ``image_url`` parts,
``max_tokens``/``max_completion_tokens``, ``temperature``, ``top_p``, ``n``, ``seed``, ``logprobs``,
``top_logprobs``, ``stream``: server-sent chunks, see ``openai_stream``; ``structured_outputs:
{"choice": [...]}`` or ``guided_choice``: the answer is one of the choices, see ``openai_choice``) and ``GET /v1/models``, so ``judges.backends.OpenAIBackend`` (or any OpenAI
client) can judge through HTTP. ``ServerLimits`` guards it: an optional API key (401 without it),
caps on ``n``, ``max_tokens`` and the body size (400 / 413), a bounded queue (503 when full) and a
per-request timeout (504). One worker thread runs the model; requests that wait while it works are
batched into its next ``generate`` call, and the event loop keeps answering other clients. For
throughput at scale, serve with vLLM and keep the same client.

Example:
    $ python -m integrations.serving.openai_server --model runs/judge/model --port 8000
    >>> with serve_in_thread(create_app(TransformersBackend("runs/judge/model"), "judge")) as url:
    ...     OpenAIBackend(url, model="judge").generate(requests, SamplingParams())
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import hmac
import io
import json
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from integrations.serving.openai_choice import ChoiceBackend, requested_choices
from integrations.serving.openai_stream import sse_chunks
from judges.backends import Generation, Messages, SamplingParams, TransformersBackend
from mmreward.optional import require


@dataclass
class ServerLimits:
    """What one client may ask of the server.

    Attributes:
        api_key: When set, every request needs ``Authorization: Bearer <api_key>`` (else 401).
        max_n: Most completions per request (``n``; else 400).
        max_tokens: Most new tokens per completion (``max_tokens``/``max_completion_tokens``; else 400).
        max_body_bytes: Largest request body (else 413); images travel inline, so allow for them.
        timeout_s: A request not answered within this many seconds gets 504.
        max_queue: Requests that may wait for the model; one more gets 503 at once.
        max_batch: Most prompts the worker sends to one ``generate`` call.
    """

    api_key: str | None = None
    max_n: int = 8
    max_tokens: int = 1024
    max_body_bytes: int = 16 * 1024 * 1024
    timeout_s: float = 120.0
    max_queue: int = 64
    max_batch: int = 32


class RequestError(ValueError):
    """A request the server answers with an HTTP error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def decode_image(url: str) -> Any:
    """A PIL image from a ``data:image/...;base64,`` URL (the server fetches nothing from the network).

    The image passes the same checks as a file (``modalities.image.load_image``): the pixel cap
    before decoding, 16-bit and alpha handled, a fully transparent image refused.
    """
    pil = require("PIL.Image", "vlm")
    from modalities.image import load_image

    if not url.startswith("data:") or ";base64," not in url:
        raise ValueError(
            f"Image URL {url[:40]!r}... is not a base64 data URL; send images inline as data:image/png;base64,..."
        )
    try:
        data = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
        with pil.open(io.BytesIO(data)) as image:
            return load_image(image, field="image_url")
    except pil.DecompressionBombError as err:
        raise ValueError(f"image_url: the image is too large to decode safely ({err})") from None
    except (binascii.Error, OSError) as err:
        raise ValueError(f"image_url: cannot read the image ({err}); send a base64 PNG or JPEG.") from None


def from_openai_messages(messages: list[dict[str, Any]]) -> Messages:
    """OpenAI wire messages to backend messages: ``image_url`` parts become ``image`` parts."""
    out = []
    for message in messages:
        content = message.get("content") or ""
        if not isinstance(content, str):
            content = [
                {"type": "image", "image": decode_image(p["image_url"]["url"])}
                if p.get("type") == "image_url"
                else p
                for p in content
            ]
        out.append({"role": message["role"], "content": content})
    return out


def sampling_params(body: dict[str, Any], max_tokens: int | None = None) -> SamplingParams:
    """Sampling parameters from a request body (OpenAI defaults: temperature 1, no log-probabilities)."""
    top = int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0
    if not 0 <= top <= 20:
        raise ValueError(f"top_logprobs must be between 0 and 20; got {top}.")
    tokens = int(body.get("max_completion_tokens") or body.get("max_tokens") or min(256, max_tokens or 256))
    if tokens < 1 or (max_tokens is not None and tokens > max_tokens):
        raise ValueError(f"max_tokens must be between 1 and {max_tokens} on this server; got {tokens}.")
    return SamplingParams(
        max_new_tokens=tokens,
        temperature=float(body.get("temperature", 1.0)),
        top_p=float(body.get("top_p", 1.0)),
        top_logprobs=top,
        seed=body.get("seed"),
        guided_choice=requested_choices(body),
    )


def choice_json(index: int, generation: Generation, logprobs: bool) -> dict[str, Any]:
    """One ``choices[i]`` entry in the OpenAI format."""
    content = None
    if logprobs:
        content = [
            {
                "token": token,
                "logprob": logprob,
                "bytes": list(token.encode()),
                "top_logprobs": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top.items()
                ],
            }
            for token, logprob, top in zip(generation.tokens, generation.logprobs, generation.top_logprobs)
        ]
    return {
        "index": index,
        "message": {"role": "assistant", "content": generation.text},
        "logprobs": {"content": content} if logprobs else None,
        "finish_reason": generation.finish_reason,
    }


@dataclass
class _Job:
    requests: list[Messages]
    params: SamplingParams
    deadline: float
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class Batcher:
    """One worker thread runs the model (it is not thread-safe); jobs wait in a bounded queue.

    Jobs that arrive while the model works are taken together, and those with the same sampling
    parameters go to the backend in one ``generate`` call (up to ``max_batch`` prompts).
    """

    def __init__(self, backend: Any, max_queue: int, max_batch: int) -> None:
        self.backend, self.max_batch = backend, max_batch
        self.jobs: queue.Queue[_Job] = queue.Queue(maxsize=max_queue)
        self.calls = 0  # generate calls made, for tests and metrics
        threading.Thread(target=self._work, daemon=True, name="mmreward-generate").start()

    def submit(
        self, requests: list[Messages], params: SamplingParams, timeout_s: float
    ) -> concurrent.futures.Future:
        """Queue a job; raises ``queue.Full`` when the queue is at its bound."""
        job = _Job(requests, params, time.monotonic() + timeout_s)
        self.jobs.put_nowait(job)
        return job.future

    def _take(self) -> list[_Job]:
        taken = [self.jobs.get()]
        size = len(taken[0].requests)
        while size < self.max_batch:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            taken.append(job)
            size += len(job.requests)
        return taken

    def _work(self) -> None:
        while True:
            jobs = [j for j in self._take() if self._live(j)]
            while jobs:
                group = [j for j in jobs if j.params == jobs[0].params]
                jobs = [j for j in jobs if j.params != jobs[0].params]
                self._run(group)

    @staticmethod
    def _live(job: _Job) -> bool:
        if job.future.cancelled() or not job.future.set_running_or_notify_cancel():
            return False
        if time.monotonic() > job.deadline:
            job.future.set_exception(TimeoutError("the request waited past its timeout"))
            return False
        return True

    def _run(self, group: list[_Job]) -> None:
        self.calls += 1
        try:
            generations = self.backend.generate([r for j in group for r in j.requests], group[0].params)
        except Exception as err:  # the clients get a 500 naming it; the worker lives on
            for job in group:
                job.future.set_exception(err)
            return
        start = 0
        for job in group:
            job.future.set_result(generations[start : start + len(job.requests)])
            start += len(job.requests)


def create_app(backend: TransformersBackend, model_name: str, limits: ServerLimits | None = None) -> Any:
    """A FastAPI app serving ``backend`` as ``model_name`` within ``limits``; see the module docstring."""
    fastapi = require("fastapi", "serve")
    limits = limits or ServerLimits()
    app = fastapi.FastAPI(title=f"mmreward OpenAI-compatible server ({model_name})")
    batcher = Batcher(ChoiceBackend(backend), limits.max_queue, limits.max_batch)
    app.state.batcher = batcher

    def error(status: int, message: str) -> Any:
        kind = {401: "authentication_error", 503: "server_busy", 504: "timeout"}.get(
            status, "invalid_request_error"
        )
        body = {"error": {"message": message, "type": kind}}
        return fastapi.responses.JSONResponse(body, status_code=status)

    @app.middleware("http")
    async def authenticate(request: Any, call_next: Any) -> Any:
        if limits.api_key is not None:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), limits.api_key.encode()):
                return error(401, "Missing or wrong API key; send the header 'Authorization: Bearer <key>'.")
        return await call_next(request)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "mmreward"}]}

    async def chat(request: Any) -> Any:
        try:
            body = await _read_body(request, limits.max_body_bytes)
            if body.get("model") not in (None, model_name):
                raise RequestError(
                    404, f"Model {body.get('model')!r} is not served here; this server serves {model_name!r}."
                )
            params, messages, n = _parse(body, limits)
        except RequestError as err:
            return error(err.status, str(err))
        except (KeyError, TypeError, ValueError) as err:
            return error(400, f"Bad chat-completions request: {type(err).__name__}: {err}")
        try:
            future = batcher.submit([messages] * n, params, limits.timeout_s)
        except queue.Full:
            return error(503, f"The server is busy ({limits.max_queue} requests waiting); retry shortly.")
        try:
            generations = await asyncio.wait_for(asyncio.wrap_future(future), limits.timeout_s)
        except (asyncio.TimeoutError, TimeoutError):
            future.cancel()
            return error(
                504,
                f"The request was not answered within {limits.timeout_s} s; retry, or ask for fewer tokens.",
            )
        except Exception as err:
            return error(500, f"Generation failed: {type(err).__name__}: {err}")
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        logprobs = params.top_logprobs > 0 or bool(body.get("logprobs"))
        if body.get("stream"):
            events = sse_chunks(generations, model_name, completion_id, created, logprobs)
            return fastapi.responses.StreamingResponse(events, media_type="text/event-stream")
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model_name,
            "choices": [choice_json(i, g, logprobs) for i, g in enumerate(generations)],
        }

    # fastapi finds the request by its annotation; with postponed annotations it needs the class itself
    chat.__annotations__["request"] = fastapi.Request
    app.post("/v1/chat/completions")(chat)
    return app


async def _read_body(request: Any, max_bytes: int) -> dict[str, Any]:
    """The JSON body, read no further than ``max_bytes`` (413 beyond)."""
    declared = request.headers.get("content-length")
    too_big = RequestError(413, f"The request body is over {max_bytes} bytes; send smaller or fewer images.")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_big
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > max_bytes:
            raise too_big
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(400, f"The request body is not UTF-8 JSON ({err}).") from None
    if not isinstance(body, dict):
        raise RequestError(400, f"The request body must be a JSON object; got {type(body).__name__}.")
    return body


def _parse(body: dict[str, Any], limits: ServerLimits) -> tuple[SamplingParams, Messages, int]:
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= limits.max_n:
        raise RequestError(
            400, f"n must be an integer between 1 and {limits.max_n} on this server; got {n!r}."
        )
    if not isinstance(body.get("stream", False), bool):
        raise RequestError(400, f"stream must be true or false; got {body['stream']!r}.")
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        raise RequestError(
            400, "stream_options.include_usage is not supported: this server does not count tokens. Drop it."
        )
    params = sampling_params(body, limits.max_tokens)
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a non-empty list of {role, content} objects.")
    return params, from_openai_messages(messages), n


@contextlib.contextmanager
def serve_in_thread(
    app: Any, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 30.0
) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; yields its ``http://host:port/v1`` URL.

    ``port=0`` binds a free port (the socket is bound before the server starts, so there is no race).
    The server is shut down when the ``with`` block ends.
    """
    uvicorn = require("uvicorn", "serve")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(
                f"The server on {host}:{sock.getsockname()[1]} did not start within {startup_timeout} s."
            )
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def main(argv: list[str] | None = None) -> None:
    """``python -m integrations.serving.openai_server --model DIR [--host H] [--port P] [--name NAME]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a from_pretrained folder or hub id")
    parser.add_argument("--name", default=None, help="the model name clients send (default: --model)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--api-key",
        default=os.environ.get("MMREWARD_API_KEY"),
        help="require 'Authorization: Bearer KEY' (default: $MMREWARD_API_KEY; none: open)",
    )
    defaults = ServerLimits()
    parser.add_argument("--max-n", type=int, default=defaults.max_n, help="most completions per request")
    parser.add_argument(
        "--max-tokens", type=int, default=defaults.max_tokens, help="most new tokens per completion"
    )
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s, help="seconds before a 504")
    parser.add_argument(
        "--max-queue", type=int, default=defaults.max_queue, help="waiting requests before 503"
    )
    args = parser.parse_args(argv)
    uvicorn = require("uvicorn", "serve")
    limits = ServerLimits(
        api_key=args.api_key,
        max_n=args.max_n,
        max_tokens=args.max_tokens,
        max_body_bytes=args.max_body_bytes,
        timeout_s=args.timeout,
        max_queue=args.max_queue,
        max_batch=args.batch_size,
    )
    app = create_app(
        TransformersBackend(args.model, batch_size=args.batch_size), args.name or args.model, limits
    )
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
