"""A tiny causal language model with a word-level tokenizer, built offline: the quick-start judge.

The quick start trains a judge from scratch on a CPU in minutes, so the model is small (two
decoder layers) and its tokenizer is a word-level vocabulary read off the training texts. Every
piece keeps its leading whitespace (``" red"``, ``"\\nScore"``, one digit a token), so the
tokens of an output concatenate back to its text exactly and each score digit is one token: the
score position's probabilities can be read directly (see ``judges.parsing``).

Example:
    >>> directory = TinyJudgeLM(hidden_size=64).build("runs/tiny", corpus=["Critique: fine. Score: 5"])
    >>> backend = judges.backends.TransformersBackend(str(directory))
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from mmreward.configurable import Configurable
from mmreward.optional import require

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]

PIECE_PATTERN = r"\s*[A-Za-z]+|\s*[0-9]|\s*[^\sA-Za-z0-9]|\s+"
"""Words, single digits and single symbols, each with the whitespace before it."""

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A ChatML layout (Qwen's): ``<|im_start|>role\\ncontent<|im_end|>``."""

BASE_WORDS = [str(d) for d in range(10)] + list(".,:;!?()[]-'\"/")


def pieces(text: str) -> list[str]:
    """Split ``text`` the way the tiny tokenizer does (before the vocabulary lookup)."""
    return re.findall(PIECE_PATTERN, text)


def build_tokenizer(corpus: Iterable[str]):
    """A word-level ``PreTrainedTokenizerFast`` whose vocabulary is every piece of ``corpus``.

    Args:
        corpus: Texts (rendered prompts and targets) whose pieces make the vocabulary; digits,
            punctuation and their space-prefixed forms are always in it.

    Returns:
        The tokenizer, with ChatML special tokens, ``<|im_end|>`` as end of sequence and a chat template.
    """
    tokenizers = require("tokenizers", "vlm")
    transformers = require("transformers", "vlm")
    found = dict.fromkeys(p for text in corpus for p in pieces(text))
    base = [w for b in BASE_WORDS for w in (b, " " + b, "\n" + b)]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys([*SPECIAL_TOKENS, *base, *found]))}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Split(
        tokenizers.Regex(PIECE_PATTERN), behavior="isolated"
    )
    backend.decoder = tokenizers.decoders.Fuse()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=SPECIAL_TOKENS[:3],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


class TinyJudgeLM(Configurable):
    """A from-scratch Qwen3-style causal LM for judges that must train on a CPU in minutes.

    Qwen3 rather than Qwen2 or Llama: transformers maps those checkpoints to their own byte-level
    tokenizer classes, which would drop the word-level vocabulary on reload.

    Args:
        hidden_size: Model width (4 attention heads, 2 key/value heads).
        num_layers: Decoder layers.
        max_positions: The longest sequence, prompt and output together.
        seed: Seed of the random initial weights.
    """

    def __init__(
        self, hidden_size: int = 128, num_layers: int = 2, max_positions: int = 512, seed: int = 0
    ) -> None:
        if hidden_size % 4:
            raise ValueError(f"TinyJudgeLM hidden_size must be a multiple of 4 (4 heads); got {hidden_size}.")
        self.hidden_size, self.num_layers, self.max_positions, self.seed = (
            hidden_size,
            num_layers,
            max_positions,
            seed,
        )

    def build(self, directory: str | Path, corpus: Iterable[str]) -> Path:
        """Write the model and a tokenizer over ``corpus`` to ``directory`` (``from_pretrained`` loads it)."""
        torch = require("torch", "vlm")
        transformers = require("transformers", "vlm")
        tokenizer = build_tokenizer(corpus)
        config = transformers.Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=self.hidden_size,
            intermediate_size=self.hidden_size * 2,
            num_hidden_layers=self.num_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=self.hidden_size // 4,
            max_position_embeddings=self.max_positions,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
            tie_word_embeddings=True,
        )
        torch.manual_seed(self.seed)
        model = transformers.Qwen3ForCausalLM(config)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        return directory
