"""Helpers shared by the colour transforms of every domain."""

from __future__ import annotations

import numpy as np
import torch
from monai.config import DtypeLike
from monai.config.type_definitions import NdarrayOrTensor
from monai.utils import convert_to_dst_type, get_equivalent_dtype

__all__ = ["convert_intensity_to_dst"]


def convert_intensity_to_dst(
    out: NdarrayOrTensor, dst: NdarrayOrTensor, dtype: DtypeLike | torch.dtype | None
) -> NdarrayOrTensor:
    """Return ``out`` (intensities in [0, 255]) as the container type of ``dst`` in ``dtype``.

    Args:
        out: the computed image, numpy array or torch tensor, values already clipped to [0, 255].
        dst: the transform's input: its type (numpy, torch, MetaTensor with its metadata) and device
            are kept.
        dtype: output data type; ``None`` keeps ``dst``'s dtype. Integer types are rounded to the
            nearest value first, because a plain cast truncates and would darken every pixel by half
            a grey level on average.

    Returns:
        ``out`` converted to the type, device and dtype requested.

    Example:
        >>> import numpy as np, torch
        >>> convert_intensity_to_dst(np.array([[[1.6]]]), torch.zeros(1, 1, 1, dtype=torch.uint8), None)
        tensor([[[2]]], dtype=torch.uint8)
    """
    target = dtype if dtype is not None else dst.dtype
    if not np.issubdtype(get_equivalent_dtype(target, np.ndarray), np.floating):
        out = out.round()
    converted, *_ = convert_to_dst_type(out, dst=dst, dtype=target)
    return converted
