"""Reading one feature per sequence out of a causal transformer's hidden states.

Shared by ``VLMBackbone`` and ``LMBackbone``. A causal model's last real token has seen the whole
input, so its hidden state summarises it: BaseReward (Zhang et al., 2025) and Skywork-VL-Reward
read the last token; HPSv3 (Ma et al., 2025) and VideoReward (Liu et al., 2025) append a dedicated
reward token and read its state, which lets the readout position be learned as an embedding.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

Pooling = Literal["last", "reward_token"]

DEFAULT_REWARD_TOKEN = "<|reward|>"
"""The special token appended for ``pooling="reward_token"`` (HPSv3, VideoReward)."""


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of each row's last attended token; works for left and right padding.

    Args:
        attention_mask: (B, S) with 1 on real tokens.
    """
    seq_len = attention_mask.shape[1]
    # the first 1 from the right, counted from the right, then turned into a left index
    from_right = attention_mask.flip(1).long().argmax(dim=1)
    return seq_len - 1 - from_right


def token_index(
    input_ids: torch.Tensor, token_id: int, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,) index of the last occurrence of ``token_id`` in each row.

    Raises:
        ValueError: A row does not contain the token (naming the rows).
    """
    hits = input_ids == token_id
    if attention_mask is not None:
        hits &= attention_mask.bool()
    missing = (~hits.any(dim=1)).nonzero().flatten().tolist()
    if missing:
        raise ValueError(
            f"The reward token (id {token_id}) is missing from batch rows {missing}. It is appended by the "
            "backbone's collate; inputs built elsewhere must end with it, or use pooling='last'."
        )
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    return torch.where(hits, positions, -1).max(dim=1).values


def pool(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    input_ids: torch.Tensor,
    pooling: Pooling,
    reward_token_id: int | None = None,
) -> torch.Tensor:
    """(B, D) features: the hidden state at the last real token or at the reward token.

    Args:
        hidden: (B, S, D) last-layer hidden states.
        attention_mask: (B, S) with 1 on real tokens.
        input_ids: (B, S) token ids (for the reward token's position).
        pooling: ``"last"`` or ``"reward_token"``.
        reward_token_id: The reward token's id, for ``pooling="reward_token"``.
    """
    if pooling == "reward_token":
        if reward_token_id is None:
            raise ValueError(
                "pooling='reward_token' needs the reward token's id; the backbone sets it on load."
            )
        index = token_index(input_ids, reward_token_id, attention_mask)
    else:
        index = last_token_index(attention_mask)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index.to(hidden.device)]


def add_reward_token(tokenizer: Any, model: Any, token: str) -> int:
    """Add ``token`` to ``tokenizer`` as a special token, growing ``model``'s embeddings if needed.

    A new embedding row starts at the mean of the existing rows (a neutral start, rather than a
    random vector far from the tokens the model knows). When the token already exists (a reloaded
    reward model) nothing changes.

    Returns:
        The token's id.
    """
    if token not in tokenizer.get_vocab():
        tokenizer.add_tokens([token], special_tokens=True)
    token_id = tokenizer.convert_tokens_to_ids(token)
    embeddings = model.get_input_embeddings()
    if token_id >= embeddings.weight.shape[0]:
        rows = embeddings.weight.shape[0]
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            weight = model.get_input_embeddings().weight
            weight[rows:] = weight[:rows].mean(dim=0, keepdim=True)
    return int(token_id)
