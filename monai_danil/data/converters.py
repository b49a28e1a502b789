"""Converters from the layouts public datasets ship in to a ``manifest.csv`` that :func:`read_manifest` reads.

Every converter writes only under ``out_dir``: ``out_dir/manifest.csv`` with the columns
``relative_path,label,split`` plus a few useful extra ones, built in a temporary sibling folder and
moved into place only when everything checked out (:func:`atomic_output_dir`).

Where the input is image files (HAM10000, ISIC 2018, APTOS 2019, class-per-folder trees) the
images are NOT copied, so a 10,000-image download is not duplicated: ``relative_path`` holds each
image's path relative to ``out_dir`` (``../downloads/HAM10000_images_part_1/ISIC_0024306.jpg``), so
the download and the output folder may move together, but moving one of them alone means
converting again. Where the input is not image files (a MedMNIST ``.npz``) the images are written
as PNG under ``out_dir/images/``, so that folder is self-contained.

Every image is decoded first (with PIL; DICOM and NIfTI with the bundles' loading transform,
:class:`~monai_danil.transforms.LoadRGBImage`), and bad input (a missing or unreadable image, an
unknown label, a duplicated id) stops the conversion with an error naming the file and row (line
number as an editor shows it, header = line 1), leaving nothing at ``out_dir``.
"""

from __future__ import annotations

import csv
import os
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .images import IMAGE_EXTENSIONS, IMAGE_FORMATS, image_suffix
from .atomic import _check_output_free, atomic_output_dir
from .manifest import MANIFEST_NAME, to_class_index, write_manifest
from .splits import stratified_split

__all__ = [
    "HAM10000_CLASSES",
    "ISIC2018_COLUMNS",
    "APTOS2019_GRADES",
    "convert_ham10000",
    "convert_isic2018",
    "convert_aptos2019",
    "convert_medmnist",
    "convert_folders",
]

#: HAM10000 ``dx`` codes, the labels written by the skin converters (alphabetical; no order is implied).
HAM10000_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
#: ISIC 2018 Task 3 ground-truth columns, mapped to the HAM10000 ``dx`` code written to the manifest.
ISIC2018_COLUMNS = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AKIEC": "akiec", "BKL": "bkl", "DF": "df", "VASC": "vasc"}
#: APTOS 2019 ``diagnosis`` grades 0..4 (International Clinical DR severity scale).
APTOS2019_GRADES = ("no DR", "mild", "moderate", "severe", "proliferative DR")

_PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
_MEDMNIST_SPLITS = ("train", "val", "test")

PathLike = str | os.PathLike[str]


def _check_image(path: Path, where: str) -> None:
    """Decode ``path``, so a corrupt or truncated file fails here, not mid-training.

    Pillow's formats are decoded with Pillow, which keeps MONAI out of the converters' start-up
    (seconds); DICOM and NIfTI files with the bundles' own loading transform, which reads them.
    """
    suffix = image_suffix(path)
    if not suffix or IMAGE_FORMATS.get(suffix) in ("DICOM", "NIfTI"):
        from monai_danil.transforms.io.array import BadImageError, LoadRGBImage

        try:
            LoadRGBImage().verify(path)
        except BadImageError as err:
            raise ValueError(f"{where}: cannot read image {err}") from None
        return
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"{where}: cannot read image {path}: {err}") from None


def _is_folder_image(path: Path) -> bool:
    """A file ``folders`` takes: by its extension, or a DICOM file without one (as archives export them)."""
    if image_suffix(path) in IMAGE_EXTENSIONS:
        return True
    name = path.name.lower()
    if path.suffix or name == "dicomdir":  # DICOMDIR indexes a DICOM folder; it holds no image
        return False
    with open(path, "rb") as handle:
        return handle.read(132)[128:132] == b"DICM"


