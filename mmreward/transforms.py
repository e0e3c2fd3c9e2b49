"""Reward transforms: what a raw reward becomes before an RL loop or a ranking uses it.

Each transform is a ``Configurable`` callable ``(score, aspects, sigma) -> TransformResult``:

- ``score``: (N,) the reward so far; ``aspects``: ``{name: (N,)}`` per-aspect scores or None;
  ``sigma``: (N,) the score's standard deviation or None (uncertainty heads).
- ``TransformResult.score`` is the new reward; ``.components`` names the intermediate values, which
  the ``Scorer`` writes into each ``RewardOutput.provenance["components"]``.

``Chain`` composes transforms; everything round-trips through ``to_config`` / ``instantiate`` (and so
through ``config.json`` when a ``Scorer`` saves them). Statistics that a transform needs (a mean, a
reference reward) are fit once on held-out scores with the class's ``fit`` and stored as init args.

Process rewards (a PRM's per-step scores, ``RewardOutput.steps``) are aggregated by
``aggregate_steps`` and shaped for RL by ``ProcessClip``, ``ProcessDelta`` and ``SuccessGated``:
``ProcessShaping`` objects that turn step scores (and outcome rewards) into per-step rewards and a
return per chain, so a policy cannot farm the PRM by adding steps or by reasoning that fails.

Example:
    >>> transform = Chain([Gate("alignment", threshold=0.0), AspectSum(references={"alignment": 0.3, "quality": 0.1})])
    >>> result = transform(scores, aspects)
"""

from __future__ import annotations

import abc
import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from mmreward.configurable import Configurable

Aspects = dict[str, torch.Tensor] | None


@dataclass
class TransformResult:
    """A transformed reward and the named values it was built from.

    Attributes:
        score: (N,) the transformed reward.
        components: ``{name: (N,)}`` intermediate values, for provenance and logging.
    """

    score: torch.Tensor
    components: dict[str, torch.Tensor] = field(default_factory=dict)


class RewardTransform(Configurable, abc.ABC):
    """Base class: subclasses implement ``__call__(score, aspects=None, sigma=None)``."""

    @abc.abstractmethod
    def __call__(
        self, score: torch.Tensor, aspects: Aspects = None, sigma: torch.Tensor | None = None
    ) -> TransformResult:
        """The transformed reward and the components it was built from."""

    def _aspect(self, aspects: Aspects, name: str) -> torch.Tensor:
        if not aspects or name not in aspects:
            have = ", ".join(aspects) if aspects else "none"
            raise ValueError(
                f"{type(self).__name__} needs the aspect {name!r}, but the model gives {have}. "
                "Use a multi-aspect head or name one of its aspects."
            )
        return aspects[name]


def _scores(values: Sequence[float] | torch.Tensor) -> torch.Tensor:
    scores = torch.as_tensor(values, dtype=torch.float64).flatten()
    if scores.numel() < 2 or not torch.isfinite(scores).all():
        raise ValueError(
            f"Fitting needs at least 2 finite scores; got {scores.numel()} (finite: {bool(torch.isfinite(scores).all())})."
        )
    return scores


