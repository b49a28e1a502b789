"""Dataset manifests: read ``manifest.csv`` into MONAI datalists, map labels, write manifests.

A manifest is a CSV file with the header ``relative_path,label,split`` (``split`` optional, extra
columns allowed). Paths are relative to the manifest's folder, or absolute. Labels may be class
names, class numbers or dataset-specific aliases; :func:`to_class_index` turns any of them into the
class number defined once by ``class_names``.
"""

from __future__ import annotations

import csv
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_COLUMNS",
    "evaluation_split",
    "manifest_columns",
    "read_manifest",
    "to_class_index",
    "write_manifest",
]

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ("relative_path", "label", "split")


class _LabelMap:
    """Case-insensitive lookup from label spellings to class numbers, built once per manifest."""

    def __init__(
        self, class_names: Sequence[str] | None, label_aliases: Mapping[str, str | int] | None
    ) -> None:
        self.class_names = list(class_names) if class_names is not None else None
        self.by_name: dict[str, int] = {}
        if self.class_names is not None:
            if len(self.class_names) == 0:
                raise ValueError("class_names is empty; expected at least one class name.")
            for index, name in enumerate(self.class_names):
                if not isinstance(name, str) or not name.strip():
                    raise ValueError(f"class_names[{index}] is {name!r}; expected a non-empty string.")
                key = name.strip().casefold()
                if key in self.by_name:
                    raise ValueError(
                        f"class_names repeats {name!r} (case-insensitively) at indices "
                        f"{self.by_name[key]} and {index}; class names must be unique."
                    )
                self.by_name[key] = index
        self.by_alias: dict[str, int] = {}
        self.alias_spellings = [str(alias) for alias in (label_aliases or {})]
        for alias, target in (label_aliases or {}).items():
            try:
                index = self._from_name_or_number(target)
            except ValueError:
                raise ValueError(
                    f"label alias {alias!r} points to {target!r}, which is not a class "
                    f"({self.describe_classes()})."
                ) from None
            self.by_alias[str(alias).strip().casefold()] = index

    def describe_classes(self) -> str:
        if self.class_names is None:
            return "class_names not given, so labels must be integers >= 0"
        names = ", ".join(repr(n) for n in self.class_names)
        return f"class names {names} or numbers 0..{len(self.class_names) - 1}"

    def describe_valid(self) -> str:
        text = self.describe_classes()
        if self.by_alias:
            text += "; aliases " + ", ".join(repr(a) for a in self.alias_spellings)
        return text

    def _from_name_or_number(self, value: object) -> int:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, numbers.Integral):  # int and numpy integers, not floats
            number = int(value)
        else:
            text = str(value).strip()
            if text.casefold() in self.by_name:
                return self.by_name[text.casefold()]
            try:
                number = int(text)
            except ValueError:
                raise ValueError(value) from None
        if number < 0 or (self.class_names is not None and number >= len(self.class_names)):
            raise ValueError(value)
        return number

    def __call__(self, value: object) -> int:
        if isinstance(value, str) and value.strip().casefold() in self.by_alias:
            return self.by_alias[value.strip().casefold()]
        try:
            return self._from_name_or_number(value)
        except ValueError:
            raise ValueError(f"unknown label {value!r}; expected {self.describe_valid()}.") from None


def to_class_index(
    value: str | int,
    class_names: Sequence[str] | None = None,
    label_aliases: Mapping[str, str | int] | None = None,
) -> int:
    """Convert one label value to its class number.

    Spellings are tried in this order: an alias from ``label_aliases`` (case-insensitive), a class
    name (case-insensitive, surrounding spaces ignored), an integer ``0 <= n < len(class_names)``.

    Args:
        value: the label as found in a file (``"nv"``, ``"MEL"``, ``"3"``, ``"01_TUMOR"``) or an int.
        class_names: class names, index = class number. Default ``None``: labels must be integers
            ``>= 0`` (or aliases mapping to integers).
        label_aliases: extra spellings, each mapping to a class name or a class number,
            e.g. ``{"01_TUMOR": "tumor epithelium", "TUM": 8}``. Default ``None``.

    Returns:
        The class number.

    Raises:
        ValueError: when ``value`` is not a known spelling (the message lists the valid ones), when
            ``class_names`` is empty or repeats a name, or when an alias points to no class.

    Example:
        >>> to_class_index("MEL", ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"])
        4
        >>> to_class_index("01_TUMOR", ["stroma", "tumor"], {"01_TUMOR": "tumor"})
        1
    """
    return _LabelMap(class_names, label_aliases)(value)


