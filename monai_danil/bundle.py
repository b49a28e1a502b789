"""Helpers for the configuration of this project's MONAI bundles."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

__all__ = ["bundle_root"]


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
