"""Dictionary-based wrappers of :mod:`monai_danil.transforms.dermoscopy.array`.

Class names end with ``d`` (aliases ``D`` and ``Dict``), as in MONAI.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import MapTransform

from monai_danil.transforms.dermoscopy.array import HairRemoval, ShadesOfGray

__all__ = [
    "ShadesOfGrayd",
    "ShadesOfGrayD",
    "ShadesOfGrayDict",
    "HairRemovald",
    "HairRemovalD",
    "HairRemovalDict",
]


class ShadesOfGrayd(MapTransform):
    """Dictionary-based wrapper of :py:class:`monai_danil.transforms.ShadesOfGray`.

    Args:
        keys: keys of the corresponding items to be transformed.
            See also: :py:class:`monai.transforms.MapTransform`
        power: Minkowski norm ``p``; 1 is grey world. Defaults to 6.
        dtype: output data type; ``None`` keeps the input's. Defaults to float32.
        allow_missing_keys: don't raise exception if key is missing. Defaults to False.

    Raises:
        ValueError: when ``power`` is not a positive finite number.

    Example:
        >>> import numpy as np
        >>> out = ShadesOfGrayd(keys="image")({"image": np.full((3, 4, 4), 90.0)})
        >>> float(out["image"].max())
        90.0
    """

    backend = ShadesOfGray.backend

    def __init__(
        self,
        keys: KeysCollection,
        power: float = 6.0,
        dtype: DtypeLike | torch.dtype = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.corrector = ShadesOfGray(power, dtype)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.corrector(d[key])
        return d


class HairRemovald(MapTransform):
    """Dictionary-based wrapper of :py:class:`monai_danil.transforms.HairRemoval`.

    Args:
        keys: keys of the corresponding items to be transformed.
            See also: :py:class:`monai.transforms.MapTransform`
        kernel_size: side of the square closing element, in pixels. Defaults to 7 (HAM10000 at
            200x150).
        threshold: black-hat response, in grey levels, above which a pixel is hair. Defaults to 25.
        min_area: smallest connected component, in pixels, kept as hair. Defaults to 50.
        dtype: output data type; ``None`` keeps the input's. Defaults to float32.
        allow_missing_keys: don't raise exception if key is missing. Defaults to False.

    Raises:
        ValueError: when ``kernel_size`` is below 2.

    Example:
        >>> import numpy as np
        >>> img = np.full((3, 40, 40), 200.0); img[:, 20, 5:35] = 30
        >>> round(float(HairRemovald(keys="image", min_area=20)({"image": img})["image"].min()), 3)
        200.0
    """

    backend = HairRemoval.backend

    def __init__(
        self,
        keys: KeysCollection,
        kernel_size: int = 7,
        threshold: float = 25.0,
        min_area: int = 50,
        dtype: DtypeLike | torch.dtype = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.remover = HairRemoval(kernel_size, threshold, min_area, dtype)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.remover(d[key])
        return d


ShadesOfGrayD = ShadesOfGrayDict = ShadesOfGrayd
HairRemovalD = HairRemovalDict = HairRemovald
