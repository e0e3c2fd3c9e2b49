"""Published reward models by name: ``mr.load("pickscore")``, ``mr.load("hpsv2", checkpoint=PATH)``.

``HUB`` is one explicit table. Each entry says where the published weights live, what the model
measures, its license, and which class rebuilds it (a ``class_path``/``init_args`` config, as a
saved model's ``config.json`` has; the classes are in ``modalities.hub``). That class takes the
published file as its ``checkpoint`` argument, converts the published key layout to its own
modules and loads it strictly (``load_converted``), so a hub model is an ordinary reward model:
``Scorer`` scores it, ``save_pretrained`` saves it and ``mmreward fit`` fine-tunes it
(``model_config`` gives the config to put in a YAML file).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmreward.configurable import instantiate
from mmreward.optional import require


@dataclass(frozen=True)
class HubEntry:
    """One published reward model."""

    model: dict[str, Any]
    """The class that rebuilds it, as ``{"class_path", "init_args"}`` (without ``checkpoint``)."""
    measures: str
    """What the score means, in a few words."""
    license: str
    """The license of the published weights, as their authors state it."""
    repo_id: str | None = None
    """The Hugging Face Hub repository of the weights (None: see ``url``)."""
    filename: str | None = None
    """The published file name (in ``repo_id``, or at the end of ``url``)."""
    url: str | None = None
    """A direct download address when the weights are not on the Hugging Face Hub."""
    paper: str = ""
    """Where the model and its scoring rule are described."""
    extra_files: dict[str, str] = field(default_factory=dict)
    """Other things the model needs (init arg -> what to pass), for the docs and error messages."""


_CLIP = "modalities.hub.clip.ClipSimilarityReward"
_VIT_H = {"model_name": "ViT-H-14"}

HUB: dict[str, HubEntry] = {
    "pickscore": HubEntry(
        model={"class_path": _CLIP, "init_args": {**_VIT_H, "layout": "transformers", "scale": None}},
        measures="human preference of a text-to-image generation (Pick-a-Pic); logit_scale * cosine",
        license="MIT",
        repo_id="yuvalkirstain/PickScore_v1",
        filename="model.safetensors",
        paper="Kirstain et al., 2023, Pick-a-Pic (arXiv:2305.01569)",
    ),
    "hpsv2": HubEntry(
        model={"class_path": _CLIP, "init_args": {**_VIT_H, "layout": "open_clip", "scale": 1.0}},
        measures="human preference of a text-to-image generation (HPDv2); cosine of CLIP embeddings",
        license="Apache-2.0",
        repo_id="xswu/HPSv2",
        filename="HPS_v2_compressed.pt",
        paper="Wu et al., 2023, Human Preference Score v2 (arXiv:2306.09341)",
    ),
    "hpsv2.1": HubEntry(
        model={"class_path": _CLIP, "init_args": {**_VIT_H, "layout": "open_clip", "scale": 1.0}},
        measures="human preference of a text-to-image generation (HPDv2, v2.1 weights); cosine",
        license="Apache-2.0",
        repo_id="xswu/HPSv2",
        filename="HPS_v2.1_compressed.pt",
        paper="Wu et al., 2023, Human Preference Score v2 (arXiv:2306.09341)",
    ),
    "clipscore": HubEntry(
        model={
            "class_path": _CLIP,
            "init_args": {
                "model_name": "ViT-B-32",
                "pretrained": "openai",
                "layout": "open_clip",
                "scale": 2.5,
                "floor": 0.0,
            },
        },
        measures="text-image alignment; 2.5 * max(cosine, 0) (any open_clip model_name/pretrained)",
        license="MIT (OpenAI CLIP weights; other open_clip weights carry their own)",
        paper="Hessel et al., 2021, CLIPScore (arXiv:2104.08718)",
    ),
    "aesthetic-v2": HubEntry(
        model={
            "class_path": "modalities.hub.aesthetic.AestheticReward",
            "init_args": {"model_name": "ViT-L-14", "pretrained": "openai"},
        },
        measures="aesthetic quality of an image on a 1-10 scale (SAC + LAION-Logos + AVA); ignores the prompt",
        license="Apache-2.0 (predictor); MIT (OpenAI CLIP ViT-L/14)",
        url="https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/"
        "sac+logos+ava1-l14-linearMSE.pth",
        filename="sac+logos+ava1-l14-linearMSE.pth",
        paper="Schuhmann, LAION improved aesthetic predictor (2022)",
        extra_files={"pretrained": "the CLIP ViT-L/14 weights: an open_clip tag ('openai') or a local file"},
    ),
    "imagereward": HubEntry(
        model={
            "class_path": "modalities.hub.imagereward.ImageReward",
            "init_args": {"tokenizer": "bert-base-uncased"},
        },
        measures="human preference of a text-to-image generation (ImageRewardDB); z-scored BLIP ITM + MLP",
        license="Apache-2.0",
        repo_id="THUDM/ImageReward",
        filename="ImageReward.pt",
        paper="Xu et al., 2023, ImageReward (arXiv:2304.05977)",
        extra_files={"tokenizer": "a bert-base-uncased tokenizer: a hub id or a local folder"},
    ),
    "hpsv3": HubEntry(
        model={
            "class_path": "modalities.hub.hpsv3.HPSv3Reward",
            "init_args": {"model_name_or_path": "Qwen/Qwen2-VL-7B-Instruct", "weight_dtype": "bfloat16"},
        },
        measures="human preference of a text-to-image generation (HPDv3); mu of Qwen2-VL-7B's Gaussian "
        "reward at <|Reward|> (sigma reported)",
        license="MIT (HPSv3); Apache-2.0 (Qwen2-VL-7B-Instruct, its base)",
        repo_id="MizzenAI/HPSv3",
        filename="HPSv3.safetensors",
        paper="Ma et al., 2025, HPSv3: Towards Wide-Spectrum Human Preference Score (arXiv:2508.03789)",
        extra_files={
            "model_name_or_path": "Qwen2-VL-7B-Instruct's config, tokenizer and processor (a hub id or a "
            "local folder); its weights are not read, the checkpoint holds them all"
        },
    ),
}
"""Named public reward models. Add one by adding an entry; the class it names does the rest."""


def close_names_hint(name: str) -> str:
    """`` Did you mean 'hpsv2', 'hpsv2.1'?`` for the hub names close to ``name``; empty if none."""
    close = difflib.get_close_matches(name.lower(), HUB, n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def unknown_name(name: str) -> ValueError:
    """The error for a name that is neither a hub entry nor an existing path, with close names."""
    return ValueError(
        f"{name!r} is neither a saved model on disk nor a hub model name.{close_names_hint(name)} "
        f"Hub models: {', '.join(sorted(HUB))}; or pass a folder from save_pretrained or a .ckpt."
    )


def entry(name: str) -> HubEntry:
    """The hub entry called ``name`` (case-insensitive); ``ValueError`` with close names otherwise."""
    found = HUB.get(name.lower())
    if found is None:
        raise unknown_name(name)
    return found


def model_config(name: str, checkpoint: str | Path | None = None, **overrides: Any) -> dict[str, Any]:
    """The ``class_path``/``init_args`` config of a hub model, e.g. for a ``mmreward fit`` YAML.

    Args:
        name: A key of ``HUB``.
        checkpoint: The published weights file (local); None leaves the weights random.
        **overrides: Init args to change (a smaller ``model_config``, ``tokenizer``, ``pretrained``).
    """
    spec = copy.deepcopy(entry(name).model)
    spec["init_args"].update(overrides)
    spec["init_args"]["checkpoint"] = None if checkpoint is None else str(checkpoint)
    spec["init_args"].setdefault("name", name.lower())
    return spec


def download(name: str) -> Path:
    """Fetch the published weights of ``name`` into the local cache (needs the network)."""
    hub_entry = entry(name)
    if hub_entry.repo_id is None and hub_entry.url is None:
        raise ValueError(
            f"Hub model {name!r} has no single weights file; its weights come with its backbone "
            "(pretrained=...)."
        )
    try:
        if hub_entry.repo_id is not None:
            hf_hub = require("huggingface_hub", "vlm")
            return Path(hf_hub.hf_hub_download(hub_entry.repo_id, hub_entry.filename))
        target = Path(torch.hub.get_dir()) / "mmreward" / str(hub_entry.filename)
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(str(hub_entry.url), str(target))
        return target
    except (OSError, ValueError) as err:  # offline, or the hub refused
        where = hub_entry.url or f"https://huggingface.co/{hub_entry.repo_id}"
        raise FileNotFoundError(
            f"Could not fetch {hub_entry.filename!r} for {name!r} ({type(err).__name__}: {err}). "
            f"Download it from {where} and pass checkpoint='path/to/{hub_entry.filename}'."
        ) from err


def build(
    name: str, checkpoint: str | Path | None = None, **overrides: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """Build hub model ``name`` with its published weights; returns the model and its provenance.

    Args:
        name: A key of ``HUB``.
        checkpoint: A local copy of the published file; None downloads it (``download``).
        **overrides: Init args to change (see ``model_config``).
    """
    hub_entry = entry(name)
    if checkpoint is None and (hub_entry.repo_id or hub_entry.url):
        checkpoint = download(name)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(
            f"No checkpoint file at {str(checkpoint)!r} for hub model {name!r}; pass the published "
            f"{hub_entry.filename or 'weights'} file."
        )
    model = instantiate(model_config(name, checkpoint, **overrides), source=f"hub model {name!r}")
    revision = "published" if checkpoint is None else Path(checkpoint).name
    return model, {"name": name.lower(), "revision": revision, "license": hub_entry.license}


# -- reading and converting published checkpoints ------------------------------------------------


def read_state_dict(path: str | Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a published checkpoint: safetensors, or ``torch.load(weights_only=True)``.

    Args:
        path: The file.
        key: Unwrap ``checkpoint[key]`` when present (HPSv2 stores ``{"state_dict": ...}``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {str(path)!r}.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch and safetensors raise several types for a truncated or foreign file
        kind = "safetensors file" if path.suffix == ".safetensors" else "PyTorch checkpoint"
        raise ValueError(
            f"{path} is not a readable {kind} ({type(err).__name__}: {str(err)[:200]}); "
            "download the published file again."
        ) from err
    if key is not None and isinstance(state, Mapping) and key in state:
        state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors; is it the published weights file?")
    return dict(state)


def first_mismatch(module: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """A sentence naming the first missing, unexpected or mis-shaped key; None when all match."""
    expected = module.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            return f"missing key {key!r}"
        if tuple(state[key].shape) != tuple(tensor.shape):
            return f"key {key!r} has shape {tuple(state[key].shape)}, expected {tuple(tensor.shape)}"
    unexpected = [k for k in state if k not in expected]
    return f"unexpected key {unexpected[0]!r}" if unexpected else None


def load_converted(module: nn.Module, state: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """Load a converted state dict strictly, or say which file and which key do not fit.

    Raises:
        ValueError: naming ``source`` and the first mismatched key (a wrong or truncated file).
    """
    problem = first_mismatch(module, state)
    if problem is not None:
        raise ValueError(
            f"{source} does not fit {type(module).__name__}: {problem} (after conversion from the "
            "published layout). Check that the file is the published checkpoint of this model and "
            "that it is complete."
        )
    module.load_state_dict(dict(state), strict=True)
