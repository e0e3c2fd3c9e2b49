"""The fast CLIP routes: ClipVideoBackbone (frames + temporal pooling) and ClipEditBackbone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmreward.data.synthetic.video import write_mp4
from mmreward.heads import LinearHead, MultiAspectHead
from mmreward.models import RewardModel
from mmreward.scoring import Scorer, load, save_pretrained
from mmreward.types import Sample
from modalities.backbones.clip_edit import ClipEditBackbone, change_crops
from modalities.backbones.clip_video import ClipVideoBackbone, TemporalTransformer
from modalities.video import FrameSampler

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1},
}
ASPECTS = ["quality", "alignment", "physics"]


def _clip(path: Path, seed: int) -> str:
    frames = np.random.default_rng(seed).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    return str(write_mp4(frames, path, fps=6))


def _video_model(temporal: str = "transformer", **kwargs) -> RewardModel:
    torch.manual_seed(0)
    backbone = ClipVideoBackbone(
        model_config=TINY, sampler=FrameSampler(num_frames=6), temporal=temporal, **kwargs
    )
    model = RewardModel(backbone, MultiAspectHead(ASPECTS, hidden_size=16))
    if backbone.pool is not None:  # move off the near-mean-pooling init, as training does
        torch.nn.init.normal_(backbone.pool.out.weight, std=0.5)
        torch.nn.init.normal_(backbone.pool.position, std=1.0)
    return model.eval()


def test_video_collate_decodes_frames_and_shares_prompts(tmp_path):
    model = _video_model()
    samples = [Sample(prompt="a red ball", video=_clip(tmp_path / f"{i}.mp4", i)) for i in range(3)]
    samples.append(Sample(prompt="a blue box", video=samples[0].video))
    inputs = model.collate(samples)
    assert inputs["pixel_values"].shape == (4, 6, 3, 32, 32)
    assert inputs["input_ids"].shape[0] == 2 and inputs["text_index"].tolist() == [0, 0, 0, 1]


def test_mean_pooling_ignores_frame_order_and_the_transformer_does_not():
    clip = torch.rand(1, 6, 3, 32, 32)
    reversed_clip = clip.flip(1)
    for temporal, motion, should_differ in (
        ("mean", False, False),
        ("transformer", False, True),
        ("transformer", True, True),
    ):
        model = _video_model(temporal, temporal_motion=motion)
        with torch.no_grad():
            a = model.backbone(model.backbone.tensor_inputs(clip, ["a red ball"]))
            b = model.backbone(model.backbone.tensor_inputs(reversed_clip, ["a red ball"]))
        difference = float((a - b).abs().max())
        assert (difference > 1e-4) == should_differ, (temporal, difference)


def test_travel_adds_the_first_to_last_change_to_the_clip_embedding():
    torch.manual_seed(0)
    pool = TemporalTransformer(8, layers=1, heads=2, max_frames=8, travel=True)
    frames = torch.randn(2, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(pool(frames), frames.mean(1))  # zero at first: mean pooling
        torch.nn.init.eye_(pool.travel.weight)
        torch.testing.assert_close(pool(frames) - frames.mean(1), frames[:, -1] - frames[:, 0])
    assert TemporalTransformer(8, layers=1, heads=2, max_frames=8).travel is None  # off by default


def test_video_scores_are_differentiable_in_the_frames():
    model = _video_model()
    clip = torch.rand(2, 6, 3, 32, 32, requires_grad=True)
    model(model.backbone.tensor_inputs(clip, ["a", "b"])).score.sum().backward()
    assert clip.grad is not None and clip.grad.abs().sum() > 0


def test_word_pooling_is_the_mean_embedding_of_the_prompts_words():
    torch.manual_seed(0)
    backbone = ClipVideoBackbone(model_config=TINY, text_pool="words")
    ids = backbone.tokenizer(["a red ball moves up", "up ball moves a red", "a blue ball moves up"])
    with torch.no_grad():
        text = backbone.encode_text(ids)
        table = backbone.model.token_embedding.weight
        words = table[ids[0, 1:6]].mean(0) @ backbone.model.text_projection  # 5 words; no start, end, padding
    torch.testing.assert_close(text[0], torch.nn.functional.normalize(words, dim=-1))
    torch.testing.assert_close(text[1], text[0])  # a bag of words: the order does not count
    assert float((text[0] - text[2]).abs().max()) > 1e-3  # one word apart: another embedding


def test_video_model_saves_and_reloads_to_the_same_aspect_scores(tmp_path):
    model = _video_model(temporal_motion=True, text_pool="words")
    torch.nn.init.normal_(
        model.backbone.pool.motion.weight, std=0.5
    )  # off the identity, as training moves it
    samples = [Sample(prompt="a red ball", video=_clip(tmp_path / f"{i}.mp4", i)) for i in range(3)]
    before = Scorer(model, device="cpu").forward(samples)
    save_pretrained(model, tmp_path / "saved")
    after = load(tmp_path / "saved", device="cpu")
    torch.testing.assert_close(after.forward(samples).aspects, before.aspects)
    assert after.model.backbone.sampler.num_frames == 6 and after.aspects == ASPECTS


def test_colour_bins_and_travel_save_and_reload(tmp_path):
    plain = _video_model()
    assert plain.backbone.colour_map is None  # off by default: the frame embedding is the tower's
    model = _video_model(colour_bins=3, colour_centres=True, temporal_travel=True)
    frames = torch.rand(2, 3, 32, 32)
    with torch.no_grad():  # the map starts at zero: at first the frame embedding is the tower's
        torch.testing.assert_close(model.backbone.encode_frames(frames), model.backbone.encode_image(frames))
    torch.nn.init.normal_(model.backbone.colour_map.weight, std=0.5)  # off zero, as training moves them
    torch.nn.init.normal_(model.backbone.pool.travel.weight, std=0.5)
    red, blue = torch.full((1, 6, 3, 32, 32), 0.9), torch.full((1, 6, 3, 32, 32), 0.9)
    red[..., 8:24, 0:16] = torch.tensor([0.84, 0.14, 0.14])[:, None, None]
    blue[..., 8:24, 0:16] = torch.tensor([0.14, 0.29, 0.84])[:, None, None]
    moved = red.roll(16, dims=-1)  # the red square on the right half: same colours, other centres
    with torch.no_grad():
        f = model.backbone.colour_features(
            model.backbone.pixels_from_tensor(torch.cat([red, blue, moved])[:, 0])
        )
    shares, x = f[:, :27], f[:, 27:54]
    assert float((shares[0] - shares[1]).abs().max()) > 1.0  # the two colours fill other bins
    torch.testing.assert_close(shares[2], shares[0])
    red_bin = int((shares[0] - shares[1]).argmax())
    assert x[0, red_bin] < -0.3 and x[2, red_bin] > 0.3, x[:, red_bin]  # left half, then right half
    with pytest.raises(ValueError, match="colour_bins is the number of levels"):
        ClipVideoBackbone(model_config=TINY, colour_bins=1)
    with pytest.raises(ValueError, match="colour_centres=True needs colour_bins"):
        ClipVideoBackbone(model_config=TINY, colour_centres=True)
    samples = [Sample(prompt="a red ball", video=_clip(tmp_path / f"{i}.mp4", i)) for i in range(3)]
    before = Scorer(model, device="cpu").forward(samples)
    save_pretrained(model, tmp_path / "saved")
    after = load(tmp_path / "saved", device="cpu")
    assert after.model.backbone.colour_bins.out_channels == 27
    torch.testing.assert_close(after.forward(samples).aspects, before.aspects)


def test_video_collate_names_the_record_of_a_missing_clip(tmp_path):
    model = _video_model()
    sample = Sample(
        prompt="p", video=str(tmp_path / "gone.mp4"), meta={"source": "clips.jsonl", "line": 3, "id": "c3"}
    )
    with pytest.raises(FileNotFoundError, match=r"clips\.jsonl:3 \(id c3\) field 'video'.*gone\.mp4"):
        model.collate([sample])


def _edit_model() -> RewardModel:
    torch.manual_seed(0)
    return RewardModel(ClipEditBackbone(model_config=TINY), LinearHead()).eval()


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8)


def test_edit_collate_encodes_a_shared_source_once():
    model = _edit_model()
    source = _image(0)
    samples = [Sample(prompt="make it blue", source_image=source, image=_image(i)) for i in range(1, 6)]
    inputs = model.collate(samples)
    assert inputs["source_pixel_values"].shape[0] == 1 and inputs["source_index"].tolist() == [0] * 5
    assert inputs["input_ids"].shape[0] == 1
    assert inputs["pixel_values"].shape[0] == 15  # 5 edits, then their before crops, then their after crops


def test_edit_no_op_has_blank_change_crops():
    model = _edit_model()
    source = _image(0)
    inputs = model.collate([Sample(prompt="x", source_image=source, image=source.copy())])
    crops = inputs["pixel_values"][1:]  # (2, 3, H, W), normalised per channel
    assert crops.flatten(2).std(2).max() < 1e-5  # mid-grey everywhere: nothing changed


def test_edit_change_crops_zoom_in_on_the_touched_object():
    source = torch.full((1, 3, 32, 32), 0.9)
    source[..., 4:10, 4:10] = torch.tensor([0.8, 0.1, 0.1]).view(1, 3, 1, 1)  # a red square, kept
    source[..., 20:28, 20:28] = torch.tensor([0.1, 0.6, 0.2]).view(1, 3, 1, 1)  # a green square, recoloured
    edit = source.clone()
    edit[..., 20:28, 20:28] = torch.tensor([0.1, 0.3, 0.8]).view(1, 3, 1, 1)
    before, after = change_crops(source, edit)
    # the 8-pixel square fills the middle of the crops: green before, blue after
    torch.testing.assert_close(before[0, :, 8:24, 8:24], source[0, :, 22:26, 22:26].repeat(1, 4, 4))
    torch.testing.assert_close(after[0, :, 8:24, 8:24], edit[0, :, 22:26, 22:26].repeat(1, 4, 4))
    for crop in (before, after):  # the kept red square and the background are grey
        torch.testing.assert_close(crop[0, :, :2], torch.full_like(crop[0, :, :2], 0.5))
        assert crop[0, 0].max() < 0.6


def test_edit_scores_match_one_by_one_and_batched():
    model = _edit_model()
    source = _image(0)
    samples = [
        Sample(prompt="remove the red circle", source_image=source, image=_image(i)) for i in range(1, 5)
    ]
    with torch.no_grad():
        batched = model(model.collate(samples)).score
        single = torch.cat([model(model.collate([s])).score for s in samples])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-4)


def test_edit_sample_without_source_names_the_field():
    model = _edit_model()
    with pytest.raises(ValueError, match="source_image"):
        model.collate([Sample(prompt="x", image=_image(1), meta={"source": "edits.jsonl", "line": 9})])
