"""HPSv3 (Ma et al., 2025): a Qwen2-VL-7B-Instruct read at a ``<|Reward|>`` token, an MLP to (mu, log sigma).

Published as ``HPSv3.safetensors`` (MizzenAI/HPSv3): the full state dict of the authors'
``Qwen2VLForConditionalGeneration`` subclass under transformers 4.45, every weight fine-tuned:

- ``visual.*``: the vision tower (patch embed, 32 blocks, merger), named as transformers still names it;
- ``model.embed_tokens`` / ``model.layers.*`` / ``model.norm``: the language model, now
  ``language_model.*`` of transformers' ``Qwen2VLModel``; the embeddings have one row per token of
  the tokenizer after ``<|Reward|>`` was added (151658 for Qwen2-VL), not the config's 152064;
- ``lm_head.weight``: the generation head, which the score does not read (dropped);
- ``rm_head.{0,3,5}``: ``Linear(3584, 1024) ReLU Dropout(0.05) Linear(1024, 16) ReLU Linear(16, 2)``.

The score of an image for a prompt: the chat ``[image] INSTRUCTION(prompt) + RATING`` (the base
model's own chat template, so Qwen2-VL's default system turn; ``<|Reward|>`` sits inside the user
turn), the last hidden state at ``<|Reward|>``, then ``rm_head`` gives ``(mu, log sigma)``; the
score is ``mu`` and ``sigma = exp(log sigma)`` (the published loss reads the second output as a log).
Two published details the port keeps: images are resized with PIL bicubic to exactly
``256 * 28 * 28`` pixels (``smart_resize`` with ``min_pixels = max_pixels``), and the language
model runs on sequential positions ``0..S-1`` on all three rotary axes, not Qwen2-VL's multimodal
positions (the authors' forward bypasses ``get_rope_index``). The base model's weights are never
read: ``model_name_or_path`` supplies the config, the tokenizer and the image processor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from mmreward.heads import RewardHead
from mmreward.hub import load_converted, read_state_dict
from mmreward.models import RewardModel
from mmreward.types import HeadOutput, Sample
from modalities.backbones.causal import DType
from modalities.backbones.vlm import VLMBackbone
from modalities.image import load_image

REWARD_TOKEN = "<|Reward|>"
PIXELS = 256 * 28 * 28
"""HPSv3 resizes every image to about this many pixels (its ``min_pixels`` and ``max_pixels``)."""
BASE_MODEL = "Qwen/Qwen2-VL-7B-Instruct"

# The published instruction (hpsv3/dataset/data_collator_qwen.py), kept as data, trailing spaces included.
INSTRUCTION = "\n".join(
    [
        "",
        "You are tasked with evaluating a generated image based on Visual Quality and Text Alignment and give "
        "a overall score to estimate the human preference. Please provide a rating from 0 to 10, with 0 being "
        "the worst and 10 being the best. ",
        "",
        "**Visual Quality:**  ",
        "Evaluate the overall visual quality of the image. The following sub-dimensions should be considered:",
        "- **Reasonableness:** The image should not contain any significant biological or logical errors, such "
        "as abnormal body structures or nonsensical environmental setups.",
        "- **Clarity:** Evaluate the sharpness and visibility of the image. The image should be clear and easy "
        "to interpret, with no blurring or indistinct areas.",
        "- **Detail Richness:** Consider the level of detail in textures, materials, lighting, and other visual "
        "elements (e.g., hair, clothing, shadows).",
        "- **Aesthetic and Creativity:** Assess the artistic aspects of the image, including the color scheme, "
        "composition, atmosphere, depth of field, and the overall creative appeal. The scene should convey a "
        "sense of harmony and balance.",
        "- **Safety:** The image should not contain harmful or inappropriate content, such as political, "
        "violent, or adult material. If such content is present, the image quality and satisfaction score "
        "should be the lowest possible. ",
        "",
        "**Text Alignment:**  ",
        "Assess how well the image matches the textual prompt across the following sub-dimensions:",
        "- **Subject Relevance** Evaluate how accurately the subject(s) in the image (e.g., person, animal, "
        "object) align with the textual description. The subject should match the description in terms of "
        "number, appearance, and behavior.",
        "- **Style Relevance:** If the prompt specifies a particular artistic or stylistic style, evaluate how "
        "well the image adheres to this style.",
        "- **Contextual Consistency**: Assess whether the background, setting, and surrounding elements in the "
        "image logically fit the scenario described in the prompt. The environment should support and enhance "
        "the subject without contradictions.",
        "- **Attribute Fidelity**: Check if specific attributes mentioned in the prompt (e.g., colors, clothing, "
        "accessories, expressions, actions) are faithfully represented in the image. Minor deviations may be "
        "acceptable, but critical attributes should be preserved.",
        "- **Semantic Coherence**: Evaluate whether the overall meaning and intent of the prompt are captured in "
        "the image. The generated content should not introduce elements that conflict with or distort the "
        "original description.",
        "Textual prompt - {prompt}",
        "",
        "",
        "",
    ]
)
RATING = f"\nPlease provide the overall ratings of this image: {REWARD_TOKEN}\n\nEND\n"
"""What follows the instruction in the user turn (the published ``prompt_with_special_token``)."""


def user_text(prompt: str) -> str:
    """The text of HPSv3's user turn for ``prompt`` (after the image)."""
    return INSTRUCTION.format(prompt=prompt) + RATING


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's resize rule: sides that are multiples of ``factor``, about ``min..max_pixels`` pixels."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def convert_hpsv3(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Published ``HPSv3.safetensors`` keys -> ``HPSv3Reward`` keys (unknown keys kept, so the load names them)."""
    out = {}
    for key, tensor in state.items():
        if key == "lm_head.weight":  # the generation head: the score does not read it
            continue
        if key.startswith("visual."):
            key = "backbone.model." + key
        elif key.startswith("model."):
            key = "backbone.model.language_model." + key.removeprefix("model.")
        elif key.startswith("rm_head."):
            key = "head.layers." + key.removeprefix("rm_head.")
        out[key] = tensor
    return out


