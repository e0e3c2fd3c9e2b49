"""``LMBackbone``: a text-only causal LM (Qwen, Llama, Mistral, ...) as a reward backbone.

A sample's prompt is the user turn and its response the assistant turn, rendered with the
tokenizer's chat template (RewardBench-style data: prompt + chosen/rejected responses). The hidden
state at the last token (InstructGPT, Ouyang et al., 2022; Skywork-Reward) or at an appended reward
token is the feature; loading, LoRA, pooling and shared-prefix scoring are shared with
``VLMBackbone`` (``modalities.backbones.causal``).

Example:
    >>> backbone = LMBackbone("Qwen/Qwen2.5-1.5B-Instruct", lora={"r": 16, "lora_alpha": 32})
"""

from __future__ import annotations

from typing import Any

import torch

from mmreward.configurable import Configurable
from mmreward.optional import require
from mmreward.types import Sample
from modalities.backbones.causal import CausalBackbone, DType
from modalities.backbones.pooling import Pooling


class LMBackbone(CausalBackbone, Configurable):
    """A transformers causal LM as a reward backbone; see the module docstring.

    Args:
        model_name_or_path: A local checkpoint folder or a hub id (``AutoModel``/``AutoTokenizer``).
        pooling: ``"last"`` or ``"reward_token"`` (see ``modalities.backbones.pooling``).
        reward_token: The special token added for ``pooling="reward_token"``.
        lora: peft ``LoraConfig`` arguments (default targets: attention and MLP projections).
        gradient_checkpointing: Recompute activations in the backward pass (less memory).
        attn_implementation: Passed to transformers.
        dtype: Weight dtype; features come out in float32.
        system_prompt: A system turn before each user turn; None adds none.
        max_length: Longest tokenized sample; a longer one raises an error naming it (truncating
            would cut the response, which is what is being judged).
        shared_prefix: Encode a prompt shared by the whole batch once.
        from_config: Build from the folder's config with random weights (set by saved models).
    """

    def __init__(
        self,
        model_name_or_path: str,
        pooling: Pooling = "last",
        reward_token: str = "<|reward|>",
        lora: dict[str, Any] | None = None,
        gradient_checkpointing: bool = False,
        attn_implementation: str | None = None,
        dtype: DType | None = None,
        system_prompt: str | None = None,
        max_length: int | None = None,
        shared_prefix: bool = True,
        from_config: bool = False,
    ) -> None:
        self.system_prompt, self.max_length = system_prompt, max_length
        super().__init__(
            model_name_or_path,
            pooling=pooling,
            reward_token=reward_token,
            lora=lora,
            gradient_checkpointing=gradient_checkpointing,
            attn_implementation=attn_implementation,
            dtype=dtype,
            shared_prefix=shared_prefix,
            from_config=from_config,
        )

    def load_preprocessor(self, path: str) -> Any:
        transformers = require("transformers", "vlm")
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        if tokenizer.pad_token is None:
            # padding positions are masked out, so any id will do; eos is always there
            tokenizer.pad_token = tokenizer.eos_token
        if not tokenizer.chat_template:
            raise ValueError(
                f"The tokenizer at {path!r} has no chat template, so prompt and response cannot be "
                "laid out as the model expects. Use an instruct/chat checkpoint or set tokenizer.chat_template."
            )
        return tokenizer

    def render(self, sample: Sample, with_response: bool = True) -> tuple[str, dict[str, list[Any]]]:
        media = [f for f in ("image", "images", "video", "source_image") if getattr(sample, f) is not None]
        if media:
            raise ValueError(
                f"{sample.where(media[0])}: LMBackbone reads text only but the sample has {media[0]!r}. "
                "Use VLMBackbone for media, or drop the field."
            )
        return self.chat_text(sample, sample.prompt, with_response), {}

    def shared_key(self, sample: Sample) -> Any:
        return sample.prompt

    def collate(self, samples: list[Sample]) -> dict[str, Any]:
        """Render and tokenize the samples; a sample longer than ``max_length`` raises an error."""
        if self.max_length is not None:
            for sample in samples:
                length = len(self.tokenizer(self.full_text(sample), add_special_tokens=False)["input_ids"])
                if length > self.max_length:
                    raise ValueError(
                        f"{sample.where('response')}: the sample is {length} tokens long, more than "
                        f"max_length={self.max_length}. Raise max_length or shorten the record."
                    )
        return super().collate(samples)

    def encode(self, texts: list[str], media: dict[str, list[Any]]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt")
        mask = batch["attention_mask"]
        # positions count real tokens only, so left padding does not shift them
        positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
        return {"input_ids": batch["input_ids"], "attention_mask": mask, "position_ids": positions}