def _check_out_is_separate(out_dir: PathLike, inputs: Iterable[PathLike]) -> None:
    """Refuse an output that is, contains or sits inside an input folder (``overwrite`` would delete it)."""
    out = Path(out_dir).resolve()
    for item in inputs:
        path = Path(item).resolve()
        inside_input = path.is_dir() and (out == path or out.is_relative_to(path))
        if inside_input or path.is_relative_to(out):
            raise ValueError(
                f"output folder {out} overlaps the input {path}; a converter writes only under its "
                f"own output folder, so choose one outside the input."
            )


def _read_csv(path: PathLike, required: Sequence[str]) -> tuple[Path, list[str], list[tuple[int, dict[str, str]]]]:
    """Rows of a CSV with their line numbers; checks the file and the required columns exist."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV file not found: {path}.")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = header
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {', '.join(missing)}; found header {header}, "
                f"expected at least {', '.join(required)}."
            )
        rows = [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None}) for row in reader]
    if not rows:
        raise ValueError(f"{path}: no data rows after the header.")
    return path, header, rows


def _index_images(folders: Sequence[PathLike], suffixes: Sequence[str]) -> dict[str, Path]:
    """Map file stem -> path over ``folders`` (not recursive); a stem found twice is an error."""
    index: dict[str, Path] = {}
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder not found: {folder}.")
        for entry in sorted(folder.iterdir()):
            if entry.suffix.lower() not in suffixes or not entry.is_file():
                continue
            if entry.stem in index:
                raise ValueError(
                    f"image {entry.stem!r} found twice: {index[entry.stem]} and {entry}; expected one file per id."
                )
            index[entry.stem] = Path(os.path.abspath(entry))
    return index


def _find_image(index: dict[str, Path], image_id: str, where: str, folders: Sequence[PathLike]) -> Path:
    if image_id not in index:
        searched = ", ".join(str(f) for f in folders)
        raise FileNotFoundError(f"{where}: image {image_id!r} not found in {searched}.")
    return index[image_id]


def _check_unique(seen: dict[str, int], key: str, line: int, source: Path, what: str) -> None:
    if key in seen:
        raise ValueError(f"{source}, line {line}: duplicated {what} {key!r} (first on line {seen[key]}).")
    seen[key] = line


def _split_and_write(
    out_dir: PathLike,
    rows: list[dict],
    extra_columns: Sequence[str],
    overwrite: bool,
    val_fraction: float,
    seed: int,
    group_key: str | None = None,
) -> Path:
    """Give ``rows`` (``image`` paths, labels) their split and ``relative_path``, then write the manifest.

    The split is :func:`~monai_danil.data.splits.stratified_split` by label, grouped by the rows'
    ``group_key`` if given. Each path is made relative to the resolved ``out_dir`` (``read_manifest``
    resolves the manifest's folder too), the image's own path kept as given (links not followed).
    """
    groups = [row[group_key] for row in rows] if group_key is not None else None
    out = Path(out_dir).resolve()
    splits = stratified_split([row["label"] for row in rows], val_fraction, seed, groups=groups)
    for row, split in zip(rows, splits):
        row["split"] = split
        row["relative_path"] = Path(os.path.relpath(os.path.abspath(row.pop("image")), out)).as_posix()
    with atomic_output_dir(out_dir, overwrite=overwrite) as work:
        write_manifest(work / MANIFEST_NAME, rows, extra_columns)
    return Path(out_dir) / MANIFEST_NAME


def _check_before_work(out_dir: PathLike, overwrite: bool, val_fraction: float | None = None) -> None:
    # fail before minutes of image checks, not after them; atomic_output_dir checks the output again
    _check_output_free(out_dir, overwrite)
    if val_fraction is not None and not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction is {val_fraction}; expected a number strictly between 0 and 1.")


def convert_ham10000(
    images: PathLike | Sequence[PathLike],
    metadata: PathLike,
    out_dir: PathLike,
    val_fraction: float = 0.15,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Convert the HAM10000 download (image folders + ``HAM10000_metadata.csv``) to a manifest.

    Labels are the ``dx`` codes (:data:`HAM10000_CLASSES`). The split is grouped by ``lesion_id``:
    all images of a lesion land on the same side, and it is stratified by ``dx`` as far as the
    grouping allows (:func:`~monai_danil.data.splits.stratified_split`). Extra columns:
    ``image_id, lesion_id`` and ``dx_type`` when the metadata has it. Images are referenced by
    their path relative to ``out_dir``, not copied.

    Args:
        images: the folder(s) holding ``<image_id>.jpg`` (the download has two:
            ``HAM10000_images_part_1`` and ``_part_2``).
        metadata: ``HAM10000_metadata.csv`` (columns ``lesion_id, image_id, dx`` at least).
        out_dir: the output folder.
        val_fraction: share of each class in val. Default ``0.15``.
        seed: seed of the split. Default ``0``.
        overwrite: replace a non-empty ``out_dir``. Default ``False``.

    Returns:
        The path of the written ``manifest.csv``.

    Raises:
        FileNotFoundError: when the metadata, an image folder or a listed image is missing.
        ValueError: on an unknown ``dx``, an empty ``lesion_id``, a duplicated ``image_id``, an
            unreadable image (each names the metadata line or the file), or an output overlapping
            the input.
        FileExistsError: when ``out_dir`` is not empty and ``overwrite`` is ``False``.

    Example:
        >>> convert_ham10000(["HAM10000_images_part_1", "HAM10000_images_part_2"],
        ...                  "HAM10000_metadata.csv", "ham10000_manifest")  # doctest: +SKIP
    """
    folders = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    _check_out_is_separate(out_dir, [*folders, metadata])
    _check_before_work(out_dir, overwrite, val_fraction)
    source, header, table = _read_csv(metadata, ("lesion_id", "image_id", "dx"))
    index = _index_images(folders, _PHOTO_SUFFIXES)
    seen: dict[str, int] = {}
    rows = []
    for line, record in table:
        where = f"{source}, line {line}"
        image_id, lesion_id = record["image_id"], record["lesion_id"]
        _check_unique(seen, image_id, line, source, "image_id")
        if not lesion_id:
            raise ValueError(f"{where}: empty lesion_id for image {image_id!r}; the split groups images by lesion.")
        try:
            label = HAM10000_CLASSES[to_class_index(record["dx"], HAM10000_CLASSES)]
        except ValueError as err:
            raise ValueError(f"{where}: dx: {err}") from None
        path = _find_image(index, image_id, where, folders)
        _check_image(path, where)
        row = {"image": path, "label": label, "image_id": image_id, "lesion_id": lesion_id}
        row["dx_type"] = record.get("dx_type", "")
        rows.append(row)
    extra = ["image_id", "lesion_id"] + (["dx_type"] if "dx_type" in header else [])
    return _split_and_write(out_dir, rows, extra, overwrite, val_fraction, seed, group_key="lesion_id")


def _read_lesion_groupings(path: PathLike) -> dict[str, str]:
    source, header, table = _read_csv(path, ("lesion_id",))
    key = "image" if "image" in header else "image_id"
    if key not in header:
        raise ValueError(f"{source}: expected an 'image' or 'image_id' column next to 'lesion_id'; found {header}.")
    return {record[key]: record["lesion_id"] for _, record in table}


def convert_isic2018(
    images: PathLike,
    ground_truth: PathLike,
    out_dir: PathLike,
    val_fraction: float = 0.15,
    seed: int = 0,
    lesion_groupings: PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert ISIC 2018 Task 3 (image folder + one-hot ``GroundTruth.csv``) to a manifest.

    Each row's one-hot columns ``MEL,NV,BCC,AKIEC,BKL,DF,VASC`` must hold exactly one ``1`` (and
    ``0`` elsewhere); the label written is the HAM10000 ``dx`` code (``MEL`` -> ``mel``), so this
    manifest and :func:`convert_ham10000`'s share one label vocabulary. The split is stratified
    with ``seed``. ISIC 2018 Task 3 *is* HAM10000, with several images per lesion: pass
    ``lesion_groupings`` (``ISIC2018_Task3_Training_LesionGroupings.csv`` or
    ``HAM10000_metadata.csv``) to keep each lesion on one side; without it val shares lesions with
    train. Extra columns: ``image_id`` (and ``lesion_id`` with groupings). Images are referenced by
    their path relative to ``out_dir``, not copied.

    Args:
        images: the folder holding ``<image>.jpg``.
        ground_truth: ``ISIC2018_Task3_Training_GroundTruth.csv``.
        out_dir: the output folder.
        val_fraction: share of each class in val. Default ``0.15``.
        seed: seed of the split. Default ``0``.
        lesion_groupings: a CSV with ``lesion_id`` and ``image`` or ``image_id``. Default ``None``.
        overwrite: replace a non-empty ``out_dir``. Default ``False``.

    Returns:
        The path of the written ``manifest.csv``.

    Raises:
        FileNotFoundError: when an input file, the image folder or a listed image is missing.
        ValueError: on a row without exactly one ``1``, a value that is not a number, a duplicated
            image, an image absent from ``lesion_groupings``, an unreadable image (each names the
            line or file), or an output overlapping the input.
        FileExistsError: when ``out_dir`` is not empty and ``overwrite`` is ``False``.

    Example:
        >>> convert_isic2018("ISIC2018_Task3_Training_Input",
        ...                  "ISIC2018_Task3_Training_GroundTruth.csv", "isic2018_manifest")  # doctest: +SKIP
    """
    inputs = [images, ground_truth] + ([lesion_groupings] if lesion_groupings is not None else [])
    _check_out_is_separate(out_dir, inputs)
    _check_before_work(out_dir, overwrite, val_fraction)
    source, _, table = _read_csv(ground_truth, ("image", *ISIC2018_COLUMNS))
    lesions = _read_lesion_groupings(lesion_groupings) if lesion_groupings is not None else None
    index = _index_images([images], _PHOTO_SUFFIXES)
    seen: dict[str, int] = {}
    rows = []
    for line, record in table:
        where = f"{source}, line {line}"
        image_id = record["image"]
        _check_unique(seen, image_id, line, source, "image")
        try:
            values = {column: float(record[column]) for column in ISIC2018_COLUMNS}
        except ValueError:
            found = {column: record[column] for column in ISIC2018_COLUMNS}
            raise ValueError(f"{where}: non-numeric one-hot value in {found}; expected 0.0 or 1.0.") from None
        hot = [column for column, value in values.items() if value == 1.0]
        if len(hot) != 1 or any(value not in (0.0, 1.0) for value in values.values()):
            raise ValueError(
                f"{where}: image {image_id!r} has one-hot values {values}; expected exactly one 1.0 and 0.0 elsewhere."
            )
        row = {"image_id": image_id, "label": ISIC2018_COLUMNS[hot[0]]}
        if lesions is not None:
            if image_id not in lesions:
                raise ValueError(
                    f"{where}: image {image_id!r} is not listed in the lesion groupings {lesion_groupings}."
                )
            row["lesion_id"] = lesions[image_id]
        path = _find_image(index, image_id, where, [images])
        _check_image(path, where)
        row["image"] = path
        rows.append(row)
    extra = ["image_id"] + (["lesion_id"] if lesions is not None else [])
    group_key = "lesion_id" if lesions is not None else None
    return _split_and_write(out_dir, rows, extra, overwrite, val_fraction, seed, group_key)


def convert_aptos2019(
    csv_file: PathLike,
    images: PathLike,
    out_dir: PathLike,
    val_fraction: float = 0.15,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Convert APTOS 2019 Blindness Detection (``train.csv`` + ``train_images/``) to a manifest.

    Labels are the ``diagnosis`` grades 0..4 (:data:`APTOS2019_GRADES`), written as numbers. The
    split is stratified by grade with ``seed``. Extra column: ``id_code``. Images
    (``<id_code>.png``) are referenced by their path relative to ``out_dir``, not copied.

    Args:
        csv_file: ``train.csv`` with columns ``id_code,diagnosis``.
        images: the folder holding ``<id_code>.png``.
        out_dir: the output folder.
        val_fraction: share of each grade in val. Default ``0.15``.
        seed: seed of the split. Default ``0``.
        overwrite: replace a non-empty ``out_dir``. Default ``False``.

    Returns:
        The path of the written ``manifest.csv``.

    Raises:
        FileNotFoundError: when the CSV, the image folder or a listed image is missing.
        ValueError: on a grade outside 0..4, a duplicated ``id_code``, an unreadable image (each
            names the line or file), or an output overlapping the input.
        FileExistsError: when ``out_dir`` is not empty and ``overwrite`` is ``False``.

    Example:
        >>> convert_aptos2019("train.csv", "train_images", "aptos2019_manifest")  # doctest: +SKIP
    """
    _check_out_is_separate(out_dir, [csv_file, images])
    _check_before_work(out_dir, overwrite, val_fraction)
    source, _, table = _read_csv(csv_file, ("id_code", "diagnosis"))
    index = _index_images([images], _PHOTO_SUFFIXES)
    seen: dict[str, int] = {}
    rows = []
    for line, record in table:
        where = f"{source}, line {line}"
        id_code = record["id_code"]
        _check_unique(seen, id_code, line, source, "id_code")
        try:
            grade = to_class_index(record["diagnosis"], APTOS2019_GRADES)
        except ValueError as err:
            raise ValueError(f"{where}: diagnosis: {err}") from None
        path = _find_image(index, id_code, where, [images])
        _check_image(path, where)
        rows.append({"image": path, "label": grade, "id_code": id_code})
    return _split_and_write(out_dir, rows, ["id_code"], overwrite, val_fraction, seed)


def _medmnist_split(data: np.lib.npyio.NpzFile, split: str, source: Path) -> tuple[np.ndarray, np.ndarray]:
    if f"{split}_labels" not in data.files:
        raise ValueError(f"{source}: has '{split}_images' but no '{split}_labels'; expected both keys.")
    try:
        images, labels = data[f"{split}_images"], data[f"{split}_labels"]
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        raise ValueError(f"{source}: cannot read the '{split}' arrays: {err}") from None
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise ValueError(
            f"{source}: '{split}_labels' has shape {labels.shape}: a multi-label subset (like ChestMNIST); "
            f"only single-label subsets (labels of shape (N, 1)) can be converted to a manifest."
        )
    if labels.ndim not in (1, 2) or not np.issubdtype(labels.dtype, np.integer) or labels.size and labels.min() < 0:
        raise ValueError(
            f"{source}: '{split}_labels' has shape {labels.shape} and dtype {labels.dtype}; "
            f"expected non-negative integers of shape (N, 1)."
        )
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.dtype != np.uint8 or not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
        raise ValueError(
            f"{source}: '{split}_images' has shape {images.shape} and dtype {images.dtype}; expected 2D uint8 "
            f"images of shape (N, H, W) or (N, H, W, 3) (3D MedMNIST subsets are not supported)."
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{source}: {len(images)} '{split}_images' but {len(labels)} '{split}_labels'; expected equal counts."
        )
    return images, labels.reshape(len(labels))


def convert_medmnist(npz: PathLike, out_dir: PathLike, overwrite: bool = False) -> Path:
    """Convert a 2D MedMNIST ``.npz`` (any subset, any size) to PNG images and a manifest.

    The file's own splits are kept: ``{split}_images`` / ``{split}_labels`` for ``train``, ``val``
    and ``test``, whichever are present (a file without ``test_*`` gives no test rows). Images go
    to ``out_dir/images/{split}/{split}_{i:05d}.png`` (grayscale or RGB as stored) with paths
    relative to ``out_dir``; labels are the class numbers. Extra column: ``index`` (position in the
    ``.npz`` array).

    Args:
        npz: the MedMNIST file, e.g. ``retinamnist.npz`` or ``pathmnist_224.npz``.
        out_dir: the output folder.
        overwrite: replace a non-empty ``out_dir``. Default ``False``.

    Returns:
        The path of the written ``manifest.csv``.

    Raises:
        FileNotFoundError: when ``npz`` is missing.
        ValueError: when the file is not a readable ``.npz``, has no split, is multi-label (e.g.
            ChestMNIST) or 3D, or its arrays have unexpected shapes or types.
        FileExistsError: when ``out_dir`` is not empty and ``overwrite`` is ``False``.

    Example:
        >>> convert_medmnist("retinamnist.npz", "retinamnist_manifest")  # doctest: +SKIP
    """
    source = Path(npz)
    if not source.is_file():
        raise FileNotFoundError(f"MedMNIST file not found: {source}.")
    _check_out_is_separate(out_dir, [source])
    _check_before_work(out_dir, overwrite)
    # our own handle: np.load(path) leaves its file open when the archive is corrupt
    with open(source, "rb") as handle:
        try:
            data = np.load(handle, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise ValueError(f"{source}: not a readable .npz file: {err}") from None
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"{source}: holds a single array, not an .npz archive with '<split>_images' keys.")
        present = [s for s in _MEDMNIST_SPLITS if f"{s}_images" in data.files]
        if not present:
            raise ValueError(
                f"{source}: no '<split>_images' key for any of {', '.join(_MEDMNIST_SPLITS)}; found keys {data.files}."
            )
        arrays = {split: _medmnist_split(data, split, source) for split in present}
    rows = []
    with atomic_output_dir(out_dir, overwrite=overwrite) as work:
        for split, (images, labels) in arrays.items():
            (work / "images" / split).mkdir(parents=True)
            for i, (pixels, label) in enumerate(zip(images, labels)):
                relative = f"images/{split}/{split}_{i:05d}.png"
                Image.fromarray(pixels).save(work / relative)
                rows.append({"relative_path": relative, "label": int(label), "split": split, "index": i})
        write_manifest(work / MANIFEST_NAME, rows, ["index"])
    return Path(out_dir) / MANIFEST_NAME


def convert_folders(
    root: PathLike,
    out_dir: PathLike,
    val_fraction: float = 0.15,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Convert a class-per-folder tree (``root/<class>/<image>``) to a manifest.

    Fits Kather 2016 (``01_TUMOR/...``) and NCT-CRC-HE-100K (``ADI/...``). The label is the name of
    the class folder directly under ``root``, written as is (map it to class numbers with
    ``read_manifest(..., class_names, label_aliases)``); images are found recursively inside it
    by suffix (tif, tiff, png, jpg, jpeg, bmp, dcm, dicom, nii, nii.gz), and DICOM files without an
    extension by their content (hidden files, ``DICOMDIR`` and other files ignored). The split is
    stratified by class with ``seed``. Images are referenced as they are, by their path relative to
    ``out_dir``, not copied or re-encoded: the bundles load DICOM and NIfTI directly.

    Args:
        root: the folder holding one sub-folder per class.
        out_dir: the output folder.
        val_fraction: share of each class in val. Default ``0.15``.
        seed: seed of the split. Default ``0``.
        overwrite: replace a non-empty ``out_dir``. Default ``False``.

    Returns:
        The path of the written ``manifest.csv``.

    Raises:
        FileNotFoundError: when ``root`` is missing.
        ValueError: when ``root`` has no class folder, a class folder has no image, an image is
            unreadable (naming the file), or the output overlaps the input.
        FileExistsError: when ``out_dir`` is not empty and ``overwrite`` is ``False``.

    Example:
        >>> convert_folders("Kather_texture_2016_image_tiles_5000", "kather2016_manifest")  # doctest: +SKIP
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"class-folder root not found: {root}.")
    _check_out_is_separate(out_dir, [root])
    _check_before_work(out_dir, overwrite, val_fraction)
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(
            f"{root}: no class folders; expected a layout root/<class name>/<image> (one folder per class)."
        )
    rows = []
    for folder in classes:
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
            and _is_folder_image(p)
        )
        if not files:
            raise ValueError(
                f"{folder}: class folder holds no image ({', '.join(IMAGE_EXTENSIONS)}, or DICOM without extension)."
            )
        for path in files:
            _check_image(path, f"class folder {folder}")
            rows.append({"image": path, "label": folder.name})
    return _split_and_write(out_dir, rows, [], overwrite, val_fraction, seed)
