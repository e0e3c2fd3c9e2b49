"""Point clouds: real .ply files, bad-input errors, canonical frames, FPS and order-free encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmreward.types import Sample
from modalities.backbones.pointnet import PointCloudBackbone, PointNetEncoder
from modalities.pointcloud import (
    farthest_point_sampling,
    farthest_point_sampling_torch,
    load_point_cloud,
    normalize_point_cloud,
)

FIXTURES = Path(__file__).parent / "fixtures" / "pointcloud"


def test_real_ply_files_load_as_their_vertices():
    bunny = load_point_cloud(FIXTURES / "bunny.ply")
    tree = load_point_cloud(FIXTURES / "tree.ply")
    # the headers say 2885 and 538 vertices; neither has vertex colours, so both are xyz
    assert bunny.shape == (2885, 3) and tree.shape == (538, 3)
    assert bunny.dtype == np.float32 and np.isfinite(bunny).all()
    # the bunny is a unit-box scan: its extent is about 1 along x and y
    assert 0.9 < np.ptp(bunny[:, 0]) < 1.1


def test_npy_npz_and_rgb_clouds_round_trip(tmp_path: Path):
    rng = np.random.default_rng(0)
    xyzrgb = np.concatenate([rng.normal(size=(50, 3)), rng.random((50, 3))], axis=1).astype(np.float32)
    np.save(tmp_path / "a.npy", xyzrgb)
    np.savez(tmp_path / "b.npz", points=xyzrgb[:, :3], other=np.zeros(2))
    assert np.array_equal(load_point_cloud(tmp_path / "a.npy"), xyzrgb)
    assert np.array_equal(load_point_cloud(str(tmp_path / "b.npz")), xyzrgb[:, :3])


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (np.zeros((0, 3)), "empty"),
        (np.array([[0, 0, 0], [1, np.nan, 0]], dtype=np.float32), "first at row 1"),
        (np.zeros((10, 4)), r"\(N, 3\) or \(N, 6\)"),
        (np.zeros(30), r"got \(30,\)"),
    ],
)
def test_bad_clouds_raise_naming_the_record(points: np.ndarray, message: str):
    sample = Sample(point_cloud=points, meta={"source": "data.jsonl", "line": 7, "field": "chosen"})
    with pytest.raises(ValueError, match=message) as err:
        load_point_cloud(points, sample)
    assert "data.jsonl:7" in str(err.value) and "chosen.point_cloud" in str(err.value)


def test_missing_and_unknown_files_are_named(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        load_point_cloud(tmp_path / "nope.npy")
    (tmp_path / "cloud.xyz").write_text("0 0 0\n")
    with pytest.raises(ValueError, match=r"cloud\.xyz.*\.npy, \.npz, \.ply"):
        load_point_cloud(tmp_path / "cloud.xyz")
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 3)), b=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="'points'"):
        load_point_cloud(tmp_path / "two.npz")


def test_unit_sphere_and_bounds_frames():
    bunny = load_point_cloud(FIXTURES / "bunny.ply") * 7.0 + 3.0
    unit = normalize_point_cloud(bunny, "unit_sphere")
    assert np.allclose(unit.mean(0), 0, atol=1e-5)
    assert np.linalg.norm(unit, axis=1).max() == pytest.approx(1.0, abs=1e-5)
    table = np.array([[0.3, 0.3, 0.0], [-0.3, 0.1, 0.15]], dtype=np.float32)
    canon = normalize_point_cloud(table, "bounds", (-0.3, -0.3, 0.3, 0.3))
    assert np.allclose(canon, [[1, 1, 0], [-1, 1 / 3, 0.5]], atol=1e-6)
    with pytest.raises(ValueError, match="xmax > xmin"):
        normalize_point_cloud(table, "bounds", (0.3, -0.3, -0.3, 0.3))


def test_farthest_point_sampling_spreads_and_ignores_order():
    bunny = load_point_cloud(FIXTURES / "bunny.ply")
    chosen = bunny[farthest_point_sampling(bunny, 64)]
    perm = np.random.default_rng(1).permutation(len(bunny))
    chosen_perm = bunny[perm][farthest_point_sampling(bunny[perm], 64)]
    assert np.array_equal(chosen, chosen_perm)  # same points, same order

    def min_gap(points: np.ndarray) -> float:
        d = np.linalg.norm(points[:, None] - points[None], axis=-1)
        return d[~np.eye(len(points), dtype=bool)].min()

    random_subset = bunny[np.random.default_rng(0).choice(len(bunny), 64, replace=False)]
    assert min_gap(chosen) > 3 * min_gap(random_subset)
    torch_idx = farthest_point_sampling_torch(torch.from_numpy(bunny)[None], 64)[0].numpy()
    assert np.array_equal(bunny[torch_idx], chosen)
    # fewer points than asked: every point is used, then repeated
    assert sorted(set(farthest_point_sampling(bunny[:5], 8).tolist())) == [0, 1, 2, 3, 4]


def test_encoder_tokens_do_not_depend_on_point_order():
    torch.manual_seed(0)
    encoder = PointNetEncoder(dim=32, centroids=(32, 8), neighbours=(8, 4), widths=(32, 32)).eval()
    bunny = torch.from_numpy(normalize_point_cloud(load_point_cloud(FIXTURES / "bunny.ply")))[None, :512]
    perm = torch.randperm(512)
    with torch.no_grad():
        tokens, positions = encoder(bunny)
        tokens_p, positions_p = encoder(bunny[:, perm])
    assert tokens.shape == (1, 40, 32)
    torch.testing.assert_close(tokens, tokens_p, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(positions, positions_p)


def test_backbone_tells_shapes_apart_after_training():
    """A PointCloudBackbone + head learns to score bunnies above trees (a real-data sanity check)."""
    from mmreward.heads import LinearHead
    from mmreward.losses import bradley_terry_loss
    from mmreward.models import RewardModel

    torch.manual_seed(0)
    encoder = PointNetEncoder(dim=16, centroids=(16, 4), neighbours=(8, 4), widths=(16, 16))
    model = RewardModel(PointCloudBackbone(encoder, num_points=64), LinearHead(), name="shape")
    rng = np.random.default_rng(0)
    bunny, tree = (load_point_cloud(FIXTURES / f"{n}.ply") for n in ("bunny", "tree"))

    def views(cloud: np.ndarray, n: int) -> list[Sample]:
        return [Sample(point_cloud=cloud[rng.choice(len(cloud), 256, replace=False)]) for _ in range(n)]

    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        out = model(model.collate(views(bunny, 4) + views(tree, 4))).score
        loss = bradley_terry_loss(out[:4], out[4:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        scores = model(model.collate(views(bunny, 8) + views(tree, 8))).score
    assert (scores[:8, None] > scores[None, 8:]).all()
