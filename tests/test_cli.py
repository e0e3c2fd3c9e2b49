"""The command as a user meets it: help in words, --version, bad input as one message with exit 2,
--debug for the traceback, internal errors with the traceback and a request to report them, and the
summary that ``mmreward score`` ends with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mmreward as mr
from mmreward.cli import main
from mmreward.types import RewardOutput
from tests.core_helpers import colour_image, tiny_reward_model

REPO = Path(__file__).resolve().parents[1]


class BuggyReward:
    """A reward with a bug (a KeyError), for the internal-error path."""

    def score_samples(self, samples):
        return [RewardOutput(score={}["missing"]) for _ in samples]


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("MMREWARD_DEBUG", "MMREWARD_TRACEBACK")}
    environ.update({"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **env})
    return subprocess.run(
        [sys.executable, "-m", "mmreward.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=environ,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    colour_image("red", 0).save(root / "a.png")
    good = {"id": "gen-1", "prompt": "a red ball", "image": "a.png"}
    bad = {"id": "gen-7", "prompt": "a red ball", "image": "missing.png"}
    (root / "good.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "gen-2"}) + "\n")
    (root / "bad.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    model = mr.Scorer(tiny_reward_model(), device="cpu").save_pretrained(root / "model")
    return {"root": root, "model": model, "good": root / "good.jsonl", "bad": root / "bad.jsonl"}


def test_help_names_every_command_and_version_prints(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "score", "eval", "demo", "--version", "--debug"):
        assert f"  {command}" in text, command
    assert "exit status" in text
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mmreward {mr.__version__}"


@pytest.mark.parametrize("command", ["score", "eval", "demo"])
def test_each_command_help_describes_every_option_in_words(command: str, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert len(text) > 400, "a description, not a bare list of flags"
    if command != "demo":
        assert "per batch" in text and "cuda when available" in text  # --batch-size, --device
        assert "pick-a-pic" in text and "genai-bench-video" in text  # the format names
    else:
        assert "t2i" in text and "metrics.json" in text


def test_score_prints_a_summary_and_keeps_the_counts_on_stdout(data: dict, capsys):
    out = data["root"] / "out" / "summary.jsonl"
    args = ["score", "--model", str(data["model"]), "--input", str(data["good"]), "--output", str(out)]
    assert main([*args, "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1]) == {"scored": 2, "skipped_done": 0, "bad": 0}
    summary = [line for line in captured.err.splitlines() if line.startswith("mmreward score: ")]
    assert len(summary) == 1, captured.err
    assert "2 records scored, 0 skipped (already in the output), 0 bad;" in summary[0]
    assert " s, " in summary[0] and "records/s" in summary[0]
    assert "scoring" in captured.err, "the progress bar still runs"


def test_dtype_bf16_scores_near_fp32_and_an_unknown_dtype_is_refused(data: dict, capsys):
    outs = {}
    for dtype in ("fp32", "bf16"):
        out = data["root"] / "out" / f"dtype-{dtype}.jsonl"
        args = ["score", "--model", str(data["model"]), "--input", str(data["good"]), "--output", str(out)]
        assert main([*args, "--device", "cpu", "--dtype", dtype, "--no-progress"]) == 0
        outs[dtype] = [json.loads(line)["score"] for line in out.read_text().splitlines()]
    in_process = mr.load(data["model"], device="cpu").score(
        prompts=["a red ball"] * 2, images=[data["root"] / "a.png"] * 2
    )
    assert outs["fp32"] == pytest.approx(in_process, abs=1e-6)
    assert outs["bf16"] == pytest.approx(outs["fp32"], abs=0.05 * (1 + max(map(abs, outs["fp32"]))))
    with pytest.raises(SystemExit) as exit_:
        main(["score", "--model", str(data["model"]), "--input", str(data["good"]), "--output",
              str(data["root"] / "x.jsonl"), "--dtype", "fp16"])  # fmt: skip
    assert exit_.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["score", "eval"])
@pytest.mark.parametrize(
    "flags", [["--dtype", "bf16"], ["--device", "cpu"], ["--dtype", "fp32", "--device", "cpu"]]
)
def test_model_options_with_a_reward_class_are_refused_not_ignored(data: dict, capsys, command, flags):
    """--dtype and --device say how a saved model is loaded; a reward class would silently ignore them."""
    with pytest.raises(SystemExit) as exit_:
        main([command, "--reward", "tests.test_cli.BuggyReward", *flags, "--data" if command == "eval"
              else "--input", str(data["good"]), "--output", str(data["root"] / f"flags-{command}")])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    named = " and ".join(f for f in flags if f.startswith("--"))
    assert (
        f"{named} appl" in err
        and "to a saved model (--model), not to --reward tests.test_cli.BuggyReward" in err
    )
    assert not (data["root"] / f"flags-{command}").exists()


def test_a_bad_record_exits_2_with_one_message_naming_file_line_id_and_field(data: dict):
    run = run_cli(
        "score", "--model", str(data["model"]), "--input", str(data["bad"]),
        "--output", str(data["root"] / "out" / "bad.jsonl"), "--device", "cpu",
    )  # fmt: skip
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("mmreward: error: ")]
    assert len(errors) == 1, run.stderr
    assert errors[0].startswith(f"mmreward: error: {data['bad']}:2 (id gen-7) field 'image': ")
    assert "does not exist" in errors[0]
    assert "--debug" in run.stderr  # says how to see more


def test_debug_shows_the_traceback_and_a_bug_asks_to_be_reported(data: dict):
    run = run_cli(
        "--debug", "score", "--model", str(data["model"]), "--input", str(data["bad"]),
        "--output", str(data["root"] / "out" / "debug.jsonl"), "--device", "cpu",
    )  # fmt: skip
    assert run.returncode == 2 and "Traceback" in run.stderr and "FileNotFoundError" in run.stderr
    assert "mmreward: error: " in run.stderr and "(id gen-7) field 'image'" in run.stderr
    run = run_cli(
        "score", "--reward", "tests.test_cli.BuggyReward", "--input", str(data["good"]),
        "--output", str(data["root"] / "out" / "bug.jsonl"),
    )  # fmt: skip
    assert run.returncode == 1, run.stderr[-2000:]
    assert "Traceback" in run.stderr and "KeyError" in run.stderr
    assert "mmreward: internal error: KeyError" in run.stderr and "please report it" in run.stderr


def test_an_unknown_command_exits_2_with_a_hint():
    run = run_cli("scroe")
    assert run.returncode == 2 and "Did you mean 'score'" in run.stderr and "Traceback" not in run.stderr


def test_out_of_memory_is_a_message_with_a_hint_not_a_bug(capsys):
    import torch

    from mmreward.cli_errors import EXIT_BAD_INPUT, report_error

    assert (
        report_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), debug=False)
        == EXIT_BAD_INPUT
    )
    err = capsys.readouterr().err
    assert "out of memory" in err and "--batch-size" in err and "Traceback" not in err
