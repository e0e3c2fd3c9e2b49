"""The demos behind ``mmreward demo --task NAME``: one explicit dict of import paths.

Each entry is a function ``run(output: Path) -> dict`` that runs the task's main job on its
embedded default, writes ``output/metrics.json`` and ``output/report.html``, and returns the metrics.
"""

from __future__ import annotations

DEMOS: dict[str, str] = {
    "t2i": "mmreward.demo_t2i.run",
    "video": "integrations.demos.video.run",
    "edit": "integrations.demos.edit.run",
    "judge": "judges.demo.run",
    "cloth": "integrations.robotics.demo.run",
}
