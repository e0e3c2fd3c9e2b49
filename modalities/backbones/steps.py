"""``StepBackbone``: per-step features of a reasoning chain from any causal backbone, in one forward.

The chain's steps become the assistant turn, each step followed by a separator token
(``<|step|>``, added to the tokenizer like the reward token); the causal model reads the whole
chain once, and the hidden state at the k-th separator has seen the prompt (and media) and steps
1..k, so it is step k's feature (Math-Shepherd, Wang et al., 2024; VisualPRM, Wang et al., 2025).
Scoring every prefix apart would take one forward per step (``benchmarks/bench_prm.py``).

Wraps ``LMBackbone`` or ``VLMBackbone`` (any ``CausalBackbone``): their chat templates, media
handling, loading and saving are used as they are. ``mmreward.prm.ProcessRewardModel`` puts a head
on the features.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from mmreward.configurable import Configurable
from mmreward.types import Sample
from modalities.backbones.causal import CausalBackbone
from modalities.backbones.pooling import add_reward_token


class StepBackbone(nn.Module, Configurable):
    """One feature per reasoning step, read at the separator after each step (one forward a batch).

    Args:
        backbone: A causal backbone (``LMBackbone``, ``VLMBackbone``); its ``pooling`` is not used.
        separator: The token appended after every step, added to the tokenizer if missing (its
            embedding row starts at the mean of the others).
        joiner: Text between a separator and the next step.
        bidirectional: Also read the chain with its steps in reverse order (BiPRM, Zhang et al.,
            2025): step k's feature is then its forward feature (steps 1..k seen) concatenated with
            its feature in the reversed chain (steps k..K seen), so ``feature_dim`` doubles. The two
            passes run as one batch; a step's score then depends on the steps after it.
    """

    reads_steps = True

    def __init__(
        self,
        backbone: CausalBackbone,
        separator: str = "<|step|>",
        joiner: str = "\n",
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, CausalBackbone):
            raise TypeError(
                f"StepBackbone wraps a causal backbone (LMBackbone, VLMBackbone); got {type(backbone).__name__}."
            )
        self.backbone, self.separator, self.joiner = backbone, separator, joiner
        self.separator_id = add_reward_token(backbone.tokenizer, backbone.transformer, separator)
        self.bidirectional = bidirectional
        self.feature_dim = backbone.feature_dim * (2 if bidirectional else 1)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {
            **self.backbone.preprocessing,
            "step_separator": self.separator,
            "bidirectional": self.bidirectional,
        }

    def chain_text(self, sample: Sample) -> str:
        """The assistant turn: every step followed by the separator."""
        return self.joiner.join(step + self.separator for step in sample.steps)

    def collate(self, samples: list[Sample]) -> dict[str, Any]:
        """Render each chain as the assistant turn and tokenize the batch; ``step_counts`` (N,)."""
        if not samples:
            raise ValueError("collate got no samples; pass at least one.")
        texts, media = [], {"images": [], "videos": []}
        reversed_chains = [dataclasses.replace(s, steps=s.steps[::-1]) for s in samples if s.steps]
        for sample in samples + (reversed_chains if self.bidirectional else []):
            if not sample.steps:
                raise ValueError(
                    f"{sample.where('steps')}: a process reward model scores reasoning steps, but the "
                    "sample has none. Pass steps=[...] (one string a step)."
                )
            bad = next((i for i, s in enumerate(sample.steps) if self.separator in s), None)
            if bad is not None:
                raise ValueError(
                    f"{sample.where(f'steps.{bad}')}: the step contains the separator token "
                    f"{self.separator!r}. Remove it from the text."
                )
            text, items = self.backbone.render(dataclasses.replace(sample, response=self.chain_text(sample)))
            texts.append(text)
            for kind, values in items.items():
                media[kind].extend(values)
        inputs = self.backbone.encode(texts, media)
        counts = torch.tensor([len(s.steps) for s in samples])
        found = ((inputs["input_ids"] == self.separator_id) & inputs["attention_mask"].bool()).sum(1)
        mismatch = (found != counts.repeat(len(found) // len(counts))).nonzero().flatten().tolist()
        if mismatch:  # e.g. truncation, or a chat template that drops part of the turn
            i = mismatch[0] % len(samples)
            raise ValueError(
                f"{samples[i].where('steps')}: {int(counts[i])} steps but {int(found[i])} separators after "
                "tokenizing; the chat template or the tokenizer cut the chain. Check max length and template."
            )
        return {"model": inputs, "step_counts": counts}

    def forward(self, inputs: dict[str, Any]) -> torch.Tensor:
        """(N, S, D) float32 features at the separators, S the most steps in the batch; zeros past a
        chain's last step (``inputs["step_counts"]`` says where). (N, S, 2D) when bidirectional."""
        counts = inputs["step_counts"]
        features = self._separator_features(inputs["model"], counts.repeat(2 if self.bidirectional else 1))
        n, width = len(counts), features.shape[1]
        valid = torch.arange(width, device=features.device)[None] < counts.to(features.device)[:, None]
        if not self.bidirectional:
            return features * valid[..., None]
        # the reversed chain's k-th separator closes original step count - 1 - k
        steps = torch.arange(width, device=features.device)
        back = (counts.to(features.device)[:, None] - 1 - steps).clamp(min=0)  # (N, S)
        reverse = features[n:].gather(1, back[..., None].expand(-1, -1, features.shape[-1]))
        return torch.cat([features[:n], reverse], dim=-1) * valid[..., None]

    def _separator_features(self, model_inputs: dict[str, Any], counts: torch.Tensor) -> torch.Tensor:
        """(rows, S, D) hidden states at each row's separators, in order (garbage past ``counts``)."""
        hidden = self.backbone.model(**model_inputs, use_cache=False).last_hidden_state  # (N, L, D)
        ids, mask = model_inputs["input_ids"], model_inputs["attention_mask"].bool()
        hits = (ids == self.separator_id) & mask
        length = ids.shape[1]
        positions = torch.arange(length, device=ids.device).expand_as(ids)
        # separators first, in order; the rest after them
        order = torch.where(hits, positions, positions + length).argsort(dim=1)
        index = order[:, : int(counts.max())]  # (rows, S)
        return hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1])).float()
