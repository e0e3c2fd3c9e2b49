"""The training command: the tiny configs run end to end; the SD 1.5 recipe parses."""

from __future__ import annotations

import json
from pathlib import Path

import jsonargparse
import torch
from diffusers_helpers import HELD_OUT_PROMPTS, load_pipe, one_thread, tiny_sd_dir  # noqa: F401

from integrations.diffusers.evaluation import generate
from integrations.diffusers.train import main, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "diffusers"


def test_tiny_draft_config_trains_logs_and_saves_a_loadable_lora(tiny_sd_dir, tmp_path) -> None:  # noqa: F811
    out = tmp_path / "run"
    metrics = main(
        ["--config", str(CONFIGS / "tiny_draft.yaml"), "--pipeline", str(tiny_sd_dir), "--output", str(out)]
    )
    assert metrics["reward_after"] > metrics["reward_before"] + 0.15, metrics
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(lines) == 20 and all("reward/white" in line for line in lines)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    pipe = load_pipe(tiny_sd_dir)
    base = generate(pipe, HELD_OUT_PROMPTS, 4, 3.0, seed=1)
    pipe.load_lora_weights(out / "lora")
    assert not torch.allclose(generate(pipe, HELD_OUT_PROMPTS, 4, 3.0, seed=1), base, atol=1e-3)


def test_tiny_ddpo_config_runs(tiny_sd_dir, tmp_path) -> None:  # noqa: F811
    out = tmp_path / "run"
    main(
        [
            "--config",
            str(CONFIGS / "tiny_ddpo.yaml"),
            "--pipeline",
            str(tiny_sd_dir),
            "--output",
            str(out),
            "--steps",
            "1",
        ]
    )
    (line,) = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert 0.0 <= line["reward"] <= 1.0 and "reward/bright" in line
    assert (out / "lora" / "pytorch_lora_weights.safetensors").is_file()


def test_sd15_recipe_parses_with_the_paper_settings() -> None:
    parser = jsonargparse.ArgumentParser()
    parser.add_argument("--config", action="config")
    parser.add_function_arguments(train)
    cfg = parser.parse_args(["--config", str(CONFIGS / "sd15_draft.yaml")])
    assert cfg.method == "draft" and cfg.draft.num_inference_steps == 50 and cfg.draft.truncation == 1
    assert set(cfg.rewards) == {"preference", "aesthetic"} and cfg.rewards["aesthetic"].weight == 0.5
    assert cfg.settings.mixed_precision == "bf16" and cfg.settings.lora.rank == 4


def test_the_docs_example_runs(capsys) -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "diffusers.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "docs/diffusers.md", "exec"), {})
    printed = capsys.readouterr().out
    before, after = (float(x) for x in printed.split("held-out reward ")[1].split(" -> "))
    assert after > before, printed
