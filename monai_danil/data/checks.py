"""Checks of the training and validation splits before a training starts: enough images, every class."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

__all__ = ["check_training_splits"]

logger = logging.getLogger(__name__)


def _missing(datalist: Sequence[dict], class_names: Sequence[str]) -> list[str]:
    present = {int(item["label"]) for item in datalist}
    return [f"{index} {name!r}" for index, name in enumerate(class_names) if index not in present]


def check_training_splits(
    train: Sequence[dict],
    val: Sequence[dict],
    class_names: Sequence[str],
    batch_size: int,
    drop_last: bool,
    source: str | os.PathLike | None = None,
) -> None:
    """Stops a training that could not train, and warns of one whose validation is partly undefined.

    What each case deserves (also in docs/data.md):

    - **error**: fewer training images than one batch with ``drop_last``: the loader would yield no
      batch, and MONAI would finish "successfully" after 0 iterations with an untrained network;
    - **error**: an empty split (no images at all): :func:`~monai_danil.data.read_manifest` already
      stops there, naming the manifest and the rows per split it found;
    - **warning**: a class without a training image: the network can never learn to predict it and
      DANIL never mines it; its validation recall will be 0;
    - **warning**: a class without a validation image: balanced accuracy and macro AUC average over
      the classes present (that class's recall and AUC are undefined), macro-F1 counts it as 0 for
      every model alike; with a single class present, AUC is undefined (logged as NaN) and kappa is
      0 (a constant truth agrees with any prediction only by chance). Model selection still works on
      the bundle's key metric.

    Args:
        train: the training datalist (``{"image", "label"}`` dicts, labels as class numbers).
        val: the validation datalist.
        class_names: the bundle's class names, index = class number.
        batch_size: the training batch size.
        drop_last: whether the training loader drops a last incomplete batch.
        source: where the datalists came from (the dataset folder or manifest), named in messages.
            Default ``None``.

    Raises:
        ValueError: when ``drop_last`` leaves no training batch, or ``batch_size`` is not positive.

    Example:
        >>> rows = [{"image": f"{i}.png", "label": i % 2} for i in range(10)]
        >>> check_training_splits(rows, rows, ["a", "b"], batch_size=64, drop_last=True)
        Traceback (most recent call last):
        ...
        ValueError: 10 training images are fewer than one batch (batch size 64, drop_last=True): ...
    """
    where = f" in {os.fspath(source)}" if source is not None else ""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if drop_last and len(train) < batch_size:
        raise ValueError(
            f"{len(train)} training images are fewer than one batch (batch size {batch_size}, drop_last=True): "
            f"training would run 0 iterations{where}. Use --batch_size {max(1, len(train))} or smaller, or add "
            "training images."
        )
    missing_train = _missing(train, class_names)
    if missing_train:
        logger.warning(
            "the train split%s has no image of class %s: the network cannot learn to predict %s, and its "
            "validation recall will be 0.", where, ", ".join(missing_train), "it" if len(missing_train) == 1 else "them",
        )
    missing_val = _missing(val, class_names)
    if missing_val:
        present = len(class_names) - len(missing_val)
        single = " With a single class present, AUC is undefined (NaN) and kappa is 0." if present == 1 else ""
        logger.warning(
            "the val split%s has no image of class %s: balanced accuracy and macro AUC average over the %d classes "
            "present, macro-F1 counts each missing class as 0.%s", where, ", ".join(missing_val), present, single,
        )
