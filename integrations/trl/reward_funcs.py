"""Any mmreward reward as a reward function of TRL's ``GRPOTrainer`` (and the other online trainers).

TRL calls a reward function as ``f(prompts=..., completions=..., completion_ids=..., **columns)``
with one entry per generated completion, the dataset's other columns (``image``, ``images``, ...)
as lists beside them, and takes back one float per completion, or ``None`` where the function does
not apply (TRL then leaves that function out of the row's weighted sum). ``RewardFunc`` turns those
rows into ``mmreward.Sample`` objects, scores them with ``score_samples`` in chunks of
``batch_size`` and maps the outputs back; ``AsyncRewardFunc`` does the same as a coroutine, so TRL
runs it beside its other asynchronous reward functions.

Example:
    >>> from trl import GRPOConfig, GRPOTrainer
    >>> reward = RewardFunc(mr.load("runs/helpful-rm/model"), name="helpful")
    >>> trainer = GRPOTrainer(model="Qwen/Qwen2.5-0.5B-Instruct", reward_funcs=[reward], ...)
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mmreward.protocols import Reward, check_reward, score_outputs
from mmreward.scoring import load
from mmreward.types import MEDIA_FIELDS, RewardOutput, Sample

Message = dict[str, Any]


def message_text(message: Message) -> str:
    """The text of a chat message whose ``content`` is a string or a list of typed parts."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content if part.get("type") == "text")


def message_images(messages: Sequence[Message]) -> list[Any]:
    """The images of ``{"type": "image", "image": ...}`` parts, in order (TRL puts a VLM row's images there)."""
    return [
        part["image"]
        for m in messages
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if part.get("type") == "image" and part.get("image") is not None
    ]


def last_user_text(messages: Sequence[Message]) -> str:
    """The default prompt of a conversation: the text of its last user turn."""
    users = [m for m in messages if m.get("role") == "user"]
    if not users:
        raise ValueError(
            f"A conversational prompt has no user turn (roles: {[m.get('role') for m in messages]}); "
            "pass prompt_text=callable(messages) -> str to say which text is the prompt."
        )
    return message_text(users[-1])


def completion_text(completion: str | Sequence[Message]) -> str:
    """A completion's text: the string itself, or its assistant turns' text joined by newlines."""
    if isinstance(completion, str):
        return completion
    return "\n".join(message_text(m) for m in completion if m.get("role", "assistant") == "assistant")


def samples_from_rows(
    prompts: Sequence[str | Sequence[Message]],
    completions: Sequence[str | Sequence[Message]],
    columns: dict[str, Sequence[Any]] | None = None,
    prompt_text: Callable[[Sequence[Message]], str] = last_user_text,
) -> list[Sample]:
    """One ``Sample`` per (prompt, completion) row as TRL passes them to a reward function.

    The completion's text is the ``response``. Images come from the dataset's ``images`` column
    (one image becomes ``Sample.image``, several ``Sample.images``), else its ``image`` column,
    else the image parts of a conversational prompt. A column named like another ``Sample`` field
    (``video``, ``source_image``, ``point_cloud``, ``action``, ``steps``) fills that field.

    Args:
        prompts: Plain strings, or conversations (lists of ``{"role", "content"}`` messages).
        completions: Plain strings, or lists of assistant messages.
        columns: The dataset's other columns, one value per row (TRL's ``**kwargs``).
        prompt_text: The prompt of a conversation (default: its last user turn's text).
    """
    if len(prompts) != len(completions):
        raise ValueError(
            f"Got {len(prompts)} prompts and {len(completions)} completions; TRL passes one of each per row."
        )
    columns = {k: v for k, v in (columns or {}).items() if k in MEDIA_FIELDS and isinstance(v, (list, tuple))}
    for name, values in columns.items():
        if len(values) != len(prompts):
            raise ValueError(
                f"Column {name!r} has {len(values)} values for {len(prompts)} rows; pass one per row."
            )
    samples = []
    for i, (prompt, completion) in enumerate(zip(prompts, completions)):
        conversational = not isinstance(prompt, str)
        fields: dict[str, Any] = {
            k: columns[k][i]
            for k in MEDIA_FIELDS
            if k in columns and k not in ("image", "images", "response") and columns[k][i] is not None
        }
        images = _row_images(columns, i, prompt if conversational else [])
        if len(images) == 1:
            fields["image"] = images[0]
        elif images:
            fields["images"] = images
        samples.append(
            Sample(
                prompt=prompt_text(prompt) if conversational else prompt,
                response=completion_text(completion),
                meta={"source": "TRL batch", "line": i},
                **fields,
            )
        )
    return samples


def _row_images(columns: dict[str, Sequence[Any]], i: int, messages: Sequence[Message]) -> list[Any]:
    if "images" in columns:
        return [im for im in (columns["images"][i] or []) if im is not None]
    if "image" in columns:
        return [] if columns["image"][i] is None else [columns["image"][i]]
    return message_images(messages)


