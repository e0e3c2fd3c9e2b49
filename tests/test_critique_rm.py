"""The critique reward model (issue 12, item 4): a critique, then a head on its hidden state.

These tests use a tiny judge built in seconds (a few prompts, no training worth the name): they check
the mechanics. Whether the head learns to rank is tested on the quick-start judge in
tests/test_judges_sft.py, which trains that judge once per session.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("open_clip")

from judges.critique_data import CritiqueWorld, read_examples  # noqa: E402
from judges.critique_rm import SCORE_LINE, CritiqueRewardModel, critique_inputs, critique_of  # noqa: E402
from judges.critique_rm_training import (  # noqa: E402
    CritiqueRMDataModule,
    CritiqueRMModule,
    prompt_pair_accuracy,
    rated_pairs,
    train_critique_rm,
)
from judges.pixel_training import PixelJudgeDataModule, PixelJudgeSFTModule, TinyPixelJudge, answer_ids  # noqa: E402
from mmreward.data.synthetic.t2i import T2IWorld  # noqa: E402
from mmreward.types import Sample  # noqa: E402

VISION = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8},
    "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def judge_run(tmp_path_factory):
    """A judge run folder as ``train_quickstart`` writes it (``model/``, ``data/``), untrained."""
    root = tmp_path_factory.mktemp("tiny-judge")
    data = PixelJudgeDataModule(
        CritiqueWorld(T2IWorld(4, 2, 2), images=["train", "val", "test"]),
        "describe_then_judge",
        str(root / "data"),
    )
    data.setup()
    model = TinyPixelJudge(VISION, hidden_size=32, read_out=["layer3"]).build(root / "lm", data.corpus())
    PixelJudgeSFTModule(model).export(root / "model")
    return root


def test_the_head_reads_the_critique_through_the_score_marker():
    text = "Seen: two red circles. Critique: No problem. The image matches.\nScore: 5"
    assert critique_of(text) == "Seen: two red circles. Critique: No problem. The image matches.\nScore:"
    assert critique_of("Seen: cut off at the token lim") == "Seen: cut off at the token lim" + SCORE_LINE


def test_answer_tokens_split_at_the_critique_spell_the_same_answer(judge_run):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(judge_run / "lm")
    target = "Seen: two (not three) red circles. Critique: Wrong count. There are two.\nScore: 3"
    whole, none = answer_ids(tokenizer, target)
    split, head = answer_ids(tokenizer, target, critique_of(target))
    assert split == whole and none == 0
    assert tokenizer.decode(split[:head]) == critique_of(target)
    with pytest.raises(ValueError, match="must start the target"):
        answer_ids(tokenizer, target, "Critique: something else")


def test_pairs_compare_candidates_of_one_prompt_unless_told_otherwise():
    batch = [
        {"group": "p0", "score": 1.0},
        {"target": "a caption item, no group"},
        {"group": "p0", "score": 0.7},
        {"group": "p1", "score": 0.8},
        {"group": "p1", "score": 0.8},
    ]
    assert rated_pairs(batch) == ([0], [1])  # indices among the judged items; equal ratings give no pair
    better, worse = rated_pairs(batch, across_prompts=True)
    assert sorted(zip(better, worse)) == [(0, 1), (0, 2), (0, 3), (2, 1), (3, 1)]


def test_prompt_pair_accuracy_counts_ties_half_and_skips_other_prompts():
    scores = np.array([3.0, 1.0, 2.0, 2.0, 9.0])
    ratings = np.array([1.0, 0.6, 0.7, 0.9, 0.1])
    groups = ["a", "a", "a", "b", "b"]
    # a: (0,1) right, (0,2) right, (1,2) right; b: (3,4) wrong
    assert prompt_pair_accuracy(scores, ratings, groups) == pytest.approx(3 / 4)
    assert prompt_pair_accuracy(np.array([1.0, 1.0]), np.array([1.0, 0.5]), ["a", "a"]) == 0.5
    assert np.isnan(prompt_pair_accuracy(scores[:1], ratings[:1], groups[:1]))


def test_training_reads_the_head_where_scoring_does(judge_run):
    """The state the head is trained on (at ``critique_end``) is the one it scores at (the last token
    of ``critique_inputs``), for the same request and critique."""
    module = CritiqueRMModule(str(judge_run / "model")).eval()
    data = CritiqueRMDataModule(None, str(judge_run / "data"), prompts_per_batch=2, caption_replay=0.0)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    judged = [item for item in batch if "group" in item]
    assert len(judged) == 10 and all(i["critique"].endswith(SCORE_LINE) for i in judged)
    with torch.no_grad():
        inputs = module.encode(batch)
        labels, ends = inputs.pop("labels"), inputs.pop("critique_end")
        hidden = module.composite.run(inputs, labels=labels, hidden_states=True).hidden_states[-1]
        trained = module.head(hidden[torch.arange(len(batch)), ends].float()).score
        alone = critique_inputs(
            module.composite, [i["request"] for i in judged], [i["critique"] for i in judged]
        )
        out = module.composite.run(alone).hidden_states[-1]
        last = alone["attention_mask"].sum(1) - 1
        scored = module.head(out[torch.arange(len(judged)), last].float()).score
    torch.testing.assert_close(trained, scored, atol=1e-5, rtol=1e-5)


def test_steps_lower_the_bradley_terry_loss_on_a_batch(judge_run):
    torch.manual_seed(0)
    module = CritiqueRMModule(str(judge_run / "model"), bt_weight=1.0)
    data = CritiqueRMDataModule(None, str(judge_run / "data"), prompts_per_batch=4)
    data.setup()
    batch = next(iter(data.train_dataloader()))
    optimizer = torch.optim.Adam([*module.composite.parameters(), *module.head.parameters()], lr=3e-3)
    first = None
    for _ in range(15):
        parts = module.losses(batch)
        loss = parts["sft"] + parts["bt"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = float(parts["bt"].detach()) if first is None else first
    assert float(module.losses(batch)["bt"]) < 0.5 * first, first


def test_scores_come_with_the_judgement_and_reload_the_same(judge_run, tmp_path):
    run = train_critique_rm(judge_run, tmp_path / "rm", steps=2, prompts_per_batch=2)
    [example, *_] = read_examples(judge_run / "data" / "test.jsonl")
    sample = Sample(prompt=example.prompt, image=str(judge_run / "data" / example.image))
    text = Sample(prompt="two red circles", response="two blue circles. Quality: clean.")
    first = CritiqueRewardModel(run / "model", max_new_tokens=8).score_samples([sample, text])
    again = CritiqueRewardModel(run / "model", max_new_tokens=8).score_samples([sample, text])
    assert [o.score for o in first] == pytest.approx([o.score for o in again], abs=1e-5)
    assert first[0].text.startswith("Image: ") and not first[1].text.startswith("Image: ")
    assert all(np.isfinite(o.score) for o in first)
    assert first[0].provenance["reward"] == "CritiqueRewardModel"


def test_a_missing_image_names_the_record_and_field(judge_run):
    rm = CritiqueRewardModel(judge_run / "model", max_new_tokens=4)
    with pytest.raises((FileNotFoundError, ValueError), match=r"row-3.*image"):
        rm.score_samples([Sample(prompt="a red circle", image="nowhere.png", meta={"id": "row-3"})])


def test_a_model_without_a_composite_backbone_is_refused():
    with pytest.raises(TypeError, match="CompositeVLM"):
        CritiqueRewardModel(torch.nn.Linear(2, 1))


def test_the_stage_3_config_fits_and_exports_through_the_cli(judge_run, tmp_path):
    from mmreward.cli import main

    main(["fit", "--config", "configs/composite/critique_rm.yaml", "--trainer.fast_dev_run=true",
          f"--trainer.default_root_dir={tmp_path}", f"--model.init_args.model={judge_run / 'model'}",
          f"--data.init_args.data_root={judge_run / 'data'}", "--data.init_args.prompts_per_batch=2"])  # fmt: skip
    [out] = CritiqueRewardModel(tmp_path / "model", max_new_tokens=4).score_samples(
        [Sample(prompt="a red circle", response="a red circle. Quality: clean.")]
    )
    assert np.isfinite(out.score) and out.provenance["model"] == str(tmp_path / "model")
