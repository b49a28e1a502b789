"""Helpers for the configuration of this project's MONAI bundles."""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["bundle_root", "class_names", "flag"]

META_FILE = os.path.join("configs", "metadata.json")


def _root_of(config_root_path: Path) -> Path:
    # the rule ConfigWorkflow.run applies: configs/ sits inside the bundle, a top-level config beside it
    return config_root_path.parent if config_root_path.name == "configs" else config_root_path


def bundle_root() -> str:
    """The absolute path of the bundle whose config is being run.

    A bundle config cannot name its own location, yet its outputs (``models/``, ``logs/``) must land
    in the bundle whether ``python -m monai.bundle run`` is started from the repository root
    (``--config_file bundles/retina/train.json``) or from inside the bundle
    (``--config_file configs/train.json``). This reads the folder of the config file from the
    running ``ConfigWorkflow`` (the caller of the expression ``$monai_danil.bundle.bundle_root()``),
    applying MONAI's own rule: the parent of a ``configs`` folder, else the config's folder.
    Outside a workflow (a config parsed by hand) it is the current directory. A ``bundle_root``
    override (MONAI Label passes one) replaces the expression altogether.

    Returns:
        The bundle folder as an absolute path string.
    """
    from monai.bundle.workflows import ConfigWorkflow

    frame = inspect.currentframe()
    try:
        while frame is not None:
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, ConfigWorkflow):
                return str(_root_of(Path(candidate.config_root_path)).resolve())
            frame = frame.f_back
    finally:
        del frame
    return os.getcwd()


def _channel_names(meta: Mapping[str, Any], source: str) -> list[str]:
    try:
        channels = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    except (KeyError, TypeError):
        raise ValueError(f"{source} has no network_data_format#outputs#pred#channel_def naming the classes.") from None
    if not isinstance(channels, Mapping) or not channels:
        raise ValueError(f"{source}: network_data_format#outputs#pred#channel_def is {channels!r}; expected a "
                         "non-empty mapping of output channel to class name.")
    try:
        order = sorted(channels, key=int)
    except ValueError:
        raise ValueError(f"{source}: channel_def keys {list(channels)} must be the channel numbers 0..C-1.") from None
    if [int(k) for k in order] != list(range(len(order))):
        raise ValueError(f"{source}: channel_def keys {list(channels)} must be the channel numbers 0..C-1.")
    return [str(channels[k]) for k in order]


def class_names(meta: Mapping[str, Any] | None, root: str | os.PathLike | None = None) -> list[str]:
    """The bundle's class names, in output-channel order, from the one place they are defined.

    The names are the metadata's ``network_data_format#outputs#pred#channel_def``. ``python -m
    monai.bundle run --meta_file ...`` and ``ConfigWorkflow`` load the metadata as ``_meta_``; MONAI
    Label parses ``inference.json`` with a plain ``ConfigParser`` and no metadata (``_meta_`` is empty),
    but sets ``bundle_root``, so the names are then read from ``<bundle_root>/configs/metadata.json``.
    A bundle config uses ``"class_names": "$monai_danil.bundle.class_names(@_meta_, @bundle_root)"``.

    Args:
        meta: the loaded metadata (``@_meta_``); empty or ``None`` when none was loaded.
        root: the bundle folder, used when ``meta`` has no class names. Default ``None``: none.

    Returns:
        The class names, index = class number.

    Raises:
        FileNotFoundError: when no metadata was loaded and ``root`` holds no ``configs/metadata.json``.
        ValueError: when the metadata does not name the classes as ``channel_def`` ``{"0": name, ...}``.

    Example:
        >>> class_names({"network_data_format": {"outputs": {"pred": {"channel_def": {"0": "no DR", "1": "mild"}}}}})
        ['no DR', 'mild']
    """
    if meta:
        return _channel_names(meta, "the bundle metadata")
    if root is None:
        raise FileNotFoundError("no bundle metadata was loaded and no bundle root was given to read it from.")
    path = Path(root) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no bundle metadata was loaded (--meta_file) and {path} does not exist: the class names are "
            "defined there."
        )
    return _channel_names(json.loads(path.read_text(encoding="utf-8")), str(path))


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def flag(value: bool | int | str, name: str = "value") -> bool:
    """A yes/no bundle option as a ``bool``, however the command line spelt it.

    ``python -m monai.bundle run ... --save_gradcam true`` passes the string ``"true"`` (``fire`` reads
    only ``True`` as a boolean), and ``not "false"`` is ``False`` in Python: a config must not test
    such a value directly. This accepts booleans, 0 and 1, and the strings true/false, 1/0, yes/no,
    on/off in any case.

    Args:
        value: the option's value.
        name: the option's name, for the error message. Default ``"value"``.

    Returns:
        The option as a ``bool``.

    Raises:
        ValueError: for anything else, naming the option and the value.

    Example:
        >>> flag("true"), flag(False), flag("OFF")
        (True, False, False)
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be true or false, got {value!r}.")
