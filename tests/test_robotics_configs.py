"""The robotics configs run through ``mmreward fit`` and export a model that ``mmreward.load`` scores with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

import mmreward as mr
from mmreward.cli import main
from mmreward.types import Sample

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _fit(config: str, tmp_path: Path, *extra: str) -> Path:
    run = tmp_path / "run"
    main([
        "fit", "--config", str(CONFIGS / config), *extra,
        "--trainer.fast_dev_run", "true", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.default_root_dir", str(run),
    ])  # fmt: skip
    return run / "model"


def test_quickstart_cloth_config_fits_and_exports(tmp_path: Path):
    small = tmp_path / "small.yaml"
    world = {"episodes": {"train": 1, "val": 1, "test": 1}, "steps": 1, "candidates": 4}
    small.write_text(yaml.safe_dump({"data": {"init_args": {"synthetic": {"init_args": world}}}}))
    model_dir = _fit("quickstart/cloth.yaml", tmp_path, "--config", str(small))
    saved = json.loads((model_dir / "config.json").read_text())
    assert saved["model"]["class_path"] == "modalities.action_model.ActionPreferenceModel"
    scorer = mr.load(model_dir, device="cpu")
    cloud = np.load(sorted((tmp_path / "run" / "data" / "scenes").glob("test-*.npy"))[0])
    actions = [
        {"primitive": "pick_place", "pick": [0.0, 0.0], "place": [0.1, 0.0]},
        {"primitive": "fling", "grasps": [[0, 0], [0.1, 0]], "direction": [0, 1]},
    ]
    scores = scorer.score(samples=[Sample(point_cloud=cloud, action=a) for a in actions])
    assert len(scores) == 2 and np.isfinite(scores).all() and scores[0] != scores[1]


def test_real_data_recipe_trains_on_coloured_rankings(tmp_path: Path):
    rng = np.random.default_rng(0)
    (tmp_path / "obs").mkdir()
    lines, pairs = [], []
    for i in range(2):
        cloud = np.concatenate(
            [rng.uniform(-0.4, 0.4, (2100, 3)) * [1, 1, 0.1], rng.random((2100, 3))], axis=1
        )
        np.save(tmp_path / "obs" / f"{i}.npy", cloud.astype(np.float32))
        cands = [
            {
                "point_cloud": f"obs/{i}.npy",
                "action": {"primitive": "pick_place", "pick": [0.1 * k, 0.0], "place": [0.2, 0.1]},
            }
            for k in range(3)
        ]
        cands.append(
            {
                "point_cloud": f"obs/{i}.npy",
                "action": {"primitive": "fling", "grasps": [[-0.2, 0], [0.2, 0]], "direction": [0, 1]},
            }
        )
        lines.append(
            json.dumps({"prompt": "flatten the cloth", "candidates": cands, "ranking": [3, 0, 2, 1]})
        )
        pairs.append(json.dumps({"prompt": "flatten the cloth", "chosen": cands[3], "rejected": cands[1]}))
    data, val = tmp_path / "rank.jsonl", tmp_path / "pairs.jsonl"
    data.write_text("\n".join(lines) + "\n")
    val.write_text("\n".join(pairs) + "\n")
    model_dir = _fit(
        "robotics/deformpam_real.yaml", tmp_path,
        "--data.train", str(data), "--data.val", str(val), "--data.num_workers", "0", "--data.batch_size", "2",
    )  # fmt: skip
    scorer = mr.load(model_dir, device="cpu")
    assert scorer.model.encoder.in_channels == 6 and scorer.model.num_points == 2048
