"""Import an optional dependency, or say which extra provides it."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, or fail with the pip command that provides it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise ImportError(
            f"`{module}` is needed here; install it with `pip install 'mmreward[{extra}]'`."
        ) from err
