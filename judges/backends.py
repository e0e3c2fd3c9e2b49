"""Where a judge's text comes from: a local transformers model, or an OpenAI-compatible server.

Both backends take chat requests (lists of ``{"role", "content"}`` messages, the content a
string or a list of parts ``{"type": "text", "text"}`` / ``{"type": "image", "image"}``) and
return one ``Generation`` per request: the text, its tokens (which concatenate to the text),
the log-probability of each chosen token and the top-k alternatives at each position. That is
what ``judges.parsing`` needs to read a score's distribution.

Example:
    >>> backend = TransformersBackend("runs/judge/model", batch_size=16)
    >>> backend = OpenAIBackend("http://127.0.0.1:8000/v1", model="judge", concurrency=8)
    >>> [gen] = backend.generate([[{"role": "user", "content": "Score: ?"}]], SamplingParams(max_new_tokens=8))
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from mmreward.configurable import Configurable
from mmreward.optional import require

Messages = list[dict[str, Any]]
"""One chat request: ``[{"role": "user", "content": ...}, ...]``."""


@dataclass
class SamplingParams:
    """How to generate.

    Attributes:
        max_new_tokens: Most tokens to generate.
        temperature: 0 for greedy decoding; above 0 samples.
        top_p: Nucleus sampling threshold (sampling only).
        top_logprobs: Alternatives to report at each position (OpenAI servers allow up to 20).
        seed: Seed for sampling, when reproducibility matters.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_logprobs: int = 5
    seed: int | None = None


@dataclass
class Generation:
    """One generated output.

    Attributes:
        text: The output text (without the end-of-turn token).
        tokens: The output tokens as strings; ``"".join(tokens) == text`` when the backend can say so.
        logprobs: Log-probability of each chosen token, under the model's unmodified distribution.
        top_logprobs: ``{token string: log-probability}`` of the top alternatives at each position.
        finish_reason: ``"stop"`` (end of turn), ``"length"`` (cut at ``max_new_tokens``) or ``"error"``.
        error: What went wrong when no output could be had (``finish_reason="error"``).
    """

    text: str
    tokens: list[str] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    finish_reason: Literal["stop", "length", "error"] = "stop"
    error: str | None = None


class Backend(Protocol):
    """Anything that turns chat requests into generations."""

    def generate(self, requests: list[Messages], params: SamplingParams) -> list[Generation]: ...


def message_media(messages: Messages) -> list[Any]:
    """The images of a request, in order (``{"type": "image", "image": ...}`` parts)."""
    return [
        part["image"]
        for message in messages
        if not isinstance(message["content"], str)
        for part in message["content"]
        if part.get("type") == "image"
    ]


