"""Server-sent events in OpenAI's chat-completions chunk format, for ``stream=True`` requests.

The server generates each completion whole (its worker batches requests into one ``generate``
call), then sends it as ``chat.completion.chunk`` events: a first chunk with the assistant role,
one chunk per token (or per word where the backend gives no tokens) with its log-probabilities
when asked, a last chunk with the ``finish_reason``, then ``data: [DONE]``. The concatenated
deltas equal the non-streamed ``message.content``. Clients that stream (the ``openai`` package,
LangChain, vLLM-style UIs) work unchanged; the first chunk arrives when generation ends, so
streaming here does not shorten the time to the first token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from judges.backends import Generation


def text_pieces(generation: Generation) -> list[tuple[str, int | None]]:
    """``(piece, token index or None)`` that spell ``generation.text``: its tokens when they do, else words."""
    if generation.tokens and "".join(generation.tokens) == generation.text:
        return [(token, i) for i, token in enumerate(generation.tokens)]
    return [(piece, None) for piece in re.findall(r"\s*\S+|\s+", generation.text)]


def _token_logprobs(generation: Generation, index: int) -> dict[str, Any]:
    token = generation.tokens[index]
    top = generation.top_logprobs[index] if index < len(generation.top_logprobs) else {}
    return {
        "content": [
            {
                "token": token,
                "logprob": generation.logprobs[index],
                "bytes": list(token.encode()),
                "top_logprobs": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top.items()
                ],
            }
        ]
    }


def sse_chunks(
    generations: list[Generation], model_name: str, completion_id: str, created: int, logprobs: bool
) -> Iterator[str]:
    """The ``data: ...`` events of a streamed chat completion, ``[DONE]`` last."""

    def event(index: int, delta: dict[str, Any], finish: str | None = None, lp: Any = None) -> str:
        chunk = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model_name,
            "choices": [{"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}],
        }
        return f"data: {json.dumps(chunk)}\n\n"

    for index, generation in enumerate(generations):
        yield event(index, {"role": "assistant", "content": ""})
        for piece, token in text_pieces(generation):
            with_lp = logprobs and token is not None and token < len(generation.logprobs)
            yield event(index, {"content": piece}, lp=_token_logprobs(generation, token) if with_lp else None)
        yield event(index, {}, finish=generation.finish_reason)
    yield "data: [DONE]\n\n"
