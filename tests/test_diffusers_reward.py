"""RewardFn: gradients reach the pixels, the tensor path agrees with the Scorer, transforms apply."""

from __future__ import annotations

import pytest
import torch
from diffusers_helpers import TINY_CLIP, load_pipe, one_thread, tiny_clip_scorer, tiny_sd_dir  # noqa: F401

from integrations.diffusers.reward import MultiReward, RewardFn
from integrations.diffusers.toy_rewards import BrightPixelCount, ColourReward
from mmreward.heads import MultiAspectHead
from mmreward.models import RewardModel
from mmreward.scoring import Scorer
from mmreward.transforms import WeightedSum, ZNormalize
from modalities.backbones.clip import ClipBackbone
from modalities.image import pil_to_tensor

PROMPTS = ["a red cat", "two blue circles", "a red cat"]


def test_gradient_step_on_pixels_raises_a_clip_reward() -> None:
    reward = RewardFn(tiny_clip_scorer())
    images = (torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1).requires_grad_()
    before = reward(images, PROMPTS)
    before.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    with torch.no_grad():
        after = reward(images + 0.05 * images.grad / images.grad.abs().amax(), PROMPTS)
    assert torch.all(after > before.detach())


def test_tensor_path_matches_scorer_on_the_same_images() -> None:
    scorer = tiny_clip_scorer()
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    quantised = (images * 255).round() / 255
    from_tensors = RewardFn(scorer)(quantised, PROMPTS, image_range="unit")
    pil = [scorer_image_to_pil(im) for im in quantised]
    from_scorer = torch.tensor(scorer.score(prompts=PROMPTS, images=pil))
    assert torch.allclose(from_tensors.detach(), from_scorer, atol=1e-4)
    # the same pixels given in [-1, 1] give the same rewards
    signed = RewardFn(scorer)(quantised * 2 - 1, PROMPTS, image_range="signed")
    assert torch.allclose(signed.detach(), from_tensors.detach(), atol=1e-5)


def scorer_image_to_pil(image: torch.Tensor):  # noqa: ANN201
    from PIL import Image

    array = (image * 255).round().byte().permute(1, 2, 0).numpy()
    pil = Image.fromarray(array)
    assert torch.equal(pil_to_tensor(pil), image)  # PIL round trip is exact for 8-bit pixels
    return pil


def test_reward_of_decoded_latents_sends_gradients_to_the_latents(tiny_sd_dir) -> None:  # noqa: F811
    pipe = load_pipe(tiny_sd_dir)
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    batch = RewardFn(tiny_clip_scorer()).from_latents(latents, ["a cat", "a dog"], pipe.vae)
    batch.score.sum().backward()
    assert latents.grad is not None and torch.isfinite(latents.grad).all() and latents.grad.abs().sum() > 0


def test_sampling_path_serves_a_reward_without_gradients() -> None:
    reward = RewardFn(BrightPixelCount(threshold=0.5))
    assert not reward.differentiable
    images = torch.zeros(2, 3, 8, 8)
    images[0, :, :4] = 1.0  # top half white: half of the pixels are bright
    scores = reward.score_detached(images, ["a", "b"], image_range="unit").score
    assert scores.tolist() == [0.5, 0.0]
    with pytest.raises(TypeError, match="PolicyGradientTrainer"):
        reward(images, ["a", "b"], image_range="unit")
    with pytest.raises(ValueError, match="image_range"):
        reward.score_detached(images, ["a", "b"], image_range="0-1")


def test_transforms_from_mmreward_apply_on_the_gradient_path() -> None:
    torch.manual_seed(0)
    backbone = ClipBackbone(model_name="tiny", model_config=TINY_CLIP)
    model = RewardModel(backbone, MultiAspectHead(["quality", "alignment"]))
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2)).requires_grad_()
    raw = RewardFn(Scorer(model, device="cpu")).evaluate(images, PROMPTS, "unit")
    assert set(raw.aspects) == {"quality", "alignment"}
    # a Scorer's own transform is used, and an explicit one replaces it
    z = RewardFn(Scorer(model, device="cpu", transform=ZNormalize(mean=1.0, std=2.0))).evaluate(
        images, PROMPTS, "unit"
    )
    assert torch.allclose(z.score, (raw.score - 1.0) / 2.0) and torch.allclose(z.components["z"], z.score)
    quality = RewardFn(model, transform=WeightedSum({"quality": 3.0})).evaluate(images, PROMPTS, "unit")
    assert torch.allclose(quality.score, 3.0 * raw.aspects["quality"])
    quality.score.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_multi_reward_is_the_weighted_sum_of_its_components() -> None:
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    white, red = RewardFn(ColourReward((1.0, 1.0, 1.0))), RewardFn(ColourReward((1.0, 0.0, 0.0)))
    multi = MultiReward({"white": white, "red": red}, weights={"red": 0.5})
    batch = multi.evaluate(images, ["a", "b"], "unit")
    expected = white(images, ["a", "b"], "unit") + 0.5 * red(images, ["a", "b"], "unit")
    assert torch.allclose(batch.score, expected)
    assert set(batch.components) == {"white", "red"}
    with pytest.raises(ValueError, match="not given"):
        MultiReward({"white": white}, weights={"whit": 1.0})
