"""Choice-constrained answers for the OpenAI-compatible server (vLLM's ``guided_choice``).

A request with ``structured_outputs: {"choice": [...]}`` (vLLM >= 0.12) or ``guided_choice: [...]``
(older vLLM) must be answered with exactly one of the choices. ``ChoiceBackend`` does it by scoring:
each choice's log-likelihood after the chat prompt (one forward pass per choice), then the best
choice at temperature 0, or a draw from ``softmax(loglik / temperature)`` above it (seeded by
``seed``). The answer carries per-token log-probabilities under the model's unmodified
distribution; each position's alternatives hold the top ``top_logprobs`` tokens plus every
choice's token there (for choices that agree up to it), so a judge reads the verdict's distribution
over all its labels. Requests without choices go to the wrapped backend unchanged.
"""

from __future__ import annotations

import math
import random
from typing import Any

from judges.backends import Generation, Messages, SamplingParams, _load_image, merge_logprob, message_media
from mmreward.optional import require


def requested_choices(body: dict[str, Any]) -> list[str] | None:
    """The choices a request body asks for, or None; raises ``ValueError`` on a malformed or unsupported one."""
    structured = body.get("structured_outputs")
    if structured is not None:
        if not isinstance(structured, dict) or set(structured) != {"choice"}:
            keys = sorted(structured) if isinstance(structured, dict) else type(structured).__name__
            raise ValueError(f"this server supports structured_outputs={{'choice': [...]}} only; got {keys}.")
        choices = structured["choice"]
    else:
        choices = body.get("guided_choice")
    if choices is None:
        return None
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) and c for c in choices):
        raise ValueError(f"the choices must be a non-empty list of non-empty strings; got {choices!r}.")
    return list(dict.fromkeys(choices))


class ChoiceBackend:
    """Wraps a ``TransformersBackend``: requests whose params carry ``guided_choice`` are answered by scoring."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def generate(self, requests: list[Messages], params: SamplingParams) -> list[Generation]:
        if not params.guided_choice:
            return self.backend.generate(requests, params)
        rng = random.Random(params.seed)
        scored: dict[int, list[tuple[str, list[int], Any]]] = {}  # the n copies of a request share its scores
        out = []
        for request in requests:
            if id(request) not in scored:
                scored[id(request)] = self.score(request, params.guided_choice)
            out.append(self.pick(scored[id(request)], params, rng))
        return out

    def score(self, request: Messages, choices: list[str]) -> list[tuple[str, list[int], Any]]:
        """Each choice, its token ids and log-softmax at each of its positions, ``(len(ids), vocab)``."""
        torch = require("torch", "vlm")
        backend = self.backend
        prompt = backend._template(request)
        images = message_media(request)
        if backend.processor is not None:
            inputs = backend.processor(
                text=[prompt], images=[_load_image(i) for i in images] or None, return_tensors="pt"
            )
        elif images:
            raise ValueError("the request holds images but this server's model is text-only.")
        else:
            inputs = backend.tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
        inputs = dict(inputs)
        start = inputs["input_ids"].shape[1]
        results = []
        for choice in choices:
            ids = backend.tokenizer(choice, add_special_tokens=False)["input_ids"]
            extra = torch.tensor([ids], dtype=inputs["input_ids"].dtype)
            batch = {
                **inputs,
                "input_ids": torch.cat([inputs["input_ids"], extra], dim=1),
                "attention_mask": torch.ones(1, start + len(ids), dtype=torch.long),
            }
            batch = {k: v.to(backend.device) if hasattr(v, "to") else v for k, v in batch.items()}
            with torch.inference_mode():
                logits = backend.model(**batch).logits[0, start - 1 : start - 1 + len(ids)]
            results.append((choice, ids, logits.float().log_softmax(-1).cpu()))
        return results

    def pick(
        self, scored: list[tuple[str, list[int], Any]], params: SamplingParams, rng: random.Random
    ) -> Generation:
        """One answer: the best choice (temperature 0) or a draw; its tokens, log-probabilities and alternatives."""
        totals = [sum(float(lp[i, t]) for i, t in enumerate(ids)) for _, ids, lp in scored]
        if params.temperature > 0:
            top = max(totals)
            weights = [math.exp((t - top) / params.temperature) for t in totals]
            best = rng.choices(range(len(scored)), weights)[0]
        else:
            best = max(range(len(scored)), key=totals.__getitem__)
        text, ids, logprobs = scored[best]
        backend, k = self.backend, params.top_logprobs
        tokens, chosen, tops = [], [], []
        for i, token_id in enumerate(ids):
            context = ids[max(0, i - 4) : i]
            tokens.append(backend._piece(context, token_id))
            chosen.append(float(logprobs[i, token_id]))
            alt_ids = logprobs[i].topk(k).indices.tolist() if k > 0 else []
            alt_ids += [o[i] for _, o, _ in scored if len(o) > i and o[:i] == ids[:i]]
            alternatives: dict[str, float] = {}
            for alt in dict.fromkeys(alt_ids):  # two ids may spell the same string: add them up
                piece = backend._piece(context, alt)
                alternatives[piece] = merge_logprob(alternatives.get(piece), float(logprobs[i, alt]))
            tops.append(alternatives)
        return Generation(text, tokens, chosen, tops, "stop")
