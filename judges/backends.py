"""Where a judge's text comes from: a local transformers model, or an OpenAI-compatible server.

Both backends take chat requests (lists of ``{"role", "content"}`` messages, the content a
string or a list of parts ``{"type": "text", "text"}`` / ``{"type": "image", "image"}``) and
return one ``Generation`` per request: the text, its tokens (which concatenate to the text),
the log-probability of each chosen token and the top-k alternatives at each position. That is
what ``judges.parsing`` needs to read a score's distribution.

``TransformersBackend`` lives here; ``OpenAIBackend`` (vLLM, SGLang, ours: dialects, retries,
concurrency) lives in ``judges.openai_backend`` and the request/result types in
``judges.generation``. This module re-exports them all, so ``from judges.backends import ...``
is the one import a user needs.

Example:
    >>> backend = TransformersBackend("runs/judge/model", batch_size=16)
    >>> backend = OpenAIBackend("http://127.0.0.1:8000/v1", model="judge", concurrency=8)
    >>> [gen] = backend.generate([[{"role": "user", "content": "Score: ?"}]], SamplingParams(max_new_tokens=8))
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Literal

from judges.generation import Backend, Generation, Messages, SamplingParams, merge_logprob
from judges.openai_backend import (
    RETRY_STATUS,
    OpenAIBackend,
    generation_from_openai,
    image_url,
    openai_messages,
)
from mmreward.configurable import Configurable
from mmreward.optional import require

__all__ = [
    "RETRY_STATUS",
    "Backend",
    "Generation",
    "Messages",
    "OpenAIBackend",
    "SamplingParams",
    "TransformersBackend",
    "generation_from_openai",
    "image_url",
    "message_media",
    "openai_messages",
]


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
        """Generate one output per request (``n`` per request in ``samples``), batched; see the class docstring."""
        torch = require("torch", "vlm")
        if params.n > 1:  # n copies of each request, sampled in the same batches
            flat = self.generate(
                [r for r in requests for _ in range(params.n)], dataclasses.replace(params, n=1)
            )
            groups = [flat[i : i + params.n] for i in range(0, len(flat), params.n)]
            return [dataclasses.replace(group[0], samples=group) for group in groups]
        if params.guided_choice:
            warnings.warn(
                "TransformersBackend does not constrain decoding; guided_choice is ignored. "
                "Serve the model with vLLM or SGLang and use OpenAIBackend(guided=...) to enforce it.",
                stacklevel=2,
            )
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
                alternatives[piece] = merge_logprob(alternatives.get(piece), value)
            tops.append(alternatives)
        chosen = [float(logprobs[i, t]) for i, t in enumerate(ids)]
        text = "".join(tokens)
        return Generation(text, tokens, chosen, tops, "stop" if stop else "length")

    def _piece(self, context: list[int], token_id: int) -> str:
        """The text ``token_id`` adds after ``context`` (incremental detokenization, as vLLM does)."""
        prefix = self.tokenizer.decode(context, skip_special_tokens=False)
        return self.tokenizer.decode([*context, token_id], skip_special_tokens=False)[len(prefix) :]


def _load_image(image: Any) -> Any:
    pil = require("PIL.Image", "vlm")
    return pil.open(image).convert("RGB") if isinstance(image, (str, Path)) else image
