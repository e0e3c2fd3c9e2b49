"""HPSv3 by name (``mr.load("hpsv3")``): the published layout, scoring rule, errors and fine-tuning.

No weights can be downloaded here. The published layout (the authors' ``Qwen2VLForConditionalGeneration``
subclass under transformers 4.45: ``visual.*``, ``model.*``, ``lm_head``, ``rm_head.{0,3,5}``) is written
out below from the architecture's code, key by key, and checked two ways:
- at full size (Qwen2-VL-7B-Instruct's config) on the ``meta`` device: it converts and loads strictly;
- scaled down (a tiny Qwen2-VL, the same names) with random values in a ``HPSv3.safetensors``:
  ``mr.load("hpsv3", checkpoint=...)`` scores it, and the score equals the published forward rebuilt
  here: transformers' own legacy-checkpoint loading, the authors' embedding/vision/scatter steps with
  sequential positions, the hidden state at ``<|Reward|>`` and ``rm_head`` from the raw tensors.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

import mmreward as mr
from mmreward import hub
from mmreward.cli import main
from modalities.hub import hpsv3
from tests.core_helpers import write_colour_world
from tests.vlm_helpers import CHAT_TEMPLATE, build_tiny_tokenizer

PROMPTS = ["a red square", "two blue circles on the green grass next to a big tree", "a red square"]
TINY_PIXELS = 56 * 56  # HPSv3's min = max pixels, scaled down from 256 * 28 * 28
# Qwen2-VL-7B-Instruct's config.json (the published base)
# fmt: off
FULL_TEXT = {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
             "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "rms_norm_eps": 1e-6,
             "rope_theta": 1000000.0, "max_position_embeddings": 32768,
             "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}}
FULL_VISION = {"depth": 32, "embed_dim": 1280, "hidden_size": 3584, "mlp_ratio": 4, "num_heads": 16,
               "in_chans": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
TINY_TEXT = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 4096,
             "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}}
TINY_VISION = {"depth": 2, "embed_dim": 32, "hidden_size": 64, "mlp_ratio": 2, "num_heads": 2,
               "in_chans": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
# fmt: on


def images(n: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(n)]


def samples() -> list[mr.Sample]:
    return [mr.Sample(prompt=p, image=im) for p, im in zip(PROMPTS, images())]


def published_layout(text: dict, vision: dict, vocab: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``HPSv3.safetensors``: transformers 4.45's Qwen2-VL names, ``rm_head`` at 0/3/5."""
    d, inter, heads = text["hidden_size"], text["intermediate_size"], text["num_attention_heads"]
    kv = d // heads * text["num_key_value_heads"]
    e, ratio, m = vision["embed_dim"], vision["mlp_ratio"], vision["spatial_merge_size"]
    p, tp = vision["patch_size"], vision["temporal_patch_size"]
    shapes: dict[str, tuple[int, ...]] = {"visual.patch_embed.proj.weight": (e, 3, tp, p, p)}
    for i in range(vision["depth"]):
        b = f"visual.blocks.{i}."
        shapes |= {b + "norm1.weight": (e,), b + "norm1.bias": (e,), b + "norm2.weight": (e,),
                   b + "norm2.bias": (e,), b + "attn.qkv.weight": (3 * e, e), b + "attn.qkv.bias": (3 * e,),
                   b + "attn.proj.weight": (e, e), b + "attn.proj.bias": (e,),
                   b + "mlp.fc1.weight": (e * ratio, e), b + "mlp.fc1.bias": (e * ratio,),
                   b + "mlp.fc2.weight": (e, e * ratio), b + "mlp.fc2.bias": (e,)}  # fmt: skip
    merged = e * m * m
    shapes |= {"visual.merger.ln_q.weight": (e,), "visual.merger.ln_q.bias": (e,),
               "visual.merger.mlp.0.weight": (merged, merged), "visual.merger.mlp.0.bias": (merged,),
               "visual.merger.mlp.2.weight": (vision["hidden_size"], merged),
               "visual.merger.mlp.2.bias": (vision["hidden_size"],), "model.embed_tokens.weight": (vocab, d)}  # fmt: skip
    for i in range(text["num_hidden_layers"]):
        b = f"model.layers.{i}."
        shapes |= {b + "self_attn.q_proj.weight": (d, d), b + "self_attn.q_proj.bias": (d,),
                   b + "self_attn.k_proj.weight": (kv, d), b + "self_attn.k_proj.bias": (kv,),
                   b + "self_attn.v_proj.weight": (kv, d), b + "self_attn.v_proj.bias": (kv,),
                   b + "self_attn.o_proj.weight": (d, d), b + "mlp.gate_proj.weight": (inter, d),
                   b + "mlp.up_proj.weight": (inter, d), b + "mlp.down_proj.weight": (d, inter),
                   b + "input_layernorm.weight": (d,), b + "post_attention_layernorm.weight": (d,)}  # fmt: skip
    shapes |= {"model.norm.weight": (d,), "lm_head.weight": (vocab, d),
               "rm_head.0.weight": (1024, d), "rm_head.0.bias": (1024,), "rm_head.3.weight": (16, 1024),
               "rm_head.3.bias": (16,), "rm_head.5.weight": (2, 16), "rm_head.5.bias": (2,)}  # fmt: skip
    return shapes


