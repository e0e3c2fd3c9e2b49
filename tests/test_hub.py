"""Published reward models by name (``mmreward.hub``): layouts, scoring formulas, errors, fine-tuning.

No weights can be downloaded here, so each entry is checked two ways:
- the full published architecture on the ``meta`` device (no memory, no compute): a state dict with
  the published keys and shapes converts and loads strictly;
- a scaled-down architecture with the same key names, filled with random values and written to a
  file in the published format: ``mr.load(name, checkpoint=file)`` scores it, and the score equals
  the published formula computed here from the raw tensors (not through the converter).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

import mmreward as mr
from mmreward import hub
from mmreward.cli import main
from tests.core_helpers import TINY_CLIP, write_colour_world

PROMPTS = ["a red square", "two blue circles on grass", "a red square"]


def images(n: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(n)]


def samples() -> list[mr.Sample]:
    return [mr.Sample(prompt=p, image=im) for p, im in zip(PROMPTS, images())]


def randomize(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values (not the init's) in every float tensor, so nothing cancels by construction."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if value.is_floating_point():
            out[key] = torch.randn(value.shape, generator=gen) * (0.5 if value.dim() > 1 else 0.1)
            if key.endswith(("norm.weight", "norm1.weight", "norm2.weight", "ln_1.weight", "ln_2.weight")):
                out[key] += 1.0
        else:
            out[key] = value.clone()
    return out


@pytest.fixture
def meta_open_clip():
    """Build open_clip models on the meta device (its factory would move them to the CPU)."""
    import open_clip.factory

    with (
        torch.device("meta"),
        mock.patch.object(open_clip.factory, "_set_model_device_and_precision", lambda *args, **kwargs: None),
    ):
        yield


# -- names -------------------------------------------------------------------------------------


def test_unknown_names_get_the_closest_hub_names():
    with pytest.raises(ValueError, match=r"'pickscore'.*Hub models: aesthetic-v2, clipscore"):
        mr.load("pickscore-v1")
    with pytest.raises(ValueError, match=r"Did you mean 'hpsv3', 'hpsv2'"):
        mr.load("hpsv4")
    with pytest.raises(FileNotFoundError, match=r"No model at .*Did you mean 'hpsv2.1'"):
        mr.load("hpsv2.2")


def test_a_missing_checkpoint_file_is_named(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pt.*'hpsv2'.*HPS_v2_compressed\.pt"):
        mr.load("hpsv2", checkpoint=tmp_path / "nope.pt")


# -- the full published layouts, on the meta device -------------------------------------------


def hf_vit_h14_state() -> dict[str, torch.Tensor]:
    """PickScore_v1's layout: transformers CLIPModel, the laion ViT-H-14 config, legacy position_ids."""
    from transformers import CLIPConfig, CLIPModel

    text = {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
    }
    vision = {
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
    }
    config = CLIPConfig(
        text_config={**text, "vocab_size": 49408, "max_position_embeddings": 77, "hidden_act": "gelu"},
        vision_config={**vision, "image_size": 224, "patch_size": 14, "hidden_act": "gelu"},
        projection_dim=1024,
    )
    with torch.device("meta"):
        state = CLIPModel(config).state_dict()
    state["text_model.embeddings.position_ids"] = torch.empty(1, 77, device="meta")
    return state


def test_pickscore_and_hpsv2_layouts_load_strictly_into_vit_h14(meta_open_clip):
    from modalities.hub.clip import ClipSimilarityReward, convert_clip

    model = ClipSimilarityReward("ViT-H-14")
    assert sum(p.numel() for p in model.parameters()) > 9e8  # the real ViT-H-14, on meta
    hub.load_converted(
        model.backbone.model, convert_clip(hf_vit_h14_state(), "transformers"), "model.safetensors"
    )
    # HPSv2 publishes open_clip's own ViT-H-14 state dict (a DDP module. prefix is tolerated)
    published = {f"module.{k}": v for k, v in model.backbone.model.state_dict().items()}
    hub.load_converted(model.backbone.model, convert_clip(published, "open_clip"), "HPS_v2_compressed.pt")
    del published["module.positional_embedding"]
    with pytest.raises(ValueError, match=r"HPS_v2_compressed\.pt .*missing key 'positional_embedding'"):
        hub.load_converted(model.backbone.model, convert_clip(published, "open_clip"), "HPS_v2_compressed.pt")


