"""Scoring 64 images against one prompt with an open_clip ViT-B/32 (random weights, 512 px PNGs).

Every path below scores the same 64 files with the same weights, and its scores are checked
against ours before timing; the paths are timed in interleaved rounds (A B C ... A B C ...),
best of ``--rounds``, so a shared machine's load falls on all of them alike:

- ImageReward's loop (``ImageReward.inference_rank``, run under ``torch.no_grad`` as its README
  does): tokenize the prompt once; per image open, torchvision PIL preprocessing, image tower,
  text tower (ImageReward's BLIP text tower cross-attends to the image, so it runs per image), head;
- HPSv2's loop (``hpsv2.img_score.score``): per image, under ``no_grad``: open, open_clip's
  PIL preprocessing, tokenize the prompt again, ``model(image, text)`` (both towers), the
  cosine (its ``torch.cuda.amp.autocast`` is a no-op on a CPU);
- PickScore's batched path (its README's ``calc_probs``): transformers ``CLIPProcessor`` on the
  64 opened PIL images and the prompt, ``CLIPModel.get_image_features`` / ``get_text_features``
  in one batch, under ``no_grad`` -- the same ViT-B/32 built from a ``CLIPConfig`` with the
  open_clip weights copied in;
- mmreward: ``Scorer.score(prompts=p, images=paths)`` (default ``batch_size=32``), fp32 and
  ``dtype=torch.bfloat16``, and the same before this change (float resize, one thread, autocast
  alone) for the record;
- floor: the bare image forward of the same batches (32) on already-preprocessed pixels, fp32
  and bf16 (no decoding, resizing or text);
- GEMM peak: square matmuls (1024 and 2048), fp32 and bf16, timed in the same rounds. The share
  of peak is the model's FLOPs (``torch.utils.flop_counter``: 64 image forwards and one text
  forward) over a path's time, over the peak of its dtype.

The training-step comparison (one forward over a chosen+rejected batch vs two) follows.

Run: .venv/bin/python benchmarks/bench_scoring.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import logging
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from headline import record
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

import mmreward as mr
from mmreward.heads import LinearHead
from mmreward.losses import bradley_terry_loss
from mmreward.models import RewardModel
from mmreward.scoring import cpu_has_native_bf16
from modalities.backbones.clip import ClipBackbone
from modalities.image import load_image, pil_to_tensor

PROMPT = "two red circles above a blue square"
LOGIT_SCALE = 100.0  # every path reports 100 * cosine (PickScore's reading)


def timed(fn: Callable[[], object], repeats: int = 3) -> float:
    """Best of ``repeats`` wall times after one warm-up call."""
    return interleaved({"x": fn}, repeats)["x"]


def interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best wall time of each function over ``rounds`` rounds that call them in turn (after a warm-up)."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, math.inf)
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def write_images(folder: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def reward_model() -> RewardModel:
    """ViT-B/32 with random weights; the head reads 100 * cosine, as PickScore does."""
    torch.manual_seed(0)
    backbone = ClipBackbone("ViT-B-32")
    backbone.model.logit_scale.data.fill_(math.log(LOGIT_SCALE))
    return RewardModel(backbone, LinearHead(init="ones", scale=LOGIT_SCALE / backbone.embed_dim))


# -- the peers' paths (their structure, written here; no code of theirs is imported) -------------


def clip_transform(size: int):  # noqa: ANN201
    """The PIL preprocessing ImageReward and HPSv2 use (open_clip's eval transform): bicubic resize of
    the short side, centre crop, RGB, ToTensor, Normalize."""
    import open_clip

    return open_clip.image_transform(size, is_train=False)


def imagereward_loop(backbone: ClipBackbone, paths: list[Path]) -> list[float]:
    """ImageReward's ``inference_rank`` shape: text tokenized once, both towers run per image."""
    preprocess = clip_transform(backbone.image_size)
    scores = []
    with torch.no_grad():
        text_input = backbone.tokenizer([PROMPT])
        for path in paths:
            image = preprocess(Image.open(path)).unsqueeze(0)
            image_embeds = backbone.encode_image(image)
            text_embeds = backbone.encode_text(text_input)  # per image, like BLIP's cross-attending tower
            scores.append(LOGIT_SCALE * float((image_embeds * text_embeds).sum()))
    return scores


def hpsv2_loop(backbone: ClipBackbone, paths: list[Path]) -> list[float]:
    """HPSv2's ``img_score.score`` shape: per image, preprocess, tokenize, ``model(image, text)``."""
    preprocess = clip_transform(backbone.image_size)
    model = backbone.model
    scores = []
    for path in paths:
        with torch.no_grad():
            image = preprocess(Image.open(path)).unsqueeze(0)
            text = backbone.tokenizer([PROMPT])
            with torch.autocast("cuda", enabled=torch.cuda.is_available()):  # their cuda.amp: off on a CPU
                image_features, text_features, _ = model(image, text)
                logits_per_image = image_features @ text_features.T
                scores.append(LOGIT_SCALE * float(torch.diagonal(logits_per_image)[0]))
    return scores


def hf_clip_from_open_clip(backbone: ClipBackbone, folder: Path):  # noqa: ANN201
    """A transformers ``CLIPModel`` + ``CLIPProcessor`` of the same ViT-B/32 with the same weights."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    oc = backbone.model
    vision, text = backbone.model_config["vision_cfg"], backbone.model_config["text_cfg"]
    config = CLIPConfig(
        projection_dim=backbone.embed_dim,
        logit_scale_init_value=math.log(LOGIT_SCALE),
        vision_config=dict(
            hidden_size=vision["width"],
            intermediate_size=vision["width"] * 4,
            num_hidden_layers=vision["layers"],
            num_attention_heads=vision["width"] // 64,
            image_size=vision["image_size"],
            patch_size=vision["patch_size"],
            hidden_act="gelu",
        ),
        text_config=dict(
            hidden_size=text["width"],
            intermediate_size=text["width"] * 4,
            num_hidden_layers=text["layers"],
            num_attention_heads=text["heads"],
            max_position_embeddings=text["context_length"],
            vocab_size=text["vocab_size"],
            hidden_act="gelu",
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        ),
    )
    model = CLIPModel(config).eval()
    state = {
        "logit_scale": oc.logit_scale,
        "visual_projection.weight": oc.visual.proj.T,
        "text_projection.weight": oc.text_projection.T,
        "vision_model.embeddings.class_embedding": oc.visual.class_embedding,
        "vision_model.embeddings.patch_embedding.weight": oc.visual.conv1.weight,
        "vision_model.embeddings.position_embedding.weight": oc.visual.positional_embedding,
        "text_model.embeddings.token_embedding.weight": oc.token_embedding.weight,
        "text_model.embeddings.position_embedding.weight": oc.positional_embedding,
    }
    for ours, theirs in (("visual.ln_pre", "vision_model.pre_layrnorm"), ("visual.ln_post", "vision_model.post_layernorm"), ("ln_final", "text_model.final_layer_norm")):  # fmt: skip
        for p in ("weight", "bias"):
            state[f"{theirs}.{p}"] = oc.get_parameter(f"{ours}.{p}")
    for tower, prefix in ((oc.visual.transformer, "vision_model"), (oc.transformer, "text_model")):
        for i, block in enumerate(tower.resblocks):
            dst = f"{prefix}.encoder.layers.{i}"
            for p in ("weight", "bias"):
                q, k, v = getattr(block.attn, f"in_proj_{p}").chunk(3)
                state.update({f"{dst}.self_attn.{n}_proj.{p}": t for n, t in zip("qkv", (q, k, v))})
                state[f"{dst}.self_attn.out_proj.{p}"] = getattr(block.attn.out_proj, p)
                state[f"{dst}.layer_norm1.{p}"] = getattr(block.ln_1, p)
                state[f"{dst}.layer_norm2.{p}"] = getattr(block.ln_2, p)
                state[f"{dst}.mlp.fc1.{p}"] = getattr(block.mlp.c_fc, p)
                state[f"{dst}.mlp.fc2.{p}"] = getattr(block.mlp.c_proj, p)
    missing, unexpected = model.load_state_dict({k: v.detach() for k, v in state.items()}, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    # the same BPE vocabulary as open_clip's tokenizer, written in transformers' files
    bpe = backbone.tokenizer
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}  # transformers' names
    (folder / "vocab.json").write_text(json.dumps({names.get(k, k): v for k, v in bpe.encoder.items()}))
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    size = vision["image_size"]
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(backbone.image_mean),
        image_std=list(backbone.image_std),
    )
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def pickscore_batched(model, processor, paths: list[Path]) -> list[float]:  # noqa: ANN001
    """PickScore's ``calc_probs`` before the softmax: one processor call, one batched forward."""
    images = [Image.open(path) for path in paths]
    image_inputs = processor(images=images, padding=True, truncation=True, max_length=77, return_tensors="pt")
    text_inputs = processor(text=PROMPT, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        image_embs = model.get_image_features(**image_inputs)
        image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
        text_embs = model.get_text_features(**text_inputs)
        text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
        scores = model.logit_scale.exp() * (text_embs @ image_embs.T)[0]
    return scores.tolist()


def features(output):  # noqa: ANN001, ANN201
    """transformers 5 returns a model output from ``get_*_features``; 4.x returned the tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


# -- ours ---------------------------------------------------------------------------------------


def mmreward_before(model: RewardModel, paths: list[Path], dtype: torch.dtype) -> list[float]:
    """The scoring path before the speed work: float resize, one thread, bf16 by autocast alone."""
    backbone = model.backbone
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        scores = []
        for start in range(0, len(paths), 32):
            chunk = paths[start : start + 32]
            pixels = torch.cat(
                [backbone.pixels_from_tensor(pil_to_tensor(load_image(p))[None]) for p in chunk]
            )
            inputs = {"pixel_values": pixels, **backbone.encode_prompts([PROMPT] * len(chunk))}
            scores += model(inputs).score.float().tolist()
    return scores


def count_flops(backbone: ClipBackbone) -> tuple[float, float]:
    """FLOPs of one image forward and one text forward. Counted with autograd on: in eval mode under
    ``no_grad``, ``nn.MultiheadAttention`` takes a fused fast path the counter does not see."""
    image = torch.zeros(1, 3, backbone.image_size, backbone.image_size)
    text = backbone.tokenizer([PROMPT])
    counts = []
    for fn, arg in ((backbone.model.encode_image, image), (backbone.model.encode_text, text)):
        with FlopCounterMode(display=False) as counter:
            fn(arg)
        counts.append(float(counter.get_total_flops()))
    return counts[0], counts[1]


GEMM_SIZES = (1024, 2048, 4096)


def gemm(dtype: torch.dtype, n: int) -> Callable[[], object]:
    """(n, n) @ (n, n), repeated to at least 17 GFLOP a call (8 of 1024, one of 2048 or 4096)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    calls = max(1, (2048 // n) ** 3)

    def run() -> None:
        for _ in range(calls):
            torch.mm(a, b)

    run.flops = 2 * n**3 * calls  # type: ignore[attr-defined]
    return run


def bench_scoring(n: int, rounds: int) -> dict:
    model = reward_model()
    model_bf16 = copy.deepcopy(model)
    backbone = model.backbone
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), n)
        scorer = mr.Scorer(model, device="cpu")
        scorer_bf16 = mr.Scorer(model_bf16, device="cpu", dtype=torch.bfloat16)
        no_prefetch = mr.Scorer(model_bf16, device="cpu", dtype=torch.bfloat16, prefetch=False)
        hf_model, processor = hf_clip_from_open_clip(backbone, Path(tmp))
        hf_model.get_image_features = _wrap(hf_model.get_image_features)
        hf_model.get_text_features = _wrap(hf_model.get_text_features)
        ours = scorer.score(prompts=PROMPT, images=paths)
        checks = {
            "mmreward_bf16": scorer_bf16.score(prompts=PROMPT, images=paths),
            "mmreward_before_fp32": mmreward_before(model, paths, torch.float32),
            "mmreward_before_bf16": mmreward_before(model, paths, torch.bfloat16),
            "imagereward_loop": imagereward_loop(backbone, paths),
            "hpsv2_loop": hpsv2_loop(backbone, paths),
            "pickscore_batched": pickscore_batched(hf_model, processor, paths),
        }
        gaps = {k: float(np.abs(np.subtract(v, ours)).max()) for k, v in checks.items()}
        for name, gap in gaps.items():  # 100 * cosine: PIL vs torch resize and bf16 move it by < 0.5
            assert gap < 0.5, f"{name} disagrees with Scorer.score by {gap:.3f}"
        pixels = model.collate([mr.Sample(prompt=PROMPT, image=p) for p in paths])["pixel_values"]

        def floor(m: RewardModel, dtype: torch.dtype) -> Callable[[], object]:
            def run() -> None:  # the Scorer's batches (32), without decoding, resizing or text
                with (
                    torch.inference_mode(),
                    torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32),
                ):
                    for batch in pixels.split(scorer.batch_size):
                        m.backbone.model.encode_image(batch)

            return run

        gemms = {
            f"gemm_{name}_{size}": gemm(dtype, size)
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
            for size in GEMM_SIZES
        }
        paths_to_time = {
            "imagereward_loop": lambda: imagereward_loop(backbone, paths),
            "hpsv2_loop": lambda: hpsv2_loop(backbone, paths),
            "pickscore_batched": lambda: pickscore_batched(hf_model, processor, paths),
            "mmreward_before_fp32": lambda: mmreward_before(model, paths, torch.float32),
            "mmreward_before_bf16": lambda: mmreward_before(model, paths, torch.bfloat16),
            "mmreward_fp32": lambda: scorer.score(prompts=PROMPT, images=paths),
            "mmreward_bf16": lambda: scorer_bf16.score(prompts=PROMPT, images=paths),
            "mmreward_bf16_no_prefetch": lambda: no_prefetch.score(prompts=PROMPT, images=paths),
            "floor_fp32": floor(model, torch.float32),
            "floor_bf16": floor(model_bf16, torch.bfloat16),
            **gemms,
        }
        times = interleaved(paths_to_time, rounds)
    image_flops, text_flops = count_flops(backbone)
    peak = {
        name: max(fn.flops / times[key] for key, fn in gemms.items() if key.startswith(f"gemm_{name}")) / 1e12
        for name in ("fp32", "bf16")
    }
    return {
        "times": times,
        "gaps": gaps,
        "image_gflops": image_flops / 1e9,
        "text_gflops": text_flops / 1e9,
        "job_flops": n * image_flops + text_flops,
        "peak_tflops": peak,
    }


def _wrap(fn: Callable) -> Callable:
    return lambda *args, **kwargs: features(fn(*args, **kwargs))


def bench_pair_step(batch: int, repeats: int) -> dict[str, float]:
    """A training step on B pairs: one forward of 2B samples vs two forwards of B."""
    torch.manual_seed(0)
    model = RewardModel(ClipBackbone("ViT-B-32"), LinearHead())
    rng = np.random.default_rng(1)
    samples = [
        mr.Sample(
            prompt=f"prompt {i % batch}",
            image=Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)),
        )
        for i in range(2 * batch)
    ]
    joint = model.collate(samples)
    chosen, rejected = model.collate(samples[:batch]), model.collate(samples[batch:])

    def one_forward() -> None:
        out = model(joint).score
        bradley_terry_loss(out[:batch], out[batch:]).backward()

    def two_forwards() -> None:
        bradley_terry_loss(model(chosen).score, model(rejected).score).backward()

    return interleaved({"pair_one_forward": one_forward, "pair_two_forwards": two_forwards}, repeats)


