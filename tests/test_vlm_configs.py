"""The VLM/LM recipe configs (BaseReward, HPSv3, text RM) parse, instantiate and train a step with
the 7B/1.5B backbone swapped for a tiny one; the exported model reloads with the recipe's parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import mmreward as mr
from mmreward.cli import main
from mmreward.data.records import read_records
from mmreward.data.synthetic.t2i import T2IWorld
from mmreward.data.synthetic.text import EchoWorld
from tests.vlm_helpers import build_tiny_causal_lm, build_tiny_qwen2_5_vl

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    return {"vlm": build_tiny_qwen2_5_vl(root / "vlm"), "lm": build_tiny_causal_lm(root / "lm")}


def swap_model_path(path: Path, model_path: Path) -> Path:
    """A second config that points the backbone at a tiny checkpoint; the recipe's other
    backbone arguments (pooling, LoRA, dtype, ...) stay as the recipe sets them."""
    backbone = {"init_args": {"model_name_or_path": str(model_path)}}
    path.write_text(
        yaml.safe_dump({"model": {"init_args": {"model": {"init_args": {"backbone": backbone}}}}})
    )
    return path


RECIPES = {
    "basereward/qwen2_5_vl_7b.yaml": ("vlm", "mmreward.heads.MLPHead", "last"),
    "hpsv3/qwen2_vl_7b.yaml": ("vlm", "mmreward.uncertainty.UncertaintyHead", "reward_token"),
    "text/qwen2_5_1_5b_rm.yaml": ("lm", "mmreward.heads.LinearHead", "last"),
}


@pytest.mark.parametrize("config", sorted(RECIPES))
def test_recipe_trains_a_step_with_a_tiny_backbone_and_exports(config, tiny_models, tmp_path):
    kind, head, pooling = RECIPES[config]
    if kind == "vlm":
        paths = T2IWorld(
            train_prompts=2, val_prompts=1, test_prompts=0, pairs_per_prompt=1, image_size=32
        ).write(tmp_path / "data")
    else:
        paths = EchoWorld(train_pairs=8, val_pairs=4, test_pairs=0).write(tmp_path / "data")
    override = swap_model_path(tmp_path / "tiny.yaml", tiny_models[kind])
    main([
        "fit", "--config", str(CONFIGS / config), "--config", str(override),
        "--data.train", str(paths["train"]), "--data.val", str(paths["val"]),
        "--data.batch_size", "2", "--data.num_workers", "0",
        "--trainer.fast_dev_run", "true", "--trainer.precision", "32-true", "--trainer.accelerator", "cpu",
        "--trainer.devices", "1", "--trainer.default_root_dir", str(tmp_path / "run"),
    ])  # fmt: skip
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["model"]["init_args"]
    recipe = yaml.safe_load((CONFIGS / config).read_text())["model"]["init_args"]["model"]["init_args"]
    assert saved["head"]["class_path"] == head
    backbone = saved["backbone"]["init_args"]
    assert backbone["pooling"] == pooling and backbone["from_config"] is True
    assert backbone["lora"] == recipe["backbone"]["init_args"].get("lora")
    scorer = mr.load(tmp_path / "run" / "model", device="cpu")
    pairs = read_records(paths["val"])
    first = scorer.score_samples([p.chosen for p in pairs])
    again = scorer.score_samples([p.chosen for p in pairs])
    assert [o.raw for o in first] == [o.raw for o in again]
    assert (first[0].sigma is not None) == (head == "mmreward.uncertainty.UncertaintyHead")