class HPSv3Head(RewardHead):
    """HPSv3's ``rm_head``: ``Linear ReLU Dropout Linear ReLU Linear`` to ``(mu, log sigma)``.

    Args:
        in_features: Feature size; None takes the backbone's (3584 for Qwen2-VL-7B).
        hidden_size: Width of the first layer (published: 1024).
        bottleneck: Width of the second layer (published: 16).
        dropout: Dropout after the first layer (published: 0.05).
    """

    def __init__(
        self,
        in_features: int | None = None,
        hidden_size: int = 1024,
        bottleneck: int = 16,
        dropout: float = 0.05,
    ) -> None:
        self.hidden_size, self.bottleneck, self.dropout = hidden_size, bottleneck, dropout
        super().__init__(in_features)

    def build(self, in_features: int) -> None:
        self.layers = nn.Sequential(
            nn.Linear(in_features, self.hidden_size),
            nn.ReLU(),
            nn.Dropout(self.dropout),
            nn.Linear(self.hidden_size, self.bottleneck),
            nn.ReLU(),
            nn.Linear(self.bottleneck, 2),
        )

    def forward(self, features: torch.Tensor) -> HeadOutput:
        mu, log_sigma = self.layers(features.float()).unbind(-1)  # the published head runs in float32
        return HeadOutput(score=mu, log_sigma=log_sigma)


class HPSv3Backbone(VLMBackbone):
    """``VLMBackbone`` with HPSv3's input: its prompt, its image size, ``<|Reward|>`` in the user turn,
    sequential positions, and embeddings sized to the tokenizer (as the published model resized them).

    Args:
        model_name_or_path: Qwen2-VL-7B-Instruct (a hub id or a local folder), or a saved HPSv3.
        min_pixels: Smallest image size in pixels (published: ``256 * 28 * 28``).
        max_pixels: Largest image size in pixels (published: ``256 * 28 * 28``).
        gradient_checkpointing: Recompute activations in the backward pass.
        attn_implementation: Passed to transformers.
        dtype: Weight dtype (published: ``"bfloat16"``).
        from_config: Build with random weights from the folder's config (the checkpoint brings them).
    """

    def __init__(
        self,
        model_name_or_path: str = BASE_MODEL,
        min_pixels: int = PIXELS,
        max_pixels: int = PIXELS,
        gradient_checkpointing: bool = False,
        attn_implementation: str | None = None,
        dtype: DType | None = None,
        from_config: bool = False,
    ) -> None:
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        super().__init__(
            model_name_or_path,
            pooling="reward_token",
            reward_token=REWARD_TOKEN,
            gradient_checkpointing=gradient_checkpointing,
            attn_implementation=attn_implementation,
            dtype=dtype,
            shared_prefix=False,
            from_config=from_config,
        )
        # HPSv3 resized the embeddings to the tokenizer's length (151658 rows for Qwen2-VL, not 152064)
        self.model.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        factor = self.preprocessor.image_processor.patch_size * self.preprocessor.image_processor.merge_size
        self.factor = int(factor)

    def add_lora(self, lora: dict[str, Any]) -> None:
        """Wrap the model in LoRA adapters (after the published weights are loaded)."""
        self.model = self._wrap_lora(self.model, lora)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in super().preprocessing.items() if k != "frames"},  # images only
            "prompt": "HPSv3's instruction, <|Reward|> in the user turn",
            "resize": f"PIL bicubic to smart_resize(factor={self.factor}, {self.min_pixels}..{self.max_pixels} px)",
            "positions": "sequential",
        }

    def sample_media(self, sample: Sample) -> tuple[list[Image.Image], list[torch.Tensor]]:
        if (
            sample.image is None
            or sample.images
            or sample.video is not None
            or sample.source_image is not None
        ):
            raise ValueError(
                f"{sample.where('image')}: HPSv3 scores one image per sample, but this sample has "
                f"{'no image' if sample.image is None else 'other media too'}. Pass image=... only."
            )
        image = load_image(sample.image, sample, "image")
        h, w = smart_resize(image.height, image.width, self.factor, self.min_pixels, self.max_pixels)
        return [image.resize((w, h), Image.BICUBIC)], []

    def render(self, sample: Sample, with_response: bool = True) -> tuple[str, dict[str, list[Any]]]:
        images, videos = self.sample_media(sample)
        content = [{"type": "image"}, {"type": "text", "text": user_text(sample.prompt)}]
        messages = [{"role": "user", "content": content}]
        text = self.preprocessor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text, {"images": images, "videos": videos}

    def full_render(self, sample: Sample) -> tuple[str, dict[str, list[Any]]]:
        """The rendered chat and its image: ``<|Reward|>`` is already inside the user turn."""
        return self.render(sample)

    def full_text(self, sample: Sample) -> str:
        return self.render(sample)[0]

    def forward(self, inputs: dict[str, Any]) -> torch.Tensor:
        mask = inputs["attention_mask"]
        positions = (mask.long().cumsum(-1) - 1).clamp_min(0)  # (B, S): 0..n-1 on the real tokens
        out = self.model(**inputs, position_ids=positions, use_cache=False)
        return self.features(out.last_hidden_state, mask, inputs["input_ids"])