class RewardFunc:
    """A TRL reward function that scores each (prompt, completion) row with an mmreward reward.

    Rows that lack a field in ``requires`` (say an image reward on a text-only row) get ``None``
    without being scored; so does a row the reward could not score (a NaN score, the reason in
    ``provenance["failure"]``). The other rows go to ``reward.score_samples`` in chunks of
    ``batch_size``, one call per chunk. With TRL's ``log_metric`` hook present, the share of rows
    scored is logged as ``<name>/scored_frac``.

    Args:
        reward: Any reward: ``mr.load(path)``, a judge, a wrapper, or a class of your own.
        name: The function's ``__name__``, which TRL uses for its ``rewards/<name>/mean`` logs.
        batch_size: Rows per ``score_samples`` call.
        requires: ``Sample`` fields a row must have for the reward to apply (e.g. ``("image",)``);
            ``"image"`` is satisfied by ``images`` too.
        aspect: Return this aspect's score (``RewardOutput.aspects[aspect]``) instead of ``score``.
        prompt_text: The prompt of a conversation (default: its last user turn's text).
    """

    def __init__(
        self,
        reward: Reward,
        name: str | None = None,
        batch_size: int = 32,
        requires: Sequence[str] = (),
        aspect: str | None = None,
        prompt_text: Callable[[Sequence[Message]], str] = last_user_text,
    ) -> None:
        unknown = sorted(set(requires) - set(MEDIA_FIELDS))
        if unknown:
            raise ValueError(
                f"requires names {unknown}, which are not Sample fields; use some of {list(MEDIA_FIELDS)}."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}.")
        self.reward = check_reward(reward, type(self).__name__)
        self.__name__ = name or f"mmreward_{aspect or _reward_name(reward)}"
        self.batch_size, self.requires, self.aspect, self.prompt_text = (
            batch_size,
            tuple(requires),
            aspect,
            prompt_text,
        )

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None, **kwargs: Any) -> RewardFunc:
        """A reward function around ``mr.load(path, device=device)``; ``kwargs`` go to ``__init__``."""
        return cls(load(path, device=device, batch_size=kwargs.get("batch_size", 32)), **kwargs)

    def applies(self, sample: Sample) -> bool:
        """Whether ``sample`` has every field in ``requires``."""
        return all(_has(sample, name) for name in self.requires)

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        """One reward per row, ``None`` where the reward does not apply (TRL's reward-function call)."""
        samples, keep = self._prepare(prompts, completions, kwargs)
        outputs = [out for chunk in _chunks(keep, self.batch_size) for out in self._score(samples, chunk)]
        return self._finish(len(samples), keep, outputs, kwargs)

    def _prepare(self, prompts: Sequence[Any], completions: Sequence[Any], kwargs: dict[str, Any]):
        samples = samples_from_rows(prompts, completions, kwargs, self.prompt_text)
        return samples, [i for i, s in enumerate(samples) if self.applies(s)]

    def _score(self, samples: list[Sample], indices: list[int]) -> list[RewardOutput]:
        return score_outputs(self.reward, [samples[i] for i in indices])

    def _finish(
        self, n: int, keep: list[int], outputs: list[RewardOutput], kwargs: dict[str, Any]
    ) -> list[float | None]:
        rewards: list[float | None] = [None] * n
        for i, out in zip(keep, outputs):
            rewards[i] = self._value(out)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and n:
            log_metric(f"{self.__name__}/scored_frac", sum(r is not None for r in rewards) / n)
        return rewards

    def _value(self, out: RewardOutput) -> float | None:
        if self.aspect is None:
            value = out.score
        elif out.aspects is None or self.aspect not in out.aspects:
            raise ValueError(
                f"aspect={self.aspect!r} was asked for, but the reward gave aspects "
                f"{sorted(out.aspects or {})}; pass one of those or aspect=None."
            )
        else:
            value = out.aspects[self.aspect]
        return None if value is None or math.isnan(value) else float(value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__name__!r}, reward={type(self.reward).__name__})"


class AsyncRewardFunc(RewardFunc):
    """``RewardFunc`` as a coroutine: TRL awaits it on its event loop, beside other async rewards.

    A reward with an ``async`` method ``score_samples_async(samples)``, such as the reward server's
    ``integrations.serving.client.AsyncRewardClient``, is awaited directly, all chunks concurrently;
    any other reward runs in a worker thread (``asyncio.to_thread``), chunk after chunk, so the
    trainer's other reward functions proceed meanwhile. Arguments are those of ``RewardFunc``.
    """

    async def __call__(  # type: ignore[override]
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        """One reward per row, ``None`` where the reward does not apply."""
        samples, keep = self._prepare(prompts, completions, kwargs)
        chunks = list(_chunks(keep, self.batch_size))
        ascore = getattr(self.reward, "score_samples_async", None)
        if ascore is not None and asyncio.iscoroutinefunction(ascore):
            parts = await asyncio.gather(*(self._ascore(ascore, samples, c) for c in chunks))
        else:
            parts = [await asyncio.to_thread(self._score, samples, c) for c in chunks]
        return self._finish(len(samples), keep, [out for part in parts for out in part], kwargs)

    async def _ascore(self, ascore: Callable[..., Any], samples: list[Sample], indices: list[int]):
        outputs = list(await ascore([samples[i] for i in indices]))
        if len(outputs) != len(indices):
            raise ValueError(
                f"{type(self.reward).__name__}.score_samples_async returned {len(outputs)} outputs for "
                f"{len(indices)} samples; a reward must return one RewardOutput per sample, in order."
            )
        return outputs


def _has(sample: Sample, name: str) -> bool:
    if name == "image":
        return sample.image is not None or bool(sample.images)
    value = getattr(sample, name)
    return value is not None and not (isinstance(value, (list, tuple, str)) and len(value) == 0)


def _chunks(indices: list[int], size: int):
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


def _reward_name(reward: Reward) -> str:
    provenance = getattr(reward, "provenance", None)
    name = provenance().get("model") if callable(provenance) else None
    return str(name or type(reward).__name__)
