"""Video speed: batched decord sampling vs sequential PyAV decoding; fast CLIP route vs VLM route.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_video.py [--repeats 3] [--threads 2]

1. Decoding: the same sampled frames (8 uniform frames per clip) of the same files, read with
   ``modalities.video.decode_frames`` (decord, one ``get_batch`` per clip, seeking to the frames)
   and with the PyAV baseline (``backend="pyav"``: decode every frame in order, keep the sampled
   ones). Clips: VideoScore's ``video1.mp4`` (768x640, 24 frames) and a 256x256, 240-frame H.264
   clip written here. Prints frames/s and the ratio.
2. Scoring: clips/s of ``Scorer.forward`` on 32 synthetic 32x32 clips (8 frames) with the tiny
   fast route (``ClipVideoBackbone``, ResNet tower + temporal transformer, the quick-start size)
   and the tiny VLM route (``VLMBackbone`` on a 0.2 M-parameter Qwen2.5-VL, 56x56 frames). Both
   are random-init tiny models: the ratio shows per-clip overhead of each route, not 7B costs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from headline import record  # noqa: E402

from mmreward.data.synthetic.video import VideoWorld, write_mp4  # noqa: E402
from mmreward.heads import MultiAspectHead  # noqa: E402
from mmreward.models import RewardModel  # noqa: E402
from mmreward.scoring import Scorer  # noqa: E402
from modalities.video import FrameSampler, decode_frames  # noqa: E402

TINY_VIDEO_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1},
}


def best_of(fn, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def long_clip(path: Path) -> Path:
    """A 256x256, 240-frame H.264 clip of a moving gradient (keyframe every 250 frames, libx264 default)."""
    t = np.arange(240)[:, None, None, None]
    x = np.arange(256)[None, None, :, None]
    frames = ((x + 3 * t + np.array([0, 60, 120])) % 256).astype(np.uint8).repeat(256, axis=1)
    return write_mp4(frames, path, fps=24, crf=23)


def bench_decoding(clips: list[Path], repeats: int) -> None:
    sampler = FrameSampler(num_frames=8)
    for clip in clips:
        frames = sampler.num_frames
        fast = best_of(lambda c=clip: decode_frames(c, sampler), repeats)
        slow = best_of(lambda c=clip: decode_frames(c, sampler, backend="pyav"), repeats)
        print(
            f"decode {clip.name:>16}: decord batched {frames / fast:8.1f} frames/s | PyAV sequential {frames / slow:8.1f} frames/s | ratio {slow / fast:5.2f}x"
        )
        record(
            f"decode_{clip.stem}",
            f"frames/s, decord batched sampling vs sequential PyAV, {frames} uniform frames of {clip.name}",
            slow / fast,
            ours=frames / fast,
            baseline=frames / slow,
            unit="frames/s",
            details="results/video.md",
        )


def bench_scoring(root: Path, repeats: int) -> None:
    from modalities.backbones.clip_video import ClipVideoBackbone

    paths = VideoWorld(train_prompts=8, val_prompts=0, test_prompts=0, clips_per_prompt=4, seed=1).write(
        root / "world"
    )
    from mmreward.data.records import read_records

    samples = [r.sample for r in read_records(paths["train"].parent / "train_ratings.jsonl")]
    aspects = ["quality", "alignment", "physics"]
    torch.manual_seed(0)
    fast = Scorer(
        RewardModel(
            ClipVideoBackbone(model_config=TINY_VIDEO_CLIP), MultiAspectHead(aspects, hidden_size=128)
        ),
        batch_size=32,
        device="cpu",
    )
    fast_s = best_of(lambda: fast.forward(samples), repeats)
    print(f"score fast route (tiny CLIP, 8 frames):      {len(samples) / fast_s:8.1f} clips/s")
    try:
        sys.path.insert(0, str(ROOT / "tests"))
        from modalities.backbones.vlm import VLMBackbone
        from tests.vlm_helpers import build_tiny_qwen2_5_vl
    except ImportError as err:
        print(f"score VLM route: skipped ({err})")
        return
    tiny = build_tiny_qwen2_5_vl(root / "qwen", min_pixels=56 * 56, max_pixels=56 * 56)
    vlm = Scorer(
        RewardModel(VLMBackbone(str(tiny), frames=FrameSampler(num_frames=8)), MultiAspectHead(aspects)),
        batch_size=32,
        device="cpu",
    )
    vlm_s = best_of(lambda: vlm.forward(samples), repeats)
    print(
        f"score VLM route (tiny Qwen2.5-VL, 8 frames): {len(samples) / vlm_s:8.1f} clips/s | fast/VLM ratio {vlm_s / fast_s:5.2f}x"
    )
    record(
        "fast_vs_vlm_route",
        f"clips/s of `Scorer.forward` on {len(samples)} clips of 8 frames, fast route (tiny CLIP video "
        "backbone) vs VLM route (tiny Qwen2.5-VL), random weights",
        vlm_s / fast_s,
        ours=len(samples) / fast_s,
        baseline=len(samples) / vlm_s,
        unit="clips/s",
        details="results/video.md",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clips = [ROOT / "tests" / "fixtures" / "video" / "video1.mp4", long_clip(root / "long_256px.mp4")]
        bench_decoding(clips, args.repeats)
        bench_scoring(root, args.repeats)


if __name__ == "__main__":
    main()
