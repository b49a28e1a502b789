"""monai-danil: Distractor-Aware Neuron Intrinsic Learning (DANIL) for MONAI."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
