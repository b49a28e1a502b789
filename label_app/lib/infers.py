"""A bundle of this project served by MONAI Label as a classifier."""

from __future__ import annotations

import os
from typing import Any

from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask
from monai_danil.bundle import class_names

from lib.bundles import is_trained

__all__ = ["ImageError", "ClassificationInferTask"]


class ImageError(ValueError):
    """An image that the bundle's preprocessing cannot read or prepare."""


class ClassificationInferTask(BundleInferTask):
    """Every class with its probability, named exactly as in the bundle's metadata.

    MONAI Label 0.8.5 takes a bundle for segmentation unless its folder name says
    "classification", appends a ``Restored`` post-transform (which needs a label image), and
    lower-cases the metadata's class names while dropping one called "background" (a segmentation
    convention; pathology has a tissue class of that name). This task sets the type, leaves
    ``Restored`` out and keeps the names as the metadata spells them, so that
    ``{"prediction": [{"idx", "label", "score"}, ...], "label_names": {name: idx}}`` lists every
    class. Pre-processing, inferer and post-processing are the bundle's ``inference.json``.

    Args:
        path: the bundle folder MONAI Label serves (the app's working copy).
        conf: the server's ``--conf`` settings.
        kwargs: passed on to ``BundleInferTask``.

    Example:
        >>> task = ClassificationInferTask("studies/model/skin", {})  # doctest: +SKIP
        >>> task({"image": "studies/ISIC_0024306.jpg", "device": "cpu"})[1]["prediction"][0]  # doctest: +SKIP
        {'idx': 0, 'label': 'akiec', 'score': 0.13...}
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        # strict: weights that do not fit the bundle's network must fail, not load half
        super().__init__(
            path, conf, type=InferType.CLASSIFICATION, add_post_restore=False, load_strict=True, **kwargs
        )
        self.labels = {name: index for index, name in enumerate(class_names(None, path))}

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["trained"] = is_trained(self.bundle_path)
        if not info["trained"]:
            info["description"] = (
                "UNTRAINED: no training has run on this server's labels yet, so the scores are those of a "
                f"randomly initialised network. {info['description']}"
            )
        return info

    def run_pre_transforms(self, data: dict[str, Any], transforms: Any) -> dict[str, Any]:
        try:
            return super().run_pre_transforms(data, transforms)
        except Exception as error:  # whatever the bundle's loader raises; MONAI's message runs on with tracebacks
            image = data.get("image_path", data.get("image"))
            raise ImageError(
                f"image {image}: the {os.path.basename(self.bundle_path)} bundle's preprocessing cannot "
                f"read it as an image ({type(error).__name__}: {str(error).strip().splitlines()[0]})"
            ) from error
