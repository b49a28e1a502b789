"""MONAI Label's local datastore, checking what a classification app stores in it."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import HTTPException
from monailabel.datastore.local import LocalDatastore

from lib.labels import LabelError, class_index, read_label_value

__all__ = ["ClassLabelDatastore"]


class ClassLabelDatastore(LocalDatastore):
    """A ``LocalDatastore`` whose labels are class labels of the served models.

    The datastore's own endpoints call it directly, so its answers to a bad request are HTTP
    errors that name what is wrong (``LocalDatastore`` raises exceptions that MONAI Label turns
    into a bare "500 Internal Server Error"):

    - ``save_label``, ``remove_image``, ``update_image_info`` for an image the datastore does not
      hold, ``update_label_info`` for a label it does not hold: 404;
    - a label file that is not ``{"label": <class name or index>}`` or names no class of any served
      model: 422, listing each model's valid names;
    - ``add_image`` of a file whose name matches none of the datastore's extensions
      (``MONAI_LABEL_DATASTORE_FILE_EXT``, the files it takes for images): 415.

    Args:
        datastore_path: the studies folder.
        classes: the served models' class names, ``{model: [name, ...]}``.
        aliases: each model's extra label spellings (``label_aliases``), ``{model: {alias: class}}``.
        kwargs: passed on to ``LocalDatastore`` (``extensions``, ``auto_reload``, ``read_only``).

    Example:
        >>> ClassLabelDatastore("studies", {"skin": ["mel", "nv"]}, {}, extensions=["*.jpg"])  # doctest: +SKIP
    """

    def __init__(
        self,
        datastore_path: str,
        classes: Mapping[str, Sequence[str]],
        aliases: Mapping[str, Mapping[str, str | int]],
        **kwargs: Any,
    ) -> None:
        super().__init__(datastore_path, **kwargs)
        self.classes = {model: list(names) for model, names in classes.items()}
        self.aliases = dict(aliases)

    def _valid_labels(self) -> str:
        return "; ".join(
            f"{model}: {', '.join(repr(n) for n in names)} or 0..{len(names) - 1}"
            for model, names in self.classes.items()
        )

    def _names_a_class(self, value: str | int, model: str) -> bool:
        try:
            class_index(value, self.classes[model], self.aliases.get(model))
        except LabelError:
            return False
        return True

    def _require_image(self, image_id: str) -> None:
        if image_id not in self._datastore.objects:
            raise HTTPException(
                status_code=404,
                detail=f"no image {image_id!r} in the datastore {self._datastore_path}; the ids are listed by "
                "GET /datastore/?output=all.",
            )

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        self._require_image(image_id)
        try:
            value = read_label_value(label_filename)
        except LabelError as error:
            raise HTTPException(status_code=422, detail=f"label for image {image_id!r}: {error}") from None
        if not any(self._names_a_class(value, model) for model in self.classes):
            raise HTTPException(
                status_code=422,
                detail=f"label for image {image_id!r}: {value!r} is no class of the served models; valid: "
                f"{self._valid_labels()}.",
            )
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        name = os.path.basename(image_filename)
        if not any(fnmatch.fnmatch(name, pattern) for pattern in self._extensions):
            extension = "".join(Path(name).suffixes) or "(no extension)"
            raise HTTPException(
                status_code=415,
                detail=f"image {image_id!r}: a {extension} file is not an image this datastore lists (extensions "
                f"{self._extensions}); set MONAI_LABEL_DATASTORE_FILE_EXT to add others.",
            )
        return super().add_image(image_id, image_filename, image_info)

    def remove_image(self, image_id: str) -> None:
        self._require_image(image_id)
        super().remove_image(image_id)

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        self._require_image(image_id)
        super().update_image_info(image_id, info)

    def update_label_info(self, label_id: str, label_tag: str, info: dict[str, Any]) -> None:
        if not self._datastore.label(label_id, label_tag):
            raise HTTPException(status_code=404, detail=f"no label of image {label_id!r} under tag {label_tag!r}.")
        super().update_label_info(label_id, label_tag, info)
