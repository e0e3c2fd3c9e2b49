"""Flattening episodes: coverage reached by reward-model selection, a random pick and an oracle.

Every strategy faces the same crumpled starts, and at each step the same sampler seed, so they
differ only in which candidate they execute: ``reward_model`` takes the selector's choice,
``random`` a uniformly random candidate, ``oracle`` simulates every candidate and takes the best
(the upper bound for this sampler). The reward-model episodes are batched: one selector call
decides every environment's step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from integrations.robotics.cloth_env import ClothEnv, ClothState
from integrations.robotics.samplers import CandidateSampler
from integrations.robotics.selector import ActionSelector
from mmreward.optional import require

Chooser = Callable[[list[ClothState], list[np.ndarray], list[list[dict[str, Any]]], int], list[int]]


@dataclass
class EpisodeStats:
    """Coverage curves of one strategy over E episodes.

    Attributes:
        coverage: (E, T + 1) coverage at the start and after each step.
        start_clouds: The first observation of each episode.
        final_clouds: The observation after the last step of each episode.
    """

    coverage: np.ndarray
    start_clouds: list[np.ndarray]
    final_clouds: list[np.ndarray]

    def summary(self) -> dict[str, float]:
        """Mean, standard deviation and standard error of the final coverage."""
        final = self.coverage[:, -1]
        return {
            "final_coverage": float(final.mean()),
            "final_coverage_std": float(final.std(ddof=1)) if len(final) > 1 else 0.0,
            "final_coverage_sem": float(final.std(ddof=1) / np.sqrt(len(final))) if len(final) > 1 else 0.0,
            "start_coverage": float(self.coverage[:, 0].mean()),
        }


def run_episodes(
    env: ClothEnv,
    sampler: CandidateSampler,
    choose: Chooser,
    seeds: list[int],
    steps: int,
    candidates: int,
    num_points: int = 512,
) -> EpisodeStats:
    """Run one flattening episode per seed, all in lockstep, choosing with ``choose``.

    ``choose(states, clouds, candidate_lists, step)`` returns one candidate index per episode.
    """
    states = [env.reset(seed) for seed in seeds]
    coverage = np.zeros((len(seeds), steps + 1))
    clouds = []
    for e, state in enumerate(states):
        env.set_state(state)
        coverage[e, 0] = env.coverage()
        clouds.append(env.observe(num_points, seed=seeds[e] * 31))
    start_clouds = list(clouds)
    for t in range(steps):
        proposals = [sampler.sample([c], candidates, seed=seeds[e] * 31 + t)[0] for e, c in enumerate(clouds)]
        chosen = choose(states, clouds, proposals, t)
        for e, state in enumerate(states):
            env.set_state(state)
            coverage[e, t + 1] = env.step(proposals[e][chosen[e]])
            states[e] = env.state()
            clouds[e] = env.observe(num_points, seed=seeds[e] * 31 + t + 1)
    return EpisodeStats(coverage=coverage, start_clouds=start_clouds, final_clouds=list(clouds))


def reward_model_chooser(selector: ActionSelector) -> Chooser:
    """Choose with the selector: every environment's candidates scored in one call."""

    def choose(states, clouds, proposals, step):
        return [d.index for d in selector.select_batch(clouds, proposals)]

    return choose


def random_chooser(seed: int = 0) -> Chooser:
    """Choose a uniformly random candidate."""
    rng = np.random.default_rng(seed)

    def choose(states, clouds, proposals, step):
        return [int(rng.integers(len(p))) for p in proposals]

    return choose


def oracle_chooser(env: ClothEnv) -> Chooser:
    """Choose by simulating every candidate and keeping the one with the highest coverage."""

    def choose(states, clouds, proposals, step):
        return [int(np.argmax(env.simulate(state, p))) for state, p in zip(states, proposals)]

    return choose


def compare(results: dict[str, EpisodeStats]) -> dict[str, Any]:
    """Per-strategy summaries, plus the reward model's margin over random and share of the oracle gap."""
    out: dict[str, Any] = {name: stats.summary() for name, stats in results.items()}
    if {"reward_model", "random", "oracle"} <= set(results):
        rm, rnd, orc = (results[k].coverage[:, -1] for k in ("reward_model", "random", "oracle"))
        diff = rm - rnd  # paired: the same starts
        out["margin_over_random"] = float(diff.mean())
        out["margin_over_random_sem"] = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
        gap = float(orc.mean() - rnd.mean())
        out["oracle_gap_closed"] = float(diff.mean() / gap) if gap > 0 else float("nan")
    return out


def plot_coverage(results: dict[str, EpisodeStats], path: str | Path) -> Path:
    """A PNG of mean coverage against step for each strategy, with a +-1 std band."""
    matplotlib = require("matplotlib", "plot")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot", "plot")
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    for name, stats in results.items():
        mean, std = stats.coverage.mean(0), stats.coverage.std(0)
        steps = np.arange(len(mean))
        ax.plot(steps, mean, marker="o", label=name)
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel("coverage (fraction of flat area)")
    ax.set_xticks(np.arange(results[next(iter(results))].coverage.shape[1]))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_cloud(points: np.ndarray, path: str | Path, workspace: float = 0.3, title: str = "") -> Path:
    """A top-down scatter PNG of a cloud (colour = height) over the workspace."""
    plt = require("matplotlib.pyplot", "plot")
    fig, ax = plt.subplots(figsize=(2.4, 2.4), dpi=80)
    ax.scatter(points[:, 0], points[:, 1], c=points[:, 2], s=2, cmap="viridis")
    ax.set_xlim(-workspace, workspace)
    ax.set_ylim(-workspace, workspace)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
