"""Shared pieces of the judge tests: hand-made generations, a scripted backend, and the SFT'd judge.

The quick-start judge is trained once per test session (``trained_judge`` memoises it in this
module, which pytest imports once), so every test file that needs it shares one training run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from judges.backends import Generation, Messages, SamplingParams
from judges.tiny import pieces


def generation(
    text: str, verdict: dict[str, float] | None = None, at: str | None = None, finish: str = "stop"
) -> Generation:
    """A generation whose tokens spell ``text``; at the token ``at`` the alternatives are ``verdict``.

    Args:
        text: The output text.
        verdict: ``{token: probability}`` at the verdict position (the chosen token gets its own entry).
        at: The token (stripped) that carries the verdict; its last occurrence is used.
        finish: The finish reason.
    """
    tokens = pieces(text)
    tops: list[dict[str, float]] = [{t: math.log(0.9)} for t in tokens]
    logprobs = [math.log(0.9)] * len(tokens)
    if verdict is not None and at is not None:
        index = max(i for i, t in enumerate(tokens) if t.strip() == at)
        tops[index] = {f" {k}": math.log(p) for k, p in verdict.items()}
        logprobs[index] = math.log(verdict[at])
    return Generation(text, tokens, logprobs, tops, finish)


@dataclass
class RuleJudgeBackend:
    """A stand-in pairwise judge model: it prefers the response with fewer ``error`` words.

    When both responses have as many errors it answers ``[[A]]`` if ``position_bias`` is set
    (the first-position bias real judges show), else it names the shorter response.
    """

    position_bias: bool = True
    calls: int = 0

    def generate(self, requests: list[Messages], params: SamplingParams) -> list[Generation]:
        self.calls += 1
        out = []
        for request in requests:
            text = request[-1]["content"]
            a = re.search(r"\[Response A\]\n(.*)\n\[Response B\]", text, re.DOTALL).group(1)
            b = text.split("[Response B]\n", 1)[1]
            ea, eb = a.count("error"), b.count("error")
            if ea != eb:
                pick = "A" if ea < eb else "B"
            else:
                pick = "A" if self.position_bias else ("A" if len(a) <= len(b) else "B")
            other = "B" if pick == "A" else "A"
            out.append(
                generation(
                    f"A has {ea} errors and B has {eb}. Verdict: [[{pick}]]", {pick: 0.8, other: 0.2}, at=pick
                )
            )
        return out


_TRAINED: dict[str, Path] = {}

TEST_STEPS: dict[str, int] = {}
"""The test run's stages: the demo's own (``QUICKSTART``), so the test holds the judge the demo ships
to issue 12's bars (their spread over five seeds is in docs/learning-figures.md)."""


def trained_judge(root: Path) -> Path:
    """Train the quick-start pixel judge once per session under ``root``; returns the run folder.

    The run folder holds ``model/`` (the exported judge), ``base/`` (the untrained initial model)
    and ``data/`` (the critique set and its renders, with ``test.jsonl`` held out).
    """
    if "run" not in _TRAINED:
        import torch

        from integrations.demos.judge import train_quickstart

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny model on a shared CPU: extra threads only contend
        try:
            _TRAINED["run"] = train_quickstart(root / "judge-run", **TEST_STEPS)
        finally:
            torch.set_num_threads(threads)
    return _TRAINED["run"]