ROWS = [  # (label, key, dtype whose GEMM peak it is measured against)
    ("ImageReward loop (`inference_rank`, `no_grad`): per image open, PIL preprocess, image tower, text tower",
     "imagereward_loop", "fp32"),
    ("HPSv2 loop (`img_score.score`): per image open, PIL preprocess, tokenize, both towers", "hpsv2_loop", "fp32"),
    ("PickScore batched (`calc_probs`): transformers `CLIPProcessor` + `CLIPModel`, one batch",
     "pickscore_batched", "fp32"),
    ("mmreward before this change, fp32 (float resize, one thread)", "mmreward_before_fp32", "fp32"),
    ("mmreward before this change, bf16 autocast alone", "mmreward_before_bf16", "bf16"),
    ("**`Scorer.score(prompts=p, images=paths)`, fp32**", "mmreward_fp32", "fp32"),
    ("**same, `dtype=torch.bfloat16`** (bf16 weights + autocast)", "mmreward_bf16", "bf16"),
    ("same, `prefetch=False` (batches collated in turn)", "mmreward_bf16_no_prefetch", "bf16"),
    ("floor: bare image forward of the same batches on preprocessed pixels, fp32", "floor_fp32", "fp32"),
    ("floor, bf16 weights", "floor_bf16", "bf16"),
]  # fmt: skip


