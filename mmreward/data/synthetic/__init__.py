"""Synthetic worlds: generated data with known labels, for training and testing reward models.

``scenes`` is the shared scene grammar and renderer; ``t2i`` the text-to-image world; ``text``
a text world for language reward models.
"""

from mmreward.data.synthetic.scenes import (
    PALETTE,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    blur,
    degrade,
    jpeg,
    noise,
    render,
)
from mmreward.data.synthetic.t2i import (
    ALIGNMENT_CORRUPTIONS,
    Candidate,
    Grammar,
    ObjectGroup,
    PromptSpec,
    T2IWorld,
    applicable_corruptions,
    corrupt,
    make_candidates,
    sample_prompt,
)
from mmreward.data.synthetic.text import EchoWorld

__all__ = [
    "ALIGNMENT_CORRUPTIONS",
    "PALETTE",
    "SHAPES",
    "SIZES",
    "Candidate",
    "EchoWorld",
    "Grammar",
    "ObjectGroup",
    "PromptSpec",
    "Scene",
    "SceneObject",
    "T2IWorld",
    "applicable_corruptions",
    "blur",
    "corrupt",
    "degrade",
    "jpeg",
    "make_candidates",
    "noise",
    "render",
    "sample_prompt",
]