class ZNormalize(RewardTransform):
    """``(score - mean) / std`` with statistics stored from a reference set (``ZNormalize.fit``).

    Args:
        mean: The reference mean.
        std: The reference standard deviation (> 0).
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        if not std > 0:
            raise ValueError(f"ZNormalize std must be positive; got {std}. Fit it on scores that vary.")
        self.mean, self.std = float(mean), float(std)

    @classmethod
    def fit(cls, scores: Sequence[float] | torch.Tensor) -> ZNormalize:
        """Store the mean and standard deviation of reference ``scores``."""
        values = _scores(scores)
        return cls(mean=float(values.mean()), std=float(values.std()))

    def __call__(
        self, score: torch.Tensor, aspects: Aspects = None, sigma: torch.Tensor | None = None
    ) -> TransformResult:
        z = (score - self.mean) / self.std
        return TransformResult(z, {"z": z})


class LogSigmoid(RewardTransform):
    """``log sigmoid(score - reference)``: the transform of Wang et al. (2024), "Transforming and
    Combining Rewards for Aligning Large Language Models".

    Gains above the reference saturate (no reward hacking by over-optimising what is already
    good) while shortfalls keep a steep penalty; ``reference`` is the reward of an acceptable
    response (the paper uses the SFT model's, or a high quantile of held-out rewards: ``fit``).

    Args:
        reference: The reward subtracted before the log-sigmoid.
    """

    def __init__(self, reference: float = 0.0) -> None:
        self.reference = float(reference)

    @classmethod
    def fit(cls, scores: Sequence[float] | torch.Tensor, quantile: float = 0.85) -> LogSigmoid:
        """Take ``reference`` as the ``quantile`` of reference scores (0.85 as in Wang et al., 2024)."""
        return cls(reference=float(torch.quantile(_scores(scores), quantile)))

    def __call__(
        self, score: torch.Tensor, aspects: Aspects = None, sigma: torch.Tensor | None = None
    ) -> TransformResult:
        out = F.logsigmoid(score - self.reference)
        return TransformResult(out, {"log_sigmoid": out})


class AspectSum(RewardTransform):
    """Sum of per-aspect rewards, each log-sigmoid-transformed against its reference (Wang et al.,
    2024): the sum of log-probabilities of "good on each aspect", a soft logical AND.

    Args:
        references: ``{aspect: reference reward}``; the aspects summed are its keys.
        weights: ``{aspect: weight}``; missing aspects weigh 1.
        log_sigmoid: Transform each aspect first (False sums raw aspect scores minus references).
    """

    def __init__(
        self, references: dict[str, float], weights: dict[str, float] | None = None, log_sigmoid: bool = True
    ) -> None:
        if not references:
            raise ValueError("AspectSum needs at least one aspect in references, e.g. {'alignment': 0.0}.")
        self.references = {k: float(v) for k, v in references.items()}
        self.weights = {k: float(v) for k, v in (weights or {}).items()}
        self.log_sigmoid = log_sigmoid

    def __call__(
        self, score: torch.Tensor, aspects: Aspects = None, sigma: torch.Tensor | None = None
    ) -> TransformResult:
        parts = {}
        for name, reference in self.references.items():
            centred = self._aspect(aspects, name) - reference
            parts[name] = F.logsigmoid(centred) if self.log_sigmoid else centred
        total = sum(self.weights.get(name, 1.0) * value for name, value in parts.items())
        return TransformResult(total, {f"aspect.{k}": v for k, v in parts.items()})


class WeightedSum(RewardTransform):
    """``sum_k w_k * aspect_k`` (+ ``w_score * score`` when ``"score"`` is among the weights).

    Args:
        weights: ``{aspect or "score": weight}``.
    """

    def __init__(self, weights: dict[str, float]) -> None:
        if not weights:
            raise ValueError("WeightedSum needs weights, e.g. {'alignment': 0.7, 'quality': 0.3}.")
        self.weights = {k: float(v) for k, v in weights.items()}

    def __call__(
        self, score: torch.Tensor, aspects: Aspects = None, sigma: torch.Tensor | None = None
    ) -> TransformResult:
        parts = {k: score if k == "score" else self._aspect(aspects, k) for k in self.weights}
        total = sum(self.weights[k] * v for k, v in parts.items())
        return TransformResult(total, {f"weighted.{k}": self.weights[k] * v for k, v in parts.items()})


class LowerConfidenceBound(RewardTransform):
    """``score - kappa * sigma``: an uncertainty-weighted reward that discounts what the model is
    unsure of (the uncertainty penalty of Zhai et al., 2023, "Uncertainty-Penalized RLHF").

    Args:
        kappa: How many standard deviations to subtract.
    """

    def __init__(self, kappa: float = 1.0) -> None:
        self.kappa = float(kappa)

    def __call__(
        self, score: torch.Tensor, aspects: Aspects = None, sigma: torch.Tensor | None = None
    ) -> TransformResult:
        if sigma is None:
            raise ValueError(
                "LowerConfidenceBound needs a sigma, but the model predicts none. Use a model with "
                "mmreward.uncertainty.UncertaintyHead, or drop this transform."
            )
        out = score - self.kappa * sigma
        return TransformResult(out, {"penalty": self.kappa * sigma})


class Clip(RewardTransform):
    """Clamp the reward to ``[low, high]`` (either side may be open).

    Args:
        low: The floor; None for none.
        high: The ceiling; None for none.
    """

    def __init__(self, low: float | None = None, high: float | None = None) -> None:
        if low is not None and high is not None and low > high:
            raise ValueError(f"Clip needs low <= high; got low={low}, high={high}.")
        self.low, self.high = low, high

    def __call__(
        self, score: torch.Tensor, aspects: Aspects = None, sigma: torch.Tensor | None = None
    ) -> TransformResult:
        out = score.clamp(min=self.low, max=self.high)
        return TransformResult(out, {"clipped": (out != score).float()})


class Gate(RewardTransform):
    """Replace the reward by ``value`` where a gate aspect (or the score) is below ``threshold``:
    "an image that does not match its prompt gets reward 0, however pretty".

    Args:
        aspect: The aspect that gates, or ``"score"`` for the reward itself.
        threshold: Samples with ``aspect < threshold`` are gated.
        value: The reward a gated sample gets.
    """

    def __init__(self, aspect: str, threshold: float, value: float = 0.0) -> None:
        self.aspect, self.threshold, self.value = aspect, float(threshold), float(value)

    def __call__(
        self, score: torch.Tensor, aspects: Aspects = None, sigma: torch.Tensor | None = None
    ) -> TransformResult:
        gate = score if self.aspect == "score" else self._aspect(aspects, self.aspect)
        open_ = gate >= self.threshold
        out = torch.where(open_, score, torch.full_like(score, self.value))
        return TransformResult(out, {"gate_open": open_.float()})


class GroupNormalize(RewardTransform):
    """Group-relative advantages: ``(r - mean_g) / (std_g + eps)`` within each group of samples
    answering the same prompt (GRPO, Shao et al., 2024, DeepSeekMath).

    Args:
        group_size: Consecutive samples per group (TRL lays out ``num_generations`` completions of a
            prompt next to each other); None treats the whole call as one group.
        scale: ``"std"`` divides by the group's standard deviation; ``"none"`` only centres (Dr. GRPO,
            Liu et al., 2025).
        eps: Added to the standard deviation.
    """

    def __init__(
        self, group_size: int | None = None, scale: Literal["std", "none"] = "std", eps: float = 1e-4
    ) -> None:
        if group_size is not None and group_size < 1:
            raise ValueError(f"GroupNormalize group_size must be >= 1 or None; got {group_size}.")
        self.group_size, self.scale, self.eps = group_size, scale, eps

    def __call__(
        self, score: torch.Tensor, aspects: Aspects = None, sigma: torch.Tensor | None = None
    ) -> TransformResult:
        size = self.group_size or score.numel()
        if score.numel() % size:
            raise ValueError(
                f"GroupNormalize(group_size={size}) got {score.numel()} scores, not a multiple of the group "
                "size. Score whole groups, or set group_size=None for one group per call."
            )
        groups = score.reshape(-1, size)
        centred = groups - groups.mean(dim=1, keepdim=True)
        if self.scale == "std":
            std = groups.std(dim=1, keepdim=True) if size > 1 else torch.zeros_like(groups[:, :1])
            centred = centred / (std + self.eps)
        out = centred.reshape(score.shape)
        return TransformResult(out, {"group_mean": groups.mean(dim=1).repeat_interleave(size)})


class Chain(RewardTransform):
    """Apply transforms in order; each step sees the previous step's reward (and the same aspects
    and sigma). Components are named ``"<step>.<Class>.<name>"``.

    Args:
        steps: The transforms.
    """

    def __init__(self, steps: list[RewardTransform]) -> None:
        if not steps:
            raise ValueError("Chain needs at least one transform.")
        for i, step in enumerate(steps):
            if not callable(step):
                raise TypeError(f"Chain step {i} is a {type(step).__name__}, not a transform.")
        self.steps = list(steps)

    def __call__(
        self, score: torch.Tensor, aspects: Aspects = None, sigma: torch.Tensor | None = None
    ) -> TransformResult:
        components = {}
        for i, step in enumerate(self.steps):
            result = step(score, aspects, sigma)
            score = result.score
            name = f"{i}.{type(step).__name__}"
            components.update({f"{name}.{k}": v for k, v in result.components.items()})
            components[f"{name}.out"] = score
        return TransformResult(score, components)


# --- Process rewards: aggregating step scores, and shaping them for RL ---------------------------

StepAggregate = Literal["min", "last", "mean", "product"]
"""How a PRM's per-step scores become one score: the weakest step (``min``, Lightman et al., 2023),
the last step (``last``), the average (``mean``) or the product (``product``, P(every step right)
when the step scores are probabilities)."""
STEP_AGGREGATES = ("min", "last", "mean", "product")


def aggregate_steps(steps: Sequence[float] | torch.Tensor, how: StepAggregate = "min") -> float:
    """One score from per-step scores (see ``StepAggregate``); NaN for an empty chain.

    The rule search applies to ``RewardOutput.steps``; its batched twin on a PRM's (N, S) step
    logits is ``mmreward.prm.aggregate_step_logits`` (the two give the same number for a chain).

    Raises:
        ValueError: An unknown rule (with the four that exist).
    """
    values = torch.as_tensor(steps, dtype=torch.float64).flatten()
    if how not in STEP_AGGREGATES:
        close = difflib.get_close_matches(str(how), STEP_AGGREGATES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown step aggregate {how!r}.{hint} Use 'min', 'last', 'mean' or 'product'.")
    if values.numel() == 0:
        return float("nan")
    reduce = {"min": values.min, "last": lambda: values[-1], "mean": values.mean, "product": values.prod}
    return float(reduce[how]())


@dataclass
class ShapedRewards:
    """Process rewards shaped for an RL trainer, per chain.

    Attributes:
        steps: Per chain, (K,) the dense reward at each step (the success reward, where given, is
            added at the last step), for trainers that assign rewards per step (PPO with per-step
            credit, e.g. OpenRLHF's process rewards).
        returns: (N,) each chain's return (its step rewards summed): the one scalar a
            GRPO-style trainer takes per completion.
    """

    steps: list[torch.Tensor]
    returns: torch.Tensor


class ProcessShaping(Configurable, abc.ABC):
    """Base class: per-step PRM scores (and optionally outcome rewards) -> ``ShapedRewards``.

    Subclasses implement ``shape_chain(steps: (K,), success: float | None) -> (K,)``. Call the
    object on lists of step scores, or use ``from_outputs`` on a PRM's ``RewardOutput``s.
    """

    @abc.abstractmethod
    def shape_chain(self, steps: torch.Tensor, success: float | None) -> torch.Tensor:
        """(K,) shaped step rewards of one chain from its (K,) PRM step scores."""

    def __call__(
        self,
        steps: Sequence[Sequence[float] | torch.Tensor],
        success: Sequence[float] | torch.Tensor | None = None,
    ) -> ShapedRewards:
        """Shape every chain; ``success`` is one outcome reward per chain (1/0 from a verifier), or None."""
        if success is not None and len(success) != len(steps):
            raise ValueError(
                f"{type(self).__name__} got {len(steps)} chains but {len(success)} success rewards; "
                "pass one outcome reward per chain, in order."
            )
        shaped = []
        for i, chain in enumerate(steps):
            values = torch.as_tensor(chain, dtype=torch.float32).flatten()
            if values.numel() == 0 or not torch.isfinite(values).all():
                raise ValueError(
                    f"Chain {i} has step scores {values.tolist()}; shaping needs at least one finite score per "
                    "chain. Drop chains the PRM could not score."
                )
            shaped.append(self.shape_chain(values, None if success is None else float(success[i])))
        returns = torch.stack([s.sum() for s in shaped]) if shaped else torch.zeros(0)
        return ShapedRewards(shaped, returns)

    def from_outputs(
        self, outputs: Sequence[Any], success: Sequence[float] | torch.Tensor | None = None
    ) -> ShapedRewards:
        """Shape a PRM's ``RewardOutput``s (their ``steps``); names the output that has none."""
        for i, out in enumerate(outputs):
            if not out.steps:
                raise ValueError(
                    f"Output {i} has no per-step scores (RewardOutput.steps is {out.steps!r}); process shaping "
                    "needs a process reward model. Use an outcome transform for an outcome reward."
                )
        return self(list(out.steps for out in outputs), success)

    @staticmethod
    def _add_success(rewards: torch.Tensor, success: float | None) -> torch.Tensor:
        if success is not None:
            rewards = rewards.clone()
            rewards[-1] += success
        return rewards


class ProcessClip(ProcessShaping):
    """The Clip mechanism of Gao et al. (2024), "On Designing Effective RL Reward at Training Time
    for LLM Reasoning": each step's reward is ``min(alpha * r_k - eta, 0)``.

    Every step reward is at most 0, so a chain cannot earn more by adding steps (the reward
    hacking of repeating correct but useless steps); steps the PRM doubts (below ``eta``) are
    penalised. The success reward, where given, is added at the last step.

    Args:
        eta: The threshold below which a step is penalised (the paper sets it to the PRM's score
            of a typical good step; with probability-like step scores 0.5 is a neutral start).
        alpha: Scale of the process reward before the threshold.
    """

    def __init__(self, eta: float = 0.5, alpha: float = 1.0) -> None:
        self.eta, self.alpha = float(eta), float(alpha)

    def shape_chain(self, steps: torch.Tensor, success: float | None) -> torch.Tensor:
        return self._add_success((self.alpha * steps - self.eta).clamp(max=0.0), success)


class ProcessDelta(ProcessShaping):
    """The Delta mechanism of Gao et al. (2024): step ``k`` gets ``alpha * (r_k - r_{k+1})`` and the
    last step gets none of its own (only the success reward, where given).

    The sum telescopes to ``alpha * (r_1 - r_K)``, bounded whatever the chain's length, while each
    step still carries a dense signal. ``clip_eta`` applies the Clip mechanism first (the paper's
    Clip-Delta combination).

    Args:
        alpha: Scale of the process reward.
        clip_eta: Clip the step scores to ``min(r - eta, 0)`` before differencing; None for plain Delta.
    """

    def __init__(self, alpha: float = 1.0, clip_eta: float | None = None) -> None:
        self.alpha = float(alpha)
        self.clip_eta = None if clip_eta is None else float(clip_eta)

    def shape_chain(self, steps: torch.Tensor, success: float | None) -> torch.Tensor:
        values = self.alpha * steps
        if self.clip_eta is not None:
            values = (values - self.clip_eta).clamp(max=0.0)
        rewards = torch.zeros_like(values)
        rewards[:-1] = values[:-1] - values[1:]
        return self._add_success(rewards, success)


class SuccessGated(ProcessShaping):
    """Process rewards only for chains that succeed: Posterior-GRPO (Fan et al., 2025, "Posterior-
    GRPO: Rewarding Reasoning Processes in Code Generation").

    A chain whose outcome reward reaches ``threshold`` gets ``success + weight * aggregate(steps)``;
    any other chain gets its outcome reward alone, so a policy cannot raise its reward by writing
    reasoning the PRM likes without getting the answer right. Per step, the gated process reward
    is spread as ``weight * r_k / K`` (it sums to ``weight * mean``) unless ``aggregate`` is not
    ``mean``, in which case it is put on the last step.

    Args:
        weight: Weight of the process reward relative to the outcome reward.
        threshold: The outcome reward that counts as success (1.0: all tests pass / answer right).
        aggregate: How the step scores become the process reward (``StepAggregate``).
    """

    def __init__(
        self, weight: float = 1.0, threshold: float = 1.0, aggregate: StepAggregate = "mean"
    ) -> None:
        aggregate_steps([0.0], aggregate)  # validates the name now, not at the first batch
        self.weight, self.threshold, self.aggregate = float(weight), float(threshold), aggregate

    def __call__(
        self,
        steps: Sequence[Sequence[float] | torch.Tensor],
        success: Sequence[float] | torch.Tensor | None = None,
    ) -> ShapedRewards:
        if success is None:
            raise ValueError(
                "SuccessGated needs the outcome reward of every chain (success=[1.0, 0.0, ...]); it gates the "
                "process reward on it. Use ProcessClip or ProcessDelta without outcomes."
            )
        return super().__call__(steps, success)

    def shape_chain(self, steps: torch.Tensor, success: float | None) -> torch.Tensor:
        rewards = torch.zeros_like(steps)
        if success is not None and success >= self.threshold:
            if self.aggregate == "mean":
                rewards = self.weight * steps / steps.numel()
            else:
                rewards[-1] = self.weight * aggregate_steps(steps, self.aggregate)
        return self._add_success(rewards, success)
