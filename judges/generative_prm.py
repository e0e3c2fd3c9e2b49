"""A generative process reward model: per step a short analysis and a verdict, and a correction.

GM-PRM (Zhang et al., 2025) has a vision-language judge read the problem (and its image) and the
numbered steps of a chain, and write for every step a short analysis and a verdict, then a corrected
version of the first wrong step, which a search loop can splice in to refine the chain
(``integrations.search.refine``, through ``GenerativePRM.correct_first_error``). ``GenerativePRM`` asks for that output:

    Step 1: The image shows 4 red squares, as stated. Verdict: correct
    Step 2: 4 + 3 is 7, not 8. Verdict: incorrect
    Correction: 4 + 3 = 7.

and reads each step's verdict as P(correct): from the token log-probabilities at the verdict when
the backend gives them (``judges.parsing.read_choice``), else from the text (1 or 0). A step with no
readable verdict is NaN and its reason is kept; the chain's score is the minimum over the steps read
(as ``ProcessRewardModel``'s default ``min`` aggregation). ``score_samples`` returns the step
probabilities in ``RewardOutput.steps``, so the search module takes the judge as it takes a PRM.

Example:
    >>> prm = GenerativePRM(TransformersBackend("Qwen/Qwen2.5-VL-7B-Instruct"))
    >>> [j] = prm.judge([Sample(prompt="How many?", image="img.png", steps=["There are 4.", "4 * 2 = 9."])])
    >>> j.steps, j.first_error, j.correction
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

from judges.backends import Backend, Generation, Messages
from judges.base import GenerativeJudge, fill, sample_images, user_request
from judges.parsing import Judgement, judgement_from_choice, read_choice
from mmreward.types import RewardOutput, Sample

DEFAULT_TEMPLATE = """Problem: {prompt}
Solution, one step a line:
{steps}
Check the solution step by step against the problem and the image. For every step write
"Step k:", a short analysis, then "Verdict: correct" or "Verdict: incorrect".
After the last step, if a step is incorrect, write "Correction:" and a corrected version of the first incorrect step."""
"""The request (GM-PRM's output layout); ``{prompt}`` and ``{steps}`` (numbered, one a line) are filled."""

VERDICT_LABELS = {"correct": 1.0, "incorrect": 0.0}


@dataclass
class StepJudgement:
    """A generative PRM's reading of one chain.

    Attributes:
        steps: P(step correct) for each step of the chain; NaN where no verdict was read.
        analyses: The judge's analysis of each step ("" where none was found).
        first_error: The first step judged incorrect (P < 0.5), -1 if none.
        correction: The judge's corrected version of the first incorrect step, if it wrote one.
        score: The minimum of the steps read (NaN if none was).
        text: The full output.
        reasons: Why a step has no verdict, by step index.
        verdicts: Each step's ``Judgement`` (method, confidence, distribution).
    """

    steps: list[float]
    analyses: list[str]
    first_error: int
    correction: str | None
    score: float
    text: str
    reasons: dict[int, str] = field(default_factory=dict)
    verdicts: list[Judgement | None] = field(default_factory=list)


def generative_prm_request(
    sample: Sample, template: str = DEFAULT_TEMPLATE, system: str | None = None
) -> Messages:
    """The chat request for one chain: its images, then the problem and the numbered steps."""
    if not sample.steps:
        raise ValueError(f"{sample.where('steps')}: a generative PRM judges steps; the sample has none.")
    steps = "\n".join(f"Step {k + 1}: {step}" for k, step in enumerate(sample.steps))
    return user_request(
        fill(template, prompt=sample.prompt or "", steps=steps), sample_images(sample), system
    )


def _shifted(generation: Generation, start: int, end: int) -> Generation:
    """The part ``[start, end)`` of a generation's text, with its tokens: those wholly inside the
    range (a token that straddles a cut, such as ``"\\nStep"``, is left out of the part)."""
    text = generation.text[start:end]
    if not generation.tokens or "".join(generation.tokens) != generation.text:
        return Generation(text, [], [], [], generation.finish_reason)
    tokens, logprobs, tops, offset = [], [], [], 0
    for i, token in enumerate(generation.tokens):
        if start <= offset and offset + len(token) <= end:
            tokens.append(token)
            logprobs.append(generation.logprobs[i] if generation.logprobs else 0.0)
            tops.append(generation.top_logprobs[i] if generation.top_logprobs else {})
        offset += len(token)
    if not tokens:
        return Generation(text, [], [], [], generation.finish_reason)
    return Generation("".join(tokens), tokens, logprobs, tops, generation.finish_reason)


def parse_step_verdicts(generation: Generation, num_steps: int) -> StepJudgement:
    """Read the per-step analyses and verdicts and the correction of a GM-PRM style output; never raises."""
    text = generation.text
    heads = {int(m.group(1)) - 1: m for m in re.finditer(r"(?im)^\s*\**step\s+(\d+)\s*\**\s*:", text)}
    correction_at = re.search(r"(?im)^\s*\**correction\s*\**\s*:\s*(.*)$", text)
    probs, analyses, reasons, verdicts = [], [], {}, []
    starts = sorted(m.start() for m in heads.values())
    for k in range(num_steps):
        head = heads.get(k)
        if head is None:
            probs.append(math.nan)
            analyses.append("")
            reasons[k] = f"no 'Step {k + 1}:' section in the output"
            verdicts.append(None)
            continue
        later = [s for s in starts if s > head.start()]
        end = min([*later, correction_at.start() if correction_at else len(text), len(text)])
        end = max(end, head.end())
        part = _shifted(generation, head.end(), end)
        choice = read_choice(part, r"verdict\s*:", VERDICT_LABELS)
        judgement = judgement_from_choice(part, choice)
        verdicts.append(judgement)
        analyses.append(judgement.critique.strip())
        if choice.value is None:
            reasons[k] = choice.reason or "no verdict"
        probs.append(math.nan if choice.value is None else float(choice.value))
    first = next((k for k, p in enumerate(probs) if not math.isnan(p) and p < 0.5), -1)
    read = [p for p in probs if not math.isnan(p)]
    correction = correction_at.group(1).strip() if correction_at and first >= 0 else None
    return StepJudgement(
        probs, analyses, first, correction or None, min(read) if read else math.nan, text, reasons, verdicts
    )


class GenerativePRM(GenerativeJudge):
    """Judge every step of a chain in one generation, and correct the first wrong one; see the module.

    Args:
        backend: Where the text comes from (``TransformersBackend``, ``OpenAIBackend``,
            ``judges.composite_backend.CompositeBackend``).
        template: The request with ``{prompt}`` and ``{steps}``; None uses ``DEFAULT_TEMPLATE``.
        system: An optional system message.
        max_new_tokens: Most tokens per answer (an analysis a step and a correction).
        top_logprobs: Alternatives read at each position (the verdicts' probabilities come from them).
    """

    reads_steps = True

    def __init__(
        self,
        backend: Backend,
        template: str | None = None,
        system: str | None = None,
        max_new_tokens: int = 512,
        top_logprobs: int = 10,
    ) -> None:
        super().__init__(backend, template or DEFAULT_TEMPLATE, system, max_new_tokens, top_logprobs)

    def requests(self, items: list[Sample]) -> list[Messages]:
        """One request per chain."""
        return [generative_prm_request(s, self.template, self.system) for s in items]

    def parse(self, item: Sample, generation: Generation) -> StepJudgement:  # type: ignore[override]
        """The step verdicts of one output (a failed backend call gives NaN steps with its error)."""
        if generation.error:
            n = len(item.steps or [])
            reasons = dict.fromkeys(range(n), f"the backend failed: {generation.error}")
            return StepJudgement([math.nan] * n, [""] * n, -1, None, math.nan, generation.text, reasons)
        return parse_step_verdicts(generation, len(item.steps or []))

    def safe_parse(self, item: Sample, generation: Generation) -> StepJudgement:  # type: ignore[override]
        """``parse``, turning any exception into NaN steps that say why."""
        try:
            return self.parse(item, generation)
        except Exception as err:  # one bad output must not sink the batch
            n = len(item.steps or [])
            reason = f"parser error: {type(err).__name__}: {err}"
            return StepJudgement(
                [math.nan] * n, [""] * n, -1, None, math.nan, generation.text, dict.fromkeys(range(n), reason)
            )

    def correct_first_error(self, sample: Sample, index: int) -> str | None:
        """Refined best-of-N's ``correct`` hook (``integrations.search.refine``): the judge's corrected
        version of step ``index`` of ``sample``, which the search found to be its first wrong step.

        The judge reads the chain up to that step (what follows it is about to be regenerated); its
        correction is used only when it, too, finds the first error at ``index``, else ``None``
        (the chain is left alone: a correction of another step would not fit there).
        """
        steps = list(sample.steps or [])
        if not 0 <= index < len(steps):
            raise ValueError(
                f"correct_first_error: step index {index} is outside the chain's {len(steps)} steps."
            )
        [judgement] = self.judge([replace(sample, steps=steps[: index + 1])])
        return judgement.correction if judgement.first_error == index else None

    def score_samples(self, samples: list[Sample]) -> list[RewardOutput]:
        """The reward contract: greedy judgements, ``steps`` = P(step correct), ``score`` their minimum."""
        provenance = self.provenance()
        outputs = []
        for j in self.judge(list(samples)):
            prov: dict[str, Any] = {**provenance, "first_error": j.first_error}
            if j.correction is not None:
                prov["correction"] = j.correction
            if j.reasons:
                prov["failure"] = "; ".join(f"step {k + 1}: {r}" for k, r in sorted(j.reasons.items()))
            outputs.append(RewardOutput(score=j.score, steps=j.steps, text=j.text, provenance=prov))
        return outputs
