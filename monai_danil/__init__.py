"""monai-danil: Distractor-Aware Neuron Intrinsic Learning (DANIL) for MONAI."""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.2.0"

_SUBMODULES = ("bundle", "data", "handlers", "losses", "metrics", "mining", "networks", "optimizers", "predict", "transforms")

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str) -> ModuleType:
    # submodules load on first use, so `import monai_danil` in a bundle config stays cheap and
    # `monai_danil.handlers...` works in its expressions without importing each one by name
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