def random_state(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        scale = 0.05 if key.startswith("model.embed") else 1.0 / max(1.0, shape[-1] ** 0.5)
        value = torch.randn(shape, generator=gen) * (scale if len(shape) > 1 else 0.1)
        if re.search(r"(norm\d?|layernorm|ln_q)\.weight$", key):
            value += 1.0
        state[key] = value
    return state


def write_base(path: Path, text: dict, vision: dict) -> Path:
    """A Qwen2-VL folder: config, the tiny tokenizer (which knows the instruction's words) and
    processor, no weights. A text config without ``vocab_size`` gets the tokenizer's length."""
    from transformers import Qwen2VLConfig, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    tokenizer = build_tiny_tokenizer(extra_words=sorted(set(re.findall(r"[A-Za-z]+", hpsv3.INSTRUCTION))))
    pixels = {"min_pixels": 28 * 28, "max_pixels": 1_000_000, "patch_size": 14, "merge_size": 2}
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels, temporal_patch_size=2),
        video_processor=Qwen2VLVideoProcessor(**pixels, temporal_patch_size=2),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )
    token = tokenizer.convert_tokens_to_ids
    config = Qwen2VLConfig(
        text_config={"vocab_size": len(tokenizer), **text, "pad_token_id": tokenizer.pad_token_id,
                     "eos_token_id": tokenizer.eos_token_id},
        vision_config=vision,
        tie_word_embeddings=False,
        image_token_id=token("<|image_pad|>"),
        video_token_id=token("<|video_pad|>"),
        vision_start_token_id=token("<|vision_start|>"),
        vision_end_token_id=token("<|vision_end|>"),
    )  # fmt: skip
    path.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """A tiny Qwen2-VL base folder and a random ``HPSv3.safetensors`` in the published layout."""
    root = tmp_path_factory.mktemp("hpsv3")
    base = write_base(root / "base", TINY_TEXT, TINY_VISION)
    vocab = json.loads((base / "config.json").read_text())["text_config"]["vocab_size"] + 1  # + <|Reward|>
    state = random_state(published_layout(TINY_TEXT, TINY_VISION, vocab))
    save_file(state, str(root / "HPSv3.safetensors"))
    args = {
        "model_name_or_path": str(base),
        "weight_dtype": "float32",
        "min_pixels": TINY_PIXELS,
        "max_pixels": TINY_PIXELS,
    }
    return {"root": root, "base": base, "state": state, "file": root / "HPSv3.safetensors", "args": args}


def load_tiny(tiny: dict, checkpoint: Path | None = None) -> mr.Scorer:
    return mr.load("hpsv3", checkpoint=checkpoint or tiny["file"], device="cpu", **tiny["args"])


# -- the published scoring rule, recomputed ------------------------------------------------------


def published_inputs(base: Path) -> dict[str, torch.Tensor]:
    """HPSv3's inference inputs: its processor (``<|Reward|>`` added, right padding), its messages,
    images PIL-resized to the published pixel count."""
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(base, padding_side="right")
    processor.tokenizer.add_special_tokens({"additional_special_tokens": ["<|Reward|>"]})
    # smart_resize(40, 48, factor 28, 3136, 3136): 28 x 56 is too small; x sqrt(3136 / 1920), rounded up
    resized = [Image.fromarray(im).resize((84, 56), Image.BICUBIC) for im in images()]
    messages = [[{"role": "user", "content": [
        {"type": "image"},
        {"type": "text", "text": hpsv3.INSTRUCTION.format(prompt=p) + hpsv3.RATING}]}] for p in PROMPTS]  # fmt: skip
    texts = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    batch = processor(text=texts, images=resized, padding=True, return_tensors="pt")
    return {**batch, "reward_id": processor.tokenizer.convert_tokens_to_ids("<|Reward|>")}


