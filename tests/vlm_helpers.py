"""Tiny transformers models, tokenizers and processors built offline, for tests and benchmarks.

Every builder writes a complete checkpoint folder (config, weights, tokenizer, processor, chat
template) that loads back through ``from_pretrained`` exactly as a user's checkpoint does, so the
code under test takes the real path. Nothing touches a hub.

Builders are idempotent: calling one on a folder it already filled returns at once, so a
session-scoped pytest fixture can build each model once::

    @pytest.fixture(scope="session")
    def tiny_vlm(tmp_path_factory):
        return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("vlm") / "qwen")

Both tokenizers are WordPiece over a small English vocabulary (colours, shapes, counts, digits,
common words) with single characters as a fallback, so any ASCII text tokenizes, and digits are
split one per token (arithmetic worlds stay learnable).
"""

from __future__ import annotations

import contextlib
import string
from pathlib import Path

import torch

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

_WORD_TEXT = (
    "a an the and or of in on at to with is are be not no yes this that it its there what which "
    "how many one two three four five six seven eight nine ten zero left right above below top "
    "bottom next near big small large tiny red green blue yellow purple orange black white gray "
    "pink brown circle circles square squares triangle triangles star stars shape shapes image "
    "picture photo video scene object objects colour color count answer question describe "
    "repeat word words say plus minus times equals sum result correct wrong true false good bad "
    "user assistant system you are helpful please edit make turn add remove change into from "
    "cat dog car tree house sky sun moon man woman person"
)
WORDS = _WORD_TEXT.split()

# A Jinja chat template in the Qwen2-VL layout: media placeholders first in the user turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_tokenizer(extra_words: list[str] | None = None):
    """A ``PreTrainedTokenizerFast`` with the Qwen chat special tokens and ``CHAT_TEMPLATE``.

    Args:
        extra_words: Words to add to the vocabulary as whole tokens.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [c for c in string.printable if not c.isspace()]
    vocab_list = ["[UNK]", *WORDS, *(extra_words or []), *chars, *(f"##{c}" for c in chars)]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(vocab_list))}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=64))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.BertPreTokenizer(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tokenizer.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=SPECIAL_TOKENS,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_causal_lm(path: str | Path, hidden_size: int = 64, num_layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny Qwen3 causal LM with its tokenizer and chat template to ``path``.

    Qwen3 rather than Qwen2: transformers maps a ``qwen2`` checkpoint to its byte-level
    ``Qwen2Tokenizer`` whatever the folder's tokenizer says, which would drop the tiny vocabulary.

    Args:
        path: The folder to fill (created); returned as is when it already holds a model.
        hidden_size: Width of the model (4 heads, 2 key/value heads).
        num_layers: Number of decoder layers.
        seed: Seed of the random weights.

    Returns:
        ``path``, loadable with ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``.
    """
    from transformers import Qwen3Config, Qwen3ForCausalLM

    path = Path(path)
    if (path / "config.json").is_file() and (path / "tokenizer_config.json").is_file():
        return path
    tokenizer = build_tiny_tokenizer()
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden_size // 4,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_qwen2_5_vl(
    path: str | Path,
    hidden_size: int = 64,
    num_layers: int = 2,
    vision_hidden_size: int = 32,
    vision_depth: int = 2,
    min_pixels: int = 112 * 112,
    max_pixels: int = 112 * 112,
    seed: int = 0,
) -> Path:
    """Write a tiny Qwen2.5-VL (model, tokenizer, image and video processors) to ``path``.

    The defaults give about 0.2 M parameters; images are resized to between ``min_pixels`` and
    ``max_pixels`` (112 x 112 gives 16 visual tokens after the 2 x 2 merge). ``hidden_size=768, num_layers=12``
    gives a mid-size (~100 M) model for benchmarks.

    Args:
        path: The folder to fill (created); returned as is when it already holds a model.
        hidden_size: Width of the language model (its head dim is hidden_size / 4).
        num_layers: Decoder layers of the language model.
        vision_hidden_size: Width of the vision tower.
        vision_depth: Blocks of the vision tower.
        min_pixels: The image processor's smallest pixel count per image (small images are upscaled).
        max_pixels: The image processor's pixel budget per image (and per video frame).
        seed: Seed of the random weights.

    Returns:
        ``path``, loadable with ``AutoModel`` / ``AutoProcessor.from_pretrained``.
    """
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    path = Path(path)
    if (path / "config.json").is_file() and (path / "processor_config.json").is_file():
        return path
    tokenizer = build_tiny_tokenizer()
    pixels = {
        "min_pixels": min_pixels,
        "max_pixels": max_pixels,
        "patch_size": 14,
        "merge_size": 2,
        "temporal_patch_size": 2,
    }
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels),
        video_processor=Qwen2VLVideoProcessor(**pixels),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    heads = 4
    head_dim = hidden_size // heads
    quarter = head_dim // 4  # mrope sections (t, h, w) sum to head_dim / 2
    ids = {
        name: tokenizer.convert_tokens_to_ids(tok)
        for name, tok in (
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        )
    }
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": hidden_size * 2,
            "num_hidden_layers": num_layers,
            "num_attention_heads": heads,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_scaling": {
                "type": "mrope",
                "mrope_section": [head_dim // 2 - 2 * quarter, quarter, quarter],
            },
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            "depth": vision_depth,
            "hidden_size": vision_hidden_size,
            "intermediate_size": vision_hidden_size * 2,
            "num_heads": 2,
            "out_hidden_size": hidden_size,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [vision_depth - 1],
        },
        tie_word_embeddings=True,
        **ids,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@contextlib.contextmanager
def torch_threads(count: int = 1):
    """Run a block with ``count`` intra-op threads, then restore the setting.

    The learning tests train with one thread: on a shared 2-core runner, two threads per process
    oversubscribe the cores and make a few hundred small steps several times slower.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def build_tiny_qwen3_vl(path: str | Path, hidden_size: int = 64, num_layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny Qwen3-VL (16-pixel patches, interleaved multimodal RoPE, deepstack) to ``path``.

    Images are resized to 128 x 128 (16 visual tokens). Idempotent, like the other builders.

    Args:
        path: The folder to fill (created); returned as is when it already holds a model.
        hidden_size: Width of the language model (its head dim is hidden_size / 4).
        num_layers: Decoder layers of the language model.
        seed: Seed of the random weights.
    """
    from transformers import (
        Qwen2VLImageProcessorFast,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
    )
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    path = Path(path)
    if (path / "config.json").is_file() and (path / "processor_config.json").is_file():
        return path
    tokenizer = build_tiny_tokenizer()
    pixels = {
        "size": {"shortest_edge": 128 * 128, "longest_edge": 128 * 128},
        "patch_size": 16,
        "merge_size": 2,
        "temporal_patch_size": 2,
    }
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessorFast(**pixels),
        video_processor=Qwen3VLVideoProcessor(**pixels),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    head_dim = hidden_size // 4
    quarter = head_dim // 8
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in (
        ("image_token_id", "<|image_pad|>"),
        ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"),
        ("vision_end_token_id", "<|vision_end|>"),
    )}  # fmt: skip
    config = Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": hidden_size * 2,
            "num_hidden_layers": num_layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": head_dim,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [head_dim // 2 - 2 * quarter, quarter, quarter],
                "mrope_interleaved": True,
            },
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 16,
            "out_hidden_size": hidden_size,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        },
        **ids,
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