class TransformersBackend(Configurable):
    """Local generation with a transformers causal LM or vision-language model.

    Requests are sorted by length and generated in batches of ``batch_size`` with left padding;
    the log-probabilities come from the raw logits (before temperature), as vLLM reports them.

    Args:
        model: A model folder or hub id (``from_pretrained``). A folder with a processor config
            loads ``AutoProcessor`` and ``AutoModelForImageTextToText``, so image parts are used.
        device: ``"cpu"``, ``"cuda"``, ...; None picks CUDA when there is one.
        dtype: Weights' dtype; ``"auto"`` keeps the checkpoint's.
        batch_size: Requests per ``generate`` call.
        trust_remote_code: Let transformers run the checkpoint's own code (off unless you ask).
    """

    def __init__(
        self,
        model: str,
        device: str | None = None,
        dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
        batch_size: int = 16,
        trust_remote_code: bool = False,
    ) -> None:
        torch = require("torch", "vlm")
        transformers = require("transformers", "vlm")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        kwargs = {
            "trust_remote_code": trust_remote_code,
            "dtype": dtype if dtype == "auto" else getattr(torch, dtype),
        }
        multimodal = (Path(model) / "preprocessor_config.json").is_file() or (
            Path(model) / "processor_config.json"
        ).is_file()
        if multimodal:
            self.processor = transformers.AutoProcessor.from_pretrained(
                model, trust_remote_code=trust_remote_code
            )
            self.tokenizer = self.processor.tokenizer
            self.model = transformers.AutoModelForImageTextToText.from_pretrained(model, **kwargs)
        else:
            self.processor = None
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(
                model, trust_remote_code=trust_remote_code
            )
            self.model = transformers.AutoModelForCausalLM.from_pretrained(model, **kwargs)
        self.model.to(self.device).eval()

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, batch_size: int = 16) -> TransformersBackend:
        """Wrap a model and tokenizer already in memory (e.g. during training); text-only."""
        backend = cls.__new__(cls)
        backend.model, backend.tokenizer, backend.processor = model, tokenizer, None
        backend.device, backend.batch_size = str(next(model.parameters()).device), batch_size
        return backend

    def generate(self, requests: list[Messages], params: SamplingParams) -> list[Generation]:
        """Generate one output per request, batched; see the class docstring."""
        torch = require("torch", "vlm")
        if params.seed is not None:
            torch.manual_seed(params.seed)
        texts = [self._template(r) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: len(texts[i]))
        results: list[Generation | None] = [None] * len(requests)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            outputs = self._generate_batch([texts[i] for i in chunk], [requests[i] for i in chunk], params)
            for i, out in zip(chunk, outputs):
                results[i] = out
        return results  # type: ignore[return-value]

    def _template(self, request: Messages) -> str:
        owner = self.processor if self.processor is not None else self.tokenizer
        return owner.apply_chat_template(request, tokenize=False, add_generation_prompt=True)

    def _generate_batch(
        self, texts: list[str], requests: list[Messages], params: SamplingParams
    ) -> list[Generation]:
        torch = require("torch", "vlm")
        self.tokenizer.padding_side = "left"
        images = [img for r in requests for img in message_media(r)]
        if self.processor is not None:
            inputs = self.processor(
                text=texts, images=[_load_image(i) for i in images] or None, padding=True, return_tensors="pt"
            )
        elif images:
            raise ValueError(
                f"The requests hold {len(images)} image(s) but this backend's model is text-only. "
                "Serve a vision-language model (a folder with a processor config), or describe the image in text."
            )
        else:
            inputs = self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False)
        inputs = inputs.to(self.device)
        sampling = (
            {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
            if params.temperature > 0
            else {"do_sample": False}
        )
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=params.max_new_tokens,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                **sampling,
            )
        new = out.sequences[:, inputs["input_ids"].shape[1] :].tolist()
        logprobs = torch.stack(out.logits, dim=1).float().log_softmax(-1)  # (B, T, V)
        k = max(params.top_logprobs, 1)
        top_values, top_ids = logprobs.topk(k, dim=-1)
        return [
            self._to_generation(new[b], logprobs[b], top_values[b].tolist(), top_ids[b].tolist(), params)
            for b in range(len(texts))
        ]

    def _to_generation(
        self, ids: list[int], logprobs: Any, top_values: list, top_ids: list, params: SamplingParams
    ) -> Generation:
        eos = self.tokenizer.eos_token_id
        stop = eos in ids
        ids = ids[: ids.index(eos)] if stop else ids
        tokens, tops = [], []
        for i, token_id in enumerate(ids):
            context = ids[max(0, i - 4) : i]
            tokens.append(self._piece(context, token_id))
            alternatives: dict[str, float] = {}
            for alt_id, value in zip(top_ids[i][: params.top_logprobs], top_values[i][: params.top_logprobs]):
                piece = self._piece(context, alt_id)  # two ids may spell the same string: add them up
                alternatives[piece] = _logaddexp(alternatives.get(piece), value)
            tops.append(alternatives)
        chosen = [float(logprobs[i, t]) for i, t in enumerate(ids)]
        text = "".join(tokens)
        return Generation(text, tokens, chosen, tops, "stop" if stop else "length")

    def _piece(self, context: list[int], token_id: int) -> str:
        """The text ``token_id`` adds after ``context`` (incremental detokenization, as vLLM does)."""
        prefix = self.tokenizer.decode(context, skip_special_tokens=False)
        return self.tokenizer.decode([*context, token_id], skip_special_tokens=False)[len(prefix) :]


