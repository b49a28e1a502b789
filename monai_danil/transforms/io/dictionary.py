"""Dictionary-based wrapper of :mod:`monai_danil.transforms.io.array`.

Class names end with ``d`` (aliases ``D`` and ``Dict``), as in MONAI.
"""

from __future__ import annotations

import csv
import logging
import os
import threading
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection
from monai.transforms import MapTransform
from monai.utils import str2bool

from monai_danil.transforms.io.array import BadImageError, LoadRGBImage

__all__ = ["LoadRGBImaged", "LoadRGBImageD", "LoadRGBImageDict"]

logger = logging.getLogger(__name__)

#: Columns of the report of skipped images.
REPORT_COLUMNS = ("origin", "image", "reason")
# CacheDataset fills its cache from a thread pool; a module-level lock keeps the transform
# picklable and copyable (DataLoader workers, deepcopy), which an instance lock would not
_REPORT_LOCK = threading.Lock()


class LoadRGBImaged(MapTransform):
    """Dictionary-based wrapper of :py:class:`monai_danil.transforms.LoadRGBImage`.

    A bad image raises :class:`~monai_danil.transforms.io.array.BadImageError` with the item's
    origin in front of the file and the reason: ``"<manifest>, line <n>: <path>: <reason>"``
    (:func:`monai_danil.data.read_manifest` writes the origin; items without one, such as MONAI
    Label's, name the file alone). In a ``CacheDataset`` that happens while the dataset is built,
    before any training step; in a plain ``Dataset`` when the item is loaded.

    With ``skip_bad_images``, a bad image is logged as a warning, listed in ``report_file`` and left
    out instead: every item then becomes a list of zero or one dictionary, as MONAI's multi-sample
    transforms (``RandCropByPosNegLabeld``) return lists. ``Compose`` applies the transforms that
    follow to each element, and the default collate (``list_data_collate``) flattens the lists, so
    the batch holding a bad image is one sample short (and the dataset's length still counts it).

    Args:
        keys: keys of the image paths to load.
            See also: :py:class:`monai.transforms.MapTransform`
        origin_key: key of the item's origin, prefixed to error messages when present.
            Defaults to ``"origin"``. ``None``: never.
        skip_bad_images: leave bad images out instead of raising (see above). A bool, or a string
            such as ``"true"``/``"false"`` as the command line passes it. Defaults to False.
        report_file: CSV file (``origin,image,reason``) the skipped images are listed in; written
            anew, with its header, when the transform is created with ``skip_bad_images``, then one
            row per skipped image. Defaults to None: not written.
        dtype: data type of the loaded images. Defaults to ``np.float32``.
        allow_missing_keys: don't raise exception if key is missing. Defaults to False.

    Raises:
        BadImageError: when an image cannot be loaded and ``skip_bad_images`` is False.
        ValueError: when ``skip_bad_images`` is a string that is no boolean.

    Example:
        >>> load = LoadRGBImaged(keys="image")
        >>> item = {"image": "../shared/data/retina/images/train/train_0000.png", "origin": "manifest.csv, line 2"}
        >>> load(item)["image"].shape  # doctest: +SKIP
        torch.Size([3, 28, 28])
    """

    def __init__(
        self,
        keys: KeysCollection,
        origin_key: Hashable | None = "origin",
        skip_bad_images: bool | str = False,
        report_file: str | os.PathLike[str] | None = None,
        dtype: DtypeLike | torch.dtype = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadRGBImage(dtype)
        self.origin_key = origin_key
        self.skip_bad_images = str2bool(skip_bad_images)
        self.report_file = os.fspath(report_file) if report_file is not None else None
        if self.skip_bad_images and self.report_file is not None:
            os.makedirs(os.path.dirname(os.path.abspath(self.report_file)), exist_ok=True)
            with open(self.report_file, "w", newline="", encoding="utf-8") as handle:
                csv.writer(handle, lineterminator="\n").writerow(REPORT_COLUMNS)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any] | list[dict[Hashable, Any]]:
        d = dict(data)
        origin = d.get(self.origin_key) if self.origin_key is not None else None
        try:
            for key in self.key_iterator(d):
                d[key] = self.loader(d[key])
        except BadImageError as error:
            error = error.with_origin(str(origin) if origin is not None else None)
            if not self.skip_bad_images:
                raise error from None
            self._report(error)
            return []
        return [d] if self.skip_bad_images else d

    def _report(self, error: BadImageError) -> None:
        logger.warning("skipping a bad image: %s", error)
        if self.report_file is None:
            return
        with _REPORT_LOCK, open(self.report_file, "a", newline="", encoding="utf-8") as handle:
            csv.writer(handle, lineterminator="\n").writerow([error.origin or "", error.path, error.reason])


LoadRGBImageD = LoadRGBImageDict = LoadRGBImaged
