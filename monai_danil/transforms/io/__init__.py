"""Loading: any 2D picture file (PNG, JPEG, BMP, TIFF, DICOM, NIfTI) as a channel-first RGB image."""

from __future__ import annotations

from .array import BadImageError, LoadRGBImage, image_format
from .dictionary import LoadRGBImaged, LoadRGBImageD, LoadRGBImageDict

__all__ = [
    "BadImageError",
    "LoadRGBImage",
    "LoadRGBImageD",
    "LoadRGBImageDict",
    "LoadRGBImaged",
    "image_format",
]
