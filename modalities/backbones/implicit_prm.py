"""``ImplicitPRM``: process rewards from a policy and a reference LM, trained on outcome labels only.

"Free Process Rewards without Process Labels" (Yuan et al., 2024): parameterise the outcome reward
as ``beta * log pi(y) / pi_ref(y)`` and train it on outcome (final-answer) labels; the same log
ratio summed over each step's tokens is that step's process reward, and the running sum ``q_k`` is
the logit of success after step k (``mmreward.prm.implicit_step_rewards``). Both models read the
chain once: all step rewards come from one forward of each.

The model implements the reward-model protocol directly (``collate``, ``forward -> HeadOutput`` with
``steps`` = q_k), so ``Scorer`` returns ``RewardOutput.steps`` = sigmoid(q_k) and the aggregate.
Train with ``mmreward.prm.outcome_bce_loss(out.steps[range(N), last], outcome)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmreward.configurable import Configurable
from mmreward.optional import require
from mmreward.prm import Aggregation, aggregate_step_logits, implicit_step_rewards, step_mask
from mmreward.types import HeadOutput, Sample


class ImplicitPRM(nn.Module, Configurable):
    """Policy and frozen reference causal LMs whose log ratio scores every step; see the module docstring.

    Args:
        model_name_or_path: The policy: a local folder or hub id (``AutoModelForCausalLM``, with a
            chat template in its tokenizer).
        reference_name_or_path: The reference model; default the policy's starting weights.
        beta: The KL coefficient (Yuan et al., 2024 use 0.05).
        aggregation: How the chain's score is made from the step probabilities sigmoid(q_k).
        joiner: Text between steps in the assistant turn.
        name: A model name for provenance.
        from_config: Build both from the folder's config with random weights (set by saved models).
    """

    reads_steps = True
    aspects: list[str] = []

    def __init__(
        self,
        model_name_or_path: str,
        reference_name_or_path: str | None = None,
        beta: float = 0.05,
        aggregation: Aggregation = "min",
        joiner: str = "\n",
        name: str = "implicit-prm",
        from_config: bool = False,
    ) -> None:
        super().__init__()
        transformers = require("transformers", "vlm")
        self.model_name_or_path = str(model_name_or_path)
        self.beta, self.aggregation, self.joiner, self.name = beta, aggregation, joiner, name
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_name_or_path)
        if not self.tokenizer.chat_template:
            raise ValueError(
                f"The tokenizer at {self.model_name_or_path!r} has no chat template; use a chat model."
            )
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

        def load(path: str) -> nn.Module:
            auto = transformers.AutoModelForCausalLM
            if from_config:
                return auto.from_config(transformers.AutoConfig.from_pretrained(path))
            return auto.from_pretrained(path)

        self.policy = load(self.model_name_or_path)
        self.reference = load(str(reference_name_or_path or self.model_name_or_path)).requires_grad_(False)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {"model": self.model_name_or_path, "beta": self.beta, "aggregation": self.aggregation}

    def export_args(self, directory: Path | None, prefix: str) -> dict[str, Any]:
        """Write the config and tokenizer under ``prefix``; both models' weights are in ``model.safetensors``."""
        if directory is None:
            return {"from_config": True, "reference_name_or_path": None}
        target = directory / prefix
        self.policy.config.save_pretrained(target)
        self.tokenizer.save_pretrained(target)
        asset = {"asset": prefix.rstrip("/") or "."}
        return {"model_name_or_path": asset, "reference_name_or_path": None, "from_config": True}

    def train(self, mode: bool = True) -> ImplicitPRM:
        super().train(mode)
        self.reference.eval()  # frozen: no dropout in the reference
        return self

    def _render(self, sample: Sample) -> tuple[str, list[tuple[int, int]]]:
        """The chat text and the character span of each step in it."""
        if not sample.steps:
            raise ValueError(
                f"{sample.where('steps')}: the implicit PRM scores reasoning steps; the sample has none."
            )
        response = self.joiner.join(sample.steps)
        messages = [{"role": "user", "content": sample.prompt}, {"role": "assistant", "content": response}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False)
        start = text.rfind(response)
        if start < 0:
            raise ValueError(
                f"{sample.where('steps')}: the chat template changed the steps' text; cannot find them."
            )
        spans, position = [], start
        for step in sample.steps:
            spans.append((position, position + len(step)))
            position += len(step) + len(self.joiner)
        return text, spans

    def collate(self, samples: list[Sample]) -> dict[str, Any]:
        """Tokenize the chains; ``step_ids`` (N, L) gives each token's step (-1: not a step token)."""
        rendered = [self._render(s) for s in samples]
        batch = self.tokenizer(
            [t for t, _ in rendered],
            padding=True,
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        offsets = batch.pop("offset_mapping")  # (N, L, 2)
        step_ids = torch.full(batch["input_ids"].shape, -1, dtype=torch.long)
        for row, (_, spans) in enumerate(rendered):
            begin = offsets[row, :, 0]
            real = batch["attention_mask"][row].bool() & (offsets[row, :, 1] > begin)
            for k, (lo, hi) in enumerate(spans):
                step_ids[row, real & (begin >= lo) & (begin < hi)] = k
        counts = torch.tensor([len(s.steps) for s in samples])
        return {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "step_ids": step_ids,
            "step_counts": counts,
        }

    @staticmethod
    def _token_log_probs(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, L) log-probability of each token given those before it (0 for the first)."""
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        return torch.cat([torch.zeros_like(logp[:, :1]), logp], dim=1)

    def forward(self, inputs: dict[str, Any]) -> HeadOutput:
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        policy = self._token_log_probs(self.policy, ids, mask)
        with torch.no_grad():
            reference = self._token_log_probs(self.reference, ids, mask)
        counts = inputs["step_counts"].to(ids.device)
        width = int(counts.max())
        q = implicit_step_rewards(policy - reference, inputs["step_ids"], width, self.beta)  # (N, S)
        valid = step_mask(counts, width)
        score = aggregate_step_logits(q, valid, self.aggregation)
        return HeadOutput(score=score, steps=q.masked_fill(~valid, float("nan")))
