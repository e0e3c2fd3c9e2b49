"""A toy reasoning world with known ground truth, for testing and benchmarking search settings.

Problem ``j`` has the answer ``j % 10``. A chain has ``length`` steps; each step goes wrong with the
problem's error rate, and once a step is wrong every later step is wrong too (the chain cannot
recover). A chain without a wrong step ends with the right answer; a wrong chain ends with the
problem's *distractor* (the popular wrong answer) with probability ``distractor``, else with another
wrong answer, so on hard problems the majority of chains agree on a wrong answer. ``ToyPRM`` scores
each step from its hidden label with Gaussian noise: informative, not perfect. Everything is
deterministic: a step is drawn from a generator seeded by the problem, the candidate tags in
``Sample.meta`` and the steps so far, so the same chain is generated again in every search.

No model is involved; ``integrations.search`` methods run on it in milliseconds.

Example:
    >>> world = ToyReasoningWorld()
    >>> results = sample_best_of_n(world.generator, ToyPRM(), world.problems(100), n=8)
    >>> world.accuracy([r.sample for r in results])
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from integrations.search.chains import Step
from mmreward.types import RewardOutput, Sample


class ToyReasoningWorld:
    """Problems, a step generator and answer extraction (see the module docstring).

    Args:
        length: Steps per chain.
        error_rates: The per-step error rate of each problem is drawn uniformly from this range.
        distractor: P(a wrong chain ends with the problem's distractor).
        tokens: Range of tokens per step.
        seed: Seed of the problems' error rates.
    """

    def __init__(
        self,
        length: int = 4,
        error_rates: tuple[float, float] = (0.1, 0.35),
        distractor: float = 0.75,
        tokens: tuple[int, int] = (10, 30),
        seed: int = 0,
    ) -> None:
        self.length, self.error_rates, self.distractor = length, error_rates, distractor
        self.tokens, self.seed = tokens, seed

    def problems(self, count: int, offset: int = 0) -> list[Sample]:
        """``count`` problems (samples with a prompt and ``meta["error_rate"]``)."""
        rng = random.Random(f"problems|{self.seed}")
        rates = [rng.uniform(*self.error_rates) for _ in range(offset + count)]
        return [
            Sample(prompt=f"problem {j}", meta={"error_rate": rates[j]})
            for j in range(offset, offset + count)
        ]

    @staticmethod
    def truth(sample: Sample) -> int:
        """The right answer of a problem (or of a chain for it)."""
        return int(sample.prompt.split()[-1]) % 10

    def generator(self, partials: Sequence[Sample]) -> list[Step]:
        """The step generator: one next step per partial chain."""
        return [self._next(p) for p in partials]

    def _next(self, partial: Sample) -> Step:
        steps = partial.steps or []
        tags = "|".join(f"{k}={partial.meta.get(k)}" for k in ("candidate", "branch", "attempt"))
        rng = random.Random(f"{partial.prompt}|{tags}|{'/'.join(steps)}")
        wrong = any(" bad " in f" {s} " for s in steps) or rng.random() < partial.meta["error_rate"]
        label = "bad" if wrong else "ok"
        text = f"s{len(steps) + 1} {label} #{rng.randrange(10**6)}"
        final = len(steps) + 1 >= self.length
        if final:
            truth = self.truth(partial)
            answer = (
                truth
                if not wrong
                else (truth + 1 if rng.random() < self.distractor else truth + rng.randint(2, 9))
            )
            text += f" answer {answer % 10}"
        return Step(text, final=final, tokens=rng.randint(*self.tokens))

    @staticmethod
    def answer(sample: Sample) -> int | None:
        """The chain's final answer, or None when it has not given one."""
        last = (sample.steps or [""])[-1].split()
        return int(last[-1]) if len(last) > 1 and last[-2] == "answer" else None

    def accuracy(self, chains: Sequence[Sample | None]) -> float:
        """Share of chains (one per problem) whose answer is right; None counts as wrong."""
        return sum(c is not None and self.answer(c) == self.truth(c) for c in chains) / len(chains)

    @staticmethod
    def correct(chain: Sample, index: int) -> Step:
        """A perfect corrector for refined best-of-N: the wrong step ``index`` rewritten as right."""
        return Step(f"s{index + 1} ok #fix{index}", final=False)


class ToyPRM:
    """A process reward model for ``ToyReasoningWorld``: step score ``good`` or ``bad`` plus noise.

    Args:
        good: Mean score of a right step.
        bad: Mean score of a wrong step.
        noise: Standard deviation of the noise (seeded by the step's text: a step always gets the
            same score).
    """

    def __init__(self, good: float = 0.75, bad: float = 0.3, noise: float = 0.12) -> None:
        self.good, self.bad, self.noise = good, bad, noise
        self.calls = self.scored = 0

    def step_score(self, step: str) -> float:
        """One step's score in [0, 1]."""
        mean = self.bad if " bad " in f" {step} " else self.good
        return min(1.0, max(0.0, random.Random(step).gauss(mean, self.noise)))

    def score_samples(self, samples: Sequence[Sample]) -> list[RewardOutput]:
        """Per-step scores in ``steps``; ``score`` is their minimum."""
        self.calls += 1
        self.scored += len(samples)
        outputs = []
        for s in samples:
            steps = [self.step_score(f"{s.prompt}|{i}|{t}") for i, t in enumerate(s.steps or [])]
            outputs.append(RewardOutput(score=min(steps, default=float("nan")), steps=steps))
        return outputs
