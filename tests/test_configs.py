"""The CLIP recipe configs parse, instantiate and run a step with the big backbone swapped for a tiny one."""

import json
from pathlib import Path

import pytest
import yaml

from mmreward.cli import main
from tests.core_helpers import TINY_CLIP, write_colour_world

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def backbone_override(path: Path, backbone: dict) -> Path:
    """A second config file that replaces the model's backbone (CLI flags cannot set a nested null)."""
    path.write_text(
        yaml.safe_dump({"model": {"init_args": {"model": {"init_args": {"backbone": backbone}}}}})
    )
    return path


@pytest.mark.parametrize("config", ["clip/pickscore_vit_h14.yaml"])
def test_clip_recipe_runs_a_step_with_a_tiny_backbone(config: str, tmp_path: Path):
    train = write_colour_world(tmp_path, 8, seed=1, name="train")
    val = write_colour_world(tmp_path, 4, seed=2, name="val")
    tiny = {
        "class_path": "modalities.backbones.clip.ClipBackbone",
        "init_args": {"model_name": "tiny", "pretrained": None, "model_config": TINY_CLIP},
    }
    override = backbone_override(tmp_path / "tiny.yaml", tiny)
    main([
        "fit", "--config", str(CONFIGS / config), "--config", str(override),
        "--data.train", str(train), "--data.val", str(val), "--data.field_map", "null",
        "--data.batch_size", "4", "--data.num_workers", "0",
        "--trainer.fast_dev_run", "true", "--trainer.precision", "32-true", "--trainer.accelerator", "cpu",
        "--trainer.devices", "1", "--trainer.default_root_dir", str(tmp_path / "run"),
    ])  # fmt: skip
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    head = saved["model"]["init_args"]["head"]["init_args"]
    assert head["init"] == "ones" and head["scale"] == pytest.approx(100 / 1024)
    assert saved["model"]["init_args"]["backbone"]["init_args"]["pretrained"] is None
