"""Backbones: samples -> (N, feature_dim) features, for ``mmreward.models.RewardModel``.

Import them from their modules (``modalities.backbones.clip.ClipBackbone``) or from here; this
package imports nothing heavy until a backbone is built.
"""

from modalities.backbones.clip import ClipBackbone

__all__ = ["ClipBackbone"]
