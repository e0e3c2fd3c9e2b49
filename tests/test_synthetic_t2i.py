"""The synthetic text-to-image world: determinism, disjoint splits, honest corruptions, files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmreward.data.synthetic import (
    PALETTE,
    Grammar,
    Scene,
    SceneObject,
    T2IWorld,
    blur,
    jpeg,
    make_candidates,
    noise,
    render,
    sample_prompt,
)
from mmreward.data.synthetic.t2i_grammar import NUMBER_WORDS, RELATION_TEXT

SMALL = {"train_prompts": 12, "val_prompts": 4, "test_prompts": 4, "pairs_per_prompt": 3}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def candidates_by_kind(n_prompts: int = 80, relation_fraction: float = 0.5) -> list[tuple]:
    """(spec, faithful, corrupted) for every alignment corruption of ``n_prompts`` prompts."""
    grammar = Grammar(relation_fraction=relation_fraction)
    out = []
    for i in range(n_prompts):
        rng = np.random.default_rng([123, i])
        spec = sample_prompt(rng, grammar)
        faithful, *rest = make_candidates(spec, rng, image_size=64, alignment=5, quality=0, grammar=grammar)
        out += [(spec, faithful, cand) for cand in rest]
    return out


@pytest.fixture(scope="module")
def world_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("t2i")
    T2IWorld(**SMALL).write(root)
    return root


def test_same_seed_writes_identical_files(world_root: Path, tmp_path: Path) -> None:
    T2IWorld(**SMALL).write(tmp_path)
    files = sorted(p.relative_to(world_root) for p in world_root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for name in files:
        assert (world_root / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_other_seed_gives_other_world(world_root: Path, tmp_path: Path) -> None:
    T2IWorld(**{**SMALL, "seed": 1}).write(tmp_path)
    assert (world_root / "train.jsonl").read_text() != (tmp_path / "train.jsonl").read_text()


def test_held_out_splits_share_no_scene_with_train() -> None:
    world = T2IWorld(train_prompts=200, val_prompts=50, test_prompts=50)

    def scenes(split: str, n: int) -> set[str]:
        out = set()
        for i in range(n):
            spec, cands = world.prompt_candidates(split, i)
            out |= {spec.text + json.dumps(c.scene.to_dict()) for c in cands}
        return out

    train = scenes("train", 200)
    assert not train & scenes("val", 50)
    assert not train & scenes("test", 50)


def test_records_are_canonical_and_paths_resolve(world_root: Path) -> None:
    for split, n in (("train", 12), ("val", 4), ("test", 4)):
        pairs = read_jsonl(world_root / f"{split}.jsonl")
        assert len(pairs) == n * (SMALL["pairs_per_prompt"] + 1)  # + one quality pair per prompt
        assert len({p["id"] for p in pairs}) == len(pairs)
        for pair in pairs:
            for side in ("chosen", "rejected"):
                path = pair[side]["image"]
                assert not Path(path).is_absolute() and path.startswith(f"images/{split}/")
                assert (world_root / path).is_file()
            quality = pair["subset"] in ("blur", "noise", "jpeg")
            assert pair["aspects"] == (
                {"alignment": 0.5, "quality": 1} if quality else {"alignment": 1, "quality": 0.5}
            )
        ratings = read_jsonl(world_root / f"{split}_ratings.jsonl")
        assert len(ratings) == n * (SMALL["pairs_per_prompt"] + 2)
        for rating in ratings:
            assert (world_root / rating["image"]).is_file()
            assert 0 <= rating["scores"]["alignment"] <= 1 and 0 <= rating["scores"]["quality"] <= 1
            faithful = rating["corruption"] == "none"
            assert (rating["score"] == 1.0) == faithful


def test_second_write_reuses_files_and_new_config_regenerates(tmp_path: Path) -> None:
    paths = T2IWorld(**SMALL).write(tmp_path)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    stamps = {p: p.stat().st_mtime_ns for p in files}
    assert T2IWorld(**SMALL).write(tmp_path) == paths
    assert {p: p.stat().st_mtime_ns for p in files} == stamps

    T2IWorld(**{**SMALL, "train_prompts": 5}).write(tmp_path)
    assert len(read_jsonl(paths["train"])) == 5 * (SMALL["pairs_per_prompt"] + 1)
    assert json.loads((tmp_path / "world.json").read_text())["init_args"]["train_prompts"] == 5
    assert not (tmp_path / "images" / "train" / "00011_0.png").exists()  # stale images are gone


def object_pixel(image, obj: SceneObject) -> tuple[int, int, int]:
    return image.getpixel((int(obj.x * image.width), int(obj.y * image.height)))


def test_color_swap_recolours_the_objects_pixels() -> None:
    found = 0
    for _, faithful, cand in candidates_by_kind():
        if cand.kind != "color":
            continue
        changed = [(a, b) for a, b in zip(faithful.scene.objects, cand.scene.objects) if a != b]
        assert changed and all(a.color != b.color and a.replace(color=b.color) == b for a, b in changed)
        for _, new in changed:
            pixel = np.array(object_pixel(cand.image, new))
            assert np.abs(pixel - PALETTE[new.color]).max() <= 2
        old, new = changed[0][0].color, changed[0][1].color
        assert f"{new}, not {old}" in cand.critique
        found += 1
    assert found >= 10


def test_shape_swap_changes_shapes_only() -> None:
    for _, faithful, cand in (c for c in candidates_by_kind() if c[2].kind == "shape"):
        changed = [(a, b) for a, b in zip(faithful.scene.objects, cand.scene.objects) if a != b]
        assert changed and all(a.replace(shape=b.shape) == b and a.shape != b.shape for a, b in changed)
        assert changed[0][1].shape in cand.critique and changed[0][0].shape in cand.critique
        assert np.asarray(cand.image).tolist() != np.asarray(faithful.image).tolist()


def test_a_swap_never_makes_the_two_objects_of_a_relation_identical() -> None:
    """Two identical objects would leave the render unable to say which is which (so neither the
    relation nor each object's place could be read off it); prompts never ask for them, and a
    colour or shape swap must not make them (before the rule, about 3% of swaps did)."""
    swaps = [
        c for c in candidates_by_kind(200, relation_fraction=1.0) if c[2].kind in ("color", "shape", "size")
    ]
    assert len(swaps) >= 200
    for spec, _, cand in swaps:
        a, b = cand.scene.objects
        assert (a.size, a.color, a.shape) != (b.size, b.color, b.shape), (spec.text, cand.kind, a, b)


def test_count_is_off_by_one() -> None:
    for spec, faithful, cand in (c for c in candidates_by_kind() if c[2].kind == "count"):
        asked, got = spec.groups[0].count, len(cand.scene.objects)
        assert len(faithful.scene.objects) == asked and abs(got - asked) == 1
        assert f"{NUMBER_WORDS[got]} " in cand.critique and f"not {NUMBER_WORDS[asked]}" in cand.critique


def test_relation_flip_swaps_positions() -> None:
    found = 0
    for spec, faithful, cand in (c for c in candidates_by_kind() if c[2].kind == "relation"):
        (a, b), (a2, b2) = faithful.scene.objects, cand.scene.objects
        assert (a2.x, a2.y, b2.x, b2.y) == (b.x, b.y, a.x, a.y)
        assert a2.replace(x=a.x, y=a.y) == a
        horizontal = spec.relation in ("left of", "right of")
        first_before = (a.x < b.x) if horizontal else (a.y < b.y)
        assert first_before == (spec.relation in ("left of", "above"))
        assert f"not {RELATION_TEXT[spec.relation]}" in cand.critique
        found += 1
    assert found >= 5


def test_missing_and_size() -> None:
    for _, faithful, cand in candidates_by_kind():
        if cand.kind == "missing":
            assert len(cand.scene.objects) == len(faithful.scene.objects) - 1
            assert set(cand.scene.objects) < set(faithful.scene.objects)
            assert "missing" in cand.critique
        elif cand.kind == "size":
            changed = [(a, b) for a, b in zip(faithful.scene.objects, cand.scene.objects) if a != b]
            assert changed and all(a.replace(size=b.size) == b for a, b in changed)
            assert f"{changed[0][1].size}, not {changed[0][0].size}" in cand.critique


def test_quality_corruptions_degrade_the_faithful_render() -> None:
    rng = np.random.default_rng(0)
    spec = sample_prompt(rng)
    faithful, *quality = make_candidates(spec, rng, alignment=0, quality=3)
    assert sorted(c.kind for c in quality) == ["blur", "jpeg", "noise"]
    words = {"blur": "blurred", "noise": "noisy", "jpeg": "compression"}
    for cand in quality:
        assert cand.scene == faithful.scene and cand.alignment == 1.0 and cand.quality < 1.0
        assert words[cand.kind] in cand.critique
        assert np.abs(np.asarray(cand.image, float) - np.asarray(faithful.image, float)).mean() > 1.0


def test_scene_rendering_and_errors() -> None:
    scene = Scene([SceneObject("circle", "red", "large", 0.5, 0.5)], background=(240, 240, 240))
    image = render(scene, size=32)
    assert (
        image.size == (32, 32)
        and image.getpixel((16, 16)) == PALETTE["red"]
        and image.getpixel((1, 1)) == (240, 240, 240)
    )
    assert Scene.from_dict(scene.to_dict()) == scene
    for corrupt in (
        lambda im: blur(im, 0.5),
        lambda im: jpeg(im, 0.5),
        lambda im: noise(im, 0.5, np.random.default_rng(0)),
    ):
        assert corrupt(image).size == image.size
    with pytest.raises(ValueError, match="severity"):
        blur(image, 0.0)
    with pytest.raises(ValueError, match="pink"):
        SceneObject("circle", "pink", "large", 0.5, 0.5)
    with pytest.raises(ValueError, match="pairs_per_prompt"):
        T2IWorld(1, 1, 1, pairs_per_prompt=0)


def test_pooled_colour_statistics_do_not_give_the_faithful_render_away(tmp_path: Path) -> None:
    """Issue 13: a prompt-blind logistic model on each image's colour statistics, fitted on training
    pairs, ranks held-out alignment pairs near chance (the quick-start world's settings)."""
    from integrations.demos.t2i import image_statistics_accuracy
    from mmreward.data.records import read_records

    world = T2IWorld(300, 4, 120, quality_pairs=False, relation_fraction=0.0, seed=3)
    paths = world.write(tmp_path / "world")
    train, test = read_records(paths["train"]), read_records(paths["test"])
    assert len(test) == 360  # SE of a chance accuracy: 0.026
    assert abs(image_statistics_accuracy(train, test) - 0.5) <= 0.08
