"""A tiny Stable-Diffusion-style pipeline built from configs, for tests, docs and CPU smoke runs.

No hub is needed: the UNet, VAE and text encoder come from small configs, and the tokenizer is a
character-level CLIP BPE vocabulary written to disk. The pipeline is saved with
``save_pretrained`` so it loads back through the same ``from_pretrained`` path a real checkpoint
takes. Run ``python -m integrations.diffusers.tiny --output runs/tiny-sd`` to write one.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from mmreward.optional import require


def _byte_alphabet() -> list[str]:
    """The 256 printable characters CLIP's byte-level BPE maps bytes to (GPT-2's table)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def write_char_tokenizer(directory: Path, max_length: int = 16) -> None:
    """Write a character-level ``CLIPTokenizer`` (no merges) to ``directory``."""
    transformers = require("transformers", "diffusers")
    directory.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(
        str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=max_length
    )
    tokenizer.save_pretrained(directory)


def _tiny_unet(diffusers: ModuleType, sample_size: int) -> Any:
    """A two-level UNet (8 and 16 channels) with cross-attention on 16-d text features."""
    return diffusers.UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
    )


def _tiny_vae(diffusers: ModuleType, sample_size: int) -> Any:
    """A two-level VAE with 4 latent channels; it downsamples by 2."""
    return diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=sample_size * 2,
    )


def _tiny_text_encoder(transformers: ModuleType, tokenizer: Any) -> Any:
    """A one-layer CLIP text encoder with 16-d features over the tokenizer's vocabulary."""
    config = transformers.CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    return transformers.CLIPTextModel(config)


def build_tiny_pipeline(output: str | Path, seed: int = 0, sample_size: int = 16) -> Path:
    """Build, save and return the folder of a tiny ``StableDiffusionPipeline``.

    Args:
        output: Folder to write the pipeline to (``model_index.json`` and one folder a component).
        seed: Seed for the random weights.
        sample_size: Latent side; images are twice as large (the VAE downsamples by 2).

    Returns:
        The folder, ready for ``StableDiffusionPipeline.from_pretrained``.
    """
    diffusers = require("diffusers", "diffusers")
    transformers = require("transformers", "diffusers")
    output = Path(output)
    torch.manual_seed(seed)
    unet, vae = _tiny_unet(diffusers, sample_size), _tiny_vae(diffusers, sample_size)
    write_char_tokenizer(output / "tokenizer")
    tokenizer = transformers.CLIPTokenizer.from_pretrained(output / "tokenizer")
    scheduler = diffusers.DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = diffusers.StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=_tiny_text_encoder(transformers, tokenizer),
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(output)
    return output


def main() -> None:
    """``python -m integrations.diffusers.tiny --output DIR``: write a tiny pipeline to DIR."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="folder to write the pipeline to")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(build_tiny_pipeline(args.output, seed=args.seed))


if __name__ == "__main__":
    main()