def report(r: dict, n: int, rounds: int, load: tuple[float, float]) -> str:
    """The RESULTS.md section's table, as markdown."""
    t, flops, peak = r["times"], r["job_flops"], r["peak_tflops"]
    loop = t["imagereward_loop"]
    lines = [
        "| path | time | images/s | vs ImageReward loop | ours (bf16) faster by | useful TFLOP/s | share of peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, key, dtype in ROWS:
        achieved = flops / t[key] / 1e12
        lines.append(
            f"| {label} | {t[key]:.3f} s | {n / t[key]:.1f} | {loop / t[key]:.2f}x | "
            f"{t[key] / t['mmreward_bf16']:.2f}x | {achieved:.4f} | {100 * achieved / peak[dtype]:.0f}% of {dtype} |"
        )
    gaps = ", ".join(f"{k} {v:.3f}" for k, v in r["gaps"].items())
    lines.append(
        f"\nGEMM peak (square {'/'.join(map(str, GEMM_SIZES))} matmuls, best, in the same rounds): "
        f"fp32 {peak['fp32']:.4f} TFLOP/s, bf16 {peak['bf16']:.4f} TFLOP/s. Useful FLOPs: "
        f"{r['image_gflops']:.2f} GFLOP per 224 px image, {r['text_gflops']:.2f} GFLOP for the prompt "
        f"(the loops spend more: they re-run the text tower). Largest score gap to `Scorer.score` fp32 "
        f"(100 x cosine): {gaps}. Best of {rounds} interleaved rounds; load average {load[0]:.2f} before, "
        f"{load[1]:.2f} after."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)  # open_clip warns on the root logger about random weights
    load_before = os.getloadavg()[0]
    print(
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"native bf16: {cpu_has_native_bf16()}, load average {load_before:.2f}"
    )
    r = bench_scoring(args.images, args.rounds)
    t = r["times"]
    for name, value in t.items():
        print(f"{name:>22}: {value:7.3f} s")
    table = report(r, args.images, args.rounds, (load_before, os.getloadavg()[0]))
    print(table)
    loop, best = t["imagereward_loop"], t["mmreward_bf16"]
    share = r["job_flops"] / best / 1e12 / r["peak_tflops"]["bf16"]
    print(
        f"target >= 4x the per-image loop: {loop / best:.2f}x ({'met' if loop / best >= 4 else 'NOT met'}); "
        f"target >= 35% of bf16 GEMM peak: {100 * share:.0f}% ({'met' if share >= 0.35 else 'NOT met'})"
    )
    p = bench_pair_step(args.pairs, args.rounds)
    print(
        f"train step, {args.pairs} pairs: one forward {p['pair_one_forward']:.3f} s, two forwards {p['pair_two_forwards']:.3f} s "
        f"({p['pair_two_forwards'] / p['pair_one_forward']:.2f}x)"
    )
    record_headlines(r, p, args)


def record_headlines(r: dict, p: dict[str, float], args: argparse.Namespace) -> None:
    """The headline rows of RESULTS.md: ours against each peer's path, the share of peak, the pair step."""
    t, n = r["times"], args.images
    setup = f"open_clip ViT-B/32 (random weights), {n} PNGs of 512 px, one prompt, best of {args.rounds} interleaved rounds"
    for name, ours, peer, label in (
        ("bf16_vs_imagereward_loop", "mmreward_bf16", "imagereward_loop", "ImageReward's per-image loop"),
        ("bf16_vs_hpsv2_loop", "mmreward_bf16", "hpsv2_loop", "HPSv2's per-image loop"),
        ("bf16_vs_pickscore_batched", "mmreward_bf16", "pickscore_batched", "PickScore's batched `calc_probs`"),
        ("fp32_vs_imagereward_loop", "mmreward_fp32", "imagereward_loop", "ImageReward's per-image loop"),
    ):  # fmt: skip
        dtype = "bf16" if ours.endswith("bf16") else "fp32"
        record(
            name,
            f"images/s, `Scorer.score` {dtype} vs {label}, {setup}",
            t[peer] / t[ours],
            ours=n / t[ours],
            baseline=n / t[peer],
            unit="images/s",
        )
    achieved = r["job_flops"] / t["mmreward_bf16"] / 1e12
    record(
        "bf16_share_of_gemm_peak",
        f"useful TFLOP/s of `Scorer.score` bf16 as a share of this CPU's bf16 GEMM peak (square "
        f"{'/'.join(map(str, GEMM_SIZES))} matmuls in the same rounds), {setup}",
        achieved / r["peak_tflops"]["bf16"],
        ours=achieved,
        baseline=r["peak_tflops"]["bf16"],
        unit="TFLOP/s",
    )
    record(
        "train_step_pair_collation",
        f"training step (forward + backward) on {args.pairs} pairs, chosen+rejected in one forward vs two "
        f"forwards, ViT-B/32, best of {args.rounds} interleaved rounds",
        p["pair_two_forwards"] / p["pair_one_forward"],
        ours=p["pair_one_forward"],
        baseline=p["pair_two_forwards"],
        unit="s",
    )


if __name__ == "__main__":
    main()
