"""LMBackbone: a tiny causal LM (built offline, loaded through from_pretrained) learns the echo
world through its chat template; pooling is padding- and batch-invariant; shared-prefix scoring
equals full scoring; saved models reload with the same scores."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch

import mmreward as mr
from mmreward.data.records import read_records
from mmreward.data.synthetic.text import EchoWorld
from mmreward.heads import MLPHead
from mmreward.models import RewardModel
from mmreward.scoring import Scorer
from mmreward.training import RewardDataModule, RewardModule
from mmreward.types import Sample
from modalities.backbones.lm import LMBackbone
from tests.vlm_helpers import build_tiny_causal_lm, torch_threads


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm") / "qwen3")


def pair_accuracy(scorer: Scorer, pairs) -> float:
    out = scorer.forward([p.chosen for p in pairs] + [p.rejected for p in pairs]).score
    n = len(pairs)
    return float((out[:n] > out[n:]).float().mean())


def test_text_reward_model_learns_the_echo_world_and_reloads(
    tiny_lm, tmp_path, learning_seed, record_property
):
    torch.manual_seed(learning_seed)
    paths = EchoWorld(train_pairs=2000, val_pairs=0, test_pairs=300, seed=learning_seed).write(
        tmp_path / "data"
    )
    model = RewardModel(LMBackbone(str(tiny_lm)), MLPHead(hidden_size=64), name="echo-rm")
    module = RewardModule(model, optimizer=partial(torch.optim.AdamW, lr=3e-3, weight_decay=0.0))
    data = RewardDataModule(train=str(paths["train"]), batch_size=16)
    test = read_records(paths["test"])
    scorer = Scorer(model, device="cpu", batch_size=100)
    before = pair_accuracy(scorer, test)
    trainer = L.Trainer(
        max_steps=300,
        gradient_clip_val=1.0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with torch_threads(1):
        trainer.fit(module, data)
    after = pair_accuracy(scorer, test)
    record_property("lm.echo.untrained_accuracy", before)
    record_property("lm.echo.heldout_accuracy", after)
    # bars at the seed sweep's mean -/+ 3 sd (docs/learning-figures.md): after 0.854 +- 0.042, before 0.523 +- 0.048
    assert before < 0.68 and after > 0.72, (before, after)
    scorer.save_pretrained(tmp_path / "model")
    reloaded = mr.load(tmp_path / "model", device="cpu", batch_size=100)
    samples = [p.chosen for p in test[:20]] + [p.rejected for p in test[:20]]
    assert torch.allclose(reloaded.forward(samples).score, scorer.forward(samples).score, atol=1e-5)


ECHO = [
    Sample(prompt="repeat the word cat", response="cat"),
    Sample(prompt="repeat the words red star", response="star red star red and more"),
    Sample(prompt="what is 12 plus 7", response="19"),
]


@pytest.mark.parametrize("pooling", ["last", "reward_token"])
def test_scores_do_not_depend_on_padding_side_or_batch_mates(tiny_lm, pooling):
    backbone = LMBackbone(str(tiny_lm), pooling=pooling, shared_prefix=False).eval()
    with torch.no_grad():
        alone = torch.cat([backbone(backbone.collate([s])) for s in ECHO])
        backbone.tokenizer.padding_side = "right"
        right = backbone(backbone.collate(ECHO))
        backbone.tokenizer.padding_side = "left"
        left = backbone(backbone.collate(ECHO))
        reversed_ = backbone(backbone.collate(ECHO[::-1])).flip(0)
    for other in (right, left, reversed_):
        assert torch.allclose(alone, other, atol=1e-5)
    assert not torch.allclose(alone[0], alone[1], atol=1e-3)  # the features do read the text


def test_reward_token_is_added_once_and_read(tiny_lm):
    backbone = LMBackbone(str(tiny_lm), pooling="reward_token")
    token_id = backbone.tokenizer.convert_tokens_to_ids("<|reward|>")
    assert backbone.reward_token_id == token_id
    assert backbone.transformer.get_input_embeddings().weight.shape[0] > token_id
    inputs = backbone.collate(ECHO[:1])
    ids = inputs["input_ids"][0][inputs["attention_mask"][0].bool()]
    assert ids[-1].item() == token_id and (ids == token_id).sum() == 1


def test_shared_prefix_scores_equal_full_scores(tiny_lm):
    backbone = LMBackbone(str(tiny_lm), pooling="reward_token").eval()
    samples = [
        Sample(prompt="repeat the words red star", response=r)
        for r in ("red star", "star", "red star red star blue")
    ]
    shared = backbone.collate(samples)
    assert "prefix" in shared and shared["prefix"]["input_ids"].shape[0] == 1
    with torch.no_grad():
        fast = backbone(shared)
        backbone.shared_prefix = False
        full = backbone(backbone.collate(samples))
    assert torch.allclose(fast, full, atol=1e-5)


def test_bad_inputs_name_the_record_and_field(tiny_lm):
    backbone = LMBackbone(str(tiny_lm), max_length=12)
    long = Sample(prompt="repeat", response="red " * 40, meta={"source": "pairs.jsonl", "line": 7})
    with pytest.raises(ValueError, match=r"pairs.jsonl:7 field 'response'.*max_length=12"):
        backbone.collate([long])
    with_image = Sample(prompt="x", response="y", image="a.png", meta={"source": "pairs.jsonl", "line": 3})
    with pytest.raises(ValueError, match=r"pairs.jsonl:3 field 'image'.*VLMBackbone"):
        backbone.collate([with_image])


def test_compiled_fit_traces_the_backbone_trains_alike_and_ends_eager(tiny_lm, tmp_path):
    """``RewardModule(compile=...)``: Dynamo traces the backbone's forward during the fit (a counting
    backend that runs the traced graphs as they are, so the test pays no code generation), the
    weights end as the eager fit's, and the backbone is eager again for scoring."""
    paths = EchoWorld(train_pairs=64, val_pairs=0, test_pairs=8, seed=0).write(tmp_path / "data")
    graphs = []

    def counting(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    weights = []
    for compile in (False, {"backend": counting, "dynamic": True}):
        torch.manual_seed(0)
        model = RewardModel(LMBackbone(str(tiny_lm)), MLPHead(hidden_size=16))
        module = RewardModule(model, optimizer=partial(torch.optim.AdamW, lr=3e-3), compile=compile)
        trainer = L.Trainer(
            max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        with torch_threads(1):
            trainer.fit(module, RewardDataModule(train=str(paths["train"]), batch_size=8, seed=0))
        assert "forward" not in vars(model.backbone)  # the class's forward again
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert graphs, "the backbone's forward was not traced"
    assert torch.allclose(weights[0], weights[1], atol=1e-5)
