"""Step-by-step generation: the generator contract, partial chains, and what a search spent.

A *step generator* is any callable ``generator(partials: list[Sample]) -> list[Step]``: given
partial chains (each a ``Sample`` whose ``steps`` holds the steps so far, possibly none), it returns
one next step for each, in order. An LLM or VLM policy wraps its ``generate`` call this way, with
the steps joined into the prompt; ``Step.final`` says the step ends the chain (it gives the
answer). Candidates are told apart by ``Sample.meta["candidate"]`` (and ``"branch"`` in beam search,
``"attempt"`` in refined best-of-N), so a sampling generator can seed on them.

Partial chains are scored by the same ``Reward`` as full ones: a process reward model returns per-
step scores in ``RewardOutput.steps`` for however many steps the chain has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch

from integrations.search.selection import Selection, best_index, candidate_values
from mmreward.protocols import Reward, score_outputs
from mmreward.transforms import StepAggregate
from mmreward.types import Sample


@dataclass
class Step:
    """One generated step.

    Attributes:
        text: The step.
        final: True when the step ends the chain (it states the answer).
        tokens: Tokens the generator spent on it; None counts whitespace-separated words.
    """

    text: str
    final: bool = False
    tokens: int | None = None

    def cost(self) -> int:
        """Tokens spent on this step."""
        return self.tokens if self.tokens is not None else len(self.text.split())


class StepGenerator(Protocol):
    """Proposes the next step of each partial chain (see the module docstring)."""

    def __call__(self, partials: Sequence[Sample]) -> list[Step]: ...


Correction = Callable[[Sample, int], "Step | str | None"]
"""Refined best-of-N's hook: given a chain and the index of its first wrong step, a corrected step
(a string is a non-final step) to put in its place, or None to leave the chain alone."""


@dataclass
class SearchStats:
    """What a search spent.

    Attributes:
        steps_generated: Steps the generator produced.
        tokens_generated: Their tokens (``Step.cost``).
        reward_calls: ``score_samples`` calls.
        samples_scored: Samples (partial or complete chains) those calls scored.
        rejected: Chains stopped before they were complete (early rejection, beam pruning).
    """

    steps_generated: int = 0
    tokens_generated: int = 0
    reward_calls: int = 0
    samples_scored: int = 0
    rejected: int = 0


@dataclass
class Chain:
    """A chain being generated.

    Attributes:
        sample: The chain so far (``sample.steps``).
        done: True once complete (a final step, or ``max_steps``).
        value: Its latest value (step aggregate or score); NaN before it is scored.
        step_scores: The reward's per-step scores at the latest scoring.
        alive: False once a search stopped it (rejected or pruned).
        generated: Steps generated for it; ``tokens``: their tokens; ``scored``: times it was scored.
    """

    sample: Sample
    done: bool = False
    value: float = float("nan")
    step_scores: list[float] | None = None
    alive: bool = True
    generated: int = 0
    tokens: int = 0
    scored: int = 0


@dataclass
class SearchResult:
    """The outcome of a step-level search for one problem.

    Attributes:
        sample: The chosen chain (a ``Sample`` with its ``steps``).
        index: Its position in ``chains``.
        value: Its value (the step aggregate or score the search maximised).
        chains: Every chain the search kept to the end (rejected ones included, marked by ``alive``).
        stats: What this problem's search spent (reward calls: the batch's, shared by its problems).
    """

    sample: Sample
    index: int
    value: float
    chains: list[Chain]
    stats: SearchStats = field(default_factory=SearchStats)


def start(base: Sample, **meta: int) -> Sample:
    """A partial chain for ``base`` with no steps yet, tagged with ``meta`` (e.g. ``candidate=3``)."""
    return replace(base, steps=list(base.steps or []), meta={**base.meta, **meta})


def extend(sample: Sample, step: Step) -> Sample:
    """``sample`` with ``step`` appended (a new ``Sample``; the old one is left as it was)."""
    return replace(sample, steps=[*(sample.steps or []), step.text])


def as_step(value: Step | str) -> Step:
    """A ``Step`` from a generator's or a corrector's return value."""
    if isinstance(value, Step):
        return value
    if isinstance(value, str):
        return Step(value)
    raise TypeError(f"A step generator must return Step objects or strings; got {type(value).__name__}.")


def advance(
    generator: StepGenerator, chains: Sequence[Chain], max_steps: int, stats: SearchStats
) -> list[Chain]:
    """Generate one step for every alive, unfinished chain in one generator call; returns those chains.

    A chain that reaches ``max_steps`` is complete whether or not its last step was final.
    """
    todo = [c for c in chains if c.alive and not c.done]
    if not todo:
        return []
    steps = list(generator([c.sample for c in todo]))
    if len(steps) != len(todo):
        raise ValueError(
            f"The step generator returned {len(steps)} steps for {len(todo)} partial chains; it must return "
            "one next step per chain, in order."
        )
    for chain, raw in zip(todo, steps, strict=True):
        step = as_step(raw)
        chain.sample = extend(chain.sample, step)
        chain.done = step.final or len(chain.sample.steps) >= max_steps
        chain.generated += 1
        chain.tokens += step.cost()
        stats.steps_generated += 1
        stats.tokens_generated += step.cost()
    return todo


def rollout(generator: StepGenerator, chains: Sequence[Chain], max_steps: int, stats: SearchStats) -> None:
    """Generate until every alive chain is complete (one generator call per round)."""
    while advance(generator, chains, max_steps, stats):
        pass


def check_max_steps(max_steps: int) -> None:
    """Raise a ``ValueError`` unless ``max_steps >= 1``."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1; got {max_steps}.")


