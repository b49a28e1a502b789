"""Dictionary-based wrappers of :mod:`monai_danil.transforms.fundus.array`.

Class names end with ``d`` (aliases ``D`` and ``Dict``), as in MONAI.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform

from monai_danil.transforms.fundus.array import FundusFieldOfViewCrop, FundusLocalAverageColor

__all__ = [
    "FundusFieldOfViewCropd",
    "FundusFieldOfViewCropD",
    "FundusFieldOfViewCropDict",
    "FundusLocalAverageColord",
    "FundusLocalAverageColorD",
    "FundusLocalAverageColorDict",
]


class FundusFieldOfViewCropd(MapTransform, InvertibleTransform):
    """Dictionary-based wrapper of :py:class:`monai_danil.transforms.FundusFieldOfViewCrop`.

    The box is found once, on ``source_key``, and every key is cropped with it, so a vessel or
    lesion mask stays aligned with its photograph.

    Args:
        keys: keys of the corresponding items to be transformed.
            See also: :py:class:`monai.transforms.MapTransform`
        source_key: key of the photograph the field of view is found on. Defaults to None: the
            first of ``keys`` present in the data.
        threshold: grey level (of [0, 255]) above which a pixel is field of view. Defaults to 10.
        channel_reduction: ``"max"`` or ``"mean"`` over channels before thresholding. Defaults to
            ``"max"``.
        mask_outside: also set the corners outside the circular field of view to 0. Defaults to False.
        allow_missing_keys: don't raise exception if key is missing. Defaults to False.

    Raises:
        ValueError: when ``channel_reduction`` is neither ``"max"`` nor ``"mean"``.

    Example:
        >>> import numpy as np
        >>> from skimage.data import retina
        >>> data = {"image": retina().transpose(2, 0, 1)}
        >>> FundusFieldOfViewCropd(keys="image")(data)["image"].shape
        (3, 1398, 1396)
    """

    backend = FundusFieldOfViewCrop.backend

    def __init__(
        self,
        keys: KeysCollection,
        source_key: Hashable | None = None,
        threshold: float = 10.0,
        channel_reduction: str = "max",
        mask_outside: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source_key = source_key
        self.cropper = FundusFieldOfViewCrop(threshold, channel_reduction, mask_outside)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        source = self.source_key if self.source_key is not None else self.first_key(d)
        if source == []:  # first_key's answer when allow_missing_keys and no key is present
            return d
        box = self.cropper.compute_bounding_box(d[source])
        for key in self.key_iterator(d):
            d[key] = self.cropper.crop(d[key], box)
        return d

    def inverse(self, data: Mapping[Hashable, MetaTensor]) -> dict[Hashable, MetaTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.cropper.inverse(d[key])
        return d


class FundusLocalAverageColord(MapTransform):
    """Dictionary-based wrapper of :py:class:`monai_danil.transforms.FundusLocalAverageColor`.

    Args:
        keys: keys of the corresponding items to be transformed.
            See also: :py:class:`monai.transforms.MapTransform`
        alpha: contrast gain. Defaults to 4.
        beta: the grey level the local average maps to. Defaults to 128.
        sigma_fraction: Gaussian sigma as a fraction of the field of view's diameter. Defaults to 1/60.
        mask_fov: set the pixels outside ``fov_radius_scale`` times the disc's radius to ``beta``.
            Defaults to True.
        fov_radius_scale: fraction of the disc's radius kept by ``mask_fov``. Defaults to 0.9.
        fov_threshold: grey level above which a pixel is field of view. Defaults to 10.
        channel_reduction: ``"max"`` or ``"mean"`` over channels before thresholding. Defaults to
            ``"max"``.
        dtype: output data type; ``None`` keeps the input's. Defaults to float32.
        allow_missing_keys: don't raise exception if key is missing. Defaults to False.

    Raises:
        ValueError: as :py:class:`monai_danil.transforms.FundusLocalAverageColor`.

    Example:
        >>> from skimage.data import retina
        >>> out = FundusLocalAverageColord(keys="image")({"image": retina().transpose(2, 0, 1)})
        >>> out["image"].shape
        (3, 1411, 1411)
    """

    backend = FundusLocalAverageColor.backend

    def __init__(
        self,
        keys: KeysCollection,
        alpha: float = 4.0,
        beta: float = 128.0,
        sigma_fraction: float = 1 / 60,
        mask_fov: bool = True,
        fov_radius_scale: float = 0.9,
        fov_threshold: float = 10.0,
        channel_reduction: str = "max",
        dtype: DtypeLike | torch.dtype = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalizer = FundusLocalAverageColor(
            alpha, beta, sigma_fraction, mask_fov, fov_radius_scale, fov_threshold, channel_reduction, dtype
        )

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalizer(d[key])
        return d


FundusFieldOfViewCropD = FundusFieldOfViewCropDict = FundusFieldOfViewCropd
FundusLocalAverageColorD = FundusLocalAverageColorDict = FundusLocalAverageColord
