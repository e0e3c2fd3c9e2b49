"""``CausalBackbone``: what the VLM and LM reward backbones share (loading, LoRA, pooling, saving).

A causal transformer (a chat VLM or a text LM, loaded with transformers' ``AutoModel``) reads a
sample rendered with the model's own chat template; the hidden state at the last token or at a
dedicated reward token is the feature for the head (see ``modalities.backbones.pooling``).

Shared-prefix scoring: when every sample of a batch shares the same user turn (N responses to one
question, one image), ``collate`` encodes that turn once and ``forward`` runs it through the model
once, then runs the N continuations against its key/value cache. Scores equal those of scoring each
sample in full (the same tokens at the same positions); ``VLMBackbone``/``LMBackbone`` decide when
the split is exact and fall back to full encoding otherwise.

Subclasses: ``modalities.backbones.vlm.VLMBackbone`` and ``modalities.backbones.lm.LMBackbone``.
"""

from __future__ import annotations

import abc
import inspect
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from mmreward.optional import require
from mmreward.types import Sample
from modalities.backbones.pooling import Pooling, add_reward_token, pool

DType = Literal["float32", "bfloat16", "float16", "auto"]
VISION_TOWERS = ("visual", "vision_tower", "vision_model")
"""Attribute names under which transformers VLMs keep their vision encoder."""


