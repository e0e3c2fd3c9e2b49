"""How stable are the cloth world's labels? The ceiling of held-out pair accuracy, measured.

Every held-out candidate of ``tests.robotics_helpers.cloth_world(seed)`` is simulated again from the
same state with its pick and place jittered by sigma (metres), ``repeats`` times. A held-out pair
(coverages at least 0.05 apart) "holds" in a repeat when its chosen action still covers more. A
model that resolves the scene and the action no finer than sigma can rank at most
E[max(q, 1 - q)] of the pairs, q being the share of repeats in which the pair holds.

    python benchmarks/cloth_label_stability.py --seed 0 --sigmas 0.002 0.005 0.01 --repeats 3
"""

from __future__ import annotations

import argparse
from itertools import combinations

import numpy as np

from integrations.robotics.cloth_data import ClothPreferenceWorld


def stability(seed: int, sigmas: list[float], repeats: int, episodes: int = 20) -> dict[float, np.ndarray]:
    """{sigma: (pairs, 2) array of (coverage gap, share of repeats in which the pair holds)}."""
    world = ClothPreferenceWorld(
        episodes={"test": episodes}, steps=3, candidates=12, num_points=256, seed=seed
    )
    env, rng = world.env, np.random.default_rng(123)
    out: dict[float, list] = {s: [] for s in sigmas}
    for episode in range(episodes):
        seed_e = world.episode_seed("test", episode)
        state = env.reset(seed_e)
        for t in range(world.steps):
            cloud = env.observe(world.num_points, seed=seed_e * 31 + t)
            actions = world.sampler.sample([cloud], world.candidates, seed=seed_e * 31 + t)[0]
            coverage = env.simulate(state, actions)
            for sigma in sigmas:
                jittered = [
                    env.simulate(
                        state,
                        [
                            {
                                **a,
                                "pick": list(
                                    np.clip(np.add(a["pick"], rng.normal(0, sigma, 2)), -0.29, 0.29)
                                ),
                                "place": list(
                                    np.clip(np.add(a["place"], rng.normal(0, sigma, 2)), -0.29, 0.29)
                                ),
                            }
                            for a in actions
                        ],
                    )
                    for _ in range(repeats)
                ]
                reps = np.array(jittered)  # (repeats, K)
                for i, j in combinations(range(len(actions)), 2):
                    if abs(coverage[i] - coverage[j]) >= world.min_gap:
                        w, lose = (i, j) if coverage[i] > coverage[j] else (j, i)
                        out[sigma].append(
                            (coverage[w] - coverage[lose], float(np.mean(reps[:, w] > reps[:, lose])))
                        )
            env.step(actions[int(np.argmax(coverage))])
            state = env.state()
    return {s: np.array(v) for s, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sigmas", nargs="*", type=float, default=[0.002, 0.005, 0.01])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for sigma, rows in stability(args.seed, args.sigmas, args.repeats).items():
        gap, q = rows.T
        print(
            f"sigma {sigma * 1000:.0f} mm: {len(q)} pairs, order holds {q.mean():.3f}, "
            f"ceiling E[max(q, 1 - q)] {np.maximum(q, 1 - q).mean():.3f}"
        )
        for lo, hi in [(0.05, 0.1), (0.1, 0.2), (0.2, 9.0)]:
            m = (gap >= lo) & (gap < hi)
            print(f"  gap {lo}-{hi}: {m.sum()} pairs, order holds {q[m].mean():.3f}")


if __name__ == "__main__":
    main()
