"""The synthetic video and edit worlds: real files, faults that show, ratings and labels that agree."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmreward.data.records import read_records
from mmreward.data.synthetic.edit import CANDIDATE_SCORES, EditWorld, apply_edit, sample_edit, source_scene
from mmreward.data.synthetic.scenes import Scene, SceneObject, render
from mmreward.data.synthetic.video import ASPECTS, Motion, VideoWorld, degrade_clip, make_clip, trajectory
from mmreward.types import Preference, Rating, Sample
from modalities.video import FrameSampler, decode_frames, video_info


def _centre(frame: np.ndarray, background: np.ndarray) -> tuple[float, float] | None:
    mask = np.abs(frame.astype(int) - background.astype(int)).sum(-1) > 60
    if mask.sum() < 3:
        return None
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


def test_clean_clip_moves_the_named_way_and_faults_bend_physics():
    rng = np.random.default_rng(0)
    clean = trajectory("right", 8, rng)
    xs = [p[0] for p in clean]
    assert xs == sorted(xs) and xs[-1] - xs[0] > 0.5
    up = trajectory("up", 8, np.random.default_rng(0))
    assert up[0][1] > up[-1][1]  # starts low, ends high
    for severity, backwards in ((0.5, 3), (1.0, 5)):  # the clean path's positions, out of order
        teleport = trajectory("right", 8, np.random.default_rng(0), ("teleport", severity))
        assert sorted(teleport) == sorted(clean) and teleport != clean
        assert teleport[0] == clean[0] and teleport[-1] == clean[-1]
        steps = np.diff([p[0] for p in teleport]) / (xs[1] - xs[0])
        assert steps.min() == pytest.approx(-backwards)  # it jumps back to the part it skipped
    vanish = trajectory("right", 8, np.random.default_rng(0), ("vanish", 1.0))
    assert vanish[:4] == clean[:4] and all(p is None for p in vanish[4:])
    speed = trajectory("right", 8, np.random.default_rng(0), ("speed", 1.0))
    assert speed[3][0] - speed[0][0] < 0.25 * (speed[7][0] - speed[0][0])  # slow first half, then a rush


def test_alignment_fault_shows_another_colour_and_quality_faults_degrade():
    motion = Motion("circle", "red", "right")
    rng = np.random.default_rng(1)
    clean = make_clip(motion, {}, rng, 32, 8)
    wrong = make_clip(motion, {"alignment": ("color", 0.5)}, np.random.default_rng(1), 32, 8)
    red = np.array([215, 35, 35])
    assert np.abs(clean.frames[0].reshape(-1, 3) - red).sum(-1).min() < 30  # some pixel is red
    assert np.abs(wrong.frames[0].reshape(-1, 3) - red).sum(-1).min() > 60  # no pixel is red
    assert wrong.scores == {"quality": 1.0, "alignment": 0.5, "physics": 1.0}
    flicker = degrade_clip(clean.frames, "flicker", 1.0, rng)
    brightness = flicker.reshape(8, -1).mean(1)
    assert np.all(np.abs(np.diff(brightness)) > 40)  # brightness jumps frame to frame
    blurred = degrade_clip(clean.frames, "blur", 1.0, rng)
    assert (
        np.abs(np.diff(blurred.astype(float), axis=2)).mean()
        < np.abs(np.diff(clean.frames.astype(float), axis=2)).mean()
    )


@pytest.fixture(scope="module")
def video_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("video-world")
    world = VideoWorld(
        train_prompts=4, val_prompts=1, test_prompts=2, clips_per_prompt=4, frames=8, size=32, seed=5
    )
    return world, root, world.write(root)


def test_video_world_writes_h264_clips_that_show_the_motion(video_world):
    world, root, paths = video_world
    ratings = read_records(root / "train_ratings.jsonl")
    assert len(ratings) == 16 and all(isinstance(r, Rating) for r in ratings)
    clean = next(r for r in ratings if r.subset == "clean")
    info = video_info(clean.sample.video)
    assert (info.num_frames, info.fps, info.height, info.width) == (8, 8.0, 32, 32)
    frames = decode_frames(clean.sample.video, FrameSampler(num_frames=8))
    background = frames[0, 0, 0]
    centres = [_centre(f, background) for f in frames]
    words = clean.sample.prompt.split()
    axis, sign = {"right": (0, 1), "left": (0, -1), "down": (1, 1), "up": (1, -1)}[words[-1]]
    assert sign * (centres[-1][axis] - centres[0][axis]) > 10  # moved > 10 px the way the prompt says
    assert clean.scores == {a: 1.0 for a in ASPECTS} and clean.score == 1.0


def test_video_world_pairs_agree_with_ratings(video_world):
    world, root, paths = video_world
    ratings = {r.sample.video: r for r in read_records(root / "train_ratings.jsonl")}
    pairs = read_records(paths["train"])
    assert len(pairs) == 4 * 6 and all(isinstance(p, Preference) for p in pairs)
    for pair in pairs:
        good, bad = ratings[pair.chosen.video], ratings[pair.rejected.video]
        assert good.score >= bad.score and pair.label == (0.5 if good.score == bad.score else 1.0)
        for aspect in ASPECTS:
            expected = (
                1.0
                if good.scores[aspect] > bad.scores[aspect]
                else 0.0
                if good.scores[aspect] < bad.scores[aspect]
                else 0.5
            )
            assert pair.aspects[aspect] == expected


def test_video_world_is_reproducible_and_reused(video_world, tmp_path):
    world, root, paths = video_world
    stamp = paths["train"].stat().st_mtime_ns
    assert world.write(root)["train"].stat().st_mtime_ns == stamp  # the marker matches: nothing rewritten
    again = VideoWorld(
        train_prompts=4, val_prompts=1, test_prompts=2, clips_per_prompt=4, frames=8, size=32, seed=5
    )
    again.write(tmp_path)
    assert (tmp_path / "train.jsonl").read_text() == paths["train"].read_text()
    ratings = VideoWorld(4, 1, 2, seed=5, records="ratings").write(root)
    assert ratings["test"].name == "test_ratings.jsonl"


def test_video_world_rejects_odd_sizes():
    with pytest.raises(ValueError, match="even"):
        VideoWorld(1, 1, 1, size=33)


def test_edit_candidates_each_make_one_visible_change():
    world = EditWorld(train_sources=6, val_sources=0, test_sources=0, size=32, seed=2)
    for i in range(6):
        scene, edit, candidates = world.source("train", i)
        source = np.asarray(render(scene, 32)).astype(int)
        changed = {k: np.abs(np.asarray(v).astype(int) - source).sum() for k, v in candidates.items()}
        assert changed["no_op"] == 0
        assert all(changed[k] > 0 for k in candidates if k != "no_op"), changed
        images = [np.asarray(v).tobytes() for v in candidates.values()]
        assert len(set(images)) == len(images)  # five different candidates


def test_edit_world_gives_no_instruction_blind_cue():
    """Issue 13: pixel baselines that never read the instruction rank held-out candidates at chance."""
    from integrations.demos.edit import _figures, off_palette_share, pixel_distance

    world = EditWorld(train_sources=1, val_sources=1, test_sources=120, size=32, seed=0)
    ratings = []
    for i in range(120):
        scene, edit, candidates = world.source("test", i)
        source = render(scene, 32)  # one object per source: the figures group candidates by it
        ratings += [
            Rating(Sample(prompt=edit.text(scene), source_image=source, image=image), CANDIDATE_SCORES[kind])
            for kind, image in candidates.items()
        ]
    for baseline in (pixel_distance, off_palette_share):
        scores = np.array([baseline(r.sample) for r in ratings])
        for sign in (1, -1):
            figures = _figures(ratings, sign * scores)
            assert figures["pair_accuracy"] <= 0.6 and abs(figures["spearman"]) <= 0.3, (
                baseline.__name__,
                figures,
            )


def test_recolour_instruction_changes_only_the_named_object():
    rng = np.random.default_rng(4)
    scene = source_scene(rng)
    edit = sample_edit(scene, rng, target=0, kind="recolor")
    after = apply_edit(scene, edit)
    assert after.objects[0].color == edit.color != scene.objects[0].color
    assert after.objects[1:] == scene.objects[1:]
    assert edit.text(scene) == f"make the {scene.objects[0].color} {scene.objects[0].shape} {edit.color}"


def test_add_instruction_fits_a_crowded_scene():
    crowded = [
        ("triangle", "red", 0.25, 0.67),
        ("square", "purple", 0.76, 0.65),
        ("square", "blue", 0.49, 0.26),
    ]
    scene = Scene(tuple(SceneObject(shape, color, "large", x, y) for shape, color, x, y in crowded))
    for seed in range(10):  # no room for another large shape: the added one is small and keeps clear
        new = sample_edit(scene, np.random.default_rng(seed), kind="add").new
        assert new.size == "small"
        assert all(
            (new.x - o.x) ** 2 + (new.y - o.y) ** 2 >= (new.radius + o.radius) ** 2 for o in scene.objects
        )


def test_edit_world_draws_many_sources():
    world = EditWorld(train_sources=1500, val_sources=0, test_sources=0, size=16, seed=0)
    for i in range(1500):  # crowded scenes once raised "No free place"
        scene, edit, _ = world.source("train", i)
        assert 2 <= len(scene.objects) <= 3 and edit.text(scene)


def test_edit_world_files_have_source_instruction_and_scores(tmp_path):
    paths = EditWorld(train_sources=3, val_sources=1, test_sources=1, size=32, seed=0).write(tmp_path)
    ratings = read_records(tmp_path / "train_ratings.jsonl")
    assert sorted({r.score for r in ratings}) == sorted(set(CANDIDATE_SCORES.values()))
    assert all(r.sample.source_image and r.sample.image and r.sample.prompt for r in ratings)
    pairs = read_records(paths["train"])
    assert len(pairs) == 3 * 10 and all(p.chosen_score > p.rejected_score for p in pairs)
    raw = json.loads(paths["train"].read_text().splitlines()[0])
    assert raw["chosen"]["source_image"] == raw["rejected"]["source_image"]
