"""check_training_splits: the errors and warnings a training gets before it starts (docs/data.md, "Too little data")."""

from __future__ import annotations

import logging

import pytest

from monai_danil.data import check_training_splits

NAMES = ["no DR", "mild", "moderate", "severe", "proliferative DR"]


def _rows(labels: list[int]) -> list[dict]:
    return [{"image": f"/data/{i}.png", "label": label, "id": i} for i, label in enumerate(labels)]


def test_fewer_training_images_than_one_batch_with_drop_last_is_an_error(caplog):
    train = _rows([0] * 10)
    with pytest.raises(ValueError) as info:
        check_training_splits(train, _rows([0, 1]), NAMES, batch_size=64, drop_last=True, source="/data/retina")
    message = str(info.value)
    for part in ("10 training images", "batch size 64", "drop_last=True", "0 iterations", "/data/retina",
                 "--batch_size 10"):
        assert part in message, (part, message)
    # without drop_last the last, short batch trains; exactly one full batch is enough
    check_training_splits(train, _rows(list(range(5))), NAMES, batch_size=64, drop_last=False)
    check_training_splits(_rows([0, 1, 2, 3, 4] * 2), _rows(list(range(5))), NAMES, batch_size=10, drop_last=True)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        check_training_splits(train, train, NAMES, batch_size=0, drop_last=True)


def test_missing_classes_are_warnings_naming_them_and_the_undefined_metrics(caplog):
    caplog.set_level(logging.WARNING, logger="monai_danil.data.checks")
    check_training_splits(_rows([0, 1, 2, 0] * 4), _rows([0, 0, 1, 4]), NAMES, batch_size=8, drop_last=True,
                          source="manifest.csv")
    train_warning, val_warning = (r.getMessage() for r in caplog.records)
    assert "train split in manifest.csv" in train_warning
    assert "3 'severe', 4 'proliferative DR'" in train_warning and "cannot learn" in train_warning
    assert "val split in manifest.csv" in val_warning and "2 'moderate', 3 'severe'" in val_warning
    assert "balanced accuracy and macro AUC average over the 3 classes present" in val_warning
    assert "macro-F1 counts each missing class as 0" in val_warning and "single class" not in val_warning
    caplog.clear()
    check_training_splits(_rows([0, 1, 2, 3, 4] * 2), _rows([2, 2]), NAMES, batch_size=8, drop_last=True)
    (single,) = (r.getMessage() for r in caplog.records)
    assert "AUC is undefined (NaN) and kappa is 0" in single
    caplog.clear()
    check_training_splits(_rows([0, 1, 2, 3, 4] * 2), _rows([0, 1, 2, 3, 4]), NAMES, batch_size=8, drop_last=True)
    assert not caplog.records
