"""Class labels in a MONAI Label datastore: one small JSON file per image, ``{"label": "mel"}``.

MONAI Label stores a label as a file uploaded under a tag (``final`` for training); for a
classifier that file names the image's class. The class may be given by name (as in the bundle's
metadata, case-insensitive), by index, or by one of the bundle's ``label_aliases``, the spellings
``monai_danil.data.read_manifest`` accepts in a manifest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

from monai_danil.data import to_class_index

__all__ = ["LabelError", "read_label_value", "class_index"]


class LabelError(ValueError):
    """A label file that is not a class label, or names no class of the model."""


def read_label_value(path: str | os.PathLike[str]) -> str | int:
    """The class value stored in a label file, as uploaded (a class name or an index).

    Args:
        path: the label file, JSON holding ``{"label": <class name or index>}``.

    Returns:
        The value of ``label``.

    Raises:
        LabelError: when the file is not UTF-8 JSON, not an object, or has no string or integer ``label``.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        ...     _ = f.write('{"label": "mel"}')
        >>> read_label_value(f.name)
        'mel'
    """
    expected = 'expected a JSON object such as {"label": "mel"} (a class name or a class index)'
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LabelError(f"the label file is not JSON ({error}); {expected}.") from None
    if not isinstance(content, Mapping) or "label" not in content:
        raise LabelError(f"the label file holds {content!r}; {expected}.")
    value = content["label"]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise LabelError(f"the label file's label is {value!r}; {expected}.")
    return value


def class_index(
    value: str | int, class_names: Sequence[str], label_aliases: Mapping[str, str | int] | None = None
) -> int:
    """The class index of a label value for one model.

    Args:
        value: a class name (case-insensitive), a class index (int or digits), or an alias.
        class_names: the model's class names, index = class number.
        label_aliases: the bundle's extra spellings (``label_aliases`` in its ``train.json``). Default ``None``.

    Returns:
        The class index.

    Raises:
        LabelError: when ``value`` names no class; the message lists the valid names.

    Example:
        >>> class_index("MEL", ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"])
        4
    """
    try:
        return to_class_index(value, class_names, label_aliases)
    except ValueError as error:
        raise LabelError(str(error)) from None