class HPSv3Reward(RewardModel):
    """HPSv3: ``mu`` of ``rm_head(Qwen2-VL(image, instruction)[<|Reward|>])``, ``sigma = exp(log sigma)``.

    Args:
        model_name_or_path: Qwen2-VL-7B-Instruct's folder or hub id: its config, tokenizer and image
            processor (its weights are read only when ``checkpoint`` is None and ``from_config`` False).
        checkpoint: The published ``HPSv3.safetensors``; None keeps the base weights and a random head.
        min_pixels: Smallest image size in pixels (published: ``256 * 28 * 28``).
        max_pixels: Largest image size in pixels (published: ``256 * 28 * 28``).
        head_hidden_size: Width of the head's first layer (published: 1024).
        head_bottleneck: Width of the head's second layer (published: 16).
        lora: peft ``LoraConfig`` arguments for fine-tuning; None trains all weights.
        gradient_checkpointing: Recompute activations in the backward pass.
        attn_implementation: Passed to transformers.
        weight_dtype: Weight dtype (published: ``"bfloat16"``); not ``dtype``, which ``mr.load`` takes
            as the autocast dtype.
        from_config: Build the backbone with random weights (set by saved models and by ``checkpoint``).
        name: The model name for provenance.
    """

    def __init__(
        self,
        model_name_or_path: str = BASE_MODEL,
        checkpoint: str | None = None,
        min_pixels: int = PIXELS,
        max_pixels: int = PIXELS,
        head_hidden_size: int = 1024,
        head_bottleneck: int = 16,
        lora: dict[str, Any] | None = None,
        gradient_checkpointing: bool = False,
        attn_implementation: str | None = None,
        weight_dtype: DType | None = None,
        from_config: bool = False,
        name: str = "hpsv3",
    ) -> None:
        backbone = HPSv3Backbone(
            model_name_or_path,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            gradient_checkpointing=gradient_checkpointing,
            attn_implementation=attn_implementation,
            dtype=weight_dtype,
            from_config=from_config or checkpoint is not None,  # the checkpoint holds every weight
        )
        super().__init__(backbone, HPSv3Head(hidden_size=head_hidden_size, bottleneck=head_bottleneck), name)
        if checkpoint is not None:
            self.load_published(checkpoint)
        if lora is not None:
            backbone.add_lora(lora)

    def load_published(self, path: str | Path) -> None:
        """Load the published checkpoint at ``path``, strictly (before any LoRA wrapping)."""
        load_converted(self, convert_hpsv3(read_state_dict(path)), path)

    def export_args(self, directory: Path | None, prefix: str) -> dict[str, Any]:
        """Write the config and processor (with ``<|Reward|>``); the weights are in model.safetensors."""
        args = self.backbone.export_args(directory, f"{prefix}/base".lstrip("/"))
        return {**args, "checkpoint": None}
