"""A corpus of bad inputs: each ends in a clear error naming file, line and field, or in a counted skip.

One tiny model is built once; one `mmreward score --skip-bad` subprocess runs over a file holding
every kind and must name each in ``<output>.bad.jsonl``; a few runs without ``--skip-bad`` must stop
with the message and no traceback; the same kinds through ``read_records`` + ``Scorer`` raise errors
that name the file and line. A model that outputs NaN stops the run naming the record.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mmreward as mr
from mmreward.data.records import read_records
from mmreward.data.validation import media_policy, set_media_policy
from mmreward.evaluation import flatten
from mmreward.guards import NonFiniteError
from tests.core_helpers import colour_image, tiny_reward_model

REPO = Path(__file__).resolve().parents[1]
MAX_PIXELS = 5000  # the runs below cap images at 5000 pixels; the good ones are 32 x 32
GOOD = "img/good.png"


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def pair(rejected_image: object) -> dict:
    return {"prompt": "a red picture", "chosen": {"image": GOOD}, "rejected": {"image": rejected_image}}


def build_media(root: Path) -> None:
    img = root / "data" / "img"
    (img / "folder.png").mkdir(parents=True)
    colour_image("red", 0).save(img / "good.png")
    colour_image("blue", 1).save(root / "outside.png")
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(img / "big.png")
    (img / "corrupt.png").write_bytes(b"this is not a png")
    (img / "empty.png").write_bytes(b"")
    colour_image("green", 2, size=64).save(img / "whole.png")
    whole = (img / "whole.png").read_bytes()
    (img / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (img / "bomb.png").write_bytes(png_claiming(20000, 20000))
    Image.new("RGBA", (32, 32), (200, 10, 10, 0)).save(img / "transparent.png")
    (img / "broken.png").symlink_to(img / "nowhere.png")
    (img / "loop_a.png").symlink_to(img / "loop_b.png")
    (img / "loop_b.png").symlink_to(img / "loop_a.png")
    (img / "escape.png").symlink_to(root / "outside.png")
    os.mkfifo(img / "fifo.png")


# kind -> (the line as written, the field the error must name; None where a line has no field)
KINDS: dict[str, tuple[object, str | None]] = {
    "not JSON": (b'{"prompt": ', None),
    "not UTF-8": (b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}', None),
    "array": (b"[1, 2, 3]", None),
    "string": (b'"hello"', None),
    "number": (b"42", None),
    "null": (b"null", None),
    "empty object": ({}, "prompt"),
    "no prompt": ({"chosen": {"image": GOOD}, "rejected": {"image": GOOD}}, "prompt"),
    "empty prompt": ({"prompt": " ", "chosen": {"image": GOOD}, "rejected": {"image": GOOD}}, "prompt"),
    "prompt not a string": ({"prompt": 7, "chosen": {"image": GOOD}, "rejected": {"image": GOOD}}, "prompt"),
    "no chosen": ({"prompt": "p", "rejected": {"image": GOOD}}, "chosen"),
    "rejected null": ({"prompt": "p", "chosen": {"image": GOOD}, "rejected": None}, "rejected"),
    "candidate a number": ({"prompt": "p", "chosen": 5, "rejected": {"image": GOOD}}, "chosen"),
    "candidate empty": ({"prompt": "p", "chosen": {}, "rejected": {"image": GOOD}}, "chosen"),
    "candidate field typo": (
        {"prompt": "p", "chosen": {"imag": GOOD}, "rejected": {"image": GOOD}},
        "chosen.imag",
    ),
    "label out of range": ({**pair(GOOD), "label": 2}, "label"),
    "label a string": ({**pair(GOOD), "label": "yes"}, "label"),
    "margin NaN": (json.dumps({**pair(GOOD), "margin": math.nan}).encode(), "margin"),
    "margin infinite": (json.dumps({**pair(GOOD), "margin": math.inf}).encode(), "margin"),
    "aspects not an object": ({**pair(GOOD), "aspects": [1, 0]}, "aspects"),
    "aspect out of range": ({**pair(GOOD), "aspects": {"quality": 3}}, "aspects.quality"),
    "score a string": ({"prompt": "p", "image": GOOD, "score": "high"}, "score"),
    "score NaN": (b'{"prompt": "p", "image": "img/good.png", "score": NaN}', "score"),
    "scores not an object": ({"prompt": "p", "image": GOOD, "scores": 3}, "scores"),
    "rating media typo": ({"prompt": "p", "imag": GOOD, "score": 1}, "imag"),
    "kind typo": ({"prompt": "p", "image": GOOD, "scroe": 1}, "scroe"),
    "nothing to score": ({"prompt": "p"}, "<record>"),  # a prompt alone: no candidate, no labels
    "one candidate": ({"prompt": "p", "candidates": [{"image": GOOD}], "ranking": [0]}, "candidates"),
    "ranking not a permutation": (
        {"prompt": "p", "candidates": [{"image": GOOD}, {"image": GOOD}], "ranking": [0, 0]},
        "ranking",
    ),
    "image not a string": (pair(5), "rejected.image"),
    "missing file": (pair("img/nope.png"), "rejected.image"),
    "directory": (pair("img/folder.png"), "rejected.image"),
    "broken link": (pair("img/broken.png"), "rejected.image"),
    "link loop": (pair("img/loop_a.png"), "rejected.image"),
    "FIFO": (pair("img/fifo.png"), "rejected.image"),
    "outside the root": (pair("../outside.png"), "rejected.image"),
    "absolute outside the root": (pair("/etc/passwd"), "rejected.image"),
    "link out of the root": (pair("img/escape.png"), "rejected.image"),
    "corrupt bytes": (pair("img/corrupt.png"), "rejected.image"),
    "empty file": (pair("img/empty.png"), "rejected.image"),
    "truncated PNG": (pair("img/truncated.png"), "rejected.image"),
    "decompression bomb": (pair("img/bomb.png"), "rejected.image"),
    "over the pixel cap": (pair("img/big.png"), "rejected.image"),
    "fully transparent": (pair("img/transparent.png"), "rejected.image"),
    "text for an image model": ({"prompt": "p", "chosen": "a text", "rejected": "another"}, "chosen.image"),
}
EXPECTED_MESSAGE = {  # the words that tell the user what is wrong, where the kind has its own
    "not UTF-8": "not UTF-8",
    "array": "expected a JSON object",
    "string": "expected a JSON object",
    "candidate field typo": "Did you mean 'image'",
    "rating media typo": "Did you mean 'image'",
    "kind typo": "Did you mean 'score'",
    "directory": "is a directory",
    "broken link": "broken symbolic link",
    "link loop": "symbolic link loop",
    "FIFO": "not a regular file",
    "outside the root": "outside the media root",
    "absolute outside the root": "outside the media root",
    "link out of the root": "outside the media root",
    "decompression bomb": "too large",
    "over the pixel cap": "over the cap",
    "fully transparent": "fully transparent",
}


def encode(line: object) -> bytes:
    return line if isinstance(line, bytes) else json.dumps(line).encode()


def good_line(i: int) -> bytes:
    return encode({"id": f"good-{i}", **pair(GOOD)})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("bad_inputs")
    build_media(root)
    model_dir = mr.Scorer(tiny_reward_model(), device="cpu").save_pretrained(root / "model")
    lines, kind_of_line = [good_line(0)], {}
    for kind, (line, _) in KINDS.items():
        if isinstance(line, dict) and line:
            line = {"id": f"bad-{kind}", **line}
        lines.append(encode(line))
        kind_of_line[len(lines)] = kind
    lines += [good_line(1), encode({"id": "good-1", **pair(GOOD)})]  # a duplicate id: warned, scored
    data = root / "data" / "all.jsonl"
    data.write_bytes(b"\n".join(lines) + b"\n")
    return {"root": root, "model": model_dir, "data": data, "kind_of_line": kind_of_line}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env.pop("MMREWARD_TRACEBACK", None)
    return subprocess.run(
        [sys.executable, "-m", "mmreward.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
    )


def test_corpus_has_at_least_35_kinds():
    assert len(KINDS) >= 35


def test_skip_bad_run_names_every_bad_record_and_writes_no_nan(corpus: dict):
    out = corpus["root"] / "out" / "scores.jsonl"
    run = run_cli(
        "score", "--model", str(corpus["model"]), "--input", str(corpus["data"]), "--output", str(out),
        "--skip-bad", "--batch-size", "4", "--media-root", str(corpus["data"].parent),
        "--max-pixels", str(MAX_PIXELS), "--device", "cpu",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    counts = json.loads(run.stdout.strip().splitlines()[-1])
    assert counts == {"scored": 3, "skipped_done": 0, "bad": len(KINDS)}
    bad = [json.loads(x) for x in (out.parent / "scores.bad.jsonl").read_text().splitlines()]
    named = {b["line"]: b for b in bad}
    assert sorted(named) == sorted(corpus["kind_of_line"]), "each bad record is named exactly once"
    for line, kind in corpus["kind_of_line"].items():
        entry, field = named[line], KINDS[kind][1]
        assert f"all.jsonl:{line}" in entry["error"], (kind, entry)
        if field is not None:
            assert repr(field) in entry["error"], (kind, entry)
        if kind in EXPECTED_MESSAGE:
            assert EXPECTED_MESSAGE[kind] in entry["error"], (kind, entry)
    written = [json.loads(x) for x in out.read_text().splitlines()]
    assert [w["id"] for w in written] == ["good-0", "good-1", "good-1"]
    assert all(math.isfinite(w[side]["score"]) for w in written for side in ("chosen", "rejected"))
    assert "appear on more than one line" in run.stderr and "'good-1'" in run.stderr


@pytest.mark.parametrize("kind", ["not UTF-8", "decompression bomb"])
def test_without_skip_bad_the_run_stops_with_the_message_and_no_traceback(corpus: dict, kind: str):
    data = corpus["data"].parent / "one.jsonl"
    line, field = KINDS[kind]
    data.write_bytes(good_line(0) + b"\n" + encode(line) + b"\n")
    out = corpus["root"] / "out" / "one.jsonl"
    run = run_cli(
        "score", "--model", str(corpus["model"]), "--input", str(data), "--output", str(out),
        "--media-root", str(data.parent), "--device", "cpu",
    )  # fmt: skip
    assert run.returncode == 2
    assert "Traceback" not in run.stderr and "one.jsonl:2" in run.stderr, run.stderr[-2000:]
    assert "mmreward: error: " in run.stderr
    assert field is None or repr(field) in run.stderr
    assert EXPECTED_MESSAGE[kind] in run.stderr


@pytest.fixture()
def capped():
    saved = media_policy()
    yield set_media_policy(max_pixels=MAX_PIXELS)
    set_media_policy(max_pixels=saved.max_pixels, media_root=saved.media_root, background=saved.background)


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_through_the_scorer_raises_an_error_naming_file_line_and_field(
    corpus: dict, kind: str, capped, tmp_path: Path
):
    scorer = mr.load(corpus["model"], device="cpu")
    data = corpus["data"].parent / f"kind-{abs(hash(kind))}.jsonl"
    line, field = KINDS[kind]
    data.write_bytes(encode(line) + b"\n")
    with pytest.raises((ValueError, TypeError, OSError)) as info:
        records = read_records(data, media_root=corpus["data"].parent)
        scorer.score(samples=flatten(records)[0])
    message = str(info.value)
    assert f"{data}:1" in message, message
    assert field is None or repr(field) in message, message
    assert EXPECTED_MESSAGE.get(kind, "") in message


def test_sixteen_bit_and_alpha_images_are_converted_not_clipped(tmp_path: Path):
    from modalities.image import load_image

    grey16 = np.full((8, 8), 32896, np.uint16)  # 32896 / 257 = 128: mid grey, not white
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    assert np.asarray(load_image(tmp_path / "grey16.png")).max() == 128
    half = Image.new("RGBA", (8, 8), (0, 0, 0, 128))  # half-transparent black on the white background
    assert np.asarray(load_image(half))[0, 0].tolist() == [127, 127, 127]
    assert np.asarray(load_image(np.full((4, 4), 65535, np.uint16)))[0, 0].tolist() == [255, 255, 255]


def test_a_model_that_outputs_nan_stops_the_run_naming_the_record(corpus: dict, tmp_path: Path):
    from mmreward.batch_scoring import score_file

    scorer = mr.load(corpus["model"], device="cpu", batch_size=2)
    head = scorer.model.head
    original = head.forward

    def poisoned(features):
        out = original(features)
        out.score[-1] = float("nan")
        return out

    head.forward = poisoned
    data = tmp_path / "d.jsonl"
    (tmp_path / "img").mkdir()
    colour_image("red", 0).save(tmp_path / GOOD)
    data.write_text("".join(json.dumps({"id": f"r{i}", **pair(GOOD)}) + "\n" for i in range(3)))
    out = tmp_path / "scores.jsonl"
    with pytest.raises(NonFiniteError, match=r"d.jsonl:1 \(id r0\) field 'rejected'.*not a finite number"):
        score_file(scorer, data, out, skip_bad=True, progress=False)
    assert "NaN" not in out.read_text() and "nan" not in out.read_text()


def test_training_loss_guard_names_step_batch_and_records():
    from mmreward.guards import check_loss

    check_loss(torch.tensor(0.5), 3, 1, ["a"])
    with pytest.raises(NonFiniteError, match=r"step 7, batch 2: the loss is inf \(records 'x', 'y'\)"):
        check_loss(torch.tensor(float("inf")), 7, 2, ["x", "y"])


def test_fit_data_names_a_bad_training_record_or_skips_it_with_a_count(corpus: dict, caplog):
    from mmreward.training import RewardDataModule

    train = corpus["data"].parent / "train.jsonl"
    train.write_bytes(good_line(0) + b"\n" + b"[1, 2]\n" + good_line(1) + b"\n")
    with pytest.raises(ValueError, match=r"train.jsonl:2: expected a JSON object"):
        RewardDataModule(train=str(train)).setup("fit")
    module = RewardDataModule(train=str(train), skip_bad=True)
    module.setup("fit")
    assert len(module.records["train"]) == 2 and "Skipped 1 bad record" in caplog.text


def test_kill_9_then_resume_loses_and_duplicates_nothing(corpus: dict):
    data = corpus["data"].parent / "many.jsonl"
    data.write_bytes(b"".join(good_line(i) + b"\n" for i in range(120)))
    out = corpus["root"] / "out" / "many.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    args = ["score", "--model", str(corpus["model"]), "--input", str(data), "--output", str(out)]
    args += ["--batch-size", "2", "--device", "cpu"]
    proc = subprocess.Popen([sys.executable, "-m", "mmreward.cli", *args], env=env, cwd=REPO)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or len(out.read_bytes().splitlines()) < 4):
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no cleanup runs
    proc.wait(timeout=30)
    assert 4 <= len(out.read_bytes().splitlines()) < 120, "killed mid-run"
    run = run_cli(*args, "--resume")
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [json.loads(x)["line"] for x in out.read_text().splitlines()]
    assert sorted(lines) == list(range(1, 121)), "every input line exactly once"
