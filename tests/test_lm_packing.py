"""LMBackbone's batch layouts: prefix-tree rows (a batch's samples in few rows, the tokens they share
from their start, such as a pair's prompt or the chat template's header, once) and the one-prompt
shared-prefix layout give the features, gradients and loss of the plain padded forward; the plain
layout built from the tokenized ids equals the tokenizer's own padding."""

from __future__ import annotations

import pytest
import torch

from mmreward.data.collate import Collator
from mmreward.heads import LinearHead
from mmreward.losses import RewardLoss
from mmreward.models import RewardModel
from mmreward.types import Preference, Sample
from modalities.backbones.lm import LMBackbone, common_prefix_length, tree_attention_mask
from tests.vlm_helpers import build_tiny_causal_lm


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm-packing") / "qwen3")


PROMPTS = ["repeat the word cat", "repeat the words red star", "what is 12 plus 7"]
CHOSEN = ["cat", "red star", "19"]
REJECTED = ["dog", "star red and more", "21"]
# as the Collator lays out a PairBatch: the chosen samples, then the rejected ones
PAIRS = [Sample(prompt=p, response=r) for p, r in zip(PROMPTS, CHOSEN)] + [
    Sample(prompt=p, response=r) for p, r in zip(PROMPTS, REJECTED)
]


def plain_and_packed(backbone: LMBackbone, samples: list[Sample]) -> tuple[dict, dict]:
    backbone.shared_prefix = False
    plain = backbone.collate(samples)
    backbone.shared_prefix = True
    return plain, backbone.collate(samples)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("pooling", ["last", "reward_token"])
def test_packed_pairs_give_the_plain_features_and_gradients(tiny_lm, pooling, attn):
    torch.manual_seed(0)
    backbone = LMBackbone(str(tiny_lm), pooling=pooling, attn_implementation=attn)
    plain, packed = plain_and_packed(backbone, PAIRS)
    assert "subtree_end" in packed and packed["input_ids"].shape[0] == 1  # the three pairs in one row
    assert packed["input_ids"].numel() < plain["input_ids"].numel()
    weights = [p for p in backbone.parameters() if p.requires_grad]
    grads = []
    for inputs in (plain, packed):
        features = backbone(inputs)
        grads.append(torch.autograd.grad((features * torch.linspace(-1, 1, 64)).sum(), weights))
        if inputs is plain:
            reference = features.detach()
    assert torch.allclose(features, reference, atol=1e-5)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5 * max(1.0, b.abs().max().item()))


def test_many_responses_to_one_prompt_are_packed_in_bounded_rows(tiny_lm):
    # gradient checkpointing turns the one-prompt cache layout off, so packing takes the batch
    backbone = LMBackbone(str(tiny_lm), gradient_checkpointing=True).eval()
    words = ["red", "star", "cat", "dog", "sun", "car"]
    samples = [
        Sample(prompt="repeat the words red star", response=f"{a} {b} " * k)
        for k in range(1, 5)
        for a in words
        for b in words
    ]
    plain, packed = plain_and_packed(backbone, samples)
    assert "subtree_end" in packed
    longest = int(plain["attention_mask"].sum(dim=1).max())
    rows, width = packed["input_ids"].shape
    assert 1 < rows < len(samples) and width <= max(backbone.feature_dim, 2 * longest)
    assert packed["input_ids"].numel() < plain["attention_mask"].sum()  # shared tokens run once
    with torch.no_grad():
        assert torch.allclose(backbone(packed), backbone(plain), atol=1e-5)


def test_prefix_tree_rows_of_duplicates_and_prefixes_give_the_plain_features(tiny_lm):
    """A sample that is a prefix of another is read at an inner node; a duplicate shares every node."""
    backbone = LMBackbone(str(tiny_lm)).eval()
    ids = [[5, 6, 7, 8], [5, 6], [5, 6, 9], [5, 6, 7, 8], [10, 11, 12], [5]]
    packed = backbone.collate_packed(ids)
    assert packed is not None and packed["input_ids"].shape == (1, 8)  # 5 6 7 8 9 10 11 12, once each
    assert packed["position_ids"][0].tolist() == [0, 1, 2, 3, 2, 0, 1, 2]
    with torch.no_grad():
        assert torch.allclose(backbone(packed), backbone(backbone.pad(ids)), atol=1e-5)


