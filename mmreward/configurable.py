"""Components that remember how they were built, so a model saves as ``class_path``/``init_args``.

The import path is the registry: a config names a class by its dotted path, ``instantiate``
imports and builds it (as LightningCLI does), and ``to_config`` writes a built component back out.
A component that needs files to be rebuilt elsewhere (a tokenizer, a model config) implements
``export_args(directory)``: it writes them under ``directory`` and returns the init-arg overrides
that point at them, as ``{"asset": "relative/path"}`` markers that ``instantiate`` resolves.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
from pathlib import Path
from typing import Any


class Configurable:
    """Mixin: record the arguments of the most-derived ``__init__`` (diffusers' register_to_config)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self: Any, *args: Any, **kw: Any) -> None:
            if "_init_args" not in self.__dict__:
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                recorded = {}
                for name, value in list(bound.arguments.items())[1:]:
                    kind = signature.parameters[name].kind
                    if kind is inspect.Parameter.VAR_KEYWORD:
                        recorded.update(value)
                    elif kind is not inspect.Parameter.VAR_POSITIONAL:
                        recorded[name] = value
                object.__setattr__(self, "_init_args", recorded)
            init(self, *args, **kw)

        cls.__init__ = recording_init

    @property
    def init_args(self) -> dict[str, Any]:
        """The arguments this component was built with."""
        return dict(self.__dict__.get("_init_args", {}))


def class_path(obj: Any) -> str:
    """The dotted import path of ``obj``'s class."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def to_config(obj: Configurable, export_dir: str | Path | None = None, prefix: str = "") -> dict[str, Any]:
    """Serialise a built component as ``{"class_path", "init_args"}``, recursively.

    Args:
        obj: The component.
        export_dir: Where components may write the files they need to be rebuilt; None writes none.
        prefix: The sub-folder of ``export_dir`` for this component's files (the component
            creates it if it writes any).
    """
    if not isinstance(obj, Configurable):
        raise TypeError(f"{class_path(obj)} cannot be saved: it does not derive from mmreward.Configurable.")
    args = obj.init_args
    export = getattr(obj, "export_args", None)
    if export is not None:
        args.update(export(None if export_dir is None else Path(export_dir), prefix))
    encoded = {name: _encode(value, export_dir, _join(prefix, name), name) for name, value in args.items()}
    return {"class_path": class_path(obj), "init_args": encoded}


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _encode(value: Any, export_dir: str | Path | None, prefix: str, name: str) -> Any:
    if isinstance(value, Configurable):
        return to_config(value, export_dir, prefix)
    if isinstance(value, (list, tuple)):
        return [_encode(v, export_dir, _join(prefix, str(i)), name) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _encode(v, export_dir, _join(prefix, str(k)), name) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(
        f"Init argument {name!r} holds a {type(value).__name__}, which cannot be written to config.json. "
        "Pass plain values (str, numbers, lists, dicts) or Configurable components."
    )


def import_path(path: str) -> Any:
    """Import ``package.module.Name`` and return ``Name``."""
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ValueError(f"{path!r} is not an import path; write it as 'package.module.ClassName'.")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ImportError(f"Cannot import {module_name!r} for class_path {path!r}: {err}.") from err
    if not hasattr(module, attr):
        close = difflib.get_close_matches(attr, dir(module), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Module {module_name!r} has no {attr!r} (class_path {path!r}).{hint}")
    return getattr(module, attr)


def instantiate(spec: Any, root: str | Path | None = None) -> Any:
    """Build what a config describes: dicts with ``class_path`` become objects, recursively.

    Args:
        spec: A ``{"class_path", "init_args"}`` dict, or any JSON value holding such dicts.
        root: The folder that ``{"asset": path}`` markers are relative to.
    """
    if isinstance(spec, dict):
        if set(spec) == {"asset"}:
            if root is None:
                raise ValueError(f"Config names an asset {spec['asset']!r} but no model folder was given.")
            return str(Path(root) / spec["asset"])
        if "class_path" in spec:
            cls = import_path(spec["class_path"])
            kwargs = {k: instantiate(v, root) for k, v in (spec.get("init_args") or {}).items()}
            return cls(**kwargs)
        return {k: instantiate(v, root) for k, v in spec.items()}
    if isinstance(spec, list):
        return [instantiate(v, root) for v in spec]
    return spec
