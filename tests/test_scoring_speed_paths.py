"""The scoring speed paths give the scores of the plain paths: prefetching the next batch on a thread,
decoding a batch's images on threads, resizing in uint8, and bf16 weights for CPU autocast."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mmreward as mr
from mmreward import scoring
from modalities import image as image_module
from modalities.image import image_to_pixels, map_threads, normalize, pil_to_tensor, resize_center_crop
from tests.core_helpers import colour_image, tiny_reward_model

FIXTURES = Path(__file__).parent / "fixtures"
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def write_images(folder: Path, n: int, size: int = 48) -> list[Path]:
    paths = []
    for i in range(n):
        paths.append(folder / f"{i}.png")
        colour_image(["red", "green", "blue", "yellow"][i % 4], i, size).save(paths[-1])
    return paths


def test_prefetch_gives_the_same_scores_in_the_same_order(tmp_path: Path):
    paths = write_images(tmp_path, 7)
    model = tiny_reward_model()
    plain = mr.Scorer(model, device="cpu", batch_size=2, prefetch=False).score(
        prompts="a red picture", images=paths
    )
    prefetched = mr.Scorer(model, device="cpu", batch_size=2).score(prompts="a red picture", images=paths)
    one_batch = mr.Scorer(model, device="cpu", batch_size=7).score(prompts="a red picture", images=paths)
    assert prefetched == plain
    assert np.allclose(one_batch, plain, atol=1e-5)


def test_a_bad_image_in_a_prefetched_batch_names_its_record(tmp_path: Path):
    paths = write_images(tmp_path, 7)
    (tmp_path / "5.png").write_bytes(b"not an image")
    scorer = mr.Scorer(tiny_reward_model(), device="cpu", batch_size=2)
    with pytest.raises(ValueError, match=r"score\(\) input:5 field 'image': cannot read image .*5\.png"):
        scorer.score(prompts="a", images=paths)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        scorer.score(prompts="a", images=[*paths[:4], tmp_path / "nope.png"])


def test_uint8_resize_matches_pil_and_stays_close_to_the_float_path():
    photo = Image.open(FIXTURES / "images" / "astronaut.png").convert("RGB")  # 512 px
    fast = image_to_pixels(photo, 224, MEAN, STD)
    exact = normalize(resize_center_crop(pil_to_tensor(photo)[None], 224), MEAN, STD)
    level = 1 / 255 / min(STD)  # one grey level in normalised units
    assert fast.shape == exact.shape == (1, 3, 224, 224)
    assert (
        fast - exact
    ).abs().mean() < 0.5 * level  # rounding to uint8 alone: 0.25 and (fast - exact).abs().max() < 4 * level
    pil = np.asarray(photo.resize((224, 224), Image.BICUBIC), dtype=np.float32)
    ours = (fast[0] * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]) * 255
    assert np.abs(ours.permute(1, 2, 0).numpy() - pil).max() < 2.5  # PIL's bicubic, to the rounding
    # a wide image smaller than the tower's size is enlarged and cropped the same way
    small = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 40, 3), dtype=np.uint8))
    assert image_to_pixels(small, 32, MEAN, STD).shape == (1, 3, 32, 32)


def test_collate_scores_equal_the_float_resize_path():
    model = tiny_reward_model()
    backbone = model.backbone
    photos = [Image.open(FIXTURES / "images" / name) for name in ("astronaut.png", "camera.png")]
    scores = mr.Scorer(model, device="cpu").score(prompts="a photo", images=photos)
    with torch.inference_mode():
        pixels = torch.cat(
            [backbone.pixels_from_tensor(pil_to_tensor(image_module.load_image(p))[None]) for p in photos]
        )
        before = model({"pixel_values": pixels, **backbone.encode_prompts(["a photo"] * 2)}).score
    assert np.allclose(scores, before.tolist(), atol=1e-3 * max(1.0, before.abs().max().item()))


def test_bf16_weights_compute_what_autocast_computes(tmp_path: Path, monkeypatch):
    paths = write_images(tmp_path, 5)
    autocast_only = tiny_reward_model()
    monkeypatch.setattr(scoring, "cpu_has_native_bf16", lambda: False)
    expected = mr.Scorer(autocast_only, device="cpu", dtype=torch.bfloat16).score(prompts="a", images=paths)
    assert all(p.dtype == torch.float32 for p in autocast_only.parameters())
    monkeypatch.setattr(scoring, "cpu_has_native_bf16", lambda: True)
    cast = tiny_reward_model()
    scores = mr.Scorer(cast, device="cpu", dtype=torch.bfloat16, batch_size=2).score(
        prompts="a", images=paths
    )
    linear = cast.backbone.model.visual.transformer.resblocks[0].mlp.c_fc
    assert (
        linear.weight.dtype == torch.bfloat16
        and cast.backbone.model.visual.ln_post.weight.dtype == torch.float32
    )
    assert np.allclose(scores, expected, rtol=1e-2, atol=1e-2)
    fp32 = mr.Scorer(tiny_reward_model(), device="cpu").score(prompts="a", images=paths)
    assert np.allclose(scores, fp32, rtol=5e-2, atol=5e-2)  # bf16 keeps ~3 significant digits


def test_map_threads_keeps_order_and_raises_the_first_failure(monkeypatch):
    assert map_threads(lambda x: x * x, range(20)) == [x * x for x in range(20)]

    def fail_on_odd(x: int) -> int:
        if x % 2:
            raise ValueError(f"item {x}")
        return x

    with pytest.raises(ValueError, match="item 1"):
        map_threads(fail_on_odd, range(6))
    pool = image_module._thread_pool(2)
    monkeypatch.setattr(os, "getpid", lambda: -1)  # a forked child gets a fresh pool
    assert image_module._thread_pool(2) is not pool


def test_cpu_bf16_detection_reads_cpu_flags():
    flags = Path("/proc/cpuinfo").read_text() if os.path.exists("/proc/cpuinfo") else ""
    assert scoring.cpu_has_native_bf16() == (
        " avx512_bf16" in flags or " amx_bf16" in flags or " bf16" in flags
    )
