"""Transforms for colour fundus photographs."""

from __future__ import annotations

from .array import (
    FundusFieldOfViewCrop,
    FundusLocalAverageColor,
    circular_field_of_view_mask,
    fundus_field_of_view,
)
from .dictionary import (
    FundusFieldOfViewCropd,
    FundusFieldOfViewCropD,
    FundusFieldOfViewCropDict,
    FundusLocalAverageColord,
    FundusLocalAverageColorD,
    FundusLocalAverageColorDict,
)

__all__ = [
    "FundusFieldOfViewCrop",
    "FundusFieldOfViewCropD",
    "FundusFieldOfViewCropDict",
    "FundusFieldOfViewCropd",
    "FundusLocalAverageColor",
    "FundusLocalAverageColorD",
    "FundusLocalAverageColorDict",
    "FundusLocalAverageColord",
    "circular_field_of_view_mask",
    "fundus_field_of_view",
]
