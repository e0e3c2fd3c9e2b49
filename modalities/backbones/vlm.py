"""``VLMBackbone``: a chat vision-language model (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA-style) as a
reward backbone, read at its last token or at a dedicated reward token.

Each sample becomes one chat through the model's own template and processor::

    user:      [source_image] [image | images...] [video] prompt
    assistant: response            (when the sample has one)
    <|reward|>                     (pooling="reward_token" only)

so a text-to-image pair is (image, caption), an edit is (source, edited, instruction) and a
video pair is (video, prompt). This is the input of BaseReward (Zhang et al., 2025), HPSv3
(Ma et al., 2025), VideoReward (Liu et al., 2025), EditReward and Skywork-VL-Reward; the head and
loss come from ``mmreward.heads`` / ``mmreward.uncertainty``.

Example:
    >>> backbone = VLMBackbone("Qwen/Qwen2.5-VL-7B-Instruct", pooling="last", lora={"r": 16})
    >>> model = RewardModel(backbone, MLPHead(hidden_size=1024))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mmreward.configurable import Configurable
from mmreward.optional import require
from mmreward.types import Sample
from modalities.backbones.causal import CausalBackbone, DType
from modalities.backbones.pooling import Pooling
from modalities.image import load_image
from modalities.video import FrameSampler, load_video


def _media_key(media: Any) -> Any:
    """Equal for the same file path or the same object in memory."""
    return str(media) if isinstance(media, (str, Path)) else id(media)


class VLMBackbone(CausalBackbone, Configurable):
    """A transformers chat VLM as a reward backbone; see the module docstring.

    Args:
        model_name_or_path: A local checkpoint folder or a hub id (loaded with ``AutoModel`` and
            ``AutoProcessor``; a model that only registers ``AutoModelForImageTextToText`` is
            loaded with that and its base model kept).
        pooling: ``"last"`` reads the last token (BaseReward); ``"reward_token"`` appends
            ``reward_token`` and reads it (HPSv3, VideoReward).
        reward_token: The special token added to the tokenizer for ``pooling="reward_token"``.
        lora: peft ``LoraConfig`` arguments; by default LoRA targets the language model's
            attention and MLP projections only. None fine-tunes all weights.
        freeze_vision: Keep the vision encoder's weights fixed.
        gradient_checkpointing: Recompute activations in the backward pass (less memory).
        attn_implementation: Passed to transformers (``"sdpa"``, ``"eager"``, ``"flash_attention_2"``).
        dtype: Weight dtype (``"bfloat16"`` as in BaseReward); features come out in float32.
        system_prompt: A system turn put before each user turn (HPSv3 and VideoReward use an
            instruction describing the rating task); None adds none.
        frames: How video frames are sampled (default: 8 frames, uniform).
        shared_prefix: Encode a (media, prompt) turn shared by the whole batch once.
        from_config: Build from the folder's config with random weights (set by saved models).
    """

    lora_targets = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"

    def __init__(
        self,
        model_name_or_path: str,
        pooling: Pooling = "last",
        reward_token: str = "<|reward|>",
        lora: dict[str, Any] | None = None,
        freeze_vision: bool = False,
        gradient_checkpointing: bool = False,
        attn_implementation: str | None = None,
        dtype: DType | None = None,
        system_prompt: str | None = None,
        frames: FrameSampler | None = None,
        shared_prefix: bool = True,
        from_config: bool = False,
    ) -> None:
        self.system_prompt = system_prompt
        self.frames = frames or FrameSampler(mode="uniform", num_frames=8)
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
        if freeze_vision:
            self.freeze_vision_tower()

    def load_preprocessor(self, path: str) -> Any:
        transformers = require("transformers", "vlm")
        return transformers.AutoProcessor.from_pretrained(path)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {**super().preprocessing, "frames": self.frames.init_args}

    # -- inputs ---------------------------------------------------------------------------------

    def _video_frames(self, video: Any, sample: Sample) -> torch.Tensor:
        """(T, 3, H, W) uint8 frames for the video processor, sampled by ``self.frames``."""
        if isinstance(video, list):
            video = np.stack([np.asarray(load_image(f, sample, "video")) for f in video])
        if isinstance(video, torch.Tensor) and video.dtype == torch.uint8:
            video = video.float().div(255.0)
        frames = load_video(video, self.frames, sample=sample, field="video")
        return (frames.clamp(0, 1) * 255).round().to(torch.uint8)

    def sample_media(self, sample: Sample) -> tuple[list[Image.Image], list[torch.Tensor]]:
        """The sample's images (source image first) and videos, loaded, in chat order."""
        images = []
        if sample.source_image is not None:
            images.append(load_image(sample.source_image, sample, "source_image"))
        if sample.image is not None:
            images.append(load_image(sample.image, sample, "image"))
        for i, image in enumerate(sample.images or []):
            images.append(load_image(image, sample, f"images[{i}]"))
        videos = [] if sample.video is None else [self._video_frames(sample.video, sample)]
        return images, videos

    def render(self, sample: Sample, with_response: bool = True) -> tuple[str, dict[str, list[Any]]]:
        images, videos = self.sample_media(sample)
        content = [{"type": "image"} for _ in images] + [{"type": "video"} for _ in videos]
        content.append({"type": "text", "text": sample.prompt})
        return self.chat_text(sample, content, with_response), {"images": images, "videos": videos}

    def shared_key(self, sample: Sample) -> Any:
        media = (sample.source_image, sample.image, *(sample.images or []), sample.video)
        return sample.prompt, tuple(None if m is None else _media_key(m) for m in media)

    def encode(self, texts: list[str], media: dict[str, list[Any]]) -> dict[str, torch.Tensor]:
        batch = self.preprocessor(
            text=texts,
            images=media["images"] or None,
            videos=media["videos"] or None,
            padding=True,
            return_tensors="pt",
        )
        return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
