"""Transforms for dermoscopy images."""

from __future__ import annotations

from .array import HairRemoval, ShadesOfGray, dullrazor_hair_mask, shades_of_gray_illuminant
from .dictionary import (
    HairRemovald,
    HairRemovalD,
    HairRemovalDict,
    ShadesOfGrayd,
    ShadesOfGrayD,
    ShadesOfGrayDict,
)

__all__ = [
    "HairRemoval",
    "HairRemovalD",
    "HairRemovalDict",
    "HairRemovald",
    "ShadesOfGray",
    "ShadesOfGrayD",
    "ShadesOfGrayDict",
    "ShadesOfGrayd",
    "dullrazor_hair_mask",
    "shades_of_gray_illuminant",
]
