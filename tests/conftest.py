"""Suite-wide guards: no hub, no network but loopback, GPU tests skipped without CUDA."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address, *args, **kwargs):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and self.family in (socket.AF_INET, socket.AF_INET6) and host not in _LOOPBACK:
        raise OSError(f"tests may not reach the network (tried {address!r}); use 127.0.0.1")
    return _real_connect(self, address, *args, **kwargs)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


LONGEST_FIRST = (
    "test_judges_sft.py",
    "test_video_learning.py",
    "test_action_selection.py",
    "test_prm_quickstart.py",
    "test_quickstart.py",
    "test_edit_learning.py",
)
"""The files that train a quick start (several minutes each on one thread), longest first: under
``pytest -n auto --dist loadfile`` the workers take files in collection order, so starting with
these keeps one worker from ending the run alone on a long file."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: same order within a file
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def learning_seed() -> int:
    """The seed of a learning test's world and training: 0, or ``MMREWARD_SEED`` when the seed sweep
    (``benchmarks/seed_spread.py``) runs the test again under other seeds to measure its spread."""
    return int(os.environ.get("MMREWARD_SEED", "0"))
