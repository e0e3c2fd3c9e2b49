"""The action preference model learns from simulated preferences and picks better cloth actions.

The training run, the simulated data and the held-out episodes are shared through
``tests.robotics_helpers`` (computed once per session).
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import mmreward as mr
from integrations.robotics.evaluation import compare, plot_coverage
from integrations.robotics.samplers import RandomPrimitiveSampler
from integrations.robotics.selector import ActionSelector
from mmreward.data.records import read_records
from mmreward.types import Sample
from modalities.actions import ActionEncoder
from tests.robotics_helpers import (
    EVAL_CANDIDATES,
    EVAL_SEEDS,
    EVAL_STEPS,
    cloth_world,
    episode_results,
    held_out_pair_accuracy,
    one_thread,
    tiny_action_model,
    trained_model,
)


def _scene_and_candidates(k: int = 16, seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    record = read_records(cloth_world()["test"])[0]
    cloud = np.load(record.chosen.point_cloud)
    return cloud, RandomPrimitiveSampler().sample([cloud], k, seed=seed)[0]


def test_trained_model_meets_issue_6s_pair_accuracy():
    """Issue 6: >= 0.8 held-out pair accuracy: 0.840 +- 0.010 over five seeds on 40 held-out episodes
    (min 0.828, mean - 3 sd 0.811; docs/learning-figures.md)."""
    accuracy, pairs = held_out_pair_accuracy(trained_model())
    assert accuracy >= 0.8, f"held-out pair accuracy {accuracy:.3f} on {pairs} pairs"


def test_trained_model_ranks_held_out_pairs_far_above_its_untrained_start():
    """The accuracy is learned: the same architecture before training is near chance (0.50 +- 0.02)."""
    accuracy, pairs = held_out_pair_accuracy(trained_model())
    untrained, _ = held_out_pair_accuracy(tiny_action_model(seed=1))
    assert pairs > 1000
    assert untrained < 0.7
    assert accuracy >= untrained + 0.15, f"held-out pair accuracy {accuracy:.3f} vs untrained {untrained:.3f}"


def test_reward_model_selection_beats_random_and_closes_the_oracle_gap(tmp_path: Path):
    results, selector = episode_results()
    summary = compare(results)
    rm, rnd, orc = (summary[k]["final_coverage"] for k in ("reward_model", "random", "oracle"))
    # controls: random selection here, the untrained model in the pair-accuracy test above; paired over
    # the same 64 crumpled starts, both bars hold at mean - 3 sd over five seeds (docs/learning-figures.md):
    # the margin 0.137 +- 0.012, the share of the gap 0.604 +- 0.053 against issue 6's 0.4
    assert summary["margin_over_random"] > 0.04, summary
    assert rm > rnd and orc >= rm - 0.02
    assert summary["oracle_gap_closed"] > 0.4, summary
    png = plot_coverage(results, tmp_path / "coverage.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = selector.latency()
    decisions = EVAL_STEPS * len(EVAL_SEEDS)
    assert (
        report.decisions == decisions
        and report.candidates == decisions * EVAL_CANDIDATES
        and report.total_ms > 0
    )


def test_scores_ignore_point_order_and_candidate_order():
    model = trained_model()
    cloud, candidates = _scene_and_candidates()
    selector = ActionSelector(model, device="cpu")
    with one_thread():
        _, scores = selector.select(cloud, candidates)
        perm_points = np.random.default_rng(0).permutation(len(cloud))
        _, scores_points = selector.select(cloud[perm_points], candidates)
        perm = np.random.default_rng(1).permutation(len(candidates))
        _, scores_cands = selector.select(cloud, [candidates[i] for i in perm])
    np.testing.assert_allclose(scores_points, scores, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scores_cands, scores[perm], rtol=1e-4, atol=1e-4)
    assert np.ptp(scores) > 0.1  # the model tells the candidates apart


def test_scene_is_encoded_once_and_batching_matches_one_at_a_time():
    model = trained_model()
    cloud, candidates = _scene_and_candidates(8)
    samples = [Sample(point_cloud=cloud, action=a) for a in candidates]
    inputs = model.collate(samples)
    assert inputs["points"].shape[0] == 1 and inputs["scene_index"].tolist() == [0] * 8
    with torch.no_grad():
        together = model(inputs).score
        alone = torch.cat([model(model.collate([s])).score for s in samples])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


def test_selector_batches_environments_and_returns_only_scored_actions():
    model = trained_model()
    clouds, lists = [], []
    for seed in range(3):
        cloud, cands = _scene_and_candidates(5 + seed, seed=seed)
        clouds.append(cloud + 0.01 * seed)
        lists.append(cands)
    selector = ActionSelector(model, device="cpu")
    decisions = selector.select_batch(clouds, lists)
    for decision, cands, cloud in zip(decisions, lists, clouds):
        assert len(decision.scores) == len(cands)
        assert decision.action is cands[decision.index]
        assert decision.index == int(np.argmax(decision.scores))
        alone_index, alone_scores = selector.select(cloud, cands)
        assert alone_index == decision.index
        np.testing.assert_allclose(alone_scores, decision.scores, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("cloud", "action", "message"),
    [
        (np.full((64, 3), np.nan, dtype=np.float32), None, r"env 1.*candidates\[0\]\.point_cloud.*NaN"),
        (np.zeros((0, 3), dtype=np.float32), None, r"env 1.*empty"),
        (
            None,
            {"primitive": "pick_place", "pick": [0, 0], "place": [0.9, 0]},
            r"env 1.*candidates\[1\]\.action.*outside the workspace",
        ),
        (
            None,
            {"primitive": "push", "pick": [0, 0]},
            r"env 1.*candidates\[1\]\.action.*'push' has no encoder",
        ),
    ],
)
def test_selector_bad_inputs_name_the_environment_and_candidate(cloud, action, message):
    good_cloud, cands = _scene_and_candidates(3)
    clouds = [good_cloud, good_cloud.copy() if cloud is None else cloud]
    second = list(cands)
    if action is not None:
        second[1] = action
    with pytest.raises(ValueError, match=message):
        ActionSelector(trained_model(), device="cpu").select_batch(clouds, [cands, second])
    with pytest.raises(ValueError, match="Environment 0 has no candidate"):
        ActionSelector(trained_model(), device="cpu").select(good_cloud, [])


def test_non_finite_scores_are_refused_not_chosen():
    model = tiny_action_model(seed=2)
    with torch.no_grad():
        model.score_head[-1].bias.fill_(float("nan"))
    cloud, cands = _scene_and_candidates(4)
    with pytest.raises(ValueError, match="non-finite scores.*no action is chosen"):
        ActionSelector(model, device="cpu").select(cloud, cands)


def test_save_pretrained_and_load_reproduce_scores(tmp_path: Path):
    model = trained_model()
    cloud, candidates = _scene_and_candidates(12)
    scorer = mr.Scorer(model, device="cpu")
    before = ActionSelector(scorer).select(cloud, candidates)[1]
    scorer.save_pretrained(tmp_path / "model")
    loaded = mr.load(tmp_path / "model", device="cpu")
    after = ActionSelector(loaded).select(cloud, candidates)[1]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    samples = [Sample(prompt="flatten the cloth", point_cloud=cloud, action=a) for a in candidates]
    np.testing.assert_allclose(loaded.score(samples=samples), before, rtol=1e-5, atol=1e-5)
    assert type(loaded.model).__name__ == "ActionPreferenceModel"


def test_ranking_records_train_with_plackett_luce():
    """Rankings of K candidates go through RewardModule's Plackett-Luce term and lower it."""
    from integrations.robotics.cloth_data import ClothPreferenceWorld
    from mmreward.data.collate import Collator
    from mmreward.training import RewardModule

    root = Path(cloth_world()["train"]).parent / "rankings"
    world = ClothPreferenceWorld(episodes={"train": 2}, steps=2, candidates=6, num_points=128)
    rankings = read_records(world.write(root)["train"])
    model = tiny_action_model(seed=3)
    module = RewardModule(model)
    batch = Collator(model.collate)(rankings)
    assert batch.inputs["points"].shape[0] == len(rankings)  # one scene per ranking, not per candidate
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with one_thread():
        first = module._step(batch)[0]["plackett_luce"].item()
        for _ in range(30):
            loss = module._step(batch)[0]["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        last = module._step(batch)[0]["plackett_luce"].item()
    assert last < 0.5 * first


def _policy(seed: int = 0):
    from integrations.robotics.diffusion_policy import DiffusionPolicy
    from modalities.backbones.pointnet import PointNetEncoder

    torch.manual_seed(seed)
    encoder = PointNetEncoder(dim=32, centroids=(32, 8), neighbours=(8, 8), widths=(32, 64))
    return DiffusionPolicy(encoder, num_points=128, hidden=128)


def _policy_pairs(seed: int = 0) -> list:
    """The training pairs of the world's first 20 episodes: the diffusion policy and DPO train on
    these (their figures were measured on them; the reward model trains on all 60 episodes)."""
    return [p for p in read_records(cloth_world(seed)["train"]) if int(p.id.split("-")[1]) < 20]


def _policy_held_out(seed: int = 0) -> list:
    """The held-out pairs of the world's first 20 test episodes, the ones DPO's figures were measured on
    (the reward model is measured on all 40)."""
    return [p for p in read_records(cloth_world(seed)["test"]) if int(p.id.split("-")[1]) < 20]


@functools.lru_cache(maxsize=1)
def _trained_policy():
    """The policy fitted on the best action of every training step (the winner of its pairs)."""
    wins: dict[str, dict[str, int]] = {}
    actions: dict[tuple[str, str], dict] = {}
    for pair in _policy_pairs():
        key = json.dumps(pair.chosen.action, sort_keys=True)
        wins.setdefault(pair.chosen.point_cloud, {}).setdefault(key, 0)
        wins[pair.chosen.point_cloud][key] += 1
        actions[pair.chosen.point_cloud, key] = pair.chosen.action
    clouds = sorted(wins)
    best = [actions[c, max(wins[c], key=wins[c].get)] for c in clouds]
    policy = _policy()
    with one_thread():
        losses = policy.fit(clouds, best, steps=400)
    return policy, losses


def _test_clouds() -> list[np.ndarray]:
    return [
        np.load(c) for c in sorted({p.chosen.point_cloud for p in read_records(cloth_world()["test"])})[:4]
    ]


def test_diffusion_policy_learns_to_grasp_the_cloth():
    test_clouds = _test_clouds()

    def on_cloth(policy) -> float:
        near = []
        for cloud, cands in zip(test_clouds, policy.sample(test_clouds, 16, seed=0)):
            near += [np.linalg.norm(cloud[:, :2] - np.array(a["pick"]), axis=1).min() < 0.02 for a in cands]
        return float(np.mean(near))

    trained, losses = _trained_policy()
    with one_thread():
        before, after = on_cloth(_policy()), on_cloth(trained)
    assert np.mean(losses[-25:]) < 0.5 * np.mean(losses[:25])
    assert after >= 0.8 and after > before + 0.5, (before, after)
    for cands in trained.sample(test_clouds[:1], 8, seed=1):
        assert all(max(abs(v) for v in a["pick"] + a["place"]) <= 0.3 for a in cands)


@functools.lru_cache(maxsize=1)
def _behaviour_policy(seed: int):
    """DPO's reference: the policy fitted on both actions of every training pair, the candidates
    the preferences compare (a policy fitted on the best actions only leaves them far outside its
    distribution, and the implicit reward near chance: 0.53 on seed 0)."""
    pairs = _policy_pairs(seed)
    policy = _policy(seed)
    with one_thread():
        policy.fit(
            [p.chosen.point_cloud for p in pairs] + [p.rejected.point_cloud for p in pairs],
            [p.chosen.action for p in pairs] + [p.rejected.action for p in pairs],
            steps=400,
            seed=seed,
        )
    return policy


def _pair_accuracy(selector, pairs) -> float:
    """Share of ``pairs`` whose chosen action ``selector`` scores higher; each scene's actions are
    scored in one call (a candidate's implicit reward does not depend on the others)."""
    scenes: dict[str, dict[str, dict]] = {}
    for p in pairs:
        for side in (p.chosen, p.rejected):
            scenes.setdefault(p.chosen.point_cloud, {})[json.dumps(side.action, sort_keys=True)] = side.action
    scores = {}
    for cloud, actions in scenes.items():
        _, values = selector.select(cloud, list(actions.values()))
        scores |= {(cloud, key): v for key, v in zip(actions, values)}

    def score(p, side):
        return scores[p.chosen.point_cloud, json.dumps(side.action, sort_keys=True)]

    return float(np.mean([score(p, p.chosen) > score(p, p.rejected) for p in pairs]))


@functools.lru_cache(maxsize=1)
def _implicit_reward_run(seed: int) -> tuple[list[np.ndarray], list[float], float, int]:
    """DPO fine-tuning on the training pairs: the untuned scores of five held-out pairs, the DPO
    losses, and the implicit reward's accuracy on the held-out pairs of ``_policy_held_out`` (and
    their count)."""
    from integrations.robotics.diffusion_policy import ImplicitRewardSelector, dpo_finetune

    reference = _behaviour_policy(seed)
    policy = copy.deepcopy(reference)
    pairs = _policy_pairs(seed)
    held_out = _policy_held_out(seed)
    selector = ImplicitRewardSelector(policy, reference)
    with one_thread():
        untuned = [
            selector.select(p.chosen.point_cloud, [p.chosen.action, p.rejected.action])[1]
            for p in held_out[:5]
        ]
        losses = dpo_finetune(
            policy,
            reference,
            [p.chosen.point_cloud for p in pairs],
            [p.chosen.action for p in pairs],
            [p.rejected.action for p in pairs],
            seed=seed,
        )
        accuracy = _pair_accuracy(selector, held_out)
    return untuned, losses, accuracy, len(held_out)


def test_dpo_implicit_reward_is_learned_and_above_chance(learning_seed, record_property):
    """DeformPAM's second scorer: the DPO log-ratio of a fine-tuned and a reference policy.

    What holds on every seed: the untuned policies agree, the DPO loss falls, and the held-out
    accuracy is above chance (0.683 +- 0.055 over five seeds, mean - 3 sd 0.516; see
    docs/learning-figures.md)."""
    untuned, losses, accuracy, pairs = _implicit_reward_run(learning_seed)
    record_property("cloth.implicit_reward_accuracy", accuracy)
    assert np.allclose(untuned, 0.0)  # before fine-tuning the two policies agree: no preference
    assert np.mean(losses[-50:]) < np.mean(losses[:50])
    assert accuracy > 0.5, f"implicit-reward accuracy {accuracy:.3f} on {pairs} held-out pairs"


@pytest.mark.xfail(
    reason=(
        "not met over seeds (issue 18): the implicit reward's held-out accuracy is 0.683 +- 0.055 over "
        "five seeds (min 0.618), so chance + 2 SE (about 0.52) sits above mean - 3 sd (0.516); "
        "see docs/learning-figures.md"
    ),
    strict=False,
)
def test_dpo_implicit_reward_prefers_the_better_action(learning_seed):
    """Above chance by two standard errors of the held-out pair count."""
    _, _, accuracy, pairs = _implicit_reward_run(learning_seed)
    two_se = 2 * np.sqrt(0.25 / pairs)
    assert accuracy > 0.5 + two_se, f"implicit-reward accuracy {accuracy:.3f} on {pairs} held-out pairs"


class PushEncoder(ActionEncoder):
    """A user-defined primitive for the extension test: push from ``start`` to ``end`` at ``height``."""

    primitive = "push"
    keys = ("start", "end")
    num_extra = 1

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return ("start", "end", "height")

    @classmethod
    def parse_extra(cls, action: dict, where: str) -> np.ndarray:
        return np.array([float(action["height"])])


def test_new_primitives_plug_in_by_class_path(tmp_path: Path):
    from modalities.action_model import ActionPreferenceModel
    from modalities.actions import PickPlaceEncoder
    from modalities.backbones.pointnet import PointNetEncoder

    torch.manual_seed(0)
    encoder = PointNetEncoder(dim=32, centroids=(16, 4), neighbours=(8, 4), widths=(32, 32))
    model = ActionPreferenceModel(
        encoder, {"pick_place": PickPlaceEncoder(), "push": PushEncoder()}, num_points=64
    )
    cloud, cands = _scene_and_candidates(3)
    pushes = [{"primitive": "push", "start": [0.0, 0.0], "end": [0.1, 0.0], "height": h} for h in (0.0, 0.05)]
    scores = ActionSelector(model, device="cpu").select(cloud, cands + pushes)[1]
    assert scores[3] != scores[4]  # the extra (height) reaches the score
    mr.Scorer(model, device="cpu").save_pretrained(tmp_path / "m")
    config = (tmp_path / "m" / "config.json").read_text()
    assert '.PushEncoder"' in config  # saved by its import path, rebuilt from it
    # the encoder is this test module's class: a folder naming it loads only when trusted
    trusted = mr.load(tmp_path / "m", device="cpu", trust_config=True)
    reloaded = ActionSelector(trusted).select(cloud, cands + pushes)[1]
    np.testing.assert_allclose(reloaded, scores, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="needs field 'height'"):
        ActionSelector(model, device="cpu").select(
            cloud, [{"primitive": "push", "start": [0, 0], "end": [0.1, 0]}]
        )
