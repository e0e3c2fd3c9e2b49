"""``RewardFn``: any mmreward reward on pipeline outputs, and ``MultiReward`` for several.

One plug-in serves both training paths. The *sampling path* (``score_detached``) scores finished
images without a graph and takes any reward (``mmreward.protocols.Reward``: a ``Scorer``, a judge,
a user's class), including ones whose score is not differentiable (counts, generative judges): it
calls ``score_samples`` on the 8-bit images, as a user of the pipeline would. The *gradient path*
(``__call__``, ``evaluate``) is there when the reward is a ``Scorer`` whose model offers
``tensor_inputs``: it runs the preprocessing in torch and keeps the graph, for reward
backpropagation and guidance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from mmreward.protocols import Reward, aspects_of, score_outputs, scores_of, sigmas_of
from mmreward.rewards import as_reward
from mmreward.scoring import Scorer
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
    """A reward for diffusion outputs, from any mmreward reward (or a bare reward model).

    Args:
        reward: A ``Reward`` (``score_samples``); a ``Scorer`` also gives the gradient path (its
            model's ``tensor_inputs``) and its ``transform``. A bare reward model (``collate``,
            ``forward -> HeadOutput``) is put in a ``Scorer`` on its parameters' device.
        transform: A reward transform from ``mmreward.transforms``, called as
            ``transform(score, aspects, sigma)``; it returns an object with ``.score`` and
            ``.components``. For a ``Scorer`` it replaces the scorer's own.
        batch_size: Images per forward on the gradient path's ``score`` (and for a bare model).
    """

    def __init__(
        self, reward: Reward | nn.Module, transform: Any | None = None, batch_size: int = 32
    ) -> None:
        self.reward = as_reward(reward, "RewardFn", device=_device_of(reward), batch_size=batch_size)
        self.model: nn.Module | None = None
        own_transform = None
        if isinstance(self.reward, Scorer):  # a model: raw head outputs, and maybe a gradient path
            self.model, own_transform = self.reward.model, self.reward.transform
        self.transform = transform if transform is not None else own_transform
        self.batch_size = batch_size

    @property
    def differentiable(self) -> bool:
        """Whether the gradient path is available (a model that offers ``tensor_inputs``)."""
        return self.model is not None and _tensor_inputs_of(self.model) is not None

    @property
    def aspect_names(self) -> list[str]:
        """The model's aspect names, in order (a ``Scorer``'s; other rewards name theirs per output)."""
        return self.reward.aspects if isinstance(self.reward, Scorer) else []

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
        tensor_inputs = None if self.model is None else _tensor_inputs_of(self.model)
        if tensor_inputs is None:
            raise TypeError(
                f"The reward {type(self.model or self.reward).__name__} has no tensor_inputs(images, prompts), so its "
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
        if isinstance(self.reward, Scorer):  # raw head outputs; the transform is this RewardFn's
            return self._finish(self.reward.forward(samples))
        outputs = score_outputs(self.reward, samples)
        score, aspects, sigma = scores_of(outputs), aspects_of(outputs), sigmas_of(outputs)
        if self.transform is None:
            return RewardBatch(score, aspects, sigma)
        result = self.transform(score, aspects, sigma)
        components = dict(getattr(result, "components", None) or {})
        return RewardBatch(torch.as_tensor(result.score), aspects, sigma, components)

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


def _device_of(reward: Any) -> torch.device | None:
    """The device of a bare model's parameters (None: the Scorer's default), so wrapping moves nothing."""
    if not isinstance(reward, nn.Module):
        return None
    tensor = next(iter([*reward.parameters(), *reward.buffers()]), None)
    return None if tensor is None else tensor.device


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


ImageReward = RewardFn | MultiReward
"""What the diffusers loops call on image tensors."""


def image_reward(reward: ImageReward | Reward) -> ImageReward:
    """``reward`` for image tensors: a ``RewardFn``/``MultiReward`` as it is, any other reward in a ``RewardFn``."""
    return reward if isinstance(reward, (RewardFn, MultiReward)) else RewardFn(reward)
