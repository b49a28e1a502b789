"""MONAI transforms for the three image domains of the bundles: fundus, dermoscopy, histology.

``LoadRGBImaged`` loads every bundle's images, whatever their format (PNG, JPEG, BMP, TIFF, DICOM,
NIfTI), as channel-first RGB in [0, 255]. Every other transform takes channel-first ``(C, H, W)``
RGB images with values in [0, 255], as numpy arrays or torch tensors (MetaTensor too), and returns
the same type. Each has a dictionary version (suffix ``d``, aliases ``D`` and ``Dict``), as in
MONAI.
"""

from __future__ import annotations

from .dermoscopy import (
    HairRemoval,
    HairRemovald,
    HairRemovalD,
    HairRemovalDict,
    ShadesOfGray,
    ShadesOfGrayd,
    ShadesOfGrayD,
    ShadesOfGrayDict,
    dullrazor_hair_mask,
    shades_of_gray_illuminant,
)
from .fundus import (
    FundusFieldOfViewCrop,
    FundusFieldOfViewCropd,
    FundusFieldOfViewCropD,
    FundusFieldOfViewCropDict,
    FundusLocalAverageColor,
    FundusLocalAverageColord,
    FundusLocalAverageColorD,
    FundusLocalAverageColorDict,
    circular_field_of_view_mask,
    fundus_field_of_view,
)
from .io import (
    BadImageError,
    LoadRGBImage,
    LoadRGBImaged,
    LoadRGBImageD,
    LoadRGBImageDict,
    image_format,
)
from .histology import (
    HEStainNormalize,
    HEStainNormalized,
    HEStainNormalizeD,
    HEStainNormalizeDict,
    extractor_reports_eosin_first,
)

__all__ = [
    "BadImageError",
    "LoadRGBImage",
    "LoadRGBImageD",
    "LoadRGBImageDict",
    "LoadRGBImaged",
    "FundusFieldOfViewCrop",
    "FundusFieldOfViewCropD",
    "FundusFieldOfViewCropDict",
    "FundusFieldOfViewCropd",
    "FundusLocalAverageColor",
    "FundusLocalAverageColorD",
    "FundusLocalAverageColorDict",
    "FundusLocalAverageColord",
    "HEStainNormalize",
    "HEStainNormalizeD",
    "HEStainNormalizeDict",
    "HEStainNormalized",
    "HairRemoval",
    "HairRemovalD",
    "HairRemovalDict",
    "HairRemovald",
    "ShadesOfGray",
    "ShadesOfGrayD",
    "ShadesOfGrayDict",
    "ShadesOfGrayd",
    "circular_field_of_view_mask",
    "dullrazor_hair_mask",
    "extractor_reports_eosin_first",
    "fundus_field_of_view",
    "image_format",
    "shades_of_gray_illuminant",
]
