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


ALLOWED_PREFIXES = (
    "mmreward",
    "modalities",
    "judges",
    "integrations",
    "torch.nn",
    "torch.optim",
    "open_clip",
    "transformers",
    "peft",
    "diffusers",
    "lightning",
)
"""Packages whose classes a config may name without ``trust_config``: the project's own, torch's
modules and optimizers, and the libraries the project builds on. Anything else (``os.system``,
``subprocess.Popen``) could run code on load, so it needs the user's explicit trust."""


class UntrustedConfigError(ValueError):
    """A config names something that ``instantiate`` builds only with ``trust=True``."""


def _allowed(path: str) -> bool:
    return any(path == p or path.startswith(p + ".") for p in ALLOWED_PREFIXES)


def check_class_path(path: Any, trust: bool = False, source: str = "config") -> None:
    """Refuse a ``class_path`` outside ``ALLOWED_PREFIXES`` before anything is imported.

    Raises:
        UntrustedConfigError: naming the class path, the file and the way to allow it.
    """
    if not isinstance(path, str):
        raise TypeError(f"{source}: class_path must be a dotted string; got {type(path).__name__} {path!r}.")
    if trust or _allowed(path):
        return
    raise UntrustedConfigError(
        f"{source}: refused class_path {path!r}: it is outside the packages a model folder may name "
        f"({', '.join(ALLOWED_PREFIXES)}), and building it could run arbitrary code. "
        "If you wrote this config or trust whoever did, load it with trust_config=True (CLI: --trust-config)."
    )


def _build(spec: dict[str, Any], root: str | Path | None, trust: bool, source: str) -> Any:
    path = spec["class_path"]
    check_class_path(path, trust, source)
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise TypeError(f"{source}: init_args of {path!r} must be an object; got {type(init_args).__name__}.")
    cls = import_path(path)
    if not trust:
        if not inspect.isclass(cls) or not _allowed(cls.__module__):
            what = "a class" if inspect.isclass(cls) else type(cls).__name__
            raise UntrustedConfigError(
                f"{source}: refused class_path {path!r}: it names {what} defined in "
                f"{getattr(cls, '__module__', '?')!r}, not a class of an allowed package. "
                "If you trust this config, load it with trust_config=True (CLI: --trust-config)."
            )
        if init_args.get("trust_remote_code"):
            raise UntrustedConfigError(
                f"{source}: {path!r} asks for trust_remote_code=True, which runs the checkpoint's own code. "
                "If you trust it, load with trust_config=True (CLI: --trust-config)."
            )
    kwargs = {k: instantiate(v, root, trust, source) for k, v in init_args.items()}
    return cls(**kwargs)


def instantiate(
    spec: Any, root: str | Path | None = None, trust: bool = False, source: str = "config"
) -> Any:
    """Build what a config describes: dicts with ``class_path`` become objects, recursively.

    Only classes of ``ALLOWED_PREFIXES`` are built unless ``trust`` is set: a model folder is data,
    and loading it must not run code it names.

    Args:
        spec: A ``{"class_path", "init_args"}`` dict, or any JSON value holding such dicts.
        root: The folder that ``{"asset": path}`` markers are relative to.
        trust: Build any importable callable the config names (only for configs you trust).
        source: Where the config came from, for error messages.

    Raises:
        UntrustedConfigError: a class path outside the allow-list, without ``trust``.
    """
    if isinstance(spec, dict):
        if set(spec) == {"asset"}:
            if root is None:
                raise ValueError(f"Config names an asset {spec['asset']!r} but no model folder was given.")
            asset = Path(root) / str(spec["asset"])
            if not asset.resolve().is_relative_to(Path(root).resolve()):
                raise UntrustedConfigError(
                    f"{source}: asset {spec['asset']!r} points outside the model folder {str(root)!r}; "
                    "assets must be files inside the folder."
                )
            return str(asset)
        if "class_path" in spec:
            return _build(spec, root, trust, source)
        return {k: instantiate(v, root, trust, source) for k, v in spec.items()}
    if isinstance(spec, list):
        return [instantiate(v, root, trust, source) for v in spec]
    return spec
