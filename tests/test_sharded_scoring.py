"""`mmreward score` across workers: shards scored apart, then merged, equal one process's output record
for record (same order, same fields, scores within 1e-6: a shard's batches hold other records, so a
score may differ in its last float bits); a killed shard resumes; merge names the shard that is
unfinished, missing lines, repeating them or from another input; torchrun's ranks pick the shard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mmreward as mr
from mmreward.batch_scoring import Shard, bad_path, merge_shards, score_file
from mmreward.cli import main
from mmreward.cli_score import shard_from
from tests.core_helpers import COLOURS, colour_image, tiny_reward_model

REPO = Path(__file__).resolve().parents[1]
N_LINES = 15  # candidates, preferences and a rating; line 9 names a missing image


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sharded")
    colours = sorted(COLOURS)
    for i in range(8):
        colour_image(colours[i % 4], i).save(root / f"{i}.png")
    lines = []
    for i in range(1, N_LINES + 1):
        colour, image = colours[i % 4], f"{i % 8}.png"
        if i == 9:
            lines.append({"id": f"r-{i}", "prompt": "a red picture", "image": "missing.png"})
        elif i % 5 == 0:
            chosen, rejected = {"image": image}, {"image": f"{(i + 1) % 8}.png"}
            lines.append(
                {"id": f"r-{i}", "prompt": f"a {colour} picture", "chosen": chosen, "rejected": rejected}
            )
        elif i == 7:
            lines.append({"id": f"r-{i}", "prompt": f"a {colour} picture", "image": image, "score": 0.5})
        else:
            lines.append({"id": f"r-{i}", "prompt": f"a {colour} picture", "image": image})
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    model = mr.Scorer(tiny_reward_model(), device="cpu").save_pretrained(root / "model")
    reference = root / "single" / "scores.jsonl"
    counts = score_file(scorer(model), data, reference, skip_bad=True, progress=False)
    assert counts == {"scored": N_LINES - 1, "skipped_done": 0, "bad": 1}
    return {"root": root, "data": data, "model": model, "reference": reference}


def scorer(model: Path):
    return mr.load(model, device="cpu")


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_same(got, expected, where: str = "") -> None:
    """Equal record for record: the same keys and values, floats within 1e-6."""
    if isinstance(expected, float):
        assert got == pytest.approx(expected, abs=1e-6), where
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and list(got) == list(expected), where
        for key in expected:
            assert_same(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_same(g, e, f"{where}[{i}]")
    else:
        assert got == expected, where


def assert_merged_equals_single(world: dict, merged: Path) -> None:
    expected = read(world["reference"])
    assert [r["line"] for r in expected] == [n for n in range(1, N_LINES + 1) if n != 9]
    assert_same(read(merged), expected)
    assert "provenance" in read(merged)[0] and not any("provenance" in r for r in read(merged)[1:])
    assert read(bad_path(merged)) == read(bad_path(world["reference"]))


def run_cli(*args: str, **env: str) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    environ.update({"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **env})
    return subprocess.Popen(
        [sys.executable, "-m", "mmreward.cli", "score", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )


def test_two_cli_shards_run_at_once_merge_into_the_single_process_output(world: dict, tmp_path: Path, capsys):
    out = tmp_path / "scores.jsonl"
    common = ["--model", str(world["model"]), "--input", str(world["data"]), "--output", str(out)]
    common += ["--skip-bad", "--device", "cpu", "--no-progress"]
    shards = [
        run_cli(*common, "--num-shards", "2", "--shard-index", "0"),
        run_cli(*common, RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", LOCAL_WORLD_SIZE="2"),  # torchrun's
    ]
    runs = [(proc, *proc.communicate(timeout=300)) for proc in shards]
    for proc, _, err in runs:
        assert proc.returncode == 0, err[-3000:]
    assert "shard 0 of 2 (from --shard-index/--num-shards)" in runs[0][2]
    assert "shard 1 of 2 (from torchrun's RANK/WORLD_SIZE)" in runs[1][2]
    assert f"mmreward score --merge --output {out} --num-shards 2" in runs[1][2]
    counts = [json.loads(stdout.splitlines()[-1]) for _, stdout, _ in runs]
    assert counts == [{"scored": 7, "skipped_done": 0, "bad": 0}, {"scored": 7, "skipped_done": 0, "bad": 1}]
    assert {r["line"] % 2 for r in read(tmp_path / "scores.shard-1-of-2.jsonl")} == {1}

    assert main(["score", "--merge", "--output", str(out), "--num-shards", "2"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"merged": 14, "bad": 1, "shards": 2}
    assert_merged_equals_single(world, out)


class KilledAfter:
    """A reward that scores ``calls`` batches and then is killed (Ctrl-C, a preempted node)."""

    def __init__(self, reward, calls: int):
        self.reward, self.calls = reward, calls

    def score_samples(self, samples):
        if self.calls == 0:
            raise KeyboardInterrupt
        self.calls -= 1
        return self.reward.score_samples(samples)


def test_a_killed_shard_is_refused_by_merge_and_resumes_on_its_own(world: dict, tmp_path: Path):
    out, reward = tmp_path / "scores.jsonl", scorer(world["model"])
    score_file(reward, world["data"], out, skip_bad=True, progress=False, shard=Shard(0, 2))
    with pytest.raises(KeyboardInterrupt):
        score_file(
            KilledAfter(reward, 1),
            world["data"],
            out,
            skip_bad=True,
            progress=False,
            batch_size=3,
            shard=Shard(1, 2),
        )
    assert len(read(Shard(1, 2).path(out))) == 3, "what was scored before the kill is kept"
    with pytest.raises(
        ValueError,
        match=r"shard 1 of 2 \(.*scores\.shard-1-of-2\.jsonl\) was started but has not finished.*--resume",
    ):
        merge_shards(out, 2)
    counts = score_file(
        reward, world["data"], out, resume=True, skip_bad=True, progress=False, shard=Shard(1, 2)
    )
    assert counts == {"scored": 4, "skipped_done": 3, "bad": 1}
    assert merge_shards(out, 2) == {"merged": 14, "bad": 1, "shards": 2}
    assert_merged_equals_single(world, out)


def test_merge_names_the_shard_that_is_missing_repeats_lines_or_does_not_belong(world: dict, tmp_path: Path):
    out, reward = tmp_path / "scores.jsonl", scorer(world["model"])
    for index in (0, 1):
        score_file(reward, world["data"], out, skip_bad=True, progress=False, shard=Shard(index, 2))
    with pytest.raises(ValueError, match=r"shard 0 of 3 \(.*scores\.shard-0-of-3\.jsonl\) has no output"):
        merge_shards(out, 3)

    shard0, shard1 = Shard(0, 2).path(out), Shard(1, 2).path(out)
    lines0, lines1 = shard0.read_text(), shard1.read_text()
    shard0.write_text(lines0 + lines0.splitlines(keepends=True)[1])
    with pytest.raises(
        ValueError, match=r"shard 0 of 2 .* repeats input line\(s\) 4\. Rerun it without --resume"
    ):
        merge_shards(out, 2)
    shard0.write_text(lines0)

    shard1.write_text("".join(lines1.splitlines(keepends=True)[:-1]))  # line 15 lost after the shard finished
    with pytest.raises(
        ValueError, match=r"shard 1 of 2 .* is missing input line\(s\) 15\. Rerun it with --resume"
    ):
        merge_shards(out, 2)
    score_file(reward, world["data"], out, resume=True, skip_bad=True, progress=False, shard=Shard(1, 2))
    shard1.write_text(lines0)  # shard 0's lines under shard 1's name
    with pytest.raises(ValueError, match=r"shard 1 of 2 .* holds input line 2, which is shard 0's"):
        merge_shards(out, 2)

    shorter = tmp_path / "data.jsonl"
    shorter.write_text("".join(world["data"].read_text().splitlines(keepends=True)[:10]))
    for i in range(8):
        (tmp_path / f"{i}.png").write_bytes((world["root"] / f"{i}.png").read_bytes())
    score_file(reward, shorter, out, skip_bad=True, progress=False, shard=Shard(1, 2))
    with pytest.raises(
        ValueError,
        match=r"shard 1 of 2 scored another input than shard 0: .* \(10 lines\) vs .* \(15 lines\)",
    ):
        merge_shards(out, 2)
    assert not out.exists(), "nothing is written when a shard does not fit"


def test_torchrun_ranks_pick_the_shard_and_flags_win():
    assert shard_from(None, None, {}) == (None, "")
    assert shard_from(None, None, {"RANK": "3", "WORLD_SIZE": "4"}) == (
        Shard(3, 4),
        "torchrun's RANK/WORLD_SIZE",
    )
    assert shard_from(None, None, {"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})[0] == Shard(1, 2)
    assert shard_from(None, None, {"RANK": "0", "WORLD_SIZE": "1"})[0] is None, (
        "one worker writes OUTPUT itself"
    )
    assert shard_from(2, 0, {"RANK": "3", "WORLD_SIZE": "4"})[0] == Shard(0, 2)
    with pytest.raises(ValueError, match="--num-shards was given alone"):
        shard_from(2, None, {})
    with pytest.raises(ValueError, match="got --shard-index 2 of --num-shards 2"):
        shard_from(2, 2, {})
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer; got 'x'"):
        shard_from(None, None, {"RANK": "0", "WORLD_SIZE": "x"})