def _manifest_path(dataset_dir: str | os.PathLike[str]) -> Path:
    path = Path(dataset_dir)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"manifest not found: {path} (expected a folder holding {MANIFEST_NAME}, or a CSV file "
            f"with the header {','.join(MANIFEST_COLUMNS)})."
        )
    return path


def read_manifest(
    dataset_dir: str | os.PathLike[str],
    split: str | None = None,
    class_names: Sequence[str] | None = None,
    label_aliases: Mapping[str, str | int] | None = None,
    check_files: bool = True,
    image_dir: str | os.PathLike[str] | None = None,
    label_required: bool = True,
    columns: Sequence[str] = (),
) -> list[dict]:
    """Read a dataset manifest into a MONAI datalist.

    Args:
        dataset_dir: the folder holding ``manifest.csv``, or a manifest CSV file itself (for
            manifests under another name, e.g. ``manifest_kather2016_samples.csv``). Relative paths
            in the manifest are resolved against the manifest's folder, or ``image_dir``.
        split: keep only rows whose ``split`` column equals this (e.g. ``"train"``). Default
            ``None``: all rows, and the ``split`` column may be absent.
        class_names: class names, index = class number; see :func:`to_class_index`. Default
            ``None``: labels must be integers.
        label_aliases: extra label spellings mapping to a class name or number. Default ``None``.
        check_files: check that every returned image exists. Default ``True``.
        image_dir: the folder relative paths are resolved against, when the images are not beside
            the manifest (a test list kept elsewhere). Default ``None``: the manifest's folder.
        label_required: whether the manifest must have a ``label`` column. Default ``True``;
            ``False`` (inference) accepts a manifest without one, whose items then have no ``"label"``.
        columns: manifest columns copied as they are (stripped strings) into every item under their
            own names, e.g. ``("relative_path",)`` to keep the path as listed. Default ``()``.

    Returns:
        One dict per kept row, in file order: ``{"image": absolute path (str), "label": class
        number (int), "id": 0-based data row index in the manifest (int), "origin": "<manifest>,
        line <n>" (str)}`` and the ``columns``; ``origin`` is how the bundles' loading transform
        (:class:`~monai_danil.transforms.LoadRGBImaged`) names the row of a bad image, and it
        collates into a list of strings that no later transform reads. Every row's label is
        checked, also rows of other splits, so a typo anywhere in the file surfaces.

    Raises:
        FileNotFoundError: when the manifest is missing, or (``check_files``) an image is missing;
            the message names the manifest row and the path.
        ValueError: when a required column or one of ``columns`` is missing, ``split`` is given but the manifest has no
            ``split`` column, a label is unknown (the message names the file, the line number as
            shown in an editor, header = line 1, the value and the valid labels), a path is empty,
            or no row is left.

    Example:
        >>> datalist = read_manifest("../shared/data/retina", split="train")  # doctest: +SKIP
        >>> datalist[0]  # doctest: +SKIP
        {'image': '/.../retina/images/train/train_0000.png', 'label': 0, 'id': 0, 'origin': '.../manifest.csv, line 2'}
    """
    manifest = _manifest_path(dataset_dir)
    base = Path(image_dir).resolve() if image_dir is not None else manifest.parent.resolve()
    label_map = _LabelMap(class_names, label_aliases)
    datalist: list[dict] = []
    splits_seen: dict[str, int] = {}
    with open(manifest, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = header
        has_label = "label" in header
        required = ("relative_path", "label") if label_required else ("relative_path",)
        missing = [c for c in (*required, *columns) if c not in header]
        if missing:
            raise ValueError(
                f"{manifest}: missing column(s) {', '.join(missing)}; found header {header}, "
                f"expected {','.join(MANIFEST_COLUMNS)} (split optional, extra columns allowed)."
            )
        if split is not None and "split" not in header:
            raise ValueError(
                f"{manifest}: split={split!r} was asked for but the manifest has no 'split' column "
                f"(header {header}); pass split=None to read all rows."
            )
        for index, row in enumerate(reader):
            line = reader.line_num
            label = None
            if has_label:
                try:
                    label = label_map((row.get("label") or "").strip())
                except ValueError as err:
                    raise ValueError(f"{manifest}, line {line}: {err}") from None
            row_split = (row.get("split") or "").strip()
            splits_seen[row_split] = splits_seen.get(row_split, 0) + 1
            if split is not None and row_split != split:
                continue
            relative = (row.get("relative_path") or "").strip()
            if not relative:
                raise ValueError(f"{manifest}, line {line}: empty relative_path; expected an image path.")
            image = os.path.normpath(base / relative)
            if check_files and not os.path.isfile(image):
                under = f" under {base}" if image_dir is not None else ""
                raise FileNotFoundError(
                    f"{manifest}, line {line}: image not found: {image} (relative_path {relative!r}{under})."
                )
            item = {"image": image, "label": label, "id": index} if has_label else {"image": image, "id": index}
            item["origin"] = f"{manifest}, line {line}"
            item.update({column: (row.get(column) or "").strip() for column in columns})
            datalist.append(item)
    if not datalist:
        if split is None:
            raise ValueError(f"{manifest}: no data rows; expected at least one row after the header.")
        found = ", ".join(f"{s!r}: {n}" for s, n in sorted(splits_seen.items())) or "none"
        raise ValueError(f"{manifest}: no rows with split {split!r}; rows per split found: {found}.")
    return datalist


def manifest_columns(dataset_dir: str | os.PathLike[str]) -> list[str]:
    """The column names of a manifest's header, stripped.

    Args:
        dataset_dir: the folder holding ``manifest.csv``, or a manifest CSV file.

    Raises:
        FileNotFoundError: when the manifest is missing.

    Example:
        >>> manifest_columns("../shared/data/retina")  # doctest: +SKIP
        ['relative_path', 'label', 'split']
    """
    with open(_manifest_path(dataset_dir), newline="", encoding="utf-8-sig") as handle:
        return [name.strip() for name in next(csv.reader(handle), [])]


def evaluation_split(dataset_dir: str | os.PathLike[str], preferred: Sequence[str] = ("test", "val")) -> str | None:
    """The split of a manifest to score a trained model on: the first of ``preferred`` it has.

    Args:
        dataset_dir: the folder holding ``manifest.csv``, or a manifest CSV file.
        preferred: split names in order of preference. Default ``("test", "val")``.

    Returns:
        The first split of ``preferred`` with at least one row, or ``None`` when the manifest has no
        ``split`` column (every row is scored).

    Raises:
        FileNotFoundError: when the manifest is missing.
        ValueError: when the manifest has a ``split`` column but none of ``preferred`` (the message
            lists the splits found).

    Example:
        >>> evaluation_split("../shared/data/retina")  # doctest: +SKIP
        'val'
    """
    manifest = _manifest_path(dataset_dir)
    with open(manifest, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        if "split" not in reader.fieldnames:
            return None
        found = {(row.get("split") or "").strip() for row in reader}
    for split in preferred:
        if split in found:
            return split
    raise ValueError(
        f"{manifest}: no rows of split {' or '.join(map(repr, preferred))} to score; splits found: "
        f"{sorted(found)}. Name the split to score (--split NAME)."
    )


def write_manifest(
    path: str | os.PathLike[str],
    rows: Iterable[Mapping[str, object]],
    extra_columns: Sequence[str] = (),
) -> Path:
    """Write manifest rows to ``path`` with the header ``relative_path,label,split`` + ``extra_columns``.

    Args:
        path: the CSV file to write (usually inside :func:`atomic_output_dir`).
        rows: mappings with at least ``relative_path``, ``label`` and ``split``; keys not in the
            header are ignored.
        extra_columns: columns written after the three standard ones. Default ``()``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        KeyError: when a row lacks one of the columns.

    Example:
        >>> write_manifest("/tmp/m.csv", [{"relative_path": "a.png", "label": 0, "split": "train"}])  # doctest: +SKIP
    """
    path = Path(path)
    columns = list(MANIFEST_COLUMNS) + [c for c in extra_columns if c not in MANIFEST_COLUMNS]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row[c] for c in columns])
    return path
