"""Decision latency of robot action selection: the scene encoded once vs a full forward per candidate.

Measures, in one process on the same data (a 4096-point scene, K = 64 pick-and-place candidates):

1. ``ActionSelector.select``: one collate (load, check, FPS) and one forward, the scene encoded
   once and the 64 candidates as queries against it;
2. the baseline: a full forward per candidate (collate + scene encoding + query for each), the
   shape of a scoring loop that treats (scene, action) pairs independently;
3. forward only (inputs prepared beforehand), both ways;
4. decisions per second over E environments: one ``select_batch`` vs E ``select`` calls.

Run: ``.venv/bin/python benchmarks/bench_robotics.py [--threads 1] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from headline import record

from integrations.robotics.cloth_env import ClothEnv
from integrations.robotics.samplers import RandomPrimitiveSampler
from integrations.robotics.selector import ActionSelector
from mmreward.types import Sample
from modalities.action_model import ActionPreferenceModel
from modalities.actions import FlingEncoder, PickPlaceEncoder
from modalities.backbones.pointnet import PointNetEncoder


def build_model(num_points: int) -> ActionPreferenceModel:
    """The real-data recipe's architecture (configs/robotics/deformpam_real.yaml), random weights."""
    torch.manual_seed(0)
    encoder = PointNetEncoder(dim=128, centroids=(256, 64), neighbours=(16, 16), widths=(64, 128))
    encoders = {"pick_place": PickPlaceEncoder(frequencies=2), "fling": FlingEncoder(frequencies=2)}
    return ActionPreferenceModel(encoder, encoders, num_points=num_points, num_heads=4, num_layers=2).eval()


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in milliseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def measure_one(
    model: ActionPreferenceModel,
    selector: ActionSelector,
    cloud: np.ndarray,
    actions: list[dict],
    repeats: int,
) -> tuple[float, float, float, float]:
    """End-to-end and forward-only latency (ms) of one decision: scene once vs per candidate."""
    samples = [Sample(point_cloud=cloud, action=a) for a in actions]

    def per_candidate() -> np.ndarray:
        with torch.inference_mode():
            return np.array([float(model(model.collate([s])).score) for s in samples])

    # the two paths must agree before their speed means anything
    np.testing.assert_allclose(per_candidate(), selector.select(cloud, actions)[1], rtol=1e-3, atol=1e-3)
    ours = timed(lambda: selector.select(cloud, actions), repeats)
    base = timed(per_candidate, max(1, repeats // 2))
    shared = model.collate(samples)
    singles = [model.collate([s]) for s in samples]
    with torch.inference_mode():
        ours_fwd = timed(lambda: model(shared), repeats)
        base_fwd = timed(lambda: [model(x) for x in singles], max(1, repeats // 2))
    return ours, base, ours_fwd, base_fwd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--scene-points", type=int, default=4096)
    parser.add_argument("--model-points", type=int, default=1024)
    parser.add_argument("--envs", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    env = ClothEnv()
    clouds = []
    for seed in range(args.envs):
        env.reset(seed)
        clouds.append(env.observe(args.scene_points, seed=seed))
    sampler = RandomPrimitiveSampler()
    cands = sampler.sample(clouds, args.candidates, seed=0)
    model = build_model(args.model_points)
    selector = ActionSelector(model, device="cpu")
    ours, base, ours_fwd, base_fwd = measure_one(model, selector, clouds[0], cands[0], args.repeats)
    batched = timed(lambda: selector.select_batch(clouds, cands), args.repeats)
    sequential = timed(lambda: [selector.select(c, a) for c, a in zip(clouds, cands)], args.repeats)

    print(
        f"device cpu, torch threads {args.threads}; scene {args.scene_points} points -> model {args.model_points}; K = {args.candidates}"
    )
    print(
        f"decision latency, end to end:  scene once {ours:8.1f} ms | per candidate {base:9.1f} ms | ratio {base / ours:6.1f}x"
    )
    print(
        f"forward only:                  scene once {ours_fwd:8.1f} ms | per candidate {base_fwd:9.1f} ms | ratio {base_fwd / ours_fwd:6.1f}x"
    )
    print(
        f"{args.envs} environments:               one batch {batched:9.1f} ms ({1e3 * args.envs / batched:5.1f} decisions/s) | "
        f"one call each {sequential:8.1f} ms ({1e3 * args.envs / sequential:5.1f} decisions/s) | ratio {sequential / batched:4.2f}x"
    )
    record(
        "decision_latency",
        f"decision latency end to end, K={args.candidates} candidates on a {args.scene_points}-point scene "
        f"({args.model_points} to the model), scene encoded once vs a full forward per candidate",
        base / ours,
        ours=ours,
        baseline=base,
        unit="ms",
        details="results/robotics.md",
        extra={
            "forward only": f"{base_fwd / ours_fwd:.1f}x",
            f"{args.envs} environments, one batch vs a call each": f"{sequential / batched:.2f}x",
        },
    )


if __name__ == "__main__":
    main()