class CausalBackbone(nn.Module, abc.ABC):
    """Base class; see the module docstring. Subclasses set ``lora_targets`` and implement
    ``load_preprocessor``, ``render``, ``encode`` and ``split_shared``.

    Args:
        model_name_or_path: A local checkpoint folder or a hub id.
        pooling: ``"last"`` (BaseReward) or ``"reward_token"`` (HPSv3, VideoReward).
        reward_token: The token added to the tokenizer for ``pooling="reward_token"``.
        lora: peft ``LoraConfig`` arguments (e.g. ``{"r": 16, "lora_alpha": 32}``); None trains all
            weights. The head lives outside the backbone and always trains.
        gradient_checkpointing: Recompute activations in the backward pass to save memory.
        attn_implementation: Passed to transformers (``"sdpa"``, ``"eager"``, ``"flash_attention_2"``).
        dtype: Weight dtype; features are returned in float32 for the head.
        shared_prefix: Encode a user turn shared by the whole batch once (see the module docstring).
        from_config: Build the architecture from the folder's config with random weights; saved
            reward models set it, since their weights come from ``model.safetensors``.
    """

    system_prompt: str | None = None
    """A system turn before each user turn (``chat_text``); subclasses take it as an init arg."""

    lora_targets: str | list[str] = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]

    def __init__(
        self,
        model_name_or_path: str,
        pooling: Pooling = "last",
        reward_token: str = "<|reward|>",
        lora: dict[str, Any] | None = None,
        gradient_checkpointing: bool = False,
        attn_implementation: str | None = None,
        dtype: DType | None = None,
        shared_prefix: bool = True,
        from_config: bool = False,
    ) -> None:
        super().__init__()
        require("transformers", "vlm")
        self.model_name_or_path = str(model_name_or_path)
        self.pooling, self.reward_token = pooling, reward_token
        self.gradient_checkpointing, self.shared_prefix = gradient_checkpointing, shared_prefix
        self.preprocessor = self.load_preprocessor(self.model_name_or_path)
        model = self._load_model(from_config, attn_implementation, dtype)
        self.reward_token_id = (
            add_reward_token(self.tokenizer, model, reward_token) if pooling == "reward_token" else None
        )
        self.feature_dim = int(model.config.get_text_config().hidden_size)
        if gradient_checkpointing:
            self._enable_checkpointing(model)
        self.model = self._wrap_lora(model, lora) if lora is not None else model

    # -- loading --------------------------------------------------------------------------------

    @abc.abstractmethod
    def load_preprocessor(self, path: str) -> Any:
        """The tokenizer or processor of the checkpoint at ``path``."""

    @property
    def tokenizer(self) -> Any:
        """The text tokenizer (the processor's, for VLMs)."""
        return getattr(self.preprocessor, "tokenizer", self.preprocessor)

    def _load_model(
        self, from_config: bool, attn_implementation: str | None, dtype: DType | None
    ) -> nn.Module:
        transformers = require("transformers", "vlm")
        kwargs: dict[str, Any] = {}
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        if dtype is not None:
            kwargs["dtype"] = dtype if dtype == "auto" else getattr(torch, dtype)
        path = self.model_name_or_path
        if from_config:
            config = transformers.AutoConfig.from_pretrained(path)
            if kwargs.get("dtype") == "auto":
                kwargs["dtype"] = getattr(config, "dtype", None) or torch.float32
            return transformers.AutoModel.from_config(config, **kwargs)
        try:
            return transformers.AutoModel.from_pretrained(path, **kwargs)
        except ValueError as err:
            # Some chat VLMs register only a generation class; its base model holds the hidden states.
            if "Unrecognized configuration class" not in str(err):
                raise
            return transformers.AutoModelForImageTextToText.from_pretrained(path, **kwargs).base_model

    @staticmethod
    def _enable_checkpointing(model: nn.Module) -> None:
        # transformers >= 5.2 renamed gradient_checkpointing_enable; non-reentrant works with LoRA
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def _wrap_lora(self, model: nn.Module, lora: dict[str, Any]) -> nn.Module:
        peft = require("peft", "vlm")
        settings = {"target_modules": self.lora_targets, **lora}
        if self.reward_token_id is not None:
            # the reward token's embedding is new: train that row alongside the adapters
            settings.setdefault("trainable_token_indices", [self.reward_token_id])
        return peft.get_peft_model(model, peft.LoraConfig(**settings))

    @property
    def transformer(self) -> nn.Module:
        """The transformers model, without a peft wrapper."""
        get_base = getattr(self.model, "get_base_model", None)
        return get_base() if callable(get_base) else self.model

    def export_args(self, directory: Path | None, prefix: str) -> dict[str, Any]:
        """Write the config and tokenizer/processor (with any added reward token) under ``prefix``;
        the reloaded backbone builds from them, and its weights come from ``model.safetensors``."""
        if directory is None:
            return {"from_config": True}
        target = directory / prefix
        self.transformer.config.save_pretrained(target)
        self.preprocessor.save_pretrained(target)
        return {"model_name_or_path": {"asset": prefix.rstrip("/") or "."}, "from_config": True}

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {"model": self.model_name_or_path, "pooling": self.pooling, "chat_template": "the model's own"}

    # -- inputs ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def render(self, sample: Sample, with_response: bool = True) -> tuple[str, dict[str, list[Any]]]:
        """The chat-template text of ``sample`` and its media (``{"images": [...], "videos": [...]}``).

        ``with_response=False`` renders the user turn and the assistant header only (the prefix).
        """

    @abc.abstractmethod
    def encode(self, texts: list[str], media: dict[str, list[Any]]) -> dict[str, torch.Tensor]:
        """Tokenize ``texts`` (with their media) into a padded batch of model inputs."""

    @abc.abstractmethod
    def shared_key(self, sample: Sample) -> Any:
        """What must be equal for two samples to share a prefix (prompt and media)."""

    def chat_text(self, sample: Sample, user_content: Any, with_response: bool = True) -> str:
        """The chat-template text: the system turn (``self.system_prompt``, if any), the user turn
        holding ``user_content``, then the response as the assistant turn (or, with
        ``with_response=False``, the assistant header only)."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": user_content})
        if with_response and sample.response is not None:
            messages.append({"role": "assistant", "content": sample.response})
        return self.preprocessor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=not with_response
        )

    def full_render(self, sample: Sample) -> tuple[str, dict[str, list[Any]]]:
        """The text a sample is scored on (its chat rendering, then the reward token if pooled
        there) and its media, from one ``render``."""
        text, media = self.render(sample)
        return (text + self.reward_token if self.pooling == "reward_token" else text), media

    def full_text(self, sample: Sample) -> str:
        """The text a sample is scored on; see ``full_render``."""
        return self.full_render(sample)[0]

    def collate(self, samples: list[Sample]) -> dict[str, Any]:
        """Render each sample with the chat template and tokenize the batch (CPU tensors).

        When the whole batch shares one user turn (and ``shared_prefix`` is on), the result holds the
        prefix once and the continuations apart; ``forward`` handles both layouts.
        """
        if not samples:
            raise ValueError("collate got no samples; pass at least one.")
        if self.shared_prefix and len(samples) > 1 and not self.gradient_checkpointing:
            shared = self.collate_shared(samples)
            if shared is not None:
                return shared
        texts, media = [], {"images": [], "videos": []}
        for sample in samples:
            text, sample_media = self.full_render(sample)  # one render: media are loaded once
            texts.append(text)
            for kind, items in sample_media.items():
                media[kind].extend(items)
        return self.encode(texts, media)

    def collate_shared(self, samples: list[Sample]) -> dict[str, Any] | None:
        """The shared-prefix layout, or None when the samples do not share an exact prefix."""
        first = self.shared_key(samples[0])
        if any(s.response is None for s in samples) or any(self.shared_key(s) != first for s in samples[1:]):
            return None
        prefix_text, media = self.render(samples[0], with_response=False)
        continuations = []
        for sample in samples:
            text = self.full_text(sample)
            if not text.startswith(prefix_text):
                return None
            continuations.append(text[len(prefix_text) :])
        # tokenizing the two parts apart must give the tokens of the whole (no merge across the cut)
        tok = self.tokenizer
        head = tok(prefix_text, add_special_tokens=False)["input_ids"]
        tails = tok(continuations, add_special_tokens=False)["input_ids"]
        whole = tok([self.full_text(s) for s in samples], add_special_tokens=False)["input_ids"]
        if any(head + tail != ids or not tail for tail, ids in zip(tails, whole)):
            return None
        prefix = self.encode([prefix_text], media)
        width = max(len(t) for t in tails)
        ids = torch.full((len(tails), width), tok.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(tails), width), dtype=torch.long)
        for row, tail in enumerate(tails):
            ids[row, : len(tail)] = torch.tensor(tail)
            mask[row, : len(tail)] = 1
        return {"prefix": prefix, "continuation_ids": ids, "continuation_mask": mask}

    # -- features -------------------------------------------------------------------------------

    def features(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, input_ids: torch.Tensor
    ) -> torch.Tensor:
        """(N, D) float32 features pooled from (N, S, D) hidden states."""
        return pool(hidden, attention_mask, input_ids, self.pooling, self.reward_token_id).float()

    def forward(self, inputs: dict[str, Any]) -> torch.Tensor:
        if "prefix" in inputs:
            return self.forward_shared(inputs)
        out = self.model(**inputs, use_cache=False)
        return self.features(out.last_hidden_state, inputs["attention_mask"], inputs["input_ids"])

    def prefix_positions(self, prefix: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Position ids of the prefix and the position of the first token after it.

        Multimodal-RoPE models (Qwen2/2.5/3-VL) place vision tokens on a 3-D grid, so text after
        an image does not sit at index L; their ``get_rope_index`` gives both. Others count 0..L-1.
        """
        ids = prefix["input_ids"]
        rope_index = getattr(self.transformer, "get_rope_index", None)
        has_media = any(k in prefix for k in ("image_grid_thw", "video_grid_thw"))
        if rope_index is None or not has_media:
            positions = torch.arange(ids.shape[1], device=ids.device)[None]
            return positions, torch.tensor(ids.shape[1], device=ids.device)
        accepted = inspect.signature(rope_index).parameters
        kwargs = {k: v for k, v in prefix.items() if k in accepted and k != "input_ids"}
        positions, deltas = rope_index(ids, **kwargs)
        return positions, ids.shape[1] + deltas.flatten()[0]

    def forward_shared(self, inputs: dict[str, Any]) -> torch.Tensor:
        """Features of N continuations of one prefix: the prefix runs once, its cache is reused."""
        prefix, ids, mask = inputs["prefix"], inputs["continuation_ids"], inputs["continuation_mask"]
        n, width = ids.shape
        positions, start = self.prefix_positions(prefix)
        prefix_inputs = {k: v for k, v in prefix.items() if k != "position_ids"}
        out = self.model(**prefix_inputs, position_ids=positions, use_cache=True)
        cache = out.cache
        cache.batch_repeat_interleave(n)
        prefix_mask = prefix["attention_mask"].expand(n, -1)
        steps = (start + torch.arange(width, device=ids.device)).expand(n, width)  # (N, K)
        if positions.ndim == 3:  # multimodal RoPE: the same text position on every axis
            steps = steps[None].expand(positions.shape[0], n, width)
        out = self.model(
            input_ids=ids,
            attention_mask=torch.cat([prefix_mask, mask], dim=1),
            position_ids=steps,
            cache=cache,
            use_cache=True,
        )
        return self.features(out.last_hidden_state, mask, ids)

    def freeze_vision_tower(self) -> None:
        """Stop gradients to the vision encoder (its weights stay as loaded)."""
        for name in VISION_TOWERS:
            tower = getattr(self.transformer, name, None)
            if isinstance(tower, nn.Module):
                tower.requires_grad_(False)
                return
        raise ValueError(
            f"freeze_vision=True but {type(self.transformer).__name__} has none of the attributes "
            f"{', '.join(VISION_TOWERS)}. Freeze its vision encoder by hand or leave freeze_vision off."
        )
