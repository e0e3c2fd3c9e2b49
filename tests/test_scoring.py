"""Scorer convenience paths, checkpoint loading and the errors users meet first."""

from pathlib import Path

import pytest

import mmreward as mr
from tests.core_helpers import colour_image, tiny_reward_model

FIXTURES = Path(__file__).parent / "fixtures"


def test_one_prompt_is_shared_by_many_images_and_rank_sorts_scores():
    scorer = mr.Scorer(tiny_reward_model(), device="cpu")
    images = [colour_image(c, i) for i, c in enumerate(["red", "green", "blue"])]
    scores = scorer.score(prompts="a red picture", images=images)
    assert len(scores) == 3
    order = scorer.rank(prompt="a red picture", images=images)
    assert sorted(order) == [0, 1, 2] and scores[order[0]] == max(scores) and scores[order[-1]] == min(scores)


def test_real_images_of_any_size_and_mode_are_accepted():
    scorer = mr.Scorer(tiny_reward_model(), device="cpu")
    paths = [
        FIXTURES / "images" / "astronaut.png",
        FIXTURES / "images" / "camera.png",
    ]  # RGB 512px, grayscale
    outputs = scorer.score_samples(scorer.build_samples("a photo", images=paths))
    assert all(o.raw == o.score for o in outputs)
    assert outputs[0].provenance["preprocessing"]["image_size"] == 32
    assert outputs[0].provenance["model"] == "tiny-test"


def test_mismatched_lengths_and_missing_images_are_explained(tmp_path: Path):
    scorer = mr.Scorer(tiny_reward_model(), device="cpu")
    with pytest.raises(ValueError, match="prompts has 2 items"):
        scorer.score(prompts=["a", "b"], images=[colour_image("red", 0)] * 3)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        scorer.score(prompts="a", images=[tmp_path / "nope.png"])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        scorer.score(prompts="a", images=[tmp_path / "broken.png"])


def test_load_explains_what_it_needs(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="No model at"):
        mr.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        mr.load(tmp_path / "empty")


def test_saved_folder_records_a_revision_and_reloads_without_the_hub(tmp_path: Path):
    scorer = mr.Scorer(tiny_reward_model(), device="cpu", metadata={"name": "colours"})
    scorer.save_pretrained(tmp_path / "m")
    loaded = mr.load(tmp_path / "m", device="cpu")
    assert loaded.provenance()["model"] == "colours"
    assert len(loaded.provenance()["revision"]) == 12


def test_every_demo_task_names_a_function_that_exists():
    from mmreward.cli import find_demos

    demos = find_demos()
    assert {"t2i", "video", "edit", "judge", "cloth"} <= set(demos)
    for task, entry in demos.items():
        assert entry.value.startswith("integrations.demos."), task  # demos live in the top layer
        assert callable(entry.load()), task


def test_unknown_demo_task_gets_a_close_match(capsys):
    from mmreward.cli import main

    with pytest.raises(SystemExit):
        main(["demo", "--task", "clth"])
    assert "Did you mean 'cloth'" in capsys.readouterr().err
