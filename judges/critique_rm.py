"""The critique reward model (MM-RLHF's): write a critique, then score it with a head on its hidden state.

MM-RLHF (Zhang et al., 2025) trains a reward model that first critiques a response and then gives a
scalar from a head on the critique's hidden states: the critique is a reason a reader can check,
the head a continuous score that Bradley-Terry training on preference pairs teaches to rank.

Here the critique is the two-pass pixel judge's (``judges.describe_first``): the model describes the
image from its pixels, then writes the judge pass against the prompt (the seen line and the
critique). The head (the model folder's ``RewardModel.head``) reads the LM's last-layer state at the
critique's last token, in the judge pass's own context (the request holding the prompt and the
description, then the critique), before the ``Score:`` line. The same generation ends with the
score-token judge's verdict, so one model and one generation give both scores:
``RewardOutput.score`` is the head's, ``aspects["score_token"]`` the judge's expected score.
``judges.critique_rm_training`` trains the head and the critique together (BT on pairs, SFT on
critiques).

Example:
    >>> rm = CritiqueRewardModel("runs/critique-rm/model")
    >>> [out] = rm.score_samples([Sample(prompt="two red circles", image="render.png")])
    >>> out.score, out.aspects["score_token"], out.text
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from judges.backends import Messages, message_media
from judges.composite_backend import CompositeBackend
from judges.describe_first import DescribeFirstJudge
from judges.pixel_training import answer_ids
from mmreward.types import RewardOutput, Sample
from modalities.backbones.composite import CompositeVLM
from modalities.backbones.pooling import last_token_index

SCORE_LINE = "\nScore:"
"""Where a judge pass's critique ends and its verdict begins."""


def critique_of(text: str) -> str:
    """What the head reads of a judge pass's output: the critique up to the score line's marker, the
    marker included (``"Seen: ... Critique: ...\\nScore:"``), where the judge is about to give its
    score; an output with no score line (cut at the token limit) gets the marker added."""
    cut = text.find(SCORE_LINE)
    return text + SCORE_LINE if cut < 0 else text[: cut + len(SCORE_LINE)]


def critique_inputs(
    composite: CompositeVLM, requests: list[Messages], critiques: list[str], pixels: Any = None
) -> dict[str, torch.Tensor]:
    """The judge pass's request, then the critique's tokens, right-padded, as the training encodes them
    (``PixelJudgeSFTModule.encode``); the last real token of each row is the critique's last.

    Args:
        composite: The model.
        requests: The judge pass's chat requests.
        critiques: One critique per request (``critique_of`` the judge pass's output).
        pixels: ``{"pixel_values", "image_index"}`` of the requests' image parts (a backend's
            ``unique_pixels``); None when the requests hold no image (the describe-first judge pass).
    """
    rows = []
    for request, critique in zip(requests, critiques):
        prompt = composite.chat_text(request, add_generation_prompt=True)
        ids = composite.expand(composite.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        answer, head = answer_ids(composite.tokenizer, critique, critique)
        rows.append(ids + answer[:head])
    width, pad = max(len(r) for r in rows), composite.tokenizer.pad_token_id
    inputs = {
        "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
    }
    return {**inputs, **(pixels if pixels is not None else {"pixel_values": composite._stack([])})}


class CritiqueRewardModel:
    """A reward (``mmreward.protocols.Reward``): the two-pass judge's critique, scored by a head.

    Args:
        model: A folder that ``mmreward.load`` reads, or a ``RewardModel``, whose backbone is a
            ``CompositeVLM`` judge and whose head the critique reward training fitted.
        max_new_tokens: Most tokens of the judge pass (the seen line, the critique, the score line).
        batch_size: Samples per generation and per head forward.
        device: ``"cpu"``, ``"cuda"``, ...; None picks CUDA when there is one.
    """

    def __init__(
        self, model: Any, max_new_tokens: int = 96, batch_size: int = 50, device: str | None = None
    ) -> None:
        self.source = str(model) if isinstance(model, (str, Path)) else getattr(model, "name", "critique-rm")
        if isinstance(model, (str, Path)):
            from mmreward.scoring import load

            model = load(model, device="cpu").model
        if not isinstance(getattr(model, "backbone", None), CompositeVLM) or not hasattr(model, "head"):
            raise TypeError(
                "CritiqueRewardModel needs a reward model folder (or RewardModel) whose backbone is a "
                f"CompositeVLM and which has a head; got {type(model).__name__}."
            )
        self.model = model.eval()
        self.backend = CompositeBackend(model, device=device, batch_size=batch_size)
        self.model.head.to(self.backend.device)
        self.judge = DescribeFirstJudge(self.backend, max_new_tokens=max_new_tokens)
        self.batch_size = batch_size

    @torch.inference_mode()
    def head_scores(self, requests: list[Messages], critiques: list[str]) -> torch.Tensor:
        """(N,) the head's score of each critique after its request."""
        composite, out = self.model.backbone, []
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            images = any(message_media(r) for r in chunk)
            pixels = self.backend.unique_pixels(chunk) if images else None
            inputs = critique_inputs(composite, chunk, critiques[start : start + self.batch_size], pixels)
            inputs = {k: v.to(self.backend.device) for k, v in inputs.items()}
            hidden = composite.run(inputs).hidden_states[-1]
            last = hidden[torch.arange(hidden.shape[0]), last_token_index(inputs["attention_mask"])]
            out.append(self.model.head(last.float()).score.float().cpu())
        return torch.cat(out)

    def score_samples(self, samples: Sequence[Sample]) -> list[RewardOutput]:
        """Describe, critique, score: one ``RewardOutput`` per sample (the head's score; the judge's
        expected score as ``aspects["score_token"]`` when it was read; the whole judgement as text)."""
        samples = list(samples)
        if not samples:
            return []
        described = self.judge.descriptions(samples)
        requests, judgements = self.judge.judge_pass(self.judge.as_text(samples, described))
        scores = self.head_scores(requests, [critique_of(j.text) for j in judgements])
        provenance = {**self.judge.provenance(), "model": self.source, "reward": type(self).__name__}
        outputs = []
        for score, judgement, description in zip(scores.tolist(), judgements, described):
            text = judgement.text if description is None else f"Image: {description} {judgement.text}"
            aspects = None if judgement.score is None else {"score_token": float(judgement.score)}
            outputs.append(
                RewardOutput(score=score, raw=score, aspects=aspects, text=text, provenance=provenance)
            )
        return outputs
