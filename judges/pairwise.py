"""Pairwise judging with reasoning, asked in both orders to cancel position bias.

The judge reasons about two responses and ends with ``[[A]]`` or ``[[B]]`` (the verdict format
of MT-Bench and Multimodal RewardBench); reasoning before the verdict is R1-Reward's and
RM-R1's recipe. Judges prefer one position more often than they should, so each pair is also
asked with the responses swapped: the two answers are combined into P(first is better), and a
pair whose two answers disagree is flagged inconsistent.

Example:
    >>> judge = PairwiseJudge(backend)
    >>> verdicts = judge.compare([(Sample(prompt=p, response=a), Sample(prompt=p, response=b))])
    >>> swap_report(verdicts).inconsistency_rate
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from judges.backends import Backend, Generation, Messages
from judges.base import GenerativeJudge, fill, sample_images, user_request
from judges.parsing import Judgement, parse_verdict
from mmreward.types import RewardOutput, Sample

Pair = tuple[Sample, Sample]


@dataclass
class PairwiseVerdict:
    """The combined verdict on one pair ``(first, second)``.

    Attributes:
        p_first: P(first is better): the mean of the forward P(A) and the swapped P(B); None
            when neither order gave a verdict.
        winner: ``"first"``, ``"second"``, ``"tie"`` (p_first exactly 0.5) or None.
        consistent: Whether both orders picked the same response; None unless both parsed.
        forward: The judgement with ``first`` shown as A (its score is P(A)).
        swapped: The judgement with ``first`` shown as B, or None without swapping.
    """

    p_first: float | None
    winner: Literal["first", "second", "tie"] | None
    consistent: bool | None
    forward: Judgement
    swapped: Judgement | None = None


@dataclass
class SwapReport:
    """How a pairwise judge behaved over many pairs.

    Attributes:
        pairs: Pairs judged.
        inconsistency_rate: Share of pairs (with both orders parsed) whose two orders disagree.
        first_position_rate: Share of single answers (both orders) that picked response A: 0.5 is unbiased.
        failure_rate: Share of pairs with no verdict in either order.
    """

    pairs: int
    inconsistency_rate: float | None
    first_position_rate: float | None
    failure_rate: float


def combine(forward: Judgement, swapped: Judgement | None) -> PairwiseVerdict:
    """Combine the two orders' judgements into one verdict."""
    votes = [forward.score] if forward.score is not None else []
    if swapped is not None and swapped.score is not None:
        votes.append(1.0 - swapped.score)
    p_first = sum(votes) / len(votes) if votes else None
    winner = None if p_first is None else "tie" if p_first == 0.5 else "first" if p_first > 0.5 else "second"
    consistent = None
    if swapped is not None and forward.score is not None and swapped.score is not None:
        consistent = (forward.score > 0.5) == (swapped.score < 0.5)
    return PairwiseVerdict(p_first, winner, consistent, forward, swapped)


def swap_report(verdicts: list[PairwiseVerdict]) -> SwapReport:
    """Inconsistency, position bias and failures over ``verdicts``."""
    checked = [v.consistent for v in verdicts if v.consistent is not None]
    answers = [
        j.score for v in verdicts for j in (v.forward, v.swapped) if j is not None and j.score is not None
    ]
    return SwapReport(
        pairs=len(verdicts),
        inconsistency_rate=sum(not c for c in checked) / len(checked) if checked else None,
        first_position_rate=sum(s > 0.5 for s in answers) / len(answers) if answers else None,
        failure_rate=sum(v.p_first is None for v in verdicts) / len(verdicts) if verdicts else 0.0,
    )


class PairwiseJudge(GenerativeJudge):
    """Compare two responses to one prompt, with reasoning, in both orders.

    Args:
        backend: Where the text comes from.
        template: Template with ``{prompt}``, ``{response_a}``, ``{response_b}``; None uses
            ``judges/templates/pairwise.txt``. Images of A come before images of B.
        swap: Also ask with the responses swapped (doubles the cost; see the module docstring).
        system: An optional system message.
        max_new_tokens: Most tokens per answer.
        top_logprobs: Alternatives read at each position.
    """

    default_template = "pairwise"

    def __init__(
        self,
        backend: Backend,
        template: str | None = None,
        swap: bool = True,
        system: str | None = None,
        max_new_tokens: int = 512,
        top_logprobs: int = 10,
    ) -> None:
        super().__init__(backend, template, system, max_new_tokens, top_logprobs)
        self.swap = swap

    def requests(self, items: list[Pair]) -> list[Messages]:
        """One request per pair, the first response shown as A."""
        out = []
        for a, b in items:
            text = fill(
                self.template,
                prompt=a.prompt,
                response_a=a.response if a.response is not None else "(image A)",
                response_b=b.response if b.response is not None else "(image B)",
            )
            out.append(user_request(text, sample_images(a) + sample_images(b), self.system))
        return out

    def parse(self, item: Pair, generation: Generation) -> Judgement:
        """The reasoning and P(A is better) of one output."""
        return parse_verdict(generation)

    def compare(
        self, pairs: list[Pair], temperature: float = 0.0, seed: int | None = None
    ) -> list[PairwiseVerdict]:
        """Judge every pair (and its swap, in the same backend batch) and combine the two orders."""
        asked = list(pairs) + ([(b, a) for a, b in pairs] if self.swap else [])
        judgements = self.judge(asked, temperature, seed)
        forward, swapped = judgements[: len(pairs)], judgements[len(pairs) :]
        return [combine(f, swapped[i] if self.swap else None) for i, f in enumerate(forward)]

    def score_samples(self, samples: Sequence[Sample]) -> list[RewardOutput]:
        """The reward contract, through ``compare``: each sample against every other of its prompt.

        A sample's score is its mean P(better) over those comparisons (a round robin, all pairs in
        one backend batch), so scores rank the candidates of one prompt. A sample alone with its
        prompt, or whose comparisons all failed, scores NaN with the reason in ``provenance``.
        """
        samples = list(samples)
        groups: dict[str, list[int]] = defaultdict(list)
        for i, sample in enumerate(samples):
            groups[sample.prompt].append(i)
        pairs = [
            (i, j) for members in groups.values() for k, i in enumerate(members) for j in members[k + 1 :]
        ]
        verdicts = self.compare([(samples[i], samples[j]) for i, j in pairs]) if pairs else []
        wins: dict[int, list[float]] = defaultdict(list)
        for (i, j), verdict in zip(pairs, verdicts):
            if verdict.p_first is not None:
                wins[i].append(verdict.p_first)
                wins[j].append(1.0 - verdict.p_first)
        provenance = self.provenance()
        outputs = []
        for i, sample in enumerate(samples):
            if wins[i]:
                prov = {**provenance, "comparisons": len(wins[i])}
                outputs.append(RewardOutput(score=sum(wins[i]) / len(wins[i]), provenance=prov))
                continue
            alone = len(groups[sample.prompt]) == 1
            reason = (
                "a pairwise judge scores a sample against the other samples of its prompt; this prompt has one"
                if alone
                else "no comparison of this sample gave a verdict"
            )
            outputs.append(RewardOutput(score=float("nan"), provenance={**provenance, "failure": reason}))
        return outputs