def published_scores(root: Path, base: Path, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """(N, 2) ``rm_head`` outputs of the published forward on the raw tensors."""
    from transformers import AutoConfig, Qwen2VLForConditionalGeneration

    ref_dir = root / "reference"
    ref_dir.mkdir(exist_ok=True)
    config = AutoConfig.from_pretrained(base)
    # HPSv3 resized the embeddings to its tokenizer
    config.text_config.vocab_size = state["model.embed_tokens.weight"].shape[0]
    config.save_pretrained(ref_dir)
    save_file(
        {k: v for k, v in state.items() if not k.startswith("rm_head.")}, str(ref_dir / "model.safetensors")
    )
    model = Qwen2VLForConditionalGeneration.from_pretrained(ref_dir).eval()  # transformers maps legacy keys
    language, visual = model.model.language_model, model.model.visual
    assert torch.equal(language.layers[1].mlp.up_proj.weight, state["model.layers.1.mlp.up_proj.weight"])
    inputs = published_inputs(base)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    with torch.no_grad():
        # the authors' forward: embed, encode the image, scatter it over <|image_pad|>, then the
        # language model with no position_ids, i.e. 0..S-1 on every rotary axis
        embeds = language.embed_tokens(ids)
        vision = visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"]).pooler_output
        image_mask = (ids == model.config.image_token_id)[..., None].expand_as(embeds)
        hidden = language(inputs_embeds=embeds.masked_scatter(image_mask, vision), attention_mask=mask)
        hidden = hidden.last_hidden_state
        pooled = hidden[ids == inputs["reward_id"]]  # one <|Reward|> per row
        h = torch.relu(pooled @ state["rm_head.0.weight"].T + state["rm_head.0.bias"])
        h = torch.relu(h @ state["rm_head.3.weight"].T + state["rm_head.3.bias"])
        out = h @ state["rm_head.5.weight"].T + state["rm_head.5.bias"]
    return out, inputs


def test_hpsv3_scores_mu_at_the_reward_token_with_sequential_positions(tiny: dict):
    scorer = load_tiny(tiny)
    expected, inputs = published_scores(tiny["root"], tiny["base"], tiny["state"])
    ours = scorer.model.collate(samples())
    assert torch.equal(ours["input_ids"], inputs["input_ids"])  # the published prompt, token for token
    assert torch.equal(ours["image_grid_thw"], inputs["image_grid_thw"])  # (1, 4, 6): 56 x 84 px
    assert torch.allclose(ours["pixel_values"], inputs["pixel_values"], atol=1e-6)
    results = scorer.score_samples(samples())
    mu = [r.score for r in results]
    assert mu == pytest.approx(expected[:, 0].tolist(), abs=1e-5)
    assert [r.sigma for r in results] == pytest.approx(expected[:, 1].exp().tolist(), abs=1e-5)
    assert max(mu) - min(mu) > 1e-2  # the inputs matter (nothing constant by construction)
    # multimodal positions would give other scores: the sequential ones are the published rule
    with torch.no_grad():
        features = scorer.model.backbone.model(**ours, use_cache=False).last_hidden_state
        mrope = scorer.model.head(
            scorer.model.backbone.features(features, ours["attention_mask"], ours["input_ids"])
        )
    assert (mrope.score - expected[:, 0]).abs().max() > 1e-4
    # a saved hub model reloads with its processor (and <|Reward|>) and gives the same scores
    again = mr.load(scorer.save_pretrained(tiny["root"] / "saved"), device="cpu")
    assert again.score(samples=samples()) == pytest.approx(mu, abs=1e-6)


def test_full_size_published_layout_loads_strictly_on_meta(tmp_path: Path):
    base = write_base(tmp_path / "qwen2-vl-7b", FULL_TEXT, FULL_VISION)
    with torch.device("meta"):
        model = hpsv3.HPSv3Reward(str(base), from_config=True)
    vocab = len(model.backbone.tokenizer)  # Qwen2-VL's tokenizer: 151657 + <|Reward|>; here the tiny one's
    assert model.backbone.reward_token_id == vocab - 1
    layout = published_layout(FULL_TEXT, FULL_VISION, vocab)
    # with Qwen2-VL's tokenizer (151657 tokens + <|Reward|>): Qwen2-VL-7B's 8.29 B parameters and the head
    published = published_layout(FULL_TEXT, FULL_VISION, 151658)
    assert sum(math.prod(s) for s in published.values()) == pytest.approx(8.29e9, rel=1e-3)
    state = {k: torch.empty(s, device="meta") for k, s in layout.items()}
    hub.load_converted(model, hpsv3.convert_hpsv3(state), "HPSv3.safetensors")
    del state["model.layers.27.mlp.down_proj.weight"]
    with pytest.raises(
        ValueError, match=r"HPSv3\.safetensors .*missing key '.*layers\.27\.mlp\.down_proj\.weight'"
    ):
        hub.load_converted(model, hpsv3.convert_hpsv3(state), "HPSv3.safetensors")


# -- wrong files, names ----------------------------------------------------------------------------


def test_wrong_or_truncated_hpsv3_checkpoints_name_the_file_and_the_key(tiny: dict):
    root, state = tiny["root"], dict(tiny["state"])
    data = tiny["file"].read_bytes()
    (root / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.safetensors is not a readable safetensors file"):
        load_tiny(tiny, root / "cut.safetensors")
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, str(root / "missing.safetensors"))
    with pytest.raises(
        ValueError, match=r"missing\.safetensors does not fit HPSv3Reward: missing key "
        r"'backbone\.model\.language_model\.layers\.1\.mlp\.up_proj\.weight'"
    ):  # fmt: skip
        load_tiny(tiny, root / "missing.safetensors")
    state = dict(tiny["state"]) | {"rm_head.3.weight": torch.zeros(8, 1024)}
    save_file(state, str(root / "shape.safetensors"))
    with pytest.raises(
        ValueError, match=r"shape\.safetensors .*'head\.layers\.3\.weight' has shape \(8, 1024\)"
    ):
        load_tiny(tiny, root / "shape.safetensors")
    state = dict(tiny["state"]) | {"score_head.weight": torch.zeros(1, 64)}
    save_file(state, str(root / "extra.safetensors"))
    with pytest.raises(ValueError, match=r"extra\.safetensors .*unexpected key 'score_head\.weight'"):
        load_tiny(tiny, root / "extra.safetensors")


def test_hpsv3_offline_without_a_checkpoint_says_where_to_get_it(tiny: dict):
    with pytest.raises(FileNotFoundError, match=r"HPSv3\.safetensors.*MizzenAI/HPSv3.*checkpoint="):
        mr.load("hpsv3", **tiny["args"])
    with pytest.raises(ValueError, match=r"HPSv3 scores one image per sample.*no image"):
        load_tiny(tiny).score(samples=[mr.Sample(prompt="a red square")])


# -- fine-tuning -----------------------------------------------------------------------------------


def test_fit_starts_from_hpsv3(tiny: dict, tmp_path: Path):
    config = {
        "model": {
            "class_path": "mmreward.training.RewardModule",
            "init_args": {
                "model": hub.model_config("hpsv3", tiny["file"], **tiny["args"]),
                "loss": {
                    "class_path": "mmreward.uncertainty.UncertaintyRewardLoss",
                    "init_args": {"link": "sigmoid"},
                },
                "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.0}},  # keep the weights
            },
        },
    }
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(config))
    main([
        "fit", "--config", str(tmp_path / "fit.yaml"),
        "--data", "mmreward.training.RewardDataModule",
        "--data.train", str(write_colour_world(tmp_path, 2, seed=1, name="train")),
        "--data.batch_size", "2", "--data.num_workers", "0",
        "--trainer.fast_dev_run", "true", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path / "run"),
    ])  # fmt: skip
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved["model"]["class_path"] == "modalities.hub.hpsv3.HPSv3Reward"
    assert saved["model"]["init_args"]["checkpoint"] is None  # the weights are in model.safetensors
    tuned = mr.load(tmp_path / "run" / "model", device="cpu")
    assert tuned.score(samples=samples()) == pytest.approx(load_tiny(tiny).score(samples=samples()), abs=1e-5)