def test_packed_pairs_give_the_unpacked_loss_and_gradients(tiny_lm):
    torch.manual_seed(0)
    model = RewardModel(LMBackbone(str(tiny_lm)), LinearHead())
    records = [Preference(chosen=PAIRS[i], rejected=PAIRS[i + len(PROMPTS)]) for i in range(len(PROMPTS))]
    weights = [p for p in model.parameters() if p.requires_grad]
    results = []
    for shared_prefix in (False, True):
        model.backbone.shared_prefix = shared_prefix
        batch = Collator(model.collate)(records)
        assert ("subtree_end" in batch.inputs) == shared_prefix
        out = model(batch.inputs)
        loss = RewardLoss().pairs(out[: len(records)], out[len(records) :], batch)["loss"]
        results.append((out.score.detach(), loss.detach(), torch.autograd.grad(loss, weights)))
    (scores, loss, grads), (packed_scores, packed_loss, packed_grads) = results
    assert torch.allclose(packed_scores, scores, atol=1e-5) and torch.allclose(packed_loss, loss, atol=1e-5)
    for a, b in zip(packed_grads, grads):
        assert torch.allclose(a, b, atol=1e-5 * max(1.0, b.abs().max().item()))


def test_one_prompt_batch_shares_its_prefix_with_last_token_pooling(tiny_lm):
    backbone = LMBackbone(str(tiny_lm)).eval()
    samples = [Sample(prompt="repeat the word cat", response=r) for r in ("cat", "cat cat", "dog")]
    plain, shared = plain_and_packed(backbone, samples)
    assert "prefix" in shared
    with torch.no_grad():
        assert torch.allclose(backbone(shared), backbone(plain), atol=1e-5)


def test_distinct_prompts_share_the_chat_header_in_one_row(tiny_lm):
    backbone = LMBackbone(str(tiny_lm)).eval()
    plain, packed = plain_and_packed(backbone, PAIRS[:3])
    assert "subtree_end" in packed and packed["input_ids"].shape[0] == 1
    assert packed["input_ids"].numel() < plain["attention_mask"].sum()  # "<|im_start|> user" once
    with torch.no_grad():
        assert torch.allclose(backbone(packed), backbone(plain), atol=1e-5)


def test_packing_that_saves_nothing_keeps_the_plain_layout(tiny_lm):
    backbone = LMBackbone(str(tiny_lm))
    assert backbone.collate_packed([[5, 6], [7, 8]]) is None  # one row of 4 = two rows of 2
    assert "subtree_end" not in backbone.collate(PAIRS[:1]) and "prefix" not in backbone.collate(PAIRS[:1])


@pytest.mark.parametrize("side", ["right", "left"])
def test_plain_layout_equals_the_tokenizers_padding(tiny_lm, side):
    backbone = LMBackbone(str(tiny_lm), shared_prefix=False)
    backbone.tokenizer.padding_side = side
    ours = backbone.collate(PAIRS)
    theirs = backbone.encode([backbone.full_text(s) for s in PAIRS], {})
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_common_prefix_leaves_each_sequence_a_token():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert common_prefix_length([[7, 1], [8, 1]]) == 0
    assert common_prefix_length([[1, 2, 3]]) == 2


def test_tree_mask_sees_ancestors_and_itself_only():
    # nodes in depth-first order: 0 -> 1 -> {2 -> 3, 4}; 5 is padding
    subtree_end = torch.tensor([[5, 5, 4, 4, 5, 6]])
    mask = tree_attention_mask(subtree_end)[0, 0]
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 0, 0, 1, 0],
            [0, 0, 0, 0, 0, 1],  # padding sees itself only
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)
    additive = tree_attention_mask(subtree_end, additive=True)[0, 0]
    assert (
        torch.equal(additive == 0, expected) and (additive[~expected] == torch.finfo(torch.float32).min).all()
    )


def test_each_text_is_rendered_and_tokenized_once_across_batches(tiny_lm, monkeypatch):
    """Later epochs reuse the token ids; a changed response or a list prompt is tokenized afresh."""
    backbone = LMBackbone(str(tiny_lm))
    first = backbone.collate(PAIRS)
    rendered = []
    full_text = backbone.full_text
    monkeypatch.setattr(backbone, "full_text", lambda s: rendered.append(s) or full_text(s))
    again = backbone.collate(PAIRS)
    assert rendered == [] and all(torch.equal(first[k], again[k]) for k in first)
    changed = Sample(prompt=PROMPTS[0], response="cats")
    listed = Sample(prompt=[{"type": "text", "text": PROMPTS[0]}], response="cat")
    ids = backbone.token_ids([PAIRS[0], changed, listed, listed])
    assert rendered == [changed, listed, listed]
    assert ids[0] != ids[1] and ids[2] == ids[3]
    fresh = LMBackbone(str(tiny_lm)).tokenizer(full_text(changed), add_special_tokens=False)["input_ids"]
    assert ids[1] == fresh
    with pytest.raises(ValueError, match="reads text only"):
        backbone.token_ids([Sample(prompt=PROMPTS[0], response="cat", image="x.png")])