def _logaddexp(a: float | None, b: float) -> float:
    import math

    if a is None:
        return b
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))


def _load_image(image: Any) -> Any:
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


RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIBackend(Configurable):
    """A client for any OpenAI-compatible chat-completions server (vLLM, SGLang, LitServe, ours).

    Requests run concurrently (at most ``concurrency`` in flight); a timeout, a dropped
    connection or a 408/429/5xx answer is retried up to ``max_retries`` times with exponential
    backoff and jitter. A request that still fails yields a ``Generation`` with ``error`` set, so
    the rest of the batch is kept.

    Args:
        base_url: The server's API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: The model name the server expects.
        api_key: Bearer token; None reads ``OPENAI_API_KEY`` (or sends none).
        timeout: Seconds per request.
        max_retries: Retries after the first try.
        concurrency: Most requests in flight at once.
        backoff: First retry delay in seconds (doubles each retry).
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
    ) -> None:
        require("httpx", "serve")
        if concurrency < 1:
            raise ValueError(f"OpenAIBackend concurrency must be >= 1; got {concurrency}.")
        self.base_url, self.model = base_url.rstrip("/"), model
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self.timeout, self.max_retries, self.concurrency, self.backoff = (
            timeout,
            max_retries,
            concurrency,
            backoff,
        )

    def generate(self, requests: list[Messages], params: SamplingParams) -> list[Generation]:
        """Send all requests (concurrently) and wait for the answers, in request order."""
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
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=self.concurrency)
        gate = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=self.timeout, limits=limits
        ) as client:

            async def one(request: Messages, index: int) -> Generation:
                async with gate:
                    return await self._request(client, request, params, index)

            return list(await asyncio.gather(*(one(r, i) for i, r in enumerate(requests))))

    def payload(self, request: Messages, params: SamplingParams, index: int = 0) -> dict[str, Any]:
        """The JSON body of one chat-completions call."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": openai_messages(request),
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "logprobs": params.top_logprobs > 0,
        }
        if params.top_logprobs > 0:
            body["top_logprobs"] = params.top_logprobs
        if params.seed is not None:
            body["seed"] = params.seed + index  # one seed per request, so k copies differ
        return body

    async def _request(
        self, client: Any, request: Messages, params: SamplingParams, index: int
    ) -> Generation:
        httpx = require("httpx", "serve")
        body, last = self.payload(request, params, index), ""
        for attempt in range(self.max_retries + 1):
            try:
                response = await client.post("/chat/completions", json=body)
                if response.status_code == 200:
                    return generation_from_openai(response.json())
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code not in RETRY_STATUS:
                    break
            except (httpx.TimeoutException, httpx.TransportError) as err:
                last = f"{type(err).__name__}: {err}"
            if attempt < self.max_retries:
                await asyncio.sleep(self.backoff * 2**attempt * (0.5 + random.random()))
        return Generation("", finish_reason="error", error=f"{self.base_url}/chat/completions failed: {last}")


def generation_from_openai(data: dict[str, Any]) -> Generation:
    """A ``Generation`` from a chat-completions response body (its first choice)."""
    choice = data["choices"][0]
    text = choice["message"].get("content") or ""
    content = (choice.get("logprobs") or {}).get("content") or []
    tokens = [c["token"] for c in content]
    logprobs = [float(c["logprob"]) for c in content]
    tops = [{t["token"]: float(t["logprob"]) for t in c.get("top_logprobs") or []} for c in content]
    finish = "length" if choice.get("finish_reason") == "length" else "stop"
    return Generation(text, tokens, logprobs, tops, finish)
