"""``mmreward eval`` on each benchmark layout gives the accuracies computed by hand (issue 15).

A deterministic reward (``KeyReward``) scores each candidate from its text or media file name, so
every figure can be recomputed here from the raw records, apart from the code under test. Real
records come from ``tests/fixtures`` (sources in ``tests/fixtures/SOURCES.md``); benchmarks with
no shipped record here are written from their published fields.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from mmreward.cli import main
from mmreward.data.benchmark_ratings import imagenhub_ratings, tifa160_ratings
from mmreward.data.benchmarks import vl_rewardbench
from mmreward.data.files import write_jsonl
from mmreward.metrics import (
    all_pairs_accuracy,
    best_tie_accuracy,
    calibration,
    rating_pair_accuracy,
    tie_aware_accuracy,
)
from mmreward.types import RewardOutput

FIXTURES = Path(__file__).parent / "fixtures"


class KeyReward:
    """Scores a sample by ``table[key]``, else ``len(key)``; the key is the response text, else the
    file name of its video or image. With ``aspects``, also returns VideoGen-RewardBench's three
    aspects: the score, minus the score, and the score again."""

    def __init__(self, table: dict[str, float] | None = None, aspects: bool = False, parts: int = 1) -> None:
        self.table, self.aspects, self.parts = table or {}, aspects, parts

    def key(self, sample) -> str:
        if sample.response is not None:
            return sample.response
        return "/".join(Path(str(sample.video or sample.image)).parts[-self.parts :])

    def score_samples(self, samples):
        outputs = []
        for sample in samples:
            key = self.key(sample)
            s = float(self.table.get(key, len(key)))
            extra = {"visual_quality": s, "motion_quality": -s, "alignment": s} if self.aspects else None
            outputs.append(RewardOutput(score=s, aspects=extra))
        return outputs


def run_eval(
    data: Path, fmt: str, tmp_path: Path, capsys, reward_args: dict | None = None, report=True
) -> dict:
    args = [
        "eval",
        "--reward",
        f"{__name__}.KeyReward",
        "--data",
        str(data),
        "--format",
        fmt,
        "--no-media-check",
    ]
    if reward_args:
        args += ["--reward-args", json.dumps(reward_args)]
    if report:
        args += ["--output", str(tmp_path / "report")]
    capsys.readouterr()
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    if report:
        saved = json.loads((tmp_path / "report" / "report.json").read_text())
        assert saved["meta"]["format"] == fmt
        assert (tmp_path / "report" / "report.html").read_text().startswith("<!doctype html>")
    return printed


def agree(a: float, b: float) -> float:
    """1 when a > b, 0.5 when equal, else 0: a hand-counted pair."""
    return 1.0 if a > b else 0.5 if a == b else 0.0


def test_mm_rlhf_acc_and_acc_plus_on_the_real_records(tmp_path: Path, capsys):
    path = FIXTURES / "formats" / "mm_reward_bench_first5.jsonl"
    raws = [json.loads(line) for line in path.read_text().splitlines()]
    table = {raws[1]["rejected"]: 1e6}  # "Answer:B", rejected in records 2 and 4, beats every chosen one
    score = lambda text: table.get(text, len(text))  # noqa: E731
    right = [agree(score(r["chosen"]), score(r["rejected"])) for r in raws]
    queries: dict[str, list[float]] = {}
    for r, ok in zip(raws, right):
        queries.setdefault(r["prompt"] + r["image"], []).append(ok)
    pairs = run_eval(path, "mm-rlhf", tmp_path, capsys, {"table": table})["pairs"]
    assert pairs["n"] == 5 and pairs["n_queries"] == 2 == len(queries)
    assert (pairs["accuracy"], pairs["acc_plus"]) == (0.6, 0.5)  # wrong pairs fail their whole query
    assert pairs["accuracy"] == pytest.approx(np.mean(right))
    assert pairs["acc_plus"] == pytest.approx(np.mean([all(x == 1.0 for x in v) for v in queries.values()]))


def test_genai_bench_arena_votes_with_and_without_ties(tmp_path: Path, capsys):
    path = FIXTURES / "video" / "genai_bench_video_arena_head60.json"
    raws = json.loads(path.read_text())
    table = {}
    for r in raws:  # an integer score per video from its hex name; two tie votes made exact ties
        for side in ("video_left", "video_right"):
            table[r[side]] = int(r[side][:6], 16) % 97
    ties = [r for r in raws if r["vote_type"] in ("tievote", "bothbad_vote")][:2]
    for r in ties:
        table[r["video_right"]] = table[r["video_left"]]
    decided, with_ties, by_vote = [], [], {}
    for r in raws:
        left, right = table[r["video_left"]], table[r["video_right"]]
        vote = r["vote_type"]
        ok = {"leftvote": left > right, "rightvote": right > left}.get(vote, left == right)
        if vote in ("leftvote", "rightvote"):
            decided.append(agree(left, right) if vote == "leftvote" else agree(right, left))
        with_ties.append(float(ok))
        by_vote.setdefault(vote, []).append(float(ok))
    pairs = run_eval(path, "genai-bench-video-arena", tmp_path, capsys, {"table": table})["pairs"]
    assert pairs["n"] == 60 and pairs["n_ties"] == 20  # 7 tie and 13 both-bad votes
    assert pairs["accuracy"] == pytest.approx(np.mean(decided))
    assert pairs["accuracy_with_ties"] == pytest.approx(np.mean(with_ties))
    assert pairs["by_subset_with_ties"]["bothbad_vote"] == pytest.approx(np.mean(by_vote["bothbad_vote"]))
    assert pairs["by_subset_with_ties"]["tievote"] == pytest.approx(np.mean(by_vote["tievote"]))
    assert set(pairs["by_subset"]) == {"leftvote", "rightvote", "tievote", "bothbad_vote"}  # kept apart
    assert pairs["accuracy_with_ties_best"]["accuracy"] >= pairs["accuracy_with_ties"]


def test_seetrue_auroc_on_the_real_records(tmp_path: Path, capsys):
    path = FIXTURES / "formats" / "seetrue_head8.csv"
    rows = list(csv.DictReader(path.open()))
    table = {row["image"]: float(i) for i, row in enumerate(rows)}  # score = row number
    pos = [table[r["image"]] for r in rows if r["label"] == "1"]
    neg = [table[r["image"]] for r in rows if r["label"] == "0"]
    auroc = np.mean([agree(p, n) for p in pos for n in neg])
    ratings = run_eval(path, "seetrue", tmp_path, capsys, {"table": table})["ratings"]
    assert ratings["n"] == 8 and ratings["auroc"] == pytest.approx(auroc)
    assert set(ratings["by_subset"]) == {"drawbench", "coco_t2i"}


def test_vl_rewardbench_overall_and_macro_accuracy(tmp_path: Path, capsys):
    records = [  # published fields: id, query, response (2), human_ranking (0 = better), image_path
        {"id": "mathverse_1", "query": "q1", "response": ["long answer", "short"], "human_ranking": [0, 1]},
        {"id": "mmmu_2", "query": "q2", "response": ["ab", "abcdef"], "human_ranking": [0, 1]},
        {"id": "povid_3", "query": "q3", "response": ["abc", "abcdefgh"], "human_ranking": [1, 0]},
        {"id": "wildvision_4", "query": "q4", "response": ["abcd", "abc"], "human_ranking": [0, 1]},
        {"id": "vlfeedback_5", "query": "q5", "response": ["abcd", "a"], "human_ranking": [1, 0]},
    ]
    for r in records:
        r["image_path"] = f"images/{r['id']}.jpg"
    path = tmp_path / "vl_rewardbench.json"
    path.write_text(json.dumps(records))
    # by length: mathverse right, mmmu wrong, povid right, wildvision right, vlfeedback wrong
    pairs = run_eval(path, "vl-rewardbench", tmp_path, capsys)["pairs"]
    assert pairs["accuracy"] == pytest.approx(3 / 5)
    assert pairs["by_subset"] == {"general": 0.5, "hallucination": 1.0, "reasoning": 0.5}
    assert pairs["macro_accuracy"] == pytest.approx(2 / 3)
    (record,) = vl_rewardbench({**records[0], "image_path": None, "image": {"bytes": b"", "path": "x.jpg"}})
    assert record["chosen"]["image"] == "x.jpg"
    with pytest.raises(ValueError, match="field image: expected an image path; got bytes"):
        vl_rewardbench({**records[0], "image_path": None, "image": b"\x89PNG"})


def test_multimodal_rewardbench_by_category(tmp_path: Path, capsys):
    records = [
        {"ID": "a", "Text": "t", "Image": "i/a.jpg", "Output1": "xx", "Output2": "x", "Better": "Output1",
         "Category": "safety"},
        {"ID": "b", "Text": "t", "Image": "i/b.jpg", "Output1": "xx", "Output2": "xxx", "Better": "Output1",
         "Category": "safety"},
        {"ID": "c", "Text": "t", "Image": "i/c.jpg", "Output1": "x", "Output2": "xxxx", "Better": "Output2",
         "Meta": {"Category": "reasoning"}},
    ]  # fmt: skip
    path = tmp_path / "mmrb.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    pairs = run_eval(path, "multimodal-rewardbench", tmp_path, capsys, report=False)["pairs"]
    assert pairs["accuracy"] == pytest.approx(2 / 3)
    assert pairs["by_subset"] == {"reasoning": 1.0, "safety": 0.5}


def test_videogen_rewardbench_overall_and_aspects_with_and_without_ties(tmp_path: Path, capsys):
    header = "path_A,path_B,A_model,B_model,prompt,VQ,MQ,TA,Overall\n"
    rows = [  # scores by table below: a1 3 > b1 1; a2 2 = b2 2; a3 1 < b3 5
        "./v/a1.mp4,./v/b1.mp4,m1,m2,p1,A,A,B,A\n",
        "./v/a2.mp4,./v/b2.mp4,m1,m2,p2,same,B,same,same\n",
        "./v/a3.mp4,./v/b3.mp4,m1,m2,p3,B,same,A,B\n",
    ]
    path = tmp_path / "videogen-rewardbench.csv"
    path.write_text(header + "".join(rows))
    table = {"a1.mp4": 3, "b1.mp4": 1, "a2.mp4": 2, "b2.mp4": 2, "a3.mp4": 1, "b3.mp4": 5}
    pairs = run_eval(path, "videogen-rewardbench", tmp_path, capsys, {"table": table, "aspects": True})[
        "pairs"
    ]
    assert pairs["n_ties"] == 1
    assert pairs["accuracy"] == 1.0  # rows 1 and 3 decided, both right
    assert pairs["accuracy_with_ties"] == 1.0  # row 2: equal scores predict the tie
    # visual quality = score: A right, same predicted same, B right
    assert pairs["by_aspect"]["visual_quality"] == 1.0
    assert pairs["by_aspect_with_ties"]["visual_quality"] == 1.0
    # motion quality = -score: row 1 A wrong, row 2 B as tie (no decision: half without ties), row 3 same
    assert pairs["by_aspect"]["motion_quality"] == pytest.approx((0 + 0.5) / 2)
    assert pairs["by_aspect_with_ties"]["motion_quality"] == 0.0
    # alignment = score: row 1 B wrong, row 2 same right, row 3 A wrong
    assert pairs["by_aspect"]["alignment"] == 0.0
    assert pairs["by_aspect_with_ties"]["alignment"] == pytest.approx(1 / 3)


def test_rewardbench_2_best_of_4(tmp_path: Path, capsys):
    records = [
        {"id": 1, "prompt": "p1", "chosen": ["xxxxx"], "rejected": ["x", "xx", "xxx"], "subset": "Math"},
        {"id": 2, "prompt": "p2", "chosen": ["xxx"], "rejected": ["x", "xxxxx", "xx"], "subset": "Math"},
        {"id": 3, "prompt": "p3", "chosen": ["xx"], "rejected": ["x", "x", "x"], "subset": "Focus"},
    ]
    path = tmp_path / "rb2.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    pairs = run_eval(path, "rewardbench-2", tmp_path, capsys, report=False)["pairs"]
    assert pairs["n"] == 9 and pairs["n_queries"] == 3
    assert pairs["accuracy"] == pytest.approx(8 / 9)
    assert pairs["acc_plus"] == pytest.approx(2 / 3)  # record 2's chosen loses to one rejected


def test_metrics_by_hand():
    diff, label = np.array([1.0, -2.0, 0.0, 0.5]), np.array([1.0, 1.0, 0.5, 0.5])
    assert tie_aware_accuracy(diff, label) == 0.5  # right, wrong, tie called, tie missed
    assert tie_aware_accuracy(diff, label, threshold=0.5) == 0.75
    assert best_tie_accuracy(diff, label) == {"accuracy": 0.75, "threshold": 0.5}
    assert all_pairs_accuracy(np.array([1, 1, -1, 1]), np.ones(4), ["a", "a", "b", "b"]) == 0.5
    calib = calibration(np.array([0.9, 0.9, 0.2, 0.6]), np.array([1, 0, 0, 1]), bins=5)
    # bins [0, .2], (.2, .4], (.4, .6], (.6, .8], (.8, 1]: |0.5 - 0.9| for the two at 0.9,
    # |0 - 0.2| for 0.2, |1 - 0.6| for 0.6, weighted by count
    assert calib["ece"] == pytest.approx(0.4 * 2 / 4 + 0.2 * 1 / 4 + 0.4 * 1 / 4)
    assert [b["n"] for b in calib["bins"]] == [1, 0, 1, 0, 2]
    # ratings: pairs (0,1) (0,2) (0,3) ordered alike, (1,2) a human tie the model also ties at
    # epsilon 0, (1,3) (2,3) reversed
    got = rating_pair_accuracy(np.array([1, 2, 2, 5]), np.array([1, 3, 3, 2]))
    assert got == {"without_ties": 3 / 5, "with_ties": 4 / 6, "epsilon": 0.0}


def test_report_has_tables_and_the_reliability_diagram(tmp_path: Path, capsys):
    pytest.importorskip("matplotlib")
    path = FIXTURES / "video" / "genai_bench_video_arena_head60.json"
    run_eval(path, "genai-bench-video-arena", tmp_path, capsys)
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Reliability of sigmoid(score gap)" in page and "Pair accuracy by subset" in page
    assert page.count("data:image/png;base64,") >= 2  # subset bars and the reliability diagram
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert 0 <= report["metrics"]["pairs"]["calibration"]["ece"] <= 1


def test_imagenhub_ratings_joined_over_raters(tmp_path: Path, capsys):
    from scipy import stats

    files = sorted((FIXTURES / "formats" / "imagenhub").glob("*.tsv"))
    by_hand: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for path in files:
        rows = list(csv.DictReader(path.open(newline=""), delimiter="\t"))
        for row in rows:
            for model, cell in row.items():
                if model != "uid":
                    sc, pq = json.loads(cell.replace(" ", ""))
                    by_hand.setdefault((row["uid"], model), []).append((sc, pq))
    prompts = {f"sample_{i}.jpg": f"prompt {i}" for i in range(4)}
    records = imagenhub_ratings(files, prompts)
    assert len(records) == 4 * 7 == len(by_hand)
    sd0 = next(r for r in records if r["id"] == "sample_0.jpg/SD")
    assert sd0["scores"]["semantic_consistency"] == pytest.approx(
        np.mean([c[0] for c in by_hand["sample_0.jpg", "SD"]])
    )
    data = write_jsonl(tmp_path / "imagenhub.jsonl", records)
    table = {f"{model}/{uid}": float(len(model) + int(uid[7])) for uid, model in by_hand}
    target = [np.mean([np.sqrt(sc * pq) for sc, pq in by_hand[k]]) for k in by_hand]
    pred = [table[f"{model}/{uid}"] for uid, model in by_hand]
    ratings = run_eval(data, "canonical", tmp_path, capsys, {"table": table, "parts": 2})["ratings"]
    assert ratings["n"] == 28
    assert ratings["spearman"] == pytest.approx(stats.spearmanr(pred, target).statistic)
    assert ratings["kendall"] == pytest.approx(stats.kendalltau(pred, target).statistic)
    with pytest.raises(ValueError, match="No prompt for ImagenHub sample"):
        imagenhub_ratings(files, {})


def test_tifa160_ratings_are_the_workers_mean(tmp_path: Path, capsys):
    from scipy import stats

    anns = FIXTURES / "formats" / "dsg_tifa160_anns_first2texts.csv"
    items = json.loads((FIXTURES / "formats" / "tifa160_first2texts.json").read_text())
    answers: dict[tuple[str, str], list[float]] = {}
    for row in csv.DictReader(anns.open(newline="")):
        answers.setdefault((row["source_id"], row["model_type"]), []).append(float(row["answer"]))
    records = tifa160_ratings(anns, FIXTURES / "formats" / "tifa160_first2texts.json")
    assert len(records) == 10 == len(answers)
    mini = next(r for r in records if r["id"] == "coco_669925_mini_dalle")
    assert mini["score"] == pytest.approx(np.mean(answers["coco_669925", "mini-dalle"]))
    assert mini["prompt"] == items["coco_669925_mini_dalle"]["text"] and mini["subset"] == "mini_dalle"
    data = write_jsonl(tmp_path / "tifa.jsonl", records)
    table = {r["image"]: float(i % 3) for i, r in enumerate(records)}  # image_path -> score
    ratings = run_eval(data, "canonical", tmp_path, capsys, {"table": table}, report=False)["ratings"]
    pred = [table[r["image"]] for r in records]
    target = [r["score"] for r in records]
    assert ratings["spearman"] == pytest.approx(stats.spearmanr(pred, target).statistic)
    ordered = [(a, b) for a in range(10) for b in range(a + 1, 10) if target[a] != target[b]]
    alike = [agree((pred[a] - pred[b]) * np.sign(target[a] - target[b]), 0) for a, b in ordered]
    assert ratings["pair_accuracy"]["without_ties"] == pytest.approx(np.mean(alike))


def test_a_saved_model_gets_the_same_report_as_its_scores_by_hand(tmp_path: Path, capsys):
    import mmreward as mr
    from mmreward.types import Sample
    from tests.core_helpers import tiny_reward_model

    model = tmp_path / "model"
    mr.Scorer(tiny_reward_model("aspects"), device="cpu").save_pretrained(model)
    images = FIXTURES / "images"
    for name in ("astronaut.png", "camera.png"):
        (tmp_path / name).write_bytes((images / name).read_bytes())
    pairs = [
        {"prompt": p, "chosen": {"image": a}, "rejected": {"image": b}, "label": y, "subset": s,
         "aspects": {"alignment": y, "quality": 1.0}}
        for p, a, b, y, s in [
            ("an astronaut", "astronaut.png", "camera.png", 1.0, "people"),
            ("a cameraman", "camera.png", "astronaut.png", 1.0, "people"),
            ("a photo", "astronaut.png", "camera.png", 0.5, "tie"),
        ]
    ]  # fmt: skip
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    scorer = mr.load(model, device="cpu")
    samples = [
        Sample(prompt=r["prompt"], image=str(tmp_path / r[side]["image"]))
        for r in pairs
        for side in ("chosen", "rejected")
    ]
    scores = scorer.score(samples=samples)
    aspect = scorer.score(samples=samples, aspects=True)
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "--model",
                str(model),
                "--data",
                str(data),
                "--device",
                "cpu",
                "--output",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    got = json.loads((tmp_path / "r" / "report.json").read_text())["metrics"]["pairs"]
    diff = [scores[2 * i] - scores[2 * i + 1] for i in range(3)]
    assert got["accuracy"] == pytest.approx(np.mean([agree(d, 0) for d in diff[:2]]))
    assert got["accuracy_with_ties"] == pytest.approx(np.mean([d > 0 for d in diff[:2]] + [diff[2] == 0]))
    q = [aspect[2 * i]["quality"] - aspect[2 * i + 1]["quality"] for i in range(3)]
    assert got["by_aspect"]["quality"] == pytest.approx(np.mean([agree(d, 0) for d in q]))
    assert "Pair accuracy by aspect" in (tmp_path / "r" / "report.html").read_text()


class LengthPairJudge:
    """A pairwise judge (it has ``compare``): P(first better) 0.9 when its response is longer, 0.5
    when as long, 0.2 when shorter; no verdict when either response is "?"."""

    def compare(self, pairs):
        from types import SimpleNamespace

        def p(a, b):
            if "?" in (a.response, b.response):
                return None
            return (
                0.9
                if len(a.response) > len(b.response)
                else 0.5
                if len(a.response) == len(b.response)
                else 0.2
            )

        return [SimpleNamespace(p_first=p(a, b)) for a, b in pairs]

    def score_samples(self, samples):
        raise AssertionError("a pairwise judge's pairs are judged as pairs, not scored one by one")


def test_a_pairwise_judge_is_evaluated_on_each_pair_with_its_own_probability(tmp_path: Path, capsys):
    rows = [("xx", "x", 1.0), ("x", "xx", 1.0), ("ab", "cd", 0.5), ("xxx", "x", 0.5), ("?", "x", 1.0)]
    data = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"prompt": "same prompt", "chosen": c, "rejected": r, "label": y, "subset": "s"}
            for c, r, y in rows
        ],
    )
    capsys.readouterr()
    args = [
        "eval",
        "--reward",
        f"{__name__}.LengthPairJudge",
        "--data",
        str(data),
        "--output",
        str(tmp_path / "r"),
    ]
    assert main(args) == 0
    pairs = json.loads((tmp_path / "r" / "report.json").read_text())["metrics"]["pairs"]
    assert pairs["n_unscored"] == 1 and pairs["n_ties"] == 2
    assert pairs["accuracy"] == pytest.approx(1 / 3)  # right, wrong, no verdict (wrong)
    assert pairs["accuracy_with_ties"] == pytest.approx(2 / 5)  # + the tie called at P = 0.5
    # ECE over the decided, scored pairs: P 0.9 (chosen won) and P 0.2 (chosen won): |1-0.9|, |1-0.2|
    assert pairs["calibration"]["ece"] == pytest.approx((0.1 + 0.8) / 2)
