"""The MuJoCo cloth environment and the preference data it generates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from integrations.robotics.cloth_data import ClothPreferenceWorld
from integrations.robotics.cloth_env import ClothEnv
from mmreward.data.records import read_records
from mmreward.types import Preference, Ranking


@pytest.fixture(scope="module")
def env() -> ClothEnv:
    return ClothEnv()


def test_flat_cloth_covers_its_own_area_and_crumpling_reduces_it(env: ClothEnv):
    env.reset_flat()
    assert env.coverage() == pytest.approx(1.0)
    # the rasterised flat area matches the cloth's side length squared within a pixel border
    side = (env.grid - 1) * env.spacing
    assert env.flat_area == pytest.approx(side**2, rel=0.1)
    coverages = []
    for seed in range(3):
        env.reset(seed)
        coverages.append(env.coverage())
    assert max(coverages) < 0.95 and len(set(coverages)) == 3
    env.reset(1)
    assert env.coverage() == coverages[1]  # a seed gives the same start every time


def test_primitives_move_the_cloth_as_physics_says(env: ClothEnv):
    env.reset_flat()
    flat = env.state()
    corner_id = int(np.argmin(env.vertices[:, 0] + env.vertices[:, 1]))
    corner = env.vertices[corner_id][:2]
    centre = env.vertices[:, :2].mean(0)
    fold = {"primitive": "pick_place", "pick": corner.tolist(), "place": centre.tolist()}
    miss = {"primitive": "pick_place", "pick": [0.29, 0.29], "place": [0.2, 0.2]}  # empty table
    folded, missed = env.simulate(flat, [fold, miss])
    # folding a corner onto the centre covers about a quarter less table (a corner triangle folded)
    assert 0.6 < folded < 0.95
    assert missed == pytest.approx(1.0, abs=0.02)
    # simulate leaves the env where it was
    assert np.allclose(env.state().qpos, flat.qpos)
    # unfolding: pulling the folded corner back out restores most of the coverage
    env.step(fold)
    top = env.vertices[corner_id][:2]  # the folded corner now lies on top of the cloth
    unfold = {"primitive": "pick_place", "pick": top.tolist(), "place": corner.tolist()}
    assert env.step(unfold) > folded + 0.05


def test_observation_is_a_noisy_sample_of_the_cloth_surface(env: ClothEnv):
    env.reset(0)
    cloud = env.observe(512, seed=0)
    assert cloud.shape == (512, 3) and cloud.dtype == np.float32
    nearest = np.linalg.norm(cloud[:, None] - env.vertices[None], axis=-1).min(1)
    assert nearest.max() < env.spacing  # on the cloth, within a cell
    assert not np.array_equal(cloud, env.observe(512, seed=1))


def test_actions_outside_the_workspace_or_malformed_are_rejected(env: ClothEnv):
    with pytest.raises(ValueError, match=r"'place' = \[0\.500, 0\.000\] lies outside the workspace"):
        env.step({"primitive": "pick_place", "pick": [0, 0], "place": [0.5, 0.0]})
    with pytest.raises(ValueError, match="needs field 'place'"):
        env.step({"primitive": "pick_place", "pick": [0, 0]})
    with pytest.raises(ValueError, match="unknown primitive 'push'"):
        env.step({"primitive": "push", "pick": [0, 0]})
    with pytest.raises(ValueError, match="'direction' must be a non-zero vector"):
        env.step({"primitive": "fling", "grasps": [[0, 0], [0.1, 0]], "direction": [0, 0]})


def test_fling_stretches_the_grasps_across_its_direction_and_lays_them_back(env: ClothEnv):
    env.reset(3)
    cloud = env.observe(256, seed=0)
    d = np.linalg.norm(cloud[:, None, :2] - cloud[None, :, :2], axis=-1)
    a, b = np.unravel_index(np.argmax(d), d.shape)  # the two observed points farthest apart
    left, right = env.grasp_vertex(cloud[a, :2]), env.grasp_vertex(cloud[b, :2])
    middle = (env.vertices[left, :2] + env.vertices[right, :2]) / 2
    rest = np.linalg.norm(env.rest_positions[left, :2] - env.rest_positions[right, :2])
    direction = np.array([1.0, 0.0])
    env.step(
        {
            "primitive": "fling",
            "grasps": [cloud[a, :2].tolist(), cloud[b, :2].tolist()],
            "direction": [2.0, 0.0],
        }
    )
    gap = env.vertices[left, :2] - env.vertices[right, :2]
    # laid down across the swing, stretched (released at 95% of their rest distance, then the
    # cloth settles), behind where they started
    assert abs(gap @ direction) < 0.02 and 0.6 * rest < abs(gap[1]) <= rest
    laid_middle = (env.vertices[left, :2] + env.vertices[right, :2]) / 2
    assert (laid_middle - middle) @ direction < -0.03  # laid 0.1 m back, less what settling undoes
    assert env.vertices[[left, right], 2].max() < 0.02


def test_world_writes_canonical_rankings_ordered_by_coverage(tmp_path: Path):
    world = ClothPreferenceWorld(episodes={"train": 1, "val": 1}, steps=2, candidates=5, num_points=64)
    paths = world.write(tmp_path)
    rankings = read_records(paths["train"])
    pairs = read_records(paths["val"])
    assert len(rankings) == 2 and all(isinstance(r, Ranking) for r in rankings)
    assert pairs and all(isinstance(p, Preference) for p in pairs)
    log = json.loads((tmp_path / "episodes.json").read_text())
    for record, step in zip(rankings, log["train"][0]):
        coverage = np.asarray(step["coverage"])
        assert np.all(np.diff(coverage[record.order]) <= 0)  # best first
        assert np.load(record.candidates[0].point_cloud).shape == (64, 3)
    # the second step starts where the best first-step action left the cloth
    assert log["train"][0][1]["coverage"] != log["train"][0][0]["coverage"]
    # resume: an unchanged world is not simulated again
    stamp = paths["train"].stat().st_mtime_ns
    world.write(tmp_path)
    assert paths["train"].stat().st_mtime_ns == stamp


def test_world_pairs_respect_the_gap(tmp_path: Path):
    world = ClothPreferenceWorld(
        episodes={"train": 1}, steps=1, candidates=6, num_points=64, train_format="pairs"
    )
    pairs = [json.loads(line) for line in world.write(tmp_path)["train"].read_text().splitlines()]
    coverage = np.asarray(json.loads((tmp_path / "episodes.json").read_text())["train"][0][0]["coverage"])
    for pair in pairs:
        win, lose = (int(i) for i in pair["id"].split("-")[-2:])
        assert coverage[win] - coverage[lose] >= world.min_gap
