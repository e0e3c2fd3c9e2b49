"""Preference data from the cloth simulator: rank candidate actions by the coverage they reach.

``ClothPreferenceWorld`` is a synthetic world for ``RewardDataModule(synthetic=...)``: it rolls
out flattening episodes from crumpled starts, and at every step observes the cloth, samples K
candidate actions, simulates each one from the same state, and ranks them by coverage after the
action (DeformPAM's preference labels, with the simulator in place of a human). The episode then
continues with the best candidate, so the data covers the states a good policy visits.

Files written under ``root``: ``scenes/<split>-<episode>-<step>.npy`` ((N, 3) float32 clouds),
``<split>.jsonl`` (canonical ranking or preference records, clouds as relative paths, actions
inline), and ``episodes.json`` (coverage of every candidate, for analysis).
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

import numpy as np

from integrations.robotics.cloth_env import ClothEnv
from integrations.robotics.samplers import RandomPrimitiveSampler
from mmreward.configurable import Configurable, to_config

PROMPT = "flatten the cloth"
SPLIT_OFFSETS = {"train": 0, "val": 10_000, "test": 20_000}


class ClothPreferenceWorld(Configurable):
    """Simulated ranked candidate sets for cloth flattening; see the module docstring.

    Args:
        env: The simulator (defaults to ``ClothEnv()``).
        sampler: The policy proposing candidates (defaults to ``RandomPrimitiveSampler()``).
        episodes: Episodes per split, e.g. ``{"train": 16, "val": 4}``.
        steps: Steps per episode.
        candidates: Candidates simulated per step (K).
        num_points: Points per observed cloud.
        min_gap: Pairs are written only where the two coverages differ by at least this much
            (a fraction of the flat cloth's area); closer pairs are near-ties that a noisy
            observation cannot settle.
        train_format: ``"ranking"`` writes one ranking of K candidates per step (Plackett-Luce);
            ``"pairs"`` writes every pair above ``min_gap`` (Bradley-Terry). Other splits get pairs.
        seed: Base seed; episode ``e`` of a split starts from seed ``seed * 100_003 + offset + e``.
    """

    def __init__(
        self,
        env: ClothEnv | None = None,
        sampler: RandomPrimitiveSampler | None = None,
        episodes: dict[str, int] | None = None,
        steps: int = 3,
        candidates: int = 12,
        num_points: int = 512,
        min_gap: float = 0.05,
        train_format: Literal["ranking", "pairs"] = "ranking",
        seed: int = 0,
    ) -> None:
        self.env = env if env is not None else ClothEnv()
        self.sampler = sampler if sampler is not None else RandomPrimitiveSampler(workspace=self.env.bounds)
        self.episodes = dict(episodes) if episodes is not None else {"train": 16, "val": 4, "test": 4}
        unknown = set(self.episodes) - set(SPLIT_OFFSETS)
        if unknown:
            raise ValueError(
                f"Unknown split names {sorted(unknown)} in episodes; use {sorted(SPLIT_OFFSETS)}."
            )
        self.steps, self.candidates, self.num_points = steps, candidates, num_points
        self.min_gap, self.train_format, self.seed = min_gap, train_format, seed

    def episode_seed(self, split: str, episode: int) -> int:
        """The simulator seed of an episode."""
        return self.seed * 100_003 + SPLIT_OFFSETS[split] + episode

    def write(self, root: str | Path) -> dict[str, Path]:
        """Simulate every split into ``root`` (skipped when ``root`` holds this world already)."""
        root = Path(root)
        manifest = root / "world.json"
        config = json.dumps(to_config(self), sort_keys=True)
        paths = {split: root / f"{split}.jsonl" for split in self.episodes}
        if manifest.is_file() and manifest.read_text() == config and all(p.is_file() for p in paths.values()):
            return paths
        (root / "scenes").mkdir(parents=True, exist_ok=True)
        log: dict[str, list[Any]] = {}
        for split, count in self.episodes.items():
            records, log[split] = [], []
            for episode in range(count):
                steps = self.rollout(split, episode, root)
                log[split].append([{"coverage": s["coverage"], "scene": s["scene"]} for s in steps])
                for step in steps:
                    records += self.records(split, step)
            with paths[split].open("w") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in records)
        (root / "episodes.json").write_text(json.dumps(log))
        manifest.write_text(config)
        return paths

    def rollout(self, split: str, episode: int, root: Path) -> list[dict[str, Any]]:
        """One oracle episode: at each step, every candidate simulated; the best one executed."""
        env = self.env
        seed = self.episode_seed(split, episode)
        state = env.reset(seed)
        out = []
        for t in range(self.steps):
            cloud = env.observe(self.num_points, seed=seed * 31 + t)
            scene = f"scenes/{split}-{episode:03d}-{t}.npy"
            np.save(root / scene, cloud)
            actions = self.sampler.sample([cloud], self.candidates, seed=seed * 31 + t)[0]
            coverage = env.simulate(state, actions)
            out.append(
                {
                    "scene": scene,
                    "actions": actions,
                    "coverage": coverage.tolist(),
                    "id": f"{split}-{episode}-{t}",
                }
            )
            env.step(actions[int(np.argmax(coverage))])
            state = env.state()
        return out

    def records(self, split: str, step: dict[str, Any]) -> list[dict[str, Any]]:
        """Canonical records of one step: a ranking, or the pairs whose coverages differ enough."""
        cands = [{"point_cloud": step["scene"], "action": a} for a in step["actions"]]
        coverage = np.asarray(step["coverage"])
        if split == "train" and self.train_format == "ranking":
            order = np.argsort(-coverage, kind="stable")
            return [
                {
                    "prompt": PROMPT,
                    "candidates": cands,
                    "ranking": order.tolist(),
                    "id": step["id"],
                    "subset": split,
                }
            ]
        pairs = []
        for i, j in combinations(range(len(cands)), 2):
            if abs(coverage[i] - coverage[j]) >= self.min_gap:
                win, lose = (i, j) if coverage[i] > coverage[j] else (j, i)
                pairs.append(
                    {
                        "prompt": PROMPT,
                        "chosen": cands[win],
                        "rejected": cands[lose],
                        "id": f"{step['id']}-{win}-{lose}",
                        "subset": split,
                    }
                )
        return pairs