AESTHETIC_LAYERS = {
    0: (1024, 768),
    2: (128, 1024),
    4: (64, 128),
    6: (16, 64),
    7: (1, 16),
}  # simple_inference.py


def aesthetic_state(in_features: int = 768, device: str = "meta") -> dict[str, torch.Tensor]:
    state = {}
    for index, (out_f, in_f) in AESTHETIC_LAYERS.items():
        in_f = in_features if index == 0 else in_f
        state[f"layers.{index}.weight"] = torch.randn(out_f, in_f, device=device)
        state[f"layers.{index}.bias"] = torch.randn(out_f, device=device) * 0.1
    return state


def test_aesthetic_layout_loads_strictly_on_vit_l14(meta_open_clip):
    from modalities.hub.aesthetic import AestheticReward, convert_aesthetic

    model = AestheticReward("ViT-L-14")
    assert model.backbone.embed_dim == 768
    hub.load_converted(model.mlp, convert_aesthetic(aesthetic_state()), "sac+logos+ava1-l14-linearMSE.pth")


def blip_published_shapes(
    width: int = 1024, depth: int = 24, patch: int = 16, image: int = 224, text: int = 768,
    text_layers: int = 12, vocab: int = 30524, positions: int = 512, embed: int = 256,
) -> dict[str, tuple[int, ...]]:  # fmt: skip
    """``ImageReward.pt``'s keys and shapes, written from BLIP's vit.py and med.py (BLIP_Pretrain, vit='large')."""
    v, t = "blip.visual_encoder.", "blip.text_encoder."
    shapes = {
        f"{v}cls_token": (1, 1, width),
        f"{v}pos_embed": (1, (image // patch) ** 2 + 1, width),
        f"{v}patch_embed.proj.weight": (width, 3, patch, patch),
        f"{v}patch_embed.proj.bias": (width,),
        f"{v}norm.weight": (width,),
        f"{v}norm.bias": (width,),
        f"{t}embeddings.position_ids": (1, positions),
        f"{t}embeddings.word_embeddings.weight": (vocab, text),
        f"{t}embeddings.position_embeddings.weight": (positions, text),
        f"{t}embeddings.LayerNorm.weight": (text,),
        f"{t}embeddings.LayerNorm.bias": (text,),
        "blip.vision_proj.weight": (embed, width),
        "blip.vision_proj.bias": (embed,),
        "blip.text_proj.weight": (embed, text),
        "blip.text_proj.bias": (embed,),
    }
    for i in range(depth):
        b = f"{v}blocks.{i}."
        for name, shape in [("norm1", (width,)), ("norm2", (width,))]:
            shapes |= {f"{b}{name}.weight": shape, f"{b}{name}.bias": shape}
        for name, (o, n) in [("attn.qkv", (3 * width, width)), ("attn.proj", (width, width)),
                             ("mlp.fc1", (4 * width, width)), ("mlp.fc2", (width, 4 * width))]:  # fmt: skip
            shapes |= {f"{b}{name}.weight": (o, n), f"{b}{name}.bias": (o,)}
    for i in range(text_layers):
        b = f"{t}encoder.layer.{i}."
        linears = [(f"{a}.self.{p}", (text, width if a == "crossattention" and p != "query" else text))
                   for a in ("attention", "crossattention") for p in ("query", "key", "value")]  # fmt: skip
        linears += [("attention.output.dense", (text, text)), ("crossattention.output.dense", (text, text)),
                    ("intermediate.dense", (4 * text, text)), ("output.dense", (text, 4 * text))]  # fmt: skip
        for name, (o, n) in linears:
            shapes |= {f"{b}{name}.weight": (o, n), f"{b}{name}.bias": (o,)}
        for name in ("attention.output.LayerNorm", "crossattention.output.LayerNorm", "output.LayerNorm"):
            shapes |= {f"{b}{name}.weight": (text,), f"{b}{name}.bias": (text,)}
    for index, (out_f, in_f) in AESTHETIC_LAYERS.items():  # ImageReward's MLP is the aesthetic one on 768
        shapes |= {f"mlp.layers.{index}.weight": (out_f, in_f), f"mlp.layers.{index}.bias": (out_f,)}
    return shapes


@pytest.fixture(scope="module")
def bert_tokenizer(tmp_path_factory) -> str:
    """A tiny uncased WordPiece tokenizer saved as a folder (the published one is bert-base-uncased)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "a",
        "red",
        "square",
        "two",
        "blue",
        "circles",
        "on",
    ]
    vocab = {w: i for i, w in enumerate(words + ["grass", "##s"])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    folder = tmp_path_factory.mktemp("bert-tokenizer")
    BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                      sep_token="[SEP]", mask_token="[MASK]").save_pretrained(folder)  # fmt: skip
    return str(folder)


def test_imagereward_layout_loads_strictly_on_the_published_blip(bert_tokenizer: str):
    from modalities.hub.imagereward import ImageReward, convert_imagereward

    with torch.device("meta"):
        model = ImageReward(bert_tokenizer)
        published = {k: torch.empty(s) for k, s in blip_published_shapes().items()}
    assert (
        len(published) == 6 + 24 * 12 + 5 + 12 * 26 + 4 + 10
    )  # ViT, BERT embeddings and layers, projections, MLP
    hub.load_converted(model, convert_imagereward(published), "ImageReward.pt")


# -- the scoring formulas, on scaled-down models with the same key names ----------------------


def tiny_open_clip(seed: int = 0):
    import open_clip

    from modalities.backbones.clip import _register_config

    torch.manual_seed(seed)
    model = open_clip.create_model(_register_config(TINY_CLIP), pretrained=None).eval()
    model.load_state_dict(randomize(model.state_dict(), seed))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(30.0))
    return model


def clip_reference(model, pixels, prompts, scale, floor=None) -> torch.Tensor:
    """``scale * cos`` from open_clip's own forward on the raw weights."""
    import open_clip

    from modalities.backbones.clip import _register_config

    tokens = open_clip.get_tokenizer(_register_config(TINY_CLIP))(prompts)
    with torch.no_grad():
        image = F.normalize(model.encode_image(pixels), dim=-1)
        text = F.normalize(model.encode_text(tokens), dim=-1)
    score = (model.logit_scale.exp() if scale is None else scale) * (image * text).sum(-1)
    return score if floor is None else score.clamp(min=floor)


@pytest.mark.parametrize("name", ["hpsv2", "hpsv2.1"])
def test_hpsv2_scores_the_plain_cosine(name: str, tmp_path: Path):
    reference = tiny_open_clip()
    path = tmp_path / hub.HUB[name].filename
    torch.save({"state_dict": reference.state_dict()}, path)  # as published: a state_dict entry
    scorer = mr.load(name, checkpoint=path, model_config=TINY_CLIP, device="cpu")
    pixels = scorer.model.collate(samples())["pixel_values"]
    expected = clip_reference(reference, pixels, PROMPTS, scale=1.0)
    assert scorer.score(samples=samples()) == pytest.approx(expected.tolist(), abs=1e-5)
    assert scorer.provenance()["model"] == name and scorer.metadata["revision"] == path.name


def test_pickscore_converts_the_transformers_layout_and_scores_logit_scale_cos(tmp_path: Path):
    import open_clip
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel

    from modalities.backbones.clip import _register_config

    text = {"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={
            **text,
            "vocab_size": 49408,
            "max_position_embeddings": 16,
            "hidden_act": "gelu",
            "eos_token_id": 49407,
        },  # fmt: skip
        vision_config={**text, "image_size": 32, "patch_size": 8, "hidden_act": "gelu"},
        projection_dim=32,
    )
    reference = CLIPModel(config).eval()
    reference.load_state_dict(randomize(reference.state_dict(), seed=1))
    with torch.no_grad():
        reference.logit_scale.fill_(math.log(50.0))
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    state["text_model.embeddings.position_ids"] = torch.arange(16)[None]  # older files carry it
    save_file(state, str(tmp_path / "model.safetensors"))

    scorer = mr.load(
        "pickscore", checkpoint=tmp_path / "model.safetensors", model_config=TINY_CLIP, device="cpu"
    )
    pixels = scorer.model.collate(samples())["pixel_values"]
    tokens = open_clip.get_tokenizer(_register_config(TINY_CLIP))(PROMPTS)
    with torch.no_grad():  # PickScore's published formula on the transformers model
        image = reference.visual_projection(reference.vision_model(pixel_values=pixels).pooler_output)
        txt = reference.text_projection(reference.text_model(input_ids=tokens).pooler_output)
        expected = reference.logit_scale.exp() * F.cosine_similarity(image, txt, dim=-1)
    assert scorer.score(samples=samples()) == pytest.approx(expected.tolist(), abs=1e-5)
    assert (
        scorer.rank(prompt=PROMPTS[0], images=images())
        == torch.argsort(
            torch.tensor(scorer.score(prompts=PROMPTS[0], images=images())), descending=True
        ).tolist()
    )


def test_clipscore_is_2_5_times_the_positive_cosine_for_any_open_clip_model(tmp_path: Path):
    reference = tiny_open_clip(seed=0)  # one of the three cosines is negative: the floor matters
    torch.save(reference.state_dict(), tmp_path / "tiny_clip.pt")
    scorer = mr.load(
        "clipscore",
        checkpoint=tmp_path / "tiny_clip.pt",
        model_config=TINY_CLIP,
        pretrained=None,
        device="cpu",
    )
    pixels = scorer.model.collate(samples())["pixel_values"]
    expected = clip_reference(reference, pixels, PROMPTS, scale=2.5, floor=0.0)
    assert clip_reference(reference, pixels, PROMPTS, scale=2.5).min() < 0 < expected.max()
    assert scorer.score(samples=samples()) == pytest.approx(expected.tolist(), abs=1e-5)


def test_aesthetic_is_the_mlp_on_the_normalised_image_embedding(tmp_path: Path):
    clip = tiny_open_clip(seed=4)
    torch.save(clip.state_dict(), tmp_path / "ViT-L-14-tiny.pt")
    mlp = aesthetic_state(in_features=TINY_CLIP["embed_dim"], device="cpu")
    torch.save(mlp, tmp_path / "sac+logos+ava1-l14-linearMSE.pth")
    scorer = mr.load(
        "aesthetic-v2", checkpoint=tmp_path / "sac+logos+ava1-l14-linearMSE.pth",
        pretrained=str(tmp_path / "ViT-L-14-tiny.pt"), model_config=TINY_CLIP, device="cpu",
    )  # fmt: skip
    pixels = scorer.model.collate(samples())["pixel_values"]
    with torch.no_grad():
        x = F.normalize(clip.encode_image(pixels), dim=-1)
        for index in AESTHETIC_LAYERS:  # linear layers only, as published (dropout is off in eval)
            x = F.linear(x, mlp[f"layers.{index}.weight"], mlp[f"layers.{index}.bias"])
    assert scorer.score(samples=samples()) == pytest.approx(x.squeeze(-1).tolist(), abs=1e-5)


TINY_BLIP = {"width": 32, "depth": 2, "patch": 8, "image": 32, "text": 32, "text_layers": 2, "vocab": 14,
             "positions": 40, "embed": 8}  # fmt: skip


def blip_reference(sd, pixels, ids, mask, heads=2) -> torch.Tensor:
    """ImageReward.score on the raw tensors: BLIP ViT, BERT with cross-attention, [CLS], MLP, z-score."""

    def ln(x, p, eps):
        return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps)

    def lin(x, p):
        return F.linear(x, sd[p + ".weight"], sd[p + ".bias"])

    def attend(q, k, v, bias=None):  # (N, T, D) each, split into heads
        n, d = q.shape[0], q.shape[-1]
        split = [t.reshape(n, -1, heads, d // heads).transpose(1, 2) for t in (q, k, v)]
        w = split[0] @ split[1].transpose(-1, -2) / math.sqrt(d // heads)
        w = (w if bias is None else w + bias).softmax(-1)
        return (w @ split[2]).transpose(1, 2).reshape(n, -1, d)

    v, p = "blip.visual_encoder.", TINY_BLIP["patch"]
    x = F.conv2d(pixels, sd[v + "patch_embed.proj.weight"], sd[v + "patch_embed.proj.bias"], stride=p)
    x = (
        torch.cat([sd[v + "cls_token"].expand(len(x), -1, -1), x.flatten(2).transpose(1, 2)], 1)
        + sd[v + "pos_embed"]
    )
    for i in range(TINY_BLIP["depth"]):
        b = f"{v}blocks.{i}."
        q, k, val = lin(ln(x, b + "norm1", 1e-6), b + "attn.qkv").chunk(3, dim=-1)
        x = x + lin(attend(q, k, val), b + "attn.proj")
        x = x + lin(F.gelu(lin(ln(x, b + "norm2", 1e-6), b + "mlp.fc1")), b + "mlp.fc2")
    image = ln(x, v + "norm", 1e-6)
    t = "blip.text_encoder."
    h = (
        sd[t + "embeddings.word_embeddings.weight"][ids]
        + sd[t + "embeddings.position_embeddings.weight"][: ids.shape[1]]
    )
    h = ln(h, t + "embeddings.LayerNorm", 1e-12)
    pad = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    for i in range(TINY_BLIP["text_layers"]):
        b = f"{t}encoder.layer.{i}."
        for part, kv, bias in (("attention", h, pad), ("crossattention", image, None)):
            s = f"{b}{part}.self."
            a = attend(lin(h, s + "query"), lin(kv, s + "key"), lin(kv, s + "value"), bias)
            h = ln(lin(a, f"{b}{part}.output.dense") + h, f"{b}{part}.output.LayerNorm", 1e-12)
        h = ln(
            lin(F.gelu(lin(h, b + "intermediate.dense")), b + "output.dense") + h,
            b + "output.LayerNorm",
            1e-12,
        )
    r = h[:, 0]
    for index in AESTHETIC_LAYERS:
        r = lin(r, f"mlp.layers.{index}")
    return (r.squeeze(-1) - 0.16717362830052426) / 1.0333394966054072


def tiny_imagereward_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    shapes = blip_published_shapes(**TINY_BLIP)
    shapes |= {"mlp.layers.0.weight": (1024, TINY_BLIP["text"])}
    state = randomize({k: torch.zeros(s) for k, s in shapes.items()}, seed=5)
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(TINY_BLIP["positions"])[None]
    torch.save(state, path)
    return state


def tiny_imagereward_args(tokenizer: str) -> dict:
    c = TINY_BLIP
    return {
        "tokenizer": tokenizer,
        "vision_config": {"hidden_size": c["width"], "intermediate_size": 4 * c["width"], "num_hidden_layers": c["depth"],
                          "num_attention_heads": 2, "image_size": c["image"], "patch_size": c["patch"],
                          "layer_norm_eps": 1e-6, "hidden_act": "gelu"},
        "text_config": {"vocab_size": c["vocab"], "hidden_size": c["text"], "intermediate_size": 4 * c["text"],
                        "num_hidden_layers": c["text_layers"], "num_attention_heads": 2, "hidden_act": "gelu",
                        "max_position_embeddings": c["positions"], "encoder_hidden_size": c["width"],
                        "layer_norm_eps": 1e-12, "pad_token_id": 0, "bos_token_id": None, "sep_token_id": 3},
    }  # fmt: skip


def test_imagereward_is_the_z_scored_mlp_on_blip_itm_cls(tmp_path: Path, bert_tokenizer: str):
    state = tiny_imagereward_checkpoint(tmp_path / "ImageReward.pt")
    scorer = mr.load("imagereward", checkpoint=tmp_path / "ImageReward.pt", device="cpu",
                     **tiny_imagereward_args(bert_tokenizer))  # fmt: skip
    inputs = scorer.model.collate(samples())
    assert inputs["input_ids"].shape == (3, 35) and inputs["input_ids"][0, 0] == 2  # [CLS], padded to 35
    with torch.no_grad():
        expected = blip_reference(
            state, inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"]
        )
    assert scorer.score(samples=samples()) == pytest.approx(expected.tolist(), abs=1e-5)
    # a saved hub model reloads with its tokenizer and gives the same scores
    again = mr.load(scorer.save_pretrained(tmp_path / "saved"), device="cpu")
    assert again.score(samples=samples()) == pytest.approx(scorer.score(samples=samples()), abs=1e-6)


# -- wrong files -------------------------------------------------------------------------------


def test_wrong_or_truncated_checkpoints_name_the_file_and_the_key(tmp_path: Path, bert_tokenizer: str):
    state = tiny_open_clip().state_dict()
    del state["visual.ln_post.bias"]
    torch.save({"state_dict": state}, tmp_path / "HPS_v2_compressed.pt")
    with pytest.raises(ValueError, match=r"HPS_v2_compressed\.pt .*missing key 'visual\.ln_post\.bias'"):
        mr.load("hpsv2", checkpoint=tmp_path / "HPS_v2_compressed.pt", model_config=TINY_CLIP)

    good = tiny_imagereward_checkpoint(tmp_path / "ImageReward.pt")
    data = (tmp_path / "ImageReward.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.pt is not a readable PyTorch checkpoint"):
        mr.load("imagereward", checkpoint=tmp_path / "cut.pt", **tiny_imagereward_args(bert_tokenizer))
    good["blip.visual_encoder.blocks.1.attn.qkv.weight"] = torch.zeros(3, 3)
    torch.save(good, tmp_path / "bad_shape.pt")
    with pytest.raises(
        ValueError, match=r"bad_shape\.pt .*'vision\.encoder\.layers\.1\.self_attn\.qkv\.weight' has shape"
    ):
        mr.load("imagereward", checkpoint=tmp_path / "bad_shape.pt", **tiny_imagereward_args(bert_tokenizer))

    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable"):
        mr.load("pickscore", checkpoint=tmp_path / "model.safetensors", model_config=TINY_CLIP)


# -- fine-tuning ---------------------------------------------------------------------------------


def test_fit_starts_from_a_hub_model(tmp_path: Path):
    torch.save({"state_dict": tiny_open_clip().state_dict()}, tmp_path / "HPS_v2_compressed.pt")
    config = {
        "model": {
            "class_path": "mmreward.training.RewardModule",
            "init_args": {
                "model": hub.model_config("hpsv2", tmp_path / "HPS_v2_compressed.pt", model_config=TINY_CLIP),
                "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.0}},  # keep the weights
            },
        },
    }
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(config))
    main([
        "fit", "--config", str(tmp_path / "fit.yaml"),
        "--data", "mmreward.training.RewardDataModule",
        "--data.train", str(write_colour_world(tmp_path, 4, seed=1, name="train")),
        "--data.batch_size", "4", "--data.num_workers", "0",
        "--trainer.fast_dev_run", "true", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path / "run"),
    ])  # fmt: skip
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved["model"]["class_path"] == "modalities.hub.clip.ClipSimilarityReward"
    assert saved["model"]["init_args"]["checkpoint"] is None  # the weights are in model.safetensors
    tuned = mr.load(tmp_path / "run" / "model", device="cpu")
    published = mr.load(
        "hpsv2", checkpoint=tmp_path / "HPS_v2_compressed.pt", model_config=TINY_CLIP, device="cpu"
    )
    assert tuned.score(samples=samples()) == pytest.approx(published.score(samples=samples()), abs=1e-5)
