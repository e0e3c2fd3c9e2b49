"""Process reward models (issue 14): process records and their errors, the PRM800K / Math-Shepherd /
ProcessBench / VisualProcessBench readers, per-step scores in one forward (equal to scoring each
prefix), the aggregations, Scorer's per-step output and reload, a text PRM trained on the real
records, and the metrics against hand-computed values."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

import mmreward as mr
from mmreward.cli import main
from mmreward.data.files import RecordError
from mmreward.data.records import read_records
from mmreward.heads import LinearHead, MLPHead
from mmreward.metrics import best_of_n_accuracy, first_error_f1, first_error_index, step_auroc
from mmreward.prm import ProcessRewardModel, aggregate_step_logits, step_bce_loss
from mmreward.scoring import Scorer
from mmreward.training import RewardDataModule, RewardModule
from mmreward.transforms import aggregate_steps
from mmreward.types import Process, Sample
from modalities.backbones.lm import LMBackbone
from modalities.backbones.steps import StepBackbone
from tests.vlm_helpers import build_tiny_causal_lm, torch_threads

FIXTURES = Path(__file__).parent / "fixtures" / "process"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-prm-lm") / "qwen3")


def tiny_prm(path: Path, aggregation: str = "min", seed: int = 0) -> ProcessRewardModel:
    torch.manual_seed(seed)
    return ProcessRewardModel(StepBackbone(LMBackbone(str(path))), LinearHead(), aggregation=aggregation)


def chain(prompt: str, *steps: str, line: int = 0) -> Sample:
    return Sample(prompt=prompt, steps=list(steps), meta={"source": "t", "line": line})


def write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# -- records and readers -------------------------------------------------------------------------


def test_canonical_process_records_read_with_their_labels(tmp_path):
    data = write(
        tmp_path / "p.jsonl",
        [{"id": "a", "prompt": "2+3*4?", "steps": ["3*4=12", "2+12=14"], "labels": [1, 1]}],
    )
    (record,) = read_records(data)
    assert isinstance(record, Process)
    assert record.sample.steps == ["3*4=12", "2+12=14"] and record.labels == [1, 1] and record.id == "a"


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"labels": [1, 0, 1]}, "labels", "3 labels for 2 steps"),
        ({"steps": ["3*4=12", "  "]}, "steps.1", "step 1 is empty"),
        ({"labels": [1, 0.5]}, "labels.1", "expected 0 .* or 1"),
        ({"labels": [1, -1]}, "labels.1", "expected 0 .* or 1"),
        ({"labels": [True, 1]}, "labels.0", "expected 0 .* or 1"),
        ({"steps": "3*4=12"}, "steps", "non-empty list of step strings"),
        ({"steps": None}, "steps", "needs 'steps'"),
    ],
)
def test_a_bad_process_record_names_the_file_line_and_field(tmp_path, change, field, says):
    good = {"prompt": "2+3*4?", "steps": ["3*4=12", "2+12=14"], "labels": [1, 0]}
    bad = {**good, "id": "b", **change}
    if bad["steps"] is None:
        del bad["steps"]
    data = write(tmp_path / "process.jsonl", [good, bad])
    with pytest.raises(RecordError, match=rf"process\.jsonl:2 \(id b\) field '{field}': .*{says}"):
        read_records(data)


def test_prm800k_as_shipped(tmp_path):
    records = read_records(FIXTURES / "prm800k.jsonl", "prm800k")
    # record 1: step 2 has no chosen completion (all five rated -1, a human step written in): the
    # chain ends at its first -1 completion. Record 2: rating 0 (neutral) counts as correct; the
    # labeller found an error at the last step. Record 3: a full solution, neutral last step.
    assert [r.labels for r in records] == [[1, 0], [1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert (
        records[0].sample.steps[1]
        == "The first equation is 3p + e = 124, and the second equation is 5p + e = 182."
    )
    assert records[0].sample.prompt.startswith("Three pencils and a jumbo eraser")
    assert [r.subset for r in records] == ["solution", "found_error", "solution"]


def test_math_shepherd_as_shipped():
    records = read_records(FIXTURES / "math_shepherd.jsonl", "math-shepherd")
    assert [r.labels for r in records] == [[1, 1, 1, 1, 0], [0, 0, 0], [0, 0], [0, 0, 0, 0, 0]]
    first = records[0]
    assert first.sample.prompt.endswith("than clarinet lessons in a year?")
    assert first.sample.steps[0].startswith("Step 1: Janet spends 3 hours + 5 hours")
    assert first.sample.steps[-1].endswith("The answer is: 13520")
    assert all("ки" not in s for r in records for s in r.sample.steps)


def test_processbench_and_visualprocessbench_layouts(tmp_path):
    pb = write(
        tmp_path / "pb.jsonl",
        [
            {
                "id": "gsm8k-0",
                "generator": "Qwen2-7B",
                "problem": "q",
                "steps": ["a", "b", "c"],
                "label": 1,
                "final_answer_correct": False,
            },
            {
                "id": "gsm8k-1",
                "generator": "Qwen2-7B",
                "problem": "q",
                "steps": ["a", "b"],
                "label": -1,
                "final_answer_correct": True,
            },
        ],
    )
    assert [r.labels for r in read_records(pb, "processbench")] == [[1, 0, 0], [1, 1]]
    (tmp_path / "img.png").write_bytes((FIXTURES.parent / "images" / "camera.png").read_bytes())
    response = {"steps": ["read 3 bars", "3 + 1 = 5", "so 5"], "process_correctness": [1, -1, 0]}
    vp = write(
        tmp_path / "vp.jsonl",
        [
            {
                "image": ["img.png"],
                "question": "q",
                "answer": "4",
                "response": response,
                "data_source": "MathVista",
            },
            {"image": ["img.png"], "question": "q", "answer": "4", "response": json.dumps(response)},
        ],
    )
    first, second = read_records(vp, "visualprocessbench")
    assert first.labels == second.labels == [1, 0, 1]
    assert first.sample.images == [str(tmp_path / "img.png")] and first.subset == "MathVista"


# -- the model -----------------------------------------------------------------------------------


def test_step_scores_in_one_forward_equal_the_score_of_each_prefix(tiny_lm):
    model = tiny_prm(tiny_lm).eval()
    steps = ["three times four is 12", "two plus 12 is 14", "so the answer is 14", "check : 14"]
    full = Scorer(model, device="cpu").score_samples([chain("what is 2 + 3 * 4 ?", *steps)])[0]
    prefixes = Scorer(model, device="cpu").score_samples(
        [chain("what is 2 + 3 * 4 ?", *steps[:k]) for k in range(1, len(steps) + 1)]
    )
    assert len(full.steps) == 4
    # step k's score in the one forward equals the last step's score of the chain cut after step k
    np.testing.assert_allclose(full.steps, [p.steps[-1] for p in prefixes], atol=1e-5)
    assert full.score == pytest.approx(min(full.steps), abs=1e-6)


def test_aggregations_by_hand():
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, float("nan"), float("nan")]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    p = torch.sigmoid(torch.tensor([0.0, 2.0, -1.0]))
    p1 = torch.sigmoid(torch.tensor(1.0))
    expected = {
        "min": [p.min(), p1],
        "last": [p[2], p1],
        "mean": [p.mean(), p1],
        "product": [p.prod(), p1],
    }
    for how, want in expected.items():
        torch.testing.assert_close(aggregate_step_logits(logits, mask, how), torch.stack(want))
    labels = torch.tensor([[1.0, 1.0, 0.0], [1.0, float("nan"), float("nan")]])
    bce = -(torch.log(p[0]) + torch.log(p[1]) + torch.log(1 - p[2]) + torch.log(p1)) / 4
    torch.testing.assert_close(step_bce_loss(logits, labels), bce)


def test_scorer_gives_steps_and_aggregate_and_reloads(tiny_lm, tmp_path):
    model = tiny_prm(tiny_lm, aggregation="product")
    scorer = Scorer(model, device="cpu", batch_size=2)  # two batches of different widths
    samples = [
        chain("q one", "a", "b b", "c", line=0),
        chain("q two", "d", line=1),
        chain("q one", "e", "f", line=2),
    ]
    out = scorer.score_samples(samples)
    assert [len(o.steps) for o in out] == [3, 1, 2]
    assert all(0 < s < 1 for o in out for s in o.steps)
    for o in out:
        assert o.score == pytest.approx(float(np.prod(o.steps)), rel=1e-5)
        assert o.score == pytest.approx(aggregate_steps(o.steps, "product"), rel=1e-5)  # search's rule
    assert out[0].provenance["preprocessing"]["aggregation"] == "product"
    scorer.save_pretrained(tmp_path / "prm")
    again = mr.load(tmp_path / "prm", device="cpu").score_samples(samples)
    for a, b in zip(out, again):
        np.testing.assert_allclose(a.steps, b.steps, atol=1e-6)
        assert a.score == pytest.approx(b.score, abs=1e-6)


def test_mmreward_score_and_eval_on_process_files(tiny_lm, tmp_path, capsys):
    Scorer(tiny_prm(tiny_lm), device="cpu").save_pretrained(tmp_path / "prm")
    rows = [
        {"id": "p0", "generator": "g", "problem": "2 + 2 ?", "steps": ["two plus two", "is 4"], "label": -1},
        {
            "id": "p1",
            "generator": "g",
            "problem": "3 + 3 ?",
            "steps": ["three plus three", "is 7", "so 7"],
            "label": 1,
        },
    ]
    bench = write(tmp_path / "pb.jsonl", rows)
    assert (
        main(["eval", "--model", str(tmp_path / "prm"), "--data", str(bench), "--format", "processbench"])
        == 0
    )
    printed = capsys.readouterr().out
    assert '"process"' in printed and '"step_auroc"' in printed and '"f1"' in printed
    canonical = write(
        tmp_path / "p.jsonl", [{"id": "c", "prompt": "q", "steps": ["a", "b"], "labels": [1, 0]}]
    )
    (result,) = mr.load(tmp_path / "prm", device="cpu").score_records(canonical)
    assert result["id"] == "c" and len(result["steps"]) == 2 and result["labels"] == {"labels": [1, 0]}


def test_prm_bad_inputs_name_the_sample(tiny_lm):
    scorer = Scorer(tiny_prm(tiny_lm), device="cpu")
    with pytest.raises(ValueError, match=r"t:3 field 'steps': a process reward model scores reasoning steps"):
        scorer.score_samples([Sample(prompt="q", response="no steps", meta={"source": "t", "line": 3})])
    with pytest.raises(ValueError, match=r"t:0 field 'steps\.1': the step contains the separator"):
        scorer.score_samples([chain("q", "a", "b <|step|> c")])


def test_text_prm_trains_on_prm800k_and_math_shepherd_records(tiny_lm):
    model = ProcessRewardModel(StepBackbone(LMBackbone(str(tiny_lm))), MLPHead(hidden_size=32))
    # lr 1e-3 for 100 steps: step BCE 0.68 -> 0.013-0.165 over training orders 0-3 (3e-3 for 40 steps
    # stalled at 0.50-0.61 on some orders)
    module = RewardModule(model, optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.0))
    # both formats as shipped: PRM800K through the data module's field_map, Math-Shepherd added
    data = RewardDataModule(train=str(FIXTURES / "prm800k.jsonl"), field_map="prm800k", batch_size=3, seed=0)
    data.setup()
    data.records["train"] += read_records(FIXTURES / "math_shepherd.jsonl", "math-shepherd")
    records = list(data.records["train"])
    chains = [r.sample for r in records]
    labels = [torch.tensor(r.labels, dtype=torch.float32) for r in records]

    def loss() -> float:
        out = Scorer(model, device="cpu").forward(chains).steps
        padded = torch.nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=float("nan"))
        return float(step_bce_loss(out[:, : padded.shape[1]], padded))

    before = loss()
    trainer = L.Trainer(
        max_steps=100,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with torch_threads(1):
        trainer.fit(module, data)
    after = loss()
    print(f"step BCE {before:.3f} -> {after:.3f}")
    assert after < 0.5 * before, (before, after)
    data.records["val"] = records  # evaluated once, after training
    with torch_threads(1):
        (metrics,) = trainer.validate(module, data.val_dataloader(), verbose=False)
    assert {"val/step_auroc", "val/f1", "val/error_accuracy", "val/correct_accuracy"} <= set(metrics)
    print(metrics)
    assert metrics["val/step_auroc"] > 0.8


# -- metrics ---------------------------------------------------------------------------------------


def test_step_auroc_by_hand():
    # correct steps 0.9, 0.8; wrong steps 0.1, 0.8: pairs (0.9>0.1, 0.9>0.8, 0.8>0.1, 0.8=0.8) = 3.5 / 4
    assert step_auroc([0.9, 0.8, 0.1, 0.8], [1, 1, 0, 0]) == 0.875
    assert step_auroc([0.1, 0.2, 0.9], [1, 1, 0]) == 0.0
    assert np.isnan(step_auroc([0.1, 0.2], [1, 1]))


def test_first_error_f1_by_hand():
    assert first_error_index([0.9, 0.7, 0.4, 0.2]) == 2
    assert first_error_index([1, 1, 1]) == -1
    assert first_error_index([1, 0, 1]) == 1
    # erroneous chains: first errors 1, 2, 0 predicted 1, 3, 0 -> 2/3; correct chains: 2 of 4 right
    got = first_error_f1([1, 3, 0, -1, -1, 2, 0], [1, 2, 0, -1, -1, -1, -1])
    assert got["error_accuracy"] == pytest.approx(2 / 3) and got["correct_accuracy"] == 0.5
    assert got["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))  # 4/7
    assert first_error_f1([-1, -1], [0, -1])["f1"] == 0.0


def test_best_of_n_accuracy_by_hand():
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 1.0, 0.0]])
    correct = np.array([[0, 1, 1], [1, 0, 1]])
    # N=1: the pool's share of correct answers. N=3: the top pick (a tie is a coin flip).
    assert best_of_n_accuracy(scores, correct, 1) == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert best_of_n_accuracy(scores, correct, 3) == pytest.approx((0 + 0.5) / 2)
    # N=2, problem 1: {3,2}, {3,1} pick the wrong 3, {2,1} picks a right one: 1/3. Problem 2: the two
    # tied 1.0s are each the pick with probability (1/3 + 1/3 + 2 * 1/3 / 2) / 2 = 1/2... their group
    # holds all of it (every pair holds one), half of it right: 1/2.
    assert best_of_n_accuracy(scores, correct, 2) == pytest.approx((1 / 3 + 1 / 2) / 2)
    with pytest.raises(ValueError, match="n must be in 1..3"):
        best_of_n_accuracy(scores, correct, 4)


def test_step_backbone_on_a_vision_language_model(tmp_path_factory):
    from modalities.backbones.vlm import VLMBackbone
    from tests.vlm_helpers import build_tiny_qwen2_5_vl

    path = build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny-prm-vlm") / "qwen2_5_vl")
    torch.manual_seed(0)
    model = ProcessRewardModel(StepBackbone(VLMBackbone(str(path))), LinearHead(init="ones"))
    scorer = Scorer(model, device="cpu")
    images = FIXTURES.parent / "images"
    steps = ["there are two red circles", "two plus one is 3", "so 3"]

    def sample(image: str, k: int = 3) -> Sample:
        return Sample(prompt="how many circles ?", image=str(images / image), steps=steps[:k])

    full, other = scorer.score_samples([sample("astronaut.png"), sample("camera.png")])
    prefixes = scorer.score_samples([sample("astronaut.png", k) for k in (1, 2, 3)])
    np.testing.assert_allclose(full.steps, [p.steps[-1] for p in prefixes], atol=1e-4)
    assert not np.allclose(full.steps, other.steps, atol=1e-6)  # the step scores read the image


def test_bidirectional_steps_read_both_directions_and_reload(tiny_lm, tmp_path):
    lm = LMBackbone(str(tiny_lm))
    forward_only, both = StepBackbone(lm), StepBackbone(lm, bidirectional=True)
    assert both.feature_dim == 2 * forward_only.feature_dim
    chains = [chain("q", "one two", "three", "four five six"), chain("p", "seven", "eight nine")]
    with torch.no_grad():
        bi = both(both.collate(chains))  # (2, 3, 2D)
        fwd = forward_only(forward_only.collate(chains))
        rev = forward_only(forward_only.collate([chain(c.prompt, *c.steps[::-1]) for c in chains]))
    d = forward_only.feature_dim
    torch.testing.assert_close(bi[..., :d], fwd, atol=1e-5, rtol=0)
    # step k's reverse half is the reversed chain's feature at its step (K - 1 - k)
    torch.testing.assert_close(bi[0, :, d:], rev[0].flip(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(bi[1, :2, d:], rev[1, :2].flip(0), atol=1e-5, rtol=0)
    assert bi[1, 2].abs().sum() == 0  # past the second chain's end
    model = ProcessRewardModel(both, LinearHead())
    scorer = Scorer(model, device="cpu")
    first, changed = scorer.score_samples([chains[0], chain("q", "one two", "three", "ten")])
    assert first.steps[0] != pytest.approx(changed.steps[0], abs=1e-7)  # step 1 sees the last step
    scorer.save_pretrained(tmp_path / "biprm")
    again = mr.load(tmp_path / "biprm", device="cpu").score_samples([chains[0]])
    np.testing.assert_allclose(first.steps, again[0].steps, atol=1e-6)
