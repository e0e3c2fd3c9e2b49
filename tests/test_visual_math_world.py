"""The visual-math world (issue 14 item 5): chains, labels, images, pools, and no leak from text."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from mmreward.data.records import read_records
from mmreward.data.synthetic.visual_math import (
    VALUE_RANGE,
    VOCABULARY,
    VisualMathWorld,
    make_chain,
    misread,
    read_chains,
    sample_chain,
    sample_problem,
)
from mmreward.types import Process

OP_STEP = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)\.")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("visual-math")
    VisualMathWorld(300, 20, 200, pool_problems=6, pool_size=32, seed=1).write(root)
    return root


def test_writes_process_records_with_images(world):
    records = read_records(world / "test.jsonl")
    assert len(records) == 200 and all(isinstance(r, Process) for r in records)
    assert all(3 <= len(r.sample.steps) <= 6 for r in records)
    assert all((world / r.sample.image).is_file() or r.sample.image for r in records)
    raw = read_chains(world / "test.jsonl")
    kinds = Counter(r["error_kind"] for r in raw)
    assert set(kinds) == {"correct", "misread", "arithmetic", "carry"}
    for r in raw:  # labels: 1 before the first error, 0 from it on; answer correctness agrees
        fe = r["first_error"]
        assert r["labels"] == [1 if fe < 0 or i < fe else 0 for i in range(len(r["steps"]))]
        assert (fe < 0) <= r["answer_correct"]
        assert r["steps"][-1] == f"The answer is {r['answer']}."
        words = re.findall(r"[a-z]+|[^\sa-z\d]", " ".join([r["prompt"], *r["steps"]]).lower())
        assert set(words) <= set(VOCABULARY)
        # no scene text: the prompt's only numbers are row names and the factor
        bare = re.sub(r"(rows?|and|by) \d", "", re.sub(r"(rows?|and|by) \d", "", r["prompt"]))
        assert not re.search(r"\d", bare), r["prompt"]


def test_training_chains_end_at_their_first_error(world):
    for r in read_chains(world / "train.jsonl"):
        if r["first_error"] >= 0:
            assert len(r["steps"]) == r["first_error"] + 1 and r["labels"][-1] == 0


def test_arithmetic_errors_show_in_the_text_and_misreads_do_not():
    rng = np.random.default_rng(0)
    local = Counter()
    for _ in range(3000):
        problem, chain = sample_chain(rng, {"correct": 1, "misread": 1, "arithmetic": 1, "carry": 1})
        for k, step in enumerate(chain.steps):
            m = OP_STEP.fullmatch(step)
            if m:
                a, op, b, c = m.groups()
                right = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op] == int(c)
                local[(chain.error_kind, k == chain.first_error, right)] += 1
    assert local[("arithmetic", True, False)] > 0 and local[("arithmetic", True, True)] == 0
    assert local[("correct", False, False)] == 0 and local[("misread", False, False)] == 0


def test_misread_readings_have_the_distribution_of_correct_ones():
    """A stated reading is drawn the same way in correct and misread chains: text alone cannot tell."""
    rng = np.random.default_rng(0)
    stated = {"correct": Counter(), "misread": Counter()}
    for _ in range(6000):
        problem = sample_problem(rng)
        if problem.kind != "objects":
            continue
        kind = "misread" if rng.random() < 0.5 else "correct"
        shown = misread(problem, rng) if kind == "misread" else problem
        chain = make_chain(shown, kind, rng, problem.values)
        values = [int(s.split()[2]) for s in chain.steps if s.startswith("There are")]
        stated[kind].update(values)
        assert (chain.first_error >= 0) == (kind == "misread")
    lo, hi = VALUE_RANGE["objects"]
    for kind in stated:
        total = sum(stated[kind].values())
        shares = np.array([stated[kind][v] / total for v in range(lo, hi + 1)])
        assert np.abs(shares - 1 / (hi - lo + 1)).max() < 0.03, (kind, shares)


def test_misread_images_differ_from_what_is_stated():
    rng = np.random.default_rng(3)
    for _ in range(200):
        problem = sample_problem(rng)
        moved = misread(problem, rng)
        diff = [abs(a - b) for a, b in zip(moved.values, problem.values)]
        assert sorted(diff)[-1] == 1 and sum(diff) == 1


def test_pools_make_majority_voting_often_wrong(world):
    pools = {}
    for r in read_chains(world / "test_pools.jsonl"):
        pools.setdefault(r["pool"], []).append(r)
    assert len(pools) == 6 and all(len(p) == 32 for p in pools.values())
    wrong = 0
    for chains in pools.values():
        assert len({c["image"] for c in chains}) == 1 and any(c["answer_correct"] for c in chains)
        top = Counter(c["answer"] for c in chains).most_common(1)[0][0]
        wrong += top != chains[0]["true_answer"]
    assert wrong >= 3


def test_writes_once(world):
    before = (world / "train.jsonl").stat().st_mtime_ns
    VisualMathWorld(300, 20, 200, pool_problems=6, pool_size=32, seed=1).write(world)
    assert (world / "train.jsonl").stat().st_mtime_ns == before
