"""Image files: which extensions the bundles read, and inference datalists from a folder or a manifest.

:data:`IMAGE_EXTENSIONS` is the one list of image file extensions the package looks for (folder
inference, class-per-folder conversion); a new format is added there. :func:`image_datalist` turns
what a user points inference at, a folder of images or a manifest whose ``label`` column is
optional, into a MONAI datalist.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .manifest import MANIFEST_NAME, manifest_columns, read_manifest

__all__ = ["IMAGE_EXTENSIONS", "IMAGE_FORMATS", "find_images", "image_datalist", "image_suffix"]

IMAGE_FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".dcm": "DICOM",
    ".dicom": "DICOM",
    ".nii": "NIfTI",
    ".nii.gz": "NIfTI",
}
"""Lower-case extensions of the images the bundles read, and the format each names (what
:class:`~monai_danil.transforms.LoadRGBImage` checks the content against). DICOM files often have no
extension: the loading transform reads those by content."""

IMAGE_EXTENSIONS: tuple[str, ...] = tuple(IMAGE_FORMATS)
"""The keys of :data:`IMAGE_FORMATS`: the extensions looked for (compared case-insensitively)."""


def image_suffix(path: str | os.PathLike[str]) -> str:
    """The lower-case extension of ``path`` as :data:`IMAGE_FORMATS` spells it (``".nii.gz"`` is one).

    Example:
        >>> image_suffix("scan.NII.GZ"), image_suffix("a/b.png"), image_suffix("IM0001")
        ('.nii.gz', '.png', '')
    """
    name = os.path.basename(os.fspath(path)).lower()
    return ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]


def find_images(folder: str | os.PathLike[str], extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Every image file under ``folder``, recursively, in sorted path order.

    Hidden files and anything inside hidden folders (names starting with ``.``) are skipped, as
    are files of other extensions.

    Args:
        folder: the folder to search.
        extensions: the file extensions to keep, compared case-insensitively. Default
            :data:`IMAGE_EXTENSIONS`.

    Returns:
        The image paths, sorted.

    Raises:
        FileNotFoundError: when ``folder`` is not a folder.

    Example:
        >>> find_images("../shared/data/retina/images")[:1]  # doctest: +SKIP
        [PosixPath('../shared/data/retina/images/train/train_0000.png')]
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}.")
    kept = {ext.lower() for ext in extensions}
    return sorted(
        path
        for path in root.rglob("*")
        if image_suffix(path) in kept
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )


def image_datalist(
    dataset_dir: str | os.PathLike[str],
    split: str | None = None,
    class_names: Sequence[str] | None = None,
    label_aliases: Mapping[str, str | int] | None = None,
) -> list[dict]:
    """The images to run inference on: a manifest's rows, or every image found in a folder.

    - ``dataset_dir`` is a manifest CSV, or a folder holding ``manifest.csv``: its rows, read by
      :func:`~monai_danil.data.read_manifest`, of ``split`` when the manifest has a ``split`` column
      (all rows when it has none); the ``label`` column is optional (when present, every label is
      checked as in training).
    - ``dataset_dir`` is a folder without ``manifest.csv``: every image under it, recursively
      (:func:`find_images`); ``split`` is ignored.

    Args:
        dataset_dir: a manifest CSV, or a folder with or without ``manifest.csv``.
        split: the manifest split to keep, where the manifest has a ``split`` column; default
            ``None``: every row.
        class_names: class names, index = class number, to read labels. Default ``None``.
        label_aliases: extra label spellings. Default ``None``.

    Returns:
        One dict per image, in manifest or sorted path order: ``{"image": absolute path,
        "id": 0-based row or file index, "relative_path": the path as the manifest lists it or as
        found under the folder}``, plus ``"label"`` (class number) where the manifest has labels.

    Raises:
        FileNotFoundError: when ``dataset_dir`` does not exist, or a listed image is missing.
        ValueError: when a folder holds no image, or the manifest is invalid (see ``read_manifest``).

    Example:
        >>> image_datalist("photos/")[0]  # doctest: +SKIP
        {'image': '/data/photos/a/001.jpg', 'id': 0, 'relative_path': 'a/001.jpg'}
    """
    path = Path(dataset_dir)
    if not path.exists():
        raise FileNotFoundError(f"dataset_dir not found: {path} (expected a folder of images or a manifest CSV).")
    if path.is_file() or (path / MANIFEST_NAME).is_file():
        if "split" not in manifest_columns(path):
            split = None
        return read_manifest(path, split, class_names, label_aliases, label_required=False, columns=("relative_path",))
    images = find_images(path)
    if not images:
        raise ValueError(
            f"{path}: no image found (looked recursively for {', '.join(IMAGE_EXTENSIONS)}) and no {MANIFEST_NAME}."
        )
    return [
        {"image": str(image.resolve()), "id": index, "relative_path": image.relative_to(path).as_posix()}
        for index, image in enumerate(images)
    ]
