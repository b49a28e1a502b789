"""Transforms for H&E histology tiles."""

from __future__ import annotations

from .array import HEStainNormalize, extractor_reports_eosin_first
from .dictionary import HEStainNormalized, HEStainNormalizeD, HEStainNormalizeDict

__all__ = [
    "HEStainNormalize",
    "HEStainNormalizeD",
    "HEStainNormalizeDict",
    "HEStainNormalized",
    "extractor_reports_eosin_first",
]
