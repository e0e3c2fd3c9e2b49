"""One prepared run for a lent GPU machine: bf16, SDPA kernels, DDP and the MFU of a reward-model step.

On a CUDA machine, in a few minutes (an H200 in about one), it:

1. builds a causal-LM reward model from a config (``LMBackbone`` on a Qwen3 architecture with
   random weights, no hub; ``--size 350m`` by default, ``1b`` or ``tiny``) and the tiny CLIP reward
   model (``ClipBackbone``, needs ``open_clip``), and checks that a bf16-autocast forward and
   backward runs and matches fp32 (TF32 off): scores within ``--score-tol`` relative error, gradient
   cosine at least ``--grad-cos``;
2. runs ``scaled_dot_product_attention`` (causal, bf16, forward and backward) under each backend of
   ``torch.nn.attention.sdpa_kernel`` (flash, memory-efficient, cuDNN, math) against an fp32 math
   reference, then the reward model's forward under each, and reports which ran, their agreement
   and their times;
3. runs DDP (nccl) on 2 processes when 2+ GPUs are visible, else on 1 (it checks the process
   group, the wrapper and a step; not the all-reduce across ranks), and checks that every rank
   ends with the same weights;
4. times ``--steps`` training steps (bf16 autocast, fused AdamW, Bradley-Terry loss on chosen +
   rejected in one forward) and prints tokens/s and MFU: model FLOPs per token
   ``6 N + 12 L S d`` (N the non-embedding parameters, the attention term of PaLM, Chowdhery et al.,
   2022) against the device's dense bf16 peak (detected from its name: H100/H200 SXM 989 TFLOP/s,
   A100 312, ...; ``--peak-tflops`` overrides). ``mfu_6n`` counts ``6 N`` alone.

Results are written to ``--output`` as JSON after every section, so a run cut short keeps what it
measured. Without CUDA it prints a skip message and exits 0; ``--cpu-dry-run`` runs every code path
at tiny size on the CPU (DDP on gloo) to check the script itself, and claims no figures.

Run: ``python benchmarks/gpu_check.py --output $OUT/gpu_check.json`` (on the device machine:
``python3``; the CLIP part wants ``open_clip_torch`` carried as a wheel, else it is reported skipped).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

# Dense bf16 tensor-core peaks by the vendors' datasheets, TFLOP/s; the first name found in the device's wins.
PEAK_BF16_TFLOPS = {
    "H100 PCIe": 756.0,
    "H200": 989.4,
    "H100": 989.4,
    "H800": 989.4,
    "A100": 312.0,
    "L40S": 362.1,
}
SIZES = {  # Qwen3 shapes: hidden, layers, heads, kv heads, head dim, MLP width, vocab
    "tiny": (64, 2, 4, 2, 16, 128, 512),
    "350m": (1024, 24, 16, 8, 64, 3072, 32768),
    "1b": (2048, 16, 16, 8, 128, 6144, 32768),
}


def peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of a device by its name, or None when it is not in the table."""
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k.lower() in name.lower()), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_lm_folder(folder: Path, size: str) -> Path:
    """A Qwen3 config (random weights are built from it) and a small tokenizer with a chat template."""
    from transformers import Qwen3Config

    from tests.vlm_helpers import build_tiny_tokenizer

    hidden, layers, heads, kv, head_dim, mlp, vocab = SIZES[size]
    tokenizer = build_tiny_tokenizer()
    config = Qwen3Config(
        vocab_size=max(vocab, len(tokenizer)),
        hidden_size=hidden,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        max_position_embeddings=8192,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def lm_reward_model(folder: Path, device: torch.device, seed: int = 0) -> Any:
    """``RewardModel(LMBackbone(from_config, sdpa), LinearHead)``, built on ``device`` in fp32."""
    from mmreward.heads import LinearHead
    from mmreward.models import RewardModel
    from modalities.backbones.lm import LMBackbone

    torch.manual_seed(seed)
    with torch.device(device):
        backbone = LMBackbone(str(folder), from_config=True, attn_implementation="sdpa", shared_prefix=False)
        return RewardModel(backbone, LinearHead())


def lm_batch(
    model: Any, pairs: int, seq: int, device: torch.device, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Chosen then rejected token ids, (2 * pairs, seq), no padding."""
    vocab = model.backbone.model.config.vocab_size
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (2 * pairs, seq), generator=g)
    positions = torch.arange(seq).expand(2 * pairs, seq)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "position_ids": positions}
    return {k: v.to(device) for k, v in batch.items()}


def clip_reward_model(device: torch.device) -> tuple[Any, dict[str, torch.Tensor]]:
    """The tiny CLIP reward model of the tests, and a batch of 8 pairs (random pixels, 8 prompts)."""
    from mmreward.heads import LinearHead
    from mmreward.models import RewardModel
    from modalities.backbones.clip import ClipBackbone
    from tests.core_helpers import TINY_CLIP

    torch.manual_seed(0)
    model = RewardModel(ClipBackbone(model_name="tiny", model_config=TINY_CLIP), LinearHead()).to(device)
    size, pairs = model.backbone.image_size, 8
    g = torch.Generator().manual_seed(0)
    batch = {
        "pixel_values": torch.randn(2 * pairs, 3, size, size, generator=g),
        "input_ids": model.backbone.tokenizer([f"prompt number {i}" for i in range(pairs)]),
        "text_index": torch.arange(pairs).repeat(2),
    }
    return model, {k: v.to(device) for k, v in batch.items()}


def forward_backward(
    model: Any, batch: dict[str, torch.Tensor], bf16: bool
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Scores, the flat gradient and the Bradley-Terry loss of one step (no optimizer)."""
    from mmreward.losses import bradley_terry_loss

    model.zero_grad(set_to_none=True)
    device_type = next(model.parameters()).device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        scores = model(batch).score.float()
    chosen, rejected = scores.chunk(2)
    loss = bradley_terry_loss(chosen, rejected)
    loss.backward()
    grads = [p.grad.flatten().float() for p in model.parameters() if p.grad is not None]
    return scores.detach(), torch.cat(grads), float(loss.detach())


def check_bf16(
    model: Any, batch: dict[str, torch.Tensor], score_tol: float, grad_cos: float
) -> dict[str, Any]:
    """bf16 autocast against fp32 (TF32 off) on the same weights and batch."""
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        s32, g32, loss32 = forward_backward(model, batch, bf16=False)
        s16, g16, loss16 = forward_backward(model, batch, bf16=True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    score_err = float((s16 - s32).norm() / s32.norm().clamp_min(1e-12))
    cos = float(torch.nn.functional.cosine_similarity(g16, g32, dim=0))
    finite = bool(torch.isfinite(s16).all() and torch.isfinite(g16).all())
    return {
        "finite": finite,
        "score_rel_err": score_err,
        "grad_cosine": cos,
        "loss_fp32": loss32,
        "loss_bf16": loss16,
        "ok": finite and score_err <= score_tol and cos >= grad_cos,
    }


def sdpa_backends() -> dict[str, Any]:
    from torch.nn.attention import SDPBackend

    names = {
        "flash": "FLASH_ATTENTION",
        "mem_efficient": "EFFICIENT_ATTENTION",
        "cudnn": "CUDNN_ATTENTION",
        "math": "MATH",
    }
    return {k: getattr(SDPBackend, v) for k, v in names.items() if hasattr(SDPBackend, v)}


def timed(fn: Any, device: torch.device, repeats: int) -> float:
    """Mean seconds per call after one warm-up call."""
    fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def check_sdpa(
    device: torch.device, shape: tuple[int, int, int, int], model: Any, batch: dict, repeats: int
) -> dict:
    """Each SDPA backend on causal bf16 attention (forward + backward), then in the reward model's forward."""
    from torch.nn.attention import sdpa_kernel

    f = torch.nn.functional.scaled_dot_product_attention
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=g).to(device) for _ in range(3))
    reference = f(q.double(), k.double(), v.double(), is_causal=True).float()
    inputs = [t.bfloat16().requires_grad_() for t in (q, k, v)]
    with (
        torch.no_grad(),
        torch.autocast(device.type, dtype=torch.bfloat16),
        sdpa_kernel(sdpa_backends()["math"]),
    ):
        model_reference = model(batch).score.float()
    results = {}
    for name, backend in sdpa_backends().items():
        try:
            with sdpa_kernel(backend):
                out = f(*inputs, is_causal=True)
                out.float().sum().backward()
                seconds = timed(lambda: f(*inputs, is_causal=True).float().sum().backward(), device, repeats)
                with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
                    scores = model(batch).score.float()
            err = float((out.detach().float() - reference).abs().max() / reference.abs().max())
            model_err = float((scores - model_reference).norm() / model_reference.norm().clamp_min(1e-12))
            results[name] = {
                "ran": True,
                "max_rel_err_vs_fp64": err,
                "model_score_rel_err_vs_math": model_err,
                "fwd_bwd_ms": seconds * 1e3,
            }
        except RuntimeError as err:  # a backend this device, dtype or shape does not offer
            results[name] = {"ran": False, "why": str(err).splitlines()[0][:300]}
    ran = [r for r in results.values() if r["ran"]]
    results["agree"] = all(
        r["max_rel_err_vs_fp64"] < 0.02 and r["model_score_rel_err_vs_math"] < 0.05 for r in ran
    )
    results["shape_bhsd"] = list(shape)
    return results


def flops_per_token(model: Any, seq: int) -> tuple[float, float, int]:
    """``(6N + 12 L S d, 6N, N)`` with N the non-embedding parameters of the reward model."""
    config = model.backbone.model.config
    embedding = model.backbone.model.get_input_embeddings().weight.numel()
    n = sum(p.numel() for p in model.parameters()) - embedding
    attention = 12 * config.num_hidden_layers * seq * config.num_attention_heads * config.head_dim
    return 6 * n + attention, 6 * n, n


def time_training(model: Any, batch: dict, device: torch.device, steps: int, warmup: int) -> dict[str, float]:
    """Seconds per full training step: bf16 autocast forward, BT loss, backward, AdamW (fused on CUDA)."""
    from mmreward.losses import bradley_terry_loss

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            scores = model(batch).score.float()
        bradley_terry_loss(*scores.chunk(2)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = timed(step, device, steps)
    pairs = len(next(iter(batch.values()))) // 2
    result = {"step_ms": seconds * 1e3, "pairs_per_s": pairs / seconds}
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def lm_throughput(model: Any, batch: dict, timing: dict[str, float], peak: float | None) -> dict[str, Any]:
    """Tokens/s, achieved TFLOP/s and MFU of the LM reward model's timed steps."""
    seconds, tokens = timing["step_ms"] / 1e3, batch["input_ids"].numel()
    full, six_n, n = flops_per_token(model, batch["input_ids"].shape[1])
    return {
        "non_embedding_params": n,
        "tokens_per_step": tokens,
        "tokens_per_s": tokens / seconds,
        "achieved_tflops": full * tokens / seconds / 1e12,
        "peak_tflops": peak,
        "mfu": full * tokens / seconds / (peak * 1e12) if peak else None,
        "mfu_6n": six_n * tokens / seconds / (peak * 1e12) if peak else None,
    }


def ddp_worker(
    rank: int, world: int, port: int, folder: str, seq: int, backend: str, result_path: str
) -> None:
    """One DDP rank: build the model, take 3 steps on its own data, compare weights across ranks."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from mmreward.losses import bradley_terry_loss

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device(f"cuda:{rank}") if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        model = lm_reward_model(
            Path(folder), device, seed=rank
        )  # different seeds: DDP must broadcast rank 0's
        ddp = DistributedDataParallel(model, device_ids=[rank] if device.type == "cuda" else None)
        optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-4)
        batch = lm_batch(model, 2, seq, device, seed=100 + rank)
        stamps = []
        for _ in range(3):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                scores = ddp(batch).score.float()
            bradley_terry_loss(*scores.chunk(2)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sync(device)
            stamps.append(time.perf_counter())
        checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).to(device)
        gathered = [torch.zeros_like(checksum) for _ in range(world)]
        dist.all_gather(gathered, checksum)
        if rank == 0:
            same = all(torch.equal(gathered[0], other) for other in gathered[1:])
            Path(result_path).write_text(
                json.dumps(
                    {
                        "ran": True,
                        "world_size": world,
                        "backend": backend,
                        "weights_equal_across_ranks": same,
                        "step_ms": (stamps[-1] - stamps[0]) / 2 * 1e3,
                    }
                )
            )
    finally:
        dist.destroy_process_group()


def check_ddp(folder: Path, seq: int, dry_run: bool) -> dict[str, Any]:
    import torch.multiprocessing as mp

    gpus = torch.cuda.device_count()
    world, backend = (2, "gloo") if dry_run else (min(gpus, 2), "nccl")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        result_path = str(Path(tmp) / "ddp.json")
        mp.spawn(
            ddp_worker, args=(world, port, str(folder), seq, backend, result_path), nprocs=world, join=True
        )
        result = json.loads(Path(result_path).read_text())
    if world == 1:
        result["note"] = (
            "1 GPU visible: process group, DDP wrapper and steps checked; no all-reduce across ranks"
        )
    return result


@contextlib.contextmanager
def section(results: dict[str, Any], name: str, output: Path | None) -> Iterator[dict[str, Any]]:
    """Run one check; an exception is recorded under its name (the other checks still run)."""
    entry: dict[str, Any] = {}
    start = time.perf_counter()
    print(f"[gpu_check] {name} ...", flush=True)
    try:
        yield entry
    except ModuleNotFoundError as err:  # an optional part missing on this machine: skipped, not failed
        entry["skipped"] = str(err)
    except Exception as err:
        entry["error"] = f"{type(err).__name__}: {err}"
        entry["traceback"] = traceback.format_exc()[-2000:]
    entry["seconds"] = round(time.perf_counter() - start, 2)
    results[name] = entry
    shown = {k: v for k, v in entry.items() if k != "traceback"}
    print(f"[gpu_check] {name}: {json.dumps(shown, default=str)}", flush=True)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2, default=str))


def environment(device: torch.device, peak: float | None) -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "gpus": torch.cuda.device_count(),
            "cuda": torch.version.cuda,
            "bf16_supported": torch.cuda.is_bf16_supported(),
            "flash_sdp_enabled": torch.backends.cuda.flash_sdp_enabled(),
        }
    with contextlib.suppress(ImportError):
        import transformers

        info["transformers"] = transformers.__version__
    info["peak_bf16_tflops"] = peak
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, help="write the results here as JSON (after every check)")
    parser.add_argument(
        "--cpu-dry-run", action="store_true", help="run every check at tiny size on the CPU; no figures"
    )
    parser.add_argument(
        "--size", choices=sorted(SIZES), help="LM reward model size (default 350m; tiny on a dry run)"
    )
    parser.add_argument("--pairs", type=int, help="preference pairs per step (default 8; 2 on a dry run)")
    parser.add_argument("--seq-len", type=int, help="tokens per sequence (default 1024; 32 on a dry run)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--peak-tflops", type=float, help="the device's dense bf16 peak, if its name is not known"
    )
    parser.add_argument(
        "--score-tol", type=float, default=0.05, help="bf16 vs fp32: largest relative score error"
    )
    parser.add_argument("--grad-cos", type=float, default=0.99, help="bf16 vs fp32: smallest gradient cosine")
    args = parser.parse_args(argv)
    dry = args.cpu_dry_run
    if not torch.cuda.is_available() and not dry:
        print(
            "gpu_check: no CUDA device here, so nothing is checked (skipped). Run it on a GPU machine, "
            "or with --cpu-dry-run to exercise its code paths on the CPU."
        )
        return 0
    device = torch.device("cpu" if dry else "cuda")
    size, pairs, seq = (
        args.size or ("tiny" if dry else "350m"),
        args.pairs or (2 if dry else 8),
        args.seq_len or (32 if dry else 1024),
    )
    steps = min(args.steps, 3) if dry else args.steps
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or (None if dry else peak_tflops(name))
    results: dict[str, Any] = {"dry_run": dry, "size": size, "pairs": pairs, "seq_len": seq}
    with section(results, "environment", args.output) as entry:
        entry |= environment(device, peak)
    with tempfile.TemporaryDirectory() as tmp:
        folder, model, batch = Path(tmp) / "lm", None, None  # a failed build fails the checks that need it
        with section(results, "build_lm", args.output) as entry:
            model = lm_reward_model(write_lm_folder(folder, size), device)
            batch = lm_batch(model, pairs, seq, device)
            entry["params"] = sum(p.numel() for p in model.parameters())
        with section(results, "bf16_lm", args.output) as entry:
            entry |= check_bf16(model, batch, args.score_tol, args.grad_cos)
        with section(results, "bf16_clip", args.output) as entry:
            if importlib.util.find_spec("open_clip") is None:
                raise ModuleNotFoundError("open_clip is not installed here; carry open_clip_torch as a wheel")
            clip, clip_batch = clip_reward_model(device)
            entry |= check_bf16(clip, clip_batch, args.score_tol, args.grad_cos)
            entry["train_step"] = time_training(clip, clip_batch, device, steps, args.warmup)
            del clip
        with section(results, "sdpa", args.output) as entry:
            shape = (1, 2, 64, 16) if dry else (4, 16, 2048, 128)
            entry |= check_sdpa(device, shape, model, batch, repeats=2 if dry else 10)
        with section(results, "train_lm", args.output) as entry:
            timing = time_training(model, batch, device, steps, args.warmup)
            entry |= timing | lm_throughput(model, batch, timing, peak)
        del model, batch
        if device.type == "cuda":
            torch.cuda.empty_cache()
        with section(results, "ddp", args.output) as entry:
            entry |= check_ddp(folder, seq, dry)
    failed = [
        k
        for k, v in results.items()
        if isinstance(v, dict) and ("error" in v or v.get("ok") is False or v.get("agree") is False)
    ]
    results["failed"] = failed
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=2, default=str))
    print(f"[gpu_check] done{' (CPU dry run: no figures)' if dry else ''}; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
