"""Dictionary-based wrappers of :mod:`monai_danil.transforms.histology.array`.

Class names end with ``d`` (aliases ``D`` and ``Dict``), as in MONAI.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform

from monai_danil.transforms.histology.array import HEStainNormalize

__all__ = ["HEStainNormalized", "HEStainNormalizeD", "HEStainNormalizeDict"]


class HEStainNormalized(MapTransform):
    """Dictionary-based wrapper of :py:class:`monai_danil.transforms.HEStainNormalize`.

    Args:
        keys: keys of the corresponding items to be transformed.
            See also: :py:class:`monai.transforms.MapTransform`
        tli: transmitted light intensity. Defaults to 240.
        alpha: tolerance in percentile for the pseudo-min and pseudo-max stain angles. Defaults to 1.
        beta: absorbance threshold for transparent pixels. Defaults to 0.15.
        target_he: target stain absorbance matrix, columns hematoxylin then eosin, rows RGB.
            Defaults to MONAI's (Macenko's) reference.
        max_cref: reference maximum stain concentrations for H and E. Defaults to (1.9705, 1.0308).
        dtype: output data type; ``None`` keeps the input's. Defaults to float32.
        allow_missing_keys: don't raise exception if key is missing. Defaults to False.

    Raises:
        ValueError: (on call) when an image is not ``(3, H, W)`` or has values outside [0, 255].

    Example:
        >>> import numpy as np
        >>> out = HEStainNormalized(keys="image")({"image": np.full((3, 28, 28), 235.0)})
        >>> out["image"].shape
        (3, 28, 28)
    """

    backend = HEStainNormalize.backend

    def __init__(
        self,
        keys: KeysCollection,
        tli: float = 240,
        alpha: float = 1,
        beta: float = 0.15,
        target_he: tuple | np.ndarray = ((0.5626, 0.2159), (0.7201, 0.8012), (0.4062, 0.5581)),
        max_cref: tuple | np.ndarray = (1.9705, 1.0308),
        dtype: DtypeLike | torch.dtype = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalizer = HEStainNormalize(tli, alpha, beta, target_he, max_cref, dtype)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalizer(d[key])
        return d


HEStainNormalizeD = HEStainNormalizeDict = HEStainNormalized
