"""``LMBackbone``: a text-only causal LM (Qwen, Llama, Mistral, ...) as a reward backbone.

A sample's prompt is the user turn and its response the assistant turn, rendered with the
tokenizer's chat template (RewardBench-style data: prompt + chosen/rejected responses). The hidden
state at the last token (InstructGPT, Ouyang et al., 2022; Skywork-Reward) or at an appended reward
token is the feature; loading, LoRA, pooling and shared-prefix scoring are shared with
``VLMBackbone`` (``modalities.backbones.causal``).

Prefix-tree packing: the samples of a batch share a few rows with no padding between them, and
the tokens that samples share from their start are run once: a training pair's prompt (chosen
and rejected have the same user turn), a ranking's prompt, and the chat template's header (system
turn, ``<|im_start|>user``) that every sample of the batch begins with. Each row lays these tokens
out as a prefix tree; a token attends to the tokens before it in its own sample(s) only, at the
position it has there, so the features and gradients equal those of one padded row per sample
while a batch costs only its distinct prefixes (``benchmarks/bench_trl_training.py``).

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

TOKEN_CACHE_SIZE = 1_000_000
"""Most samples whose token ids ``LMBackbone`` keeps (about 100 MB at 25 tokens a sample)."""
_UNCACHED = object()


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
        shared_prefix: Encode a prompt shared by the whole batch once, and pack the samples of a
            batch in prefix-tree rows (see the module docstring); False: one padded row a sample.
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
        self._token_ids: dict[tuple[str, str | None], list[int]] = {}

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

    def render_check(self, sample: Sample) -> None:
        """Refuse a sample with media, naming its field (this backbone reads text only)."""
        media = [f for f in ("image", "images", "video", "source_image") if getattr(sample, f) is not None]
        if media:
            raise ValueError(
                f"{sample.where(media[0])}: LMBackbone reads text only but the sample has {media[0]!r}. "
                "Use VLMBackbone for media, or drop the field."
            )

    def render(self, sample: Sample, with_response: bool = True) -> tuple[str, dict[str, list[Any]]]:
        self.render_check(sample)
        return self.chat_text(sample, sample.prompt, with_response), {}

    def shared_key(self, sample: Sample) -> Any:
        return sample.prompt

    def token_ids(self, samples: list[Sample]) -> list[list[int]]:
        """Each sample's token ids (its chat rendering, tokenized), rendered and tokenized once per
        distinct (prompt, response) text: later epochs reuse them, as TRL tokenizes its dataset once
        before training. The cache holds at most ``TOKEN_CACHE_SIZE`` samples (then starts over);
        a prompt that is not a string (a list of content parts) is tokenized each time; media are
        refused first. The returned lists are shared: do not change them."""
        keys: list[Any] = []
        for i, sample in enumerate(samples):
            self.render_check(sample)
            plain = isinstance(sample.prompt, str) and isinstance(sample.response, (str, type(None)))
            keys.append((sample.prompt, sample.response) if plain else (_UNCACHED, i))
        todo = {k: s for k, s in zip(keys, samples) if k not in self._token_ids}
        fresh: dict[Any, list[int]] = {}
        if todo:
            texts = [self.full_text(s) for s in todo.values()]
            fresh = dict(zip(todo, self.tokenizer(texts, add_special_tokens=False)["input_ids"]))
            if len(self._token_ids) + len(fresh) > TOKEN_CACHE_SIZE:
                self._token_ids.clear()
            self._token_ids.update((k, v) for k, v in fresh.items() if k[0] is not _UNCACHED)
        return [fresh[k] if k[0] is _UNCACHED else self._token_ids[k] for k in keys]

    def collate(self, samples: list[Sample]) -> dict[str, Any]:
        """Render and tokenize each sample once, then lay the batch out (CPU tensors).

        Layouts, first that applies: one prompt for the whole batch -> the shared-prefix layout
        (``CausalBackbone.forward_shared``); packing saves token slots -> prefix-tree rows
        (``collate_packed``); otherwise plain padded rows. ``shared_prefix=False`` keeps plain rows.
        A sample longer than ``max_length`` raises an error naming it.
        """
        if not samples:
            raise ValueError("collate got no samples; pass at least one.")
        ids = self.token_ids(samples)
        if self.max_length is not None:
            for sample, tokens in zip(samples, ids):
                if len(tokens) > self.max_length:
                    raise ValueError(
                        f"{sample.where('response')}: the sample is {len(tokens)} tokens long, more than "
                        f"max_length={self.max_length}. Raise max_length or shorten the record."
                    )
        if self.shared_prefix and len(samples) > 1:
            keys = [self.shared_key(s) for s in samples]
            if len(set(keys)) == 1 and not self.gradient_checkpointing:
                shared = self.collate_shared_ids(ids)
                if shared is not None:
                    return shared
            if self.transformer.config._attn_implementation in PACKED_ATTENTION:
                packed = self.collate_packed(ids)
                if packed is not None:
                    return packed
        return self.pad(ids)

    def pad(self, ids: list[list[int]]) -> dict[str, torch.Tensor]:
        """Plain padded rows (on the tokenizer's padding side) with positions counting real tokens."""
        width = max(len(tokens) for tokens in ids)
        input_ids = torch.full((len(ids), width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, tokens in enumerate(ids):
            cols = (
                slice(width - len(tokens), width)
                if self.tokenizer.padding_side == "left"
                else slice(len(tokens))
            )
            input_ids[row, cols] = torch.tensor(tokens)
            mask[row, cols] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        return {"input_ids": input_ids, "attention_mask": mask, "position_ids": positions}

    def collate_shared_ids(self, ids: list[list[int]]) -> dict[str, Any] | None:
        """The shared-prefix layout of ``forward_shared``: the tokens every sample starts with, once,
        then each sample's remaining tokens. Split on the tokenized whole, so it is exact whatever the
        tokenizer does at the seam; None when the samples share no token."""
        shared = common_prefix_length(ids)
        if shared == 0:
            return None
        tails = [tokens[shared:] for tokens in ids]
        prefix = torch.tensor(ids[0][:shared])[None]  # (1, L)
        rest = self.pad(tails)
        ones = torch.ones_like(prefix)
        return {
            "prefix": {"input_ids": prefix, "attention_mask": ones},
            "continuation_ids": rest["input_ids"],
            "continuation_mask": rest["attention_mask"],
        }

    def collate_packed(self, ids: list[list[int]]) -> dict[str, Any] | None:
        """Prefix-tree rows: the batch's samples, sorted by their token ids, fill rows in turn; in a
        row, tokens that samples share from their start (a pair's prompt, the chat template's
        header of every sample) are laid out once, as the nodes of a prefix tree in depth-first
        order, and each token attends to its ancestors and itself only (``tree_attention_mask``)
        at the position it has in its sample(s). The features equal the plain layout's; None when
        packing would not save token slots.

        A row holds at most ``max(hidden size, 2 x longest sample)`` tokens: a row's attention
        grows with the square of its width, and at that width it stays a small part of a row's
        linear layers' work.
        """
        if self.reward_token_id is not None and any(t[-1] != self.reward_token_id for t in ids):
            return None  # the reward token is not last: let the plain layout find (or miss) it
        longest = max(len(tokens) for tokens in ids)
        budget = max(self.feature_dim, 2 * longest)
        rows = [PrefixTreeRow()]
        cells = [(0, 0)] * len(ids)  # (row, column) of each sample's last token
        for i in sorted(range(len(ids)), key=ids.__getitem__):  # sorted: a prefix tree in depth-first order
            if rows[-1].tokens and len(rows[-1].tokens) + rows[-1].new_tokens(ids[i]) > budget:
                rows.append(PrefixTreeRow())
            cells[i] = (len(rows) - 1, rows[-1].add(ids[i]))
        width = max(len(row.tokens) for row in rows)
        if len(rows) * width >= len(ids) * longest:
            return None
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        subtree_end = torch.arange(1, width + 1).repeat(len(rows), 1)  # padding: itself only
        for r, row in enumerate(rows):
            n = len(row.tokens)
            input_ids[r, :n] = torch.tensor(row.tokens)
            position_ids[r, :n] = torch.tensor(row.positions)
            subtree_end[r, :n] = torch.tensor(row.subtree_end())
        index = torch.tensor([r * width + c for r, c in cells], dtype=torch.long)
        return {
            "input_ids": input_ids,
            "position_ids": position_ids,
            "subtree_end": subtree_end,
            "index": index,
        }

    def forward(self, inputs: dict[str, Any]) -> torch.Tensor:
        if "subtree_end" in inputs:
            return self.forward_packed(inputs)
        return super().forward(inputs)

    def forward_packed(self, inputs: dict[str, Any]) -> torch.Tensor:
        """(N, D) float32 features of prefix-tree rows (``collate_packed``), in sample order."""
        impl = self.transformer.config._attn_implementation
        dtype = self.transformer.get_input_embeddings().weight.dtype
        mask = tree_attention_mask(inputs["subtree_end"], additive=impl == "eager", dtype=dtype)
        out = self.model(
            input_ids=inputs["input_ids"],
            attention_mask=mask,
            position_ids=inputs["position_ids"],
            use_cache=False,
        )
        hidden = out.last_hidden_state.flatten(0, 1)  # (R * T, D)
        return hidden[inputs["index"]].float()

    def encode(self, texts: list[str], media: dict[str, list[Any]]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt")
        mask = batch["attention_mask"]
        # positions count real tokens only, so left padding does not shift them
        positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
        return {"input_ids": batch["input_ids"], "attention_mask": mask, "position_ids": positions}


PACKED_ATTENTION = ("sdpa", "eager")
"""Attention implementations that take the custom 4-D mask of prefix-tree rows."""


def common_prefix_length(ids: list[list[int]]) -> int:
    """How many leading tokens all sequences share, leaving each at least one token of its own."""
    shared = min(len(tokens) for tokens in ids) - 1
    first = ids[0]
    for tokens in ids[1:]:
        shared = next((j for j in range(shared) if tokens[j] != first[j]), shared)
    return max(shared, 0)


def _common_length(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    return next((j for j in range(n) if a[j] != b[j]), n)


class PrefixTreeRow:
    """One row of ``LMBackbone.collate_packed``: the samples added to it (in sorted order) as the
    nodes of a prefix tree in depth-first order, each node one token at its depth's position."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.positions: list[int] = []
        self.ends: list[int] = []  # one past each node's subtree, set when the node is left
        self.path: list[int] = []  # the last sample's nodes, by depth
        self.last: list[int] = []  # the last sample's token ids

    def new_tokens(self, tokens: list[int]) -> int:
        """How many nodes adding ``tokens`` would take."""
        return len(tokens) - _common_length(self.last, tokens)

    def add(self, tokens: list[int]) -> int:
        """Add a sample no smaller (in list order) than the last one; its last token's column."""
        shared = _common_length(self.last, tokens)
        for node in self.path[shared:]:  # every node since these was in their subtree
            self.ends[node] = len(self.tokens)
        del self.path[shared:]
        for depth in range(shared, len(tokens)):
            self.path.append(len(self.tokens))
            self.tokens.append(tokens[depth])
            self.positions.append(depth)
            self.ends.append(0)
        self.last = tokens
        return self.path[len(tokens) - 1]

    def subtree_end(self) -> list[int]:
        """One past the last column of each node's subtree (``tree_attention_mask``)."""
        still_open = set(self.path)  # the last sample's nodes: their subtrees run to the row's end
        return [len(self.tokens) if node in still_open else end for node, end in enumerate(self.ends)]


def tree_attention_mask(
    subtree_end: torch.Tensor, additive: bool = False, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(R, 1, T, T) mask of prefix-tree rows: a token sees its ancestors and itself, the tokens
    ``j <= i`` whose subtree holds it (``i < subtree_end[j]``); padding sees only itself (no empty
    softmax row, no NaN).

    Args:
        subtree_end: (R, T) one past the last column of each node's subtree (nodes in depth-first
            order); ``column + 1`` for padding.
        additive: A float mask (0 or the dtype's minimum) for eager attention; else boolean (SDPA).
        dtype: The float mask's dtype.
    """
    width = subtree_end.shape[1]
    columns = torch.arange(width, device=subtree_end.device)
    query, key = columns[:, None], columns[None, :]  # (T, 1), (1, T)
    allowed = ((key <= query) & (query < subtree_end[:, None, :]))[:, None]  # (R, 1, T, T)
    if not additive:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=subtree_end.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )
