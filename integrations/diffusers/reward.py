"""``RewardFn``: an mmreward scorer as a reward on pipeline outputs, and ``MultiReward`` for several.

One plug-in serves both training paths. The *gradient path* (``__call__``, ``evaluate``) takes image
tensors, runs the reward model's preprocessing in torch (the backbone's ``tensor_inputs``) and keeps
the graph, for reward backpropagation and guidance. The *sampling path* (``score_detached``) scores
finished images without a graph and works with any reward model, including ones whose score is not
differentiable (counts, generative judges): it goes through the model's own ``collate`` on PIL
images, exactly as ``Scorer.score`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from mmreward.types import HeadOutput, Sample

ImageRange = Literal["signed", "unit"]
"""``"signed"``: pixels in [-1, 1] (what a VAE decodes to); ``"unit"``: pixels in [0, 1]."""


@dataclass
class RewardBatch:
    """Rewards for N images.

    Attributes:
        score: (N,) the reward (after the transform, when one is set).
        aspects: Per-aspect (N,) scores by name, when the model has aspects.
        sigma: (N,) the score's standard deviation, when the model has an uncertainty head.
        components: Named (N,) parts of the reward (a transform's parts, or each reward of a
            ``MultiReward``), for logging.
    """

    score: torch.Tensor
    aspects: dict[str, torch.Tensor] | None = None
    sigma: torch.Tensor | None = None
    components: dict[str, torch.Tensor] = field(default_factory=dict)


def _to_unit(images: torch.Tensor, image_range: ImageRange) -> torch.Tensor:
    """Pixels in [0, 1] from ``images`` in the given range."""
    if image_range == "signed":
        return (images / 2 + 0.5).clamp(0, 1)
    if image_range == "unit":
        return images.clamp(0, 1)
    raise ValueError(
        f"Unknown image_range {image_range!r}; use 'signed' for [-1, 1] pixels or 'unit' for [0, 1]."
    )


def _tensor_inputs_of(model: nn.Module) -> Any:
    """The model's (or its backbone's) differentiable ``tensor_inputs``, or None."""
    for owner in (model, getattr(model, "backbone", None)):
        method = getattr(owner, "tensor_inputs", None)
        if callable(method):
            return method
    return None


class RewardFn:
    """A reward for diffusion outputs, from an ``mmreward.Scorer`` (or a bare reward model).

    Args:
        scorer: A ``Scorer`` (its ``.model`` is used, and its ``transform`` when ``transform`` is
            None) or a reward model (``collate``, ``forward -> HeadOutput``, ``aspects``).
        transform: A reward transform from ``mmreward.transforms``, called as
            ``transform(score, aspects, sigma)``; it returns an object with ``.score`` and
            ``.components``.
        batch_size: Images per forward when scoring without a graph (``score``; on the sampling
            path a Scorer batches by its own size).
    """

    def __init__(self, scorer: Any, transform: Any | None = None, batch_size: int = 32) -> None:
        model = getattr(scorer, "model", scorer)
        if not (callable(getattr(model, "collate", None)) and callable(model)):
            raise TypeError(
                f"RewardFn needs an mmreward Scorer or reward model; got {type(scorer).__name__}. "
                "Load one with mmreward.load(path) or build a mmreward.models.RewardModel."
            )
        self.model = model
        self.scorer = scorer if model is not scorer else None
        self.transform = transform if transform is not None else getattr(scorer, "transform", None)
        self.batch_size = batch_size

    @property
    def differentiable(self) -> bool:
        """Whether the gradient path is available (the model offers ``tensor_inputs``)."""
        return _tensor_inputs_of(self.model) is not None

    @property
    def aspect_names(self) -> list[str]:
        """The model's aspect names, in order."""
        return list(getattr(self.model, "aspects", []) or [])

    def _place(self, images: torch.Tensor) -> torch.Tensor:
        param = next(iter(self.model.parameters()), None)
        return images if param is None else images.to(param.device, param.dtype)

    def evaluate(
        self, images: torch.Tensor, prompts: list[str], image_range: ImageRange = "signed"
    ) -> RewardBatch:
        """Differentiable rewards for (N, 3, H, W) images; gradients flow back to ``images``.

        Raises:
            TypeError: The model has no ``tensor_inputs`` (use ``score_detached`` and a
                sampling-based trainer such as ``PolicyGradientTrainer``).
        """
        tensor_inputs = _tensor_inputs_of(self.model)
        if tensor_inputs is None:
            raise TypeError(
                f"The reward model {type(self.model).__name__} has no tensor_inputs(images, prompts), so its "
                "reward cannot be differentiated. Use the sampling path instead: "
                "integrations.diffusers.PolicyGradientTrainer or DiffusionDPOTrainer."
            )
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"RewardFn expects (N, 3, H, W) images; got shape {tuple(images.shape)}.")
        if len(prompts) != len(images):
            raise ValueError(
                f"Got {len(images)} images but {len(prompts)} prompts; pass one prompt per image."
            )
        unit = _to_unit(images, image_range)
        return self._finish(self.model(tensor_inputs(self._place(unit), list(prompts))))

    def __call__(
        self, images: torch.Tensor, prompts: list[str], image_range: ImageRange = "signed"
    ) -> torch.Tensor:
        """(N,) differentiable rewards; see ``evaluate``."""
        return self.evaluate(images, prompts, image_range).score

    def from_latents(self, latents: torch.Tensor, prompts: list[str], vae: nn.Module) -> RewardBatch:
        """Decode latents with the pipeline's VAE and score them, differentiably."""
        images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        return self.evaluate(images, prompts, "signed")

    @torch.no_grad()
    def score(
        self, images: torch.Tensor, prompts: list[str], image_range: ImageRange = "signed"
    ) -> RewardBatch:
        """Rewards without a graph, the fastest way: whole batches through the tensor path when
        the model has one (one resize for the batch), else ``score_detached``."""
        if not self.differentiable:
            return self.score_detached(images, prompts, image_range)
        parts = [
            self.evaluate(images[i : i + self.batch_size], prompts[i : i + self.batch_size], image_range)
            for i in range(0, len(images), self.batch_size)
        ]
        return _cat_batches(parts)

    @torch.no_grad()
    def score_detached(
        self, images: torch.Tensor, prompts: list[str], image_range: ImageRange = "signed"
    ) -> RewardBatch:
        """Rewards without a graph, through the model's own ``collate`` (any reward model).

        The images are quantised to 8 bits, as a saved PNG would be, so the reward sees what a
        user of the pipeline would.
        """
        unit = _to_unit(images, image_range)
        pixels = (unit.float() * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        samples = [Sample(prompt=p, image=pixels[i], meta={"id": i}) for i, p in enumerate(prompts)]
        if self.scorer is not None:  # the Scorer batches, places and autocasts as it does for users
            return self._finish(self.scorer.forward(samples))
        outputs = []
        for start in range(0, len(pixels), self.batch_size):
            chunk = samples[start : start + self.batch_size]
            outputs.append(self.model(_to_device(self.model.collate(chunk), self.model)))
        return self._finish(_cat_outputs(outputs))

    def _finish(self, out: HeadOutput) -> RewardBatch:
        names = self.aspect_names
        aspects = None if out.aspects is None else {n: out.aspects[:, i] for i, n in enumerate(names)}
        sigma = None if out.log_sigma is None else out.log_sigma.exp()
        if self.transform is None:
            return RewardBatch(out.score, aspects, sigma)
        result = self.transform(out.score, aspects, sigma)
        components = dict(getattr(result, "components", None) or {})
        return RewardBatch(torch.as_tensor(result.score), aspects, sigma, components)


def _cat_batches(parts: list[RewardBatch]) -> RewardBatch:
    first = parts[0]
    aspects = (
        None
        if first.aspects is None
        else {n: torch.cat([p.aspects[n] for p in parts]) for n in first.aspects}
    )
    sigma = None if first.sigma is None else torch.cat([p.sigma for p in parts])
    components = {n: torch.cat([p.components[n] for p in parts]) for n in first.components}
    return RewardBatch(torch.cat([p.score for p in parts]), aspects, sigma, components)


def _to_device(inputs: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    param = next(iter(model.parameters()), None)
    if param is None:
        return inputs
    return {k: v.to(param.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def _cat_outputs(outputs: list[HeadOutput]) -> HeadOutput:
    def cat(name: str) -> torch.Tensor | None:
        parts = [getattr(o, name) for o in outputs]
        return None if parts[0] is None else torch.cat(parts)

    return HeadOutput(score=cat("score"), aspects=cat("aspects"), log_sigma=cat("log_sigma"))


class MultiReward:
    """A weighted sum of named rewards; each one is logged as a component.

    Args:
        rewards: Rewards by name (each a ``RewardFn`` with its own transform).
        weights: Weight per name; a missing name weighs 1.
    """

    def __init__(self, rewards: dict[str, RewardFn], weights: dict[str, float] | None = None) -> None:
        if not rewards:
            raise ValueError(
                "MultiReward got no rewards; pass a dict such as {'aesthetic': RewardFn(scorer)}."
            )
        unknown = set(weights or {}) - set(rewards)
        if unknown:
            raise ValueError(
                f"Weights name rewards that are not given: {sorted(unknown)}. Rewards: {sorted(rewards)}."
            )
        self.rewards = rewards
        self.weights = {name: float((weights or {}).get(name, 1.0)) for name in rewards}

    @property
    def differentiable(self) -> bool:
        """True when every reward has a gradient path."""
        return all(r.differentiable for r in self.rewards.values())

    def _combine(self, batches: dict[str, RewardBatch]) -> RewardBatch:
        total = sum(self.weights[n] * b.score for n, b in batches.items())
        components = {n: b.score for n, b in batches.items()}
        return RewardBatch(total, components=components)

    def evaluate(
        self, images: torch.Tensor, prompts: list[str], image_range: ImageRange = "signed"
    ) -> RewardBatch:
        """Differentiable weighted reward; ``components`` holds each reward's score."""
        return self._combine({n: r.evaluate(images, prompts, image_range) for n, r in self.rewards.items()})

    def __call__(
        self, images: torch.Tensor, prompts: list[str], image_range: ImageRange = "signed"
    ) -> torch.Tensor:
        """(N,) differentiable weighted reward."""
        return self.evaluate(images, prompts, image_range).score

    def score(
        self, images: torch.Tensor, prompts: list[str], image_range: ImageRange = "signed"
    ) -> RewardBatch:
        """Weighted reward without a graph, each part by its fastest path (``RewardFn.score``)."""
        return self._combine({n: r.score(images, prompts, image_range) for n, r in self.rewards.items()})

    def score_detached(
        self, images: torch.Tensor, prompts: list[str], image_range: ImageRange = "signed"
    ) -> RewardBatch:
        """Weighted reward without a graph (sampling path)."""
        return self._combine(
            {n: r.score_detached(images, prompts, image_range) for n, r in self.rewards.items()}
        )
