"""A tiny scene grammar and renderer: coloured shapes on a plain background, and image corruptions.

The synthetic worlds (text-to-image, image edits, video) share it: a ``Scene`` is a list of
``SceneObject`` (shape, colour, size, centre), ``render`` draws it anti-aliased (drawn at
``supersample`` times the size, then box-downsampled), and ``blur``/``noise``/``jpeg`` degrade a
render without changing what it shows. Positions are fractions of the image side, ``(0, 0)`` the
top-left corner, so one scene renders at any resolution.

Example:
    >>> rng = np.random.default_rng(0)
    >>> scene = Scene([SceneObject("circle", "red", "large", 0.3, 0.5)], background=(240, 240, 235))
    >>> image = render(scene, size=64)
    >>> blurred = blur(image, severity=0.5)
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Shape = Literal["circle", "square", "triangle", "diamond"]
Size = Literal["small", "large"]
QualityCorruption = Literal["blur", "noise", "jpeg"]

SHAPES: tuple[str, ...] = get_args(Shape)
SIZES: tuple[str, ...] = get_args(Size)
QUALITY_CORRUPTIONS: tuple[str, ...] = get_args(QualityCorruption)

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (30, 160, 60),
    "blue": (35, 75, 215),
    "yellow": (240, 200, 20),
    "purple": (135, 50, 175),
    "orange": (245, 125, 20),
}
"""Colour names and the RGB they render as: far apart in hue, all dark enough to read on a light
background."""

SIZE_FRACTION: dict[str, float] = {"small": 0.2, "large": 0.32}
"""An object's diameter as a fraction of the image side."""


@dataclass(frozen=True)
class SceneObject:
    """One shape in a scene.

    Attributes:
        shape: What is drawn (one of ``SHAPES``).
        color: A ``PALETTE`` name.
        size: ``"small"`` or ``"large"`` (``SIZE_FRACTION`` gives the diameter).
        x: Centre, as a fraction of the width from the left edge.
        y: Centre, as a fraction of the height from the top edge.
    """

    shape: Shape
    color: str
    size: Size
    x: float
    y: float

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("shape", self.shape, SHAPES),
            ("color", self.color, PALETTE),
            ("size", self.size, SIZES),
        ):
            if value not in allowed:
                raise ValueError(f"SceneObject {name} {value!r} is unknown; use one of {', '.join(allowed)}.")
        if not (0.0 <= self.x <= 1.0 and 0.0 <= self.y <= 1.0):
            raise ValueError(
                f"SceneObject centre ({self.x}, {self.y}) is outside the image; use fractions in [0, 1]."
            )

    @property
    def radius(self) -> float:
        """Half the diameter, as a fraction of the image side."""
        return SIZE_FRACTION[self.size] / 2

    def replace(self, **changes: Any) -> SceneObject:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Scene:
    """Objects on a plain background, drawn in order (later objects on top).

    Attributes:
        objects: The shapes.
        background: The background's RGB colour.
    """

    objects: tuple[SceneObject, ...] = field(default_factory=tuple)
    background: tuple[int, int, int] = (245, 245, 245)

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        object.__setattr__(self, "background", tuple(int(c) for c in self.background))

    def replace(self, **changes: Any) -> Scene:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return {"objects": [dataclasses.asdict(o) for o in self.objects], "background": list(self.background)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scene:
        """The inverse of ``to_dict``."""
        return cls(tuple(SceneObject(**o) for o in data["objects"]), tuple(data["background"]))


def light_background(rng: np.random.Generator) -> tuple[int, int, int]:
    """A random light, low-saturation background colour (each channel in [215, 250])."""
    return tuple(int(c) for c in rng.integers(215, 251, size=3))


def random_position(rng: np.random.Generator, radius: float) -> tuple[float, float]:
    """A centre that keeps a circle of ``radius`` (image fractions) inside the frame."""
    margin = radius + 0.02
    return float(rng.uniform(margin, 1 - margin)), float(rng.uniform(margin, 1 - margin))


def free_position(
    rng: np.random.Generator,
    radius: float,
    taken: list[tuple[float, float, float]],
    gap: float = 0.03,
    tries: int = 200,
) -> tuple[float, float]:
    """A centre whose circle of ``radius`` keeps ``gap`` clear of every ``(x, y, radius)`` in ``taken``.

    Raises:
        ValueError: when no such place is found in ``tries`` draws (too many or too large objects).
    """
    for _ in range(tries):
        x, y = random_position(rng, radius)
        if all((x - tx) ** 2 + (y - ty) ** 2 >= (radius + tr + gap) ** 2 for tx, ty, tr in taken):
            return x, y
    raise ValueError(
        f"No free place for an object of radius {radius:.2f} beside {len(taken)} others; use fewer or smaller objects."
    )


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":  # same area as the circle of radius r
        h = r * 0.886
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":  # equilateral, pointing up, centred on its centroid
        R = r * 1.2
        return [(cx, cy - R), (cx + R * 0.866, cy + R / 2), (cx - R * 0.866, cy + R / 2)]
    if shape == "diamond":
        R = r * 1.15
        return [(cx, cy - R), (cx + R, cy), (cx, cy + R), (cx - R, cy)]
    raise AssertionError(shape)


def render(scene: Scene, size: int = 64, supersample: int = 4) -> Image.Image:
    """Draw ``scene`` as a ``size`` x ``size`` RGB image.

    Args:
        scene: What to draw.
        size: Output side in pixels.
        supersample: Draw at this multiple of ``size`` and box-downsample: anti-aliasing.
    """
    side = size * supersample
    image = Image.new("RGB", (side, side), scene.background)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        cx, cy, r = obj.x * side, obj.y * side, obj.radius * side
        fill = PALETTE[obj.color]
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            draw.polygon(_polygon(obj.shape, cx, cy, r), fill=fill)
    return image.resize((size, size), Image.Resampling.BOX) if supersample > 1 else image


def _check_severity(severity: float) -> None:
    if not 0.0 < severity <= 1.0:
        raise ValueError(f"Corruption severity must be in (0, 1]; got {severity}.")


def blur(image: Image.Image, severity: float) -> Image.Image:
    """Gaussian blur; at severity 1 the radius is 1/16 of the image side (4 px at 64 px)."""
    _check_severity(severity)
    return image.filter(ImageFilter.GaussianBlur(radius=severity * image.width / 16))


def noise(image: Image.Image, severity: float, rng: np.random.Generator) -> Image.Image:
    """Additive Gaussian pixel noise; at severity 1 its standard deviation is 64 grey levels."""
    _check_severity(severity)
    pixels = np.asarray(image, dtype=np.float32)
    noisy = pixels + rng.normal(0.0, 64.0 * severity, size=pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


def jpeg(image: Image.Image, severity: float) -> Image.Image:
    """JPEG compression artefacts; severity 1 is quality 3, severity near 0 quality 50."""
    _check_severity(severity)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=max(1, round(50 - 47 * severity)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def degrade(
    image: Image.Image, kind: QualityCorruption, severity: float, rng: np.random.Generator
) -> Image.Image:
    """Apply the quality corruption named ``kind`` (``"blur"``, ``"noise"`` or ``"jpeg"``)."""
    if kind == "blur":
        return blur(image, severity)
    if kind == "noise":
        return noise(image, severity, rng)
    if kind == "jpeg":
        return jpeg(image, severity)
    raise ValueError(f"Unknown quality corruption {kind!r}; use one of {', '.join(QUALITY_CORRUPTIONS)}.")
