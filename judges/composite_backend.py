"""A generative-judge backend on a ``CompositeVLM`` (image encoder -> projector -> causal LM).

It takes the same chat requests as ``TransformersBackend`` (image parts are sent as pixels: each
becomes the ``<image>`` placeholder, whose slots hold the projected image tokens) and returns the
same ``Generation`` objects (tokens, log-probabilities, top-k alternatives), so every judge in
``judges/`` runs on it unchanged. Generation is batched with left padding and uses the key/value
cache (HF ``generate`` on ``inputs_embeds``).

Example:
    >>> backend = CompositeBackend("runs/pixel-judge/model")   # a folder written by save_pretrained
    >>> judge = CritiqueJudge(backend, max_new_tokens=128)
    >>> judge.judge([Sample(prompt="two red circles", image="a.png")])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from judges.backends import Generation, Messages, SamplingParams, TransformersBackend, message_media
from mmreward.types import Sample
from modalities.backbones.composite import CompositeVLM

REQUEST = Sample(meta={"source": "judge request"})
"""Names the origin of an image error (the path itself is in the message)."""


class CompositeBackend(TransformersBackend):
    """Local generation with a ``CompositeVLM``.

    Args:
        model: A ``CompositeVLM``, a ``RewardModel`` built on one, or a folder that
            ``mmreward.load`` reads (a reward model whose backbone is a ``CompositeVLM``).
        device: ``"cpu"``, ``"cuda"``, ...; None picks CUDA when there is one.
        batch_size: Requests per ``generate`` call.
    """

    def __init__(self, model: Any, device: str | None = None, batch_size: int = 16) -> None:
        if isinstance(model, (str, Path)):
            from mmreward.scoring import load

            model = load(model, device="cpu").model
        composite = getattr(model, "backbone", model)
        if not isinstance(composite, CompositeVLM):
            raise TypeError(
                f"CompositeBackend needs a CompositeVLM (or a reward model built on one); got {type(composite).__name__}. "
                "Use TransformersBackend for transformers checkpoints."
            )
        self.composite = composite
        self.model, self.tokenizer, self.processor = composite.language_model, composite.tokenizer, None
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        self.composite.to(self.device)

    def _template(self, request: Messages) -> str:
        return self.composite.chat_text(request, add_generation_prompt=True)

    def unique_pixels(self, requests: list[Messages]) -> dict[str, torch.Tensor]:
        """``pixel_values`` of each distinct image of the batch (by path, else by object) and the
        ``image_index`` of every image part: the k copies of a sampled request and both orders of a
        pairwise swap load and encode their images once."""
        rows: dict[Any, int] = {}
        pixels, index = [], []
        for request in requests:
            for j, image in enumerate(message_media(request)):
                key = str(image) if isinstance(image, (str, Path)) else id(image)
                if key not in rows:
                    rows[key] = len(pixels)
                    pixels.append(self.composite.encoder.pixels(image, REQUEST, f"image part {j}"))
                index.append(rows[key])
        return {
            "pixel_values": self.composite._stack(pixels),
            "image_index": torch.tensor(index, dtype=torch.long),
        }

    def _generate_batch(
        self, texts: list[str], requests: list[Messages], params: SamplingParams
    ) -> list[Generation]:
        inputs = {**self.composite.tokenize(texts, padding_side="left"), **self.unique_pixels(requests)}
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        sampling = (
            {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
            if params.temperature > 0
            else {"do_sample": False}
        )
        was_training = self.composite.training
        self.composite.eval()
        try:
            out = self.composite.generate(
                inputs,
                max_new_tokens=params.max_new_tokens,
                output_logits=True,
                return_dict_in_generate=True,
                **sampling,
            )
        finally:
            self.composite.train(was_training)
        new = out.sequences.tolist()  # with inputs_embeds, generate returns the new tokens only
        logprobs = torch.stack(out.logits, dim=1).float().log_softmax(-1)  # (B, T, V)
        top_values, top_ids = logprobs.topk(max(params.top_logprobs, 1), dim=-1)
        return [
            self._to_generation(new[b], logprobs[b], top_values[b].tolist(), top_ids[b].tolist(), params)
            for b in range(len(texts))
        ]
