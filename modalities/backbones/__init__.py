"""Backbones: samples -> (N, feature_dim) features, for ``mmreward.models.RewardModel``.

Each imports its heavy library (open_clip, transformers) only when one is built.
"""

from modalities.backbones.clip import ClipBackbone
from modalities.backbones.lm import LMBackbone
from modalities.backbones.vlm import VLMBackbone

__all__ = ["ClipBackbone", "LMBackbone", "VLMBackbone"]