def score_chains(
    reward: Reward,
    chains: Sequence[Chain],
    stats: SearchStats,
    aggregate: StepAggregate | None = "min",
    select: Selection = "mean",
    k: float = 1.0,
) -> None:
    """Score ``chains`` (partial or complete) in one ``score_samples`` call; sets value and step scores."""
    if not chains:
        return
    outputs = score_outputs(reward, [c.sample for c in chains])
    values = candidate_values(outputs, aggregate, select, k)
    stats.reward_calls += 1
    stats.samples_scored += len(chains)
    for chain, out, value in zip(chains, outputs, values.tolist(), strict=True):
        chain.value, chain.step_scores = value, None if out.steps is None else list(out.steps)
        chain.scored += 1


def pool_stats(chains: Sequence[Chain], reward_calls: int) -> SearchStats:
    """What one problem's chains cost (``reward_calls`` is the batch's: calls are shared by problems)."""
    return SearchStats(
        steps_generated=sum(c.generated for c in chains),
        tokens_generated=sum(c.tokens for c in chains),
        reward_calls=reward_calls,
        samples_scored=sum(c.scored for c in chains),
        rejected=sum(not c.alive for c in chains),
    )


def total_stats(results: Sequence[SearchResult]) -> SearchStats:
    """Summed stats over problems searched together (reward calls counted once: they were shared)."""
    out = SearchStats(reward_calls=max((r.stats.reward_calls for r in results), default=0))
    for r in results:
        out.steps_generated += r.stats.steps_generated
        out.tokens_generated += r.stats.tokens_generated
        out.samples_scored += r.stats.samples_scored
        out.rejected += r.stats.rejected
    return out


def choose(chains: Sequence[Chain], reward_calls: int, what: str) -> SearchResult:
    """The alive chain with the highest value, as a ``SearchResult`` with the chains' stats."""
    values = torch.tensor([c.value if c.alive else float("nan") for c in chains])
    if torch.isnan(values).all():
        raise ValueError(
            f"{what}: the reward scored none of the {len(chains)} chains of this problem; nothing to choose. "
            "Check the reward's provenance['failure']."
        )
    index = int(best_index(values))
    stats = pool_stats(chains, reward_calls)
    return SearchResult(chains[index].sample, index, chains[index].value, list(chains), stats)
