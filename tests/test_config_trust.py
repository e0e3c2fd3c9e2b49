"""A model folder is data: loading it builds only allow-listed classes unless the user trusts it."""

import json
from pathlib import Path

import pytest

import mmreward as mr
from mmreward.configurable import UntrustedConfigError, instantiate
from tests.core_helpers import tiny_reward_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("trust") / "model"
    mr.Scorer(tiny_reward_model(), device="cpu").save_pretrained(directory)
    return directory


def with_config(saved: Path, tmp_path: Path, **changes) -> Path:
    target = tmp_path / "model"
    target.mkdir()
    for name in ("config.json", "model.safetensors"):
        (target / name).write_bytes((saved / name).read_bytes())
    for sub in saved.iterdir():
        if sub.is_dir():
            (target / sub.name).symlink_to(sub)
    config = json.loads((target / "config.json").read_text())
    config.update(changes)
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_os_system_payload_is_refused_and_runs_nothing(saved: Path, tmp_path: Path):
    marker = tmp_path / "pwned"
    payload = {"class_path": "os.system", "init_args": {"command": f"touch {marker}"}}
    model_dir = with_config(saved, tmp_path, transform=payload)
    with pytest.raises(
        UntrustedConfigError, match=r"refused class_path 'os.system'.*trust_config=True"
    ) as info:
        mr.load(model_dir, device="cpu")
    assert "config.json" in str(info.value)
    assert not marker.exists()
    # the user's explicit trust is the only way it loads (and then it does run)
    mr.load(model_dir, device="cpu", trust_config=True)
    assert marker.exists()


def test_cli_refuses_it_too_and_says_which_flag_allows_it(saved: Path, tmp_path: Path, capsys):
    from mmreward.cli import main

    marker = tmp_path / "pwned"
    payload = {"class_path": "subprocess.Popen", "init_args": {"args": ["touch", str(marker)]}}
    model_dir = with_config(saved, tmp_path, calibration=payload)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "x", "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(UntrustedConfigError, match="--trust-config"):
        main(
            ["score", "--model", str(model_dir), "--input", str(data), "--output", str(tmp_path / "o.jsonl")]
        )
    assert not marker.exists()


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ({"class_path": "builtins.eval", "init_args": {}}, "refused class_path 'builtins.eval'"),
        # a foreign class re-exported through an allowed module is still foreign
        ({"class_path": "mmreward.scoring.Path", "init_args": {}}, "defined in 'pathlib'"),
        # a function of an allowed package is not a class
        ({"class_path": "mmreward.cli.main", "init_args": {"argv": ["fit"]}}, "names function"),
        (
            {"class_path": "judges.backends.TransformersBackend", "init_args": {"trust_remote_code": True}},
            "trust_remote_code",
        ),
        ({"asset": "../../etc/passwd"}, "outside the model folder"),
    ],
)
def test_allow_list_closes_the_side_doors(spec: dict, why: str, tmp_path: Path):
    with pytest.raises(UntrustedConfigError, match=why):
        instantiate({"model": spec}, root=tmp_path)


def test_allowed_classes_still_build():
    import torch

    head = instantiate({"class_path": "mmreward.heads.LinearHead", "init_args": {"in_features": 4}})
    layer = instantiate({"class_path": "torch.nn.Linear", "init_args": {"in_features": 4, "out_features": 2}})
    assert type(head).__name__ == "LinearHead" and isinstance(layer, torch.nn.Linear)
