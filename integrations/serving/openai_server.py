"""An OpenAI-compatible chat-completions server for a local transformers model, with log-probabilities.

For users with no vLLM or SGLang, and for tests: ``create_app`` puts a ``TransformersBackend``
behind ``POST /v1/chat/completions`` (``messages`` with text and ``image_url`` parts,
``max_tokens``/``max_completion_tokens``, ``temperature``, ``top_p``, ``n``, ``seed``, ``logprobs``,
``top_logprobs``) and ``GET /v1/models``, so ``judges.backends.OpenAIBackend`` (or any OpenAI
client) can judge through HTTP. Requests are served one at a time (generation holds a lock);
for throughput, serve with vLLM and keep the same client.

Example:
    $ python -m integrations.serving.openai_server --model runs/judge/model --port 8000
    >>> with serve_in_thread(create_app(TransformersBackend("runs/judge/model"), "judge")) as url:
    ...     OpenAIBackend(url, model="judge").generate(requests, SamplingParams())
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from judges.backends import Generation, Messages, SamplingParams, TransformersBackend
from mmreward.optional import require


def decode_image(url: str) -> Any:
    """A PIL image from a ``data:image/...;base64,`` URL (the server fetches nothing from the network)."""
    pil = require("PIL.Image", "vlm")
    if not url.startswith("data:") or ";base64," not in url:
        raise ValueError(
            f"Image URL {url[:40]!r}... is not a base64 data URL; send images inline as data:image/png;base64,..."
        )
    return pil.open(io.BytesIO(base64.b64decode(url.split(";base64,", 1)[1]))).convert("RGB")


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


def sampling_params(body: dict[str, Any]) -> SamplingParams:
    """Sampling parameters from a request body (OpenAI defaults: temperature 1, no log-probabilities)."""
    top = int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0
    if not 0 <= top <= 20:
        raise ValueError(f"top_logprobs must be between 0 and 20; got {top}.")
    return SamplingParams(
        max_new_tokens=int(body.get("max_completion_tokens") or body.get("max_tokens") or 256),
        temperature=float(body.get("temperature", 1.0)),
        top_p=float(body.get("top_p", 1.0)),
        top_logprobs=top,
        seed=body.get("seed"),
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


def create_app(backend: TransformersBackend, model_name: str) -> Any:
    """A FastAPI app serving ``backend`` as ``model_name``; see the module docstring."""
    fastapi = require("fastapi", "serve")
    app = fastapi.FastAPI(title=f"mmreward OpenAI-compatible server ({model_name})")
    lock = threading.Lock()

    def error(status: int, message: str) -> Any:
        body = {"error": {"message": message, "type": "invalid_request_error"}}
        return fastapi.responses.JSONResponse(body, status_code=status)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "mmreward"}]}

    @app.post("/v1/chat/completions")
    def chat(body: dict[str, Any]) -> Any:
        if body.get("model") not in (None, model_name):
            return error(
                404, f"Model {body.get('model')!r} is not served here; this server serves {model_name!r}."
            )
        try:
            params = sampling_params(body)
            messages = from_openai_messages(body["messages"])
            n = int(body.get("n", 1))
        except (KeyError, TypeError, ValueError) as err:
            return error(400, f"Bad chat-completions request: {type(err).__name__}: {err}.")
        with lock:  # one generate at a time: the model is not thread-safe
            generations = backend.generate([messages] * n, params)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": [
                choice_json(i, g, params.top_logprobs > 0 or bool(body.get("logprobs")))
                for i, g in enumerate(generations)
            ],
        }

    return app


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
    args = parser.parse_args(argv)
    uvicorn = require("uvicorn", "serve")
    app = create_app(TransformersBackend(args.model, batch_size=args.batch_size), args.name or args.model)
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
