"""The reward server's throughput with dynamic batching vs one request at a time, same model, same run.

An open_clip reward model (random weights, saved and served with ``mmreward.load`` as a user's
model is; by default a one-layer 32 px CLIP, whose forward costs almost nothing so the ratio is the
server's own per-request overhead, then ViT-B/32, whose forward dominates on a CPU) behind ``integrations.serving.reward_server``; 16 client threads send one
224 px image each per request (4 prompts in turn, images inline as base64 PNG), the way generation
workers call a served reward. Two servers in turn: ``max_batch_size=16`` (LitServe's dynamic
batching; the prompts and images of a batch go to the model in one forward) and ``max_batch_size=1``
(one request per forward). Scores from both are checked equal (1e-4; in bf16, 1e-2 of the scores'
scale) before the ratio is printed. ``--dtype`` (``mmreward serve``'s choices, default fp32) is the
served model's compute dtype; bf16 casts the weights on a CPU with native bf16 (AMX, avx512_bf16).
``--device cuda`` serves the model on the GPU (LitServe's ``accelerator="cuda"``); the clients and
the request decoding stay on the CPU.

Run: .venv/bin/python benchmarks/bench_server.py [--requests 64] [--threads 16] [--model tiny ViT-B-32]
     [--dtype fp32|bf16] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from headline import record
from PIL import Image

from integrations.serving.client import data_url
from integrations.serving.reward_server import RewardAPI, RewardSource, create_server
from mmreward.cli_options import add_dtype_option
from mmreward.scoring import cpu_has_native_bf16

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
PROMPTS = ["a red cube on a table", "two dogs in the snow", "a city at night", "a bowl of fruit"]


def save_model(directory: Path, name: str) -> Path:
    from mmreward.heads import LinearHead
    from mmreward.models import RewardModel
    from mmreward.scoring import Scorer
    from modalities.backbones.clip import ClipBackbone

    backbone = ClipBackbone("tiny", model_config=TINY) if name == "tiny" else ClipBackbone(name)
    return Scorer(RewardModel(backbone, LinearHead()), device="cpu").save_pretrained(directory / "model")


def start(
    model: Path, max_batch_size: int, dtype: str, device: str = "cpu"
) -> tuple[object, threading.Thread, str]:
    api = RewardAPI(
        RewardSource(model=str(model), device=device, dtype=dtype),
        max_batch_size=max_batch_size,
        batch_timeout=0.01,
    )
    server = create_server(api, timeout=600, accelerator=device, devices=1)
    server._monitor_workers = False
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kwargs = {"host": "127.0.0.1", "port": port, "api_server_worker_type": "thread",
              "generate_client_file": False, "log_level": "warning", "num_api_servers": 1}  # fmt: skip
    thread = threading.Thread(target=server.run, kwargs=kwargs, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return server, thread, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)


def drive(url: str, bodies: list[dict], threads: int) -> tuple[float, list[float]]:
    """Seconds to answer every body from ``threads`` concurrent clients, and the scores in order."""
    client = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=threads))

    def one(body: dict) -> float:
        response = client.post(f"{url}/score", json=body)
        response.raise_for_status()
        return response.json()["scores"][0]

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, bodies[:threads]))  # warm-up: connections, first forwards
        began = time.perf_counter()
        scores = list(pool.map(one, bodies))
    return time.perf_counter() - began, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument(
        "--model", nargs="+", default=["tiny", "ViT-B-32"],
        help="open_clip model names, or 'tiny' (a one-layer 32 px CLIP: the server's own overhead)",
    )  # fmt: skip
    add_dtype_option(
        parser, default="fp32", note="; default fp32 here (auto would be bf16 on a GPU that has it)"
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model runs")
    args = parser.parse_args()
    for model in args.model:
        run(model, args.requests, args.threads, args.dtype, args.device)


def run(name: str, requests: int, threads: int, dtype: str = "fp32", device: str = "cpu") -> None:
    """Both servers on one model in ``dtype`` on ``device``; prints and records the ratio."""
    rng = np.random.default_rng(0)
    images = [
        data_url(Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8))) for _ in range(16)
    ]
    bodies = [
        {"samples": [{"prompt": PROMPTS[i % len(PROMPTS)], "image": images[i % len(images)]}]}
        for i in range(requests)
    ]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = save_model(Path(tmp), name)
        for size in (16, 1):
            server, thread, url = start(model, size, dtype, device)
            results[size] = drive(url, bodies, threads)
            print(
                f"{dtype} max_batch_size={size}: {results[size][0]:.2f} s", flush=True
            )  # kept if a later phase dies
            server._shutdown_event.set()
            thread.join(timeout=30)
    (batched, s16), (single, s1) = results[16], results[1]
    # bf16 keeps ~3 significant digits, and a batch of 16 and a batch of 1 round differently
    atol = 1e-2 * (1 + np.abs(s1).max()) if dtype == "bf16" else 1e-4
    assert np.allclose(s16, s1, atol=atol), (
        f"batched and single-request scores differ by more than {atol:.2g}"
    )
    n = requests
    if device == "cuda":
        import torch

        where = f" on {torch.cuda.get_device_name(0)}"
    else:
        where = " (native bf16 CPU: weights cast)" if dtype == "bf16" and cpu_has_native_bf16() else ""
    print(f"model {name} in {dtype}{where}, {n} requests of one 224 px image from {threads} threads")
    print(f"one request per forward (max_batch_size=1): {single:.2f} s, {n / single:.1f} requests/s")
    print(f"dynamic batching (max_batch_size=16):       {batched:.2f} s, {n / batched:.1f} requests/s")
    print(f"ratio: {single / batched:.2f}x")
    record(
        # fp32 on the CPU keeps its old key
        f"dynamic_batching_{name}"
        + ("" if dtype == "fp32" else f"_{dtype}")
        + ("" if device == "cpu" else f"_{device}"),
        f"requests/s from {threads} client threads, {n} requests of one 224 px image, LitServe "
        f"dynamic batching (16) vs one request per forward, same model and run, {name}, {dtype}"
        + ("" if device == "cpu" else f", model on {device}{where}"),
        single / batched,
        ours=n / batched,
        baseline=n / single,
        unit="requests/s",
        details="results/server.md",
        extra={"dtype": dtype, "device": device}
        | ({"cpu_native_bf16": cpu_has_native_bf16()} if device == "cpu" else {}),
    )


if __name__ == "__main__":
    main()
