"""CompositeVLM: an open_clip vision tower, a projector and a causal LM (built offline, loaded through
from_pretrained) as a reward backbone and as a judge backend: shapes, invariance, freezing,
save -> mr.load -> same scores, bad images named, batched generation equal to one at a time."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("open_clip")

import mmreward as mr  # noqa: E402
from judges.backends import SamplingParams  # noqa: E402
from judges.composite_backend import CompositeBackend  # noqa: E402
from judges.critique import CritiqueJudge  # noqa: E402
from mmreward.heads import MLPHead  # noqa: E402
from mmreward.models import RewardModel  # noqa: E402
from mmreward.scoring import Scorer  # noqa: E402
from mmreward.types import Sample  # noqa: E402
from modalities.backbones.composite import (  # noqa: E402
    ClipResNetEncoder,
    ClipVisionEncoder,
    CompositeVLM,
    ConvVisionEncoder,
)
from tests.vlm_helpers import build_tiny_causal_lm  # noqa: E402

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return build_tiny_causal_lm(tmp_path_factory.mktemp("composite-lm") / "qwen3", hidden_size=32)


def composite(tiny_lm, **kwargs) -> CompositeVLM:
    torch.manual_seed(0)
    return CompositeVLM(str(tiny_lm), ClipVisionEncoder(TINY_CLIP), **kwargs)


def samples(n: int = 4) -> list[Sample]:
    generator = torch.Generator().manual_seed(1)
    prompts = ["two red circles", "a blue square", "three green circles left", "a red square"]
    return [
        Sample(
            prompt=prompts[i % 4],
            image=torch.rand(3, 40, 48, generator=generator),
            response="yes" if i % 2 else None,
        )
        for i in range(n)
    ]


def test_forward_gives_one_feature_per_sample_whatever_the_batch(tiny_lm):
    model = composite(tiny_lm, pooled_grid=2).eval()
    batch = samples(4)
    inputs = model.collate(batch)
    assert inputs["pixel_values"].shape == (4, 3, 32, 32)
    assert int((inputs["input_ids"] == model.image_token_id).sum()) == 4 * model.tokens_per_image == 16
    with torch.no_grad():
        features = model(inputs)
        alone = torch.cat([model(model.collate([s])) for s in batch])
        reversed_ = model(model.collate(batch[::-1])).flip(0)
    assert features.shape == (4, model.feature_dim) and torch.isfinite(features).all()
    torch.testing.assert_close(features, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(features, reversed_, atol=1e-5, rtol=0)
    # the image matters: another image gives another feature
    other = [Sample(prompt=s.prompt, image=torch.rand(3, 32, 32), response=s.response) for s in batch]
    with torch.no_grad():
        assert (model(model.collate(other)) - features).abs().max() > 1e-4


def test_freezing_options_stop_gradients_per_part(tiny_lm):
    model = composite(tiny_lm, freeze_encoder=True, freeze_language_model=True, projector="linear")
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert not any(p.requires_grad for p in model.language_model.parameters())
    assert all(p.requires_grad for p in model.projector.parameters())
    assert model.tokens_per_image == 16  # no pooling: every patch token of the 4 x 4 grid
    reward = RewardModel(model, MLPHead(hidden_size=16))
    inputs = model.collate(samples(2))
    reward(inputs).score.sum().backward()
    assert model.projector.weight.grad is not None and model.projector.weight.grad.abs().sum() > 0
    assert model.language_model.get_input_embeddings().weight.grad is None


def test_saved_model_reloads_with_mr_load_and_gives_the_same_scores(tiny_lm, tmp_path):
    reward = RewardModel(composite(tiny_lm, pooled_grid=2), MLPHead(hidden_size=16), name="composite")
    scorer = Scorer(reward, device="cpu")
    batch = samples(4)
    before = [o.raw for o in scorer.score_samples(batch)]
    scorer.save_pretrained(tmp_path / "rm")
    assert (tmp_path / "rm" / "model" / "backbone" / "language_model" / "tokenizer.json").is_file()
    reloaded = mr.load(tmp_path / "rm", device="cpu")
    after = [o.raw for o in reloaded.score_samples(batch)]
    assert after == pytest.approx(before, abs=1e-5)
    assert reloaded.model.backbone.image_token_id == reward.backbone.image_token_id


def test_lora_trains_adapters_on_the_lm_and_reloads_with_the_same_scores(tiny_lm, tmp_path):
    pytest.importorskip("peft")
    model = composite(tiny_lm, pooled_grid=2, lora={"r": 4, "lora_alpha": 8})
    lm = dict(model.language_model.named_parameters())
    trainable = {n for n, p in lm.items() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.requires_grad for p in [*model.encoder.parameters(), *model.projector.parameters()])
    reward = RewardModel(model, MLPHead(hidden_size=16), name="composite-lora")
    frozen = {n: p.detach().clone() for n, p in lm.items() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in reward.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):  # LoRA's B starts at zero: a few steps make the adapters count
        optimizer.zero_grad()
        reward(model.collate(samples(4))).score.sum().backward()
        optimizer.step()
    assert all(torch.equal(lm[n], w) for n, w in frozen.items())  # the LM's own weights did not move
    moved = [n for n in trainable if "lora_B" in n and lm[n].abs().sum() > 0]
    assert moved, "the adapters learned nothing"
    scorer = Scorer(reward.eval(), device="cpu")
    batch = samples(4)
    before = [o.raw for o in scorer.score_samples(batch)]
    scorer.save_pretrained(tmp_path / "rm")
    after = [o.raw for o in mr.load(tmp_path / "rm", device="cpu").score_samples(batch)]
    assert after == pytest.approx(before, abs=1e-5)


def _trains_scores_alone_and_reloads(model: CompositeVLM, batch: list[Sample], tmp_path) -> Scorer:
    """Every encoder weight gets a gradient through the LM; a sample scores alone as in the batch;
    save_pretrained -> mr.load gives the same scores. Returns the reloaded scorer."""
    reward = RewardModel(model, MLPHead(hidden_size=16), name="composite-encoder")
    reward(model.collate(batch)).score.sum().backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    scorer = Scorer(reward.eval(), device="cpu")
    before = [o.raw for o in scorer.score_samples(batch)]
    assert [scorer.score_samples([s])[0].raw for s in batch] == pytest.approx(before, abs=1e-5)
    scorer.save_pretrained(tmp_path / "rm")
    reloaded = mr.load(tmp_path / "rm", device="cpu")
    assert [o.raw for o in reloaded.score_samples(batch)] == pytest.approx(before, abs=1e-5)
    return reloaded


def test_conv_encoder_gives_grid_tokens_learns_and_reloads_with_the_same_scores(tiny_lm, tmp_path):
    torch.manual_seed(0)
    encoder = ConvVisionEncoder(image_size=32, channels=[8, 16], depth=2, colour_levels=2)
    assert (encoder.grid, encoder.width) == (8, 16)
    model = CompositeVLM(str(tiny_lm), encoder, pooled_grid=4)
    assert model.tokens_per_image == 16
    batch = samples(4)
    inputs = model.collate(batch)
    assert encoder(inputs["pixel_values"]).shape == (4, 64, 16)
    reloaded = _trains_scores_alone_and_reloads(model, batch, tmp_path)  # per-image norms: no batch effect
    assert all(p.grad.abs().sum() > 0 for p in encoder.parameters())
    assert isinstance(reloaded.model.backbone.encoder, ConvVisionEncoder)
    with pytest.raises(ValueError, match="divisible"):
        ConvVisionEncoder(image_size=36, channels=[8, 16, 16])


TINY_RESNET_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8},
    "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def test_resnet_encoder_reads_stage_grids_as_tokens_and_reloads_with_the_same_scores(tiny_lm, tmp_path):
    torch.manual_seed(0)
    encoder = ClipResNetEncoder(TINY_RESNET_CLIP, read_out=["layer2", "layer3"])
    # 32 px: the stem leaves 8 x 8, layer2 4 x 4 (64 wide), layer3 2 x 2 (128 wide, upsampled to 4 x 4)
    assert (encoder.grid, encoder.width) == (4, 64 + 128)
    assert encoder.visual.layer4 is None and encoder.visual.attnpool is None
    model = CompositeVLM(str(tiny_lm), encoder, pooled_grid=2)
    batch = samples(4)
    inputs = model.collate(batch)
    assert encoder(inputs["pixel_values"]).shape == (4, 16, 192)
    reloaded = _trains_scores_alone_and_reloads(
        model, batch, tmp_path
    )  # eval-mode BatchNorm: no batch effect
    assert encoder.visual.conv1.weight.grad.abs().sum() > 0
    assert isinstance(reloaded.model.backbone.encoder, ClipResNetEncoder)
    assert reloaded.model.backbone.encoder.read_out == ["layer2", "layer3"]
    # stage 2 starts from a saved stage-1 folder in train mode, so BatchNorm keeps learning its statistics
    from judges.pixel_training import PixelJudgeSFTModule

    stage2 = PixelJudgeSFTModule(model=tmp_path / "rm")
    assert all(m.training for m in stage2.composite.modules())
    with pytest.raises(ValueError, match="four stage depths"):
        ClipResNetEncoder(TINY_CLIP)
    with pytest.raises(ValueError, match="read_out"):
        ClipResNetEncoder(TINY_RESNET_CLIP, read_out=["layer5"])


def test_a_missing_or_corrupt_image_names_the_record_and_field(tiny_lm, tmp_path):
    model = composite(tiny_lm)
    missing = Sample(
        prompt="two red circles", image=str(tmp_path / "gone.png"), meta={"source": "data.jsonl", "line": 7}
    )
    with pytest.raises(FileNotFoundError, match=r"data\.jsonl:7.*'image'.*gone\.png"):
        model.collate([missing])
    corrupt = tmp_path / "bad.png"
    corrupt.write_bytes(b"not a png")
    bad = Sample(
        prompt="p", images=[torch.rand(3, 32, 32), str(corrupt)], meta={"source": "d.jsonl", "id": "r3"}
    )
    with pytest.raises(ValueError, match=r"d\.jsonl \(id r3\).*images\[1\]"):
        model.collate([bad])


def test_an_image_shared_by_requests_is_encoded_once_with_the_same_generations(tiny_lm, monkeypatch):
    """k copies of a sampled request and both orders of a pairwise swap encode each image once, and
    generate what each request generates alone."""
    from judges.base import user_request
    from judges.pairwise import PairwiseJudge

    backend = CompositeBackend(composite(tiny_lm, pooled_grid=2), device="cpu", batch_size=8)
    a, b, c = samples(3)
    critique = CritiqueJudge(backend, max_new_tokens=4).requests([a])[0]
    pairwise = PairwiseJudge(backend)
    shown, swapped = pairwise.requests([(a, b), (b, a)])
    requests = [critique, critique, critique, shown, swapped, user_request("and this?", [c.image])]
    encoded = []
    forward = backend.composite.encoder.forward
    monkeypatch.setattr(backend.composite.encoder, "forward", lambda x: encoded.append(len(x)) or forward(x))
    params = SamplingParams(max_new_tokens=4, top_logprobs=2)
    together = backend.generate(requests, params)
    assert encoded == [3]  # a, b and c, for 8 image parts
    alone = [backend.generate([r], params)[0] for r in requests]
    for x, y in zip(together, alone):
        assert x.tokens == y.tokens
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)


@pytest.mark.parametrize("lora", [None, {"r": 4, "lora_alpha": 8}])
def test_generation_is_batched_with_the_cache_and_equals_one_at_a_time(tiny_lm, tmp_path, lora):
    if lora is not None:
        pytest.importorskip("peft")
    reward = RewardModel(composite(tiny_lm, pooled_grid=2, lora=lora), MLPHead(hidden_size=16))
    backend = CompositeBackend(reward, device="cpu", batch_size=4)
    judge = CritiqueJudge(backend, max_new_tokens=6)
    batch = [Sample(prompt=s.prompt, image=s.image) for s in samples(4)]
    requests = judge.requests(batch)
    params = SamplingParams(max_new_tokens=6, top_logprobs=3)
    together = backend.generate(requests, params)
    alone = [backend.generate([r], params)[0] for r in requests]
    for a, b in zip(together, alone):
        assert a.tokens == b.tokens and "".join(a.tokens) == a.text
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
        assert len(a.tokens) == 6 or a.finish_reason == "stop"
    judgements = judge.judge(batch)  # an untrained model: unreadable outputs are judgements, not errors
    assert len(judgements) == 4 and all(j.score is None or 1 <= j.score <= 5 for j in judgements)
    Scorer(reward).save_pretrained(tmp_path / "judge")
    reloaded = CompositeBackend(str(tmp_path / "judge"), device="cpu").generate(requests, params)
    assert [g.tokens for g in reloaded] == [g.tokens for g in together]
    with pytest.raises(TypeError, match="CompositeVLM"):
        CompositeBackend(torch.nn.Linear(2, 2))
