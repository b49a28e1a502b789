"""read_manifest / to_class_index / atomic_output_dir, on the real manifests and on small ones in tmp_path."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from monai_danil.data import atomic_output_dir, read_manifest, to_class_index, write_manifest

SKIN_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
KATHER2016_CLASSES = ["tumor", "stroma", "complex", "lympho", "debris", "mucosa", "adipose", "empty"]
KATHER2016_ALIASES = {
    "01_TUMOR": "tumor",
    "02_STROMA": "stroma",
    "03_COMPLEX": "complex",
    "04_LYMPHO": "lympho",
    "05_DEBRIS": "debris",
    "06_MUCOSA": "mucosa",
    "07_ADIPOSE": "adipose",
    "08_EMPTY": "empty",
}


def _pathology_classes(pathology_dir: Path) -> list[str]:
    lines = (pathology_dir / "classes.txt").read_text().splitlines()
    return [line.split("\t", 1)[1].strip() for line in lines if line.strip()]


def _write(tmp_path: Path, text: str, images: tuple[str, ...] = ("a.png", "b.png")) -> Path:
    for name in images:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "manifest.csv").write_text(text)
    return tmp_path


@pytest.mark.data
def test_retina_manifest(retina_dir: Path) -> None:
    everything = read_manifest(retina_dir)
    train = read_manifest(retina_dir, split="train")
    val = read_manifest(retina_dir, split="val")
    assert len(everything) == 1200 and len(train) + len(val) == 1200 and len(val) > 0
    assert Counter(r["label"] for r in everything) == {0: 540, 1: 140, 2: 234, 3: 214, 4: 72}
    assert [r["id"] for r in everything] == list(range(1200))
    assert all(Path(r["image"]).is_absolute() and Path(r["image"]).is_file() for r in train[:5])
    assert {r["id"] for r in train}.isdisjoint(r["id"] for r in val)


@pytest.mark.data
def test_skin_manifest_by_name(skin_dir: Path) -> None:
    train = read_manifest(skin_dir, split="train", class_names=SKIN_CLASSES)
    val = read_manifest(skin_dir, split="val", class_names=SKIN_CLASSES)
    assert (len(train), len(val)) == (7263, 1252)
    counts = Counter(r["label"] for r in train + val)
    assert {SKIN_CLASSES[k]: n for k, n in counts.items()} == {
        "nv": 5696, "mel": 946, "bkl": 936, "bcc": 441, "akiec": 279, "vasc": 121, "df": 96,
    }


@pytest.mark.data
def test_skin_manifest_needs_class_names(skin_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"line 2: unknown label 'nv'.*integers"):
        read_manifest(skin_dir)


@pytest.mark.data
def test_pathology_manifest(pathology_dir: Path) -> None:
    classes = _pathology_classes(pathology_dir)
    assert len(classes) == 9
    train = read_manifest(pathology_dir, split="train", class_names=classes)
    val = read_manifest(pathology_dir, split="val", class_names=classes)
    assert (len(train), len(val)) == (681, 120)
    assert {r["label"] for r in train} == set(range(9))


@pytest.mark.data
def test_pathology_extra_manifest_with_aliases(pathology_dir: Path) -> None:
    rows = read_manifest(
        pathology_dir / "manifest_kather2016_samples.csv",
        class_names=KATHER2016_CLASSES,
        label_aliases=KATHER2016_ALIASES,
    )
    assert len(rows) == 32
    assert Counter(r["label"] for r in rows) == {k: 4 for k in range(8)}
    with pytest.raises(ValueError, match="no 'split' column"):
        read_manifest(pathology_dir / "manifest_kather2016_samples.csv", split="train")


def test_to_class_index_spellings() -> None:
    assert to_class_index("nv", SKIN_CLASSES) == 5
    assert to_class_index(" MEL ", SKIN_CLASSES) == 4
    assert to_class_index("3", SKIN_CLASSES) == 3
    assert to_class_index(6, SKIN_CLASSES) == 6
    assert to_class_index("4") == 4
    assert to_class_index(np.int64(2), SKIN_CLASSES) == 2
    aliases = {"01_TUMOR": "tumor", "TUM": 0, "str": "STROMA"}
    assert to_class_index("01_tumor", KATHER2016_CLASSES, aliases) == 0
    assert to_class_index("TUM", KATHER2016_CLASSES, aliases) == 0
    assert to_class_index("STR", KATHER2016_CLASSES, aliases) == 1


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("7", SKIN_CLASSES),
        ("-1", SKIN_CLASSES),
        ("melanoma", SKIN_CLASSES),
        ("1.0", None),
        (np.float64(3.5), None),
        ("nv", None),
        (True, None),
    ],
)
def test_to_class_index_rejects(value: object, names: list[str] | None) -> None:
    with pytest.raises(ValueError, match="unknown label"):
        to_class_index(value, names)  # type: ignore[arg-type]


def test_bad_class_names_and_aliases() -> None:
    with pytest.raises(ValueError, match="repeats"):
        to_class_index("a", ["a", "A"])
    with pytest.raises(ValueError, match="alias 'X' points to 'nope'"):
        to_class_index("a", ["a"], {"X": "nope"})


def test_unknown_label_names_file_line_value(tmp_path: Path) -> None:
    _write(tmp_path, "relative_path,label,split\na.png,nv,train\nb.png,melanom,val\n")
    with pytest.raises(ValueError) as info:
        read_manifest(tmp_path, class_names=SKIN_CLASSES)
    message = str(info.value)
    assert str(tmp_path / "manifest.csv") in message
    assert "line 3" in message and "'melanom'" in message
    assert "'akiec'" in message and "'vasc'" in message


def test_labels_of_other_splits_are_checked(tmp_path: Path) -> None:
    _write(tmp_path, "relative_path,label,split\na.png,0,train\nb.png,9,val\n")
    with pytest.raises(ValueError, match="line 3: unknown label '9'"):
        read_manifest(tmp_path, split="train", class_names=["x", "y"])


def test_extra_columns_optional_split_and_ids(tmp_path: Path) -> None:
    _write(tmp_path, "relative_path,label,note\na.png,1,hello\nb.png,0,\n")
    rows = read_manifest(tmp_path)
    assert rows == [
        {"image": str(tmp_path / "a.png"), "label": 1, "id": 0, "origin": f"{tmp_path / 'manifest.csv'}, line 2"},
        {"image": str(tmp_path / "b.png"), "label": 0, "id": 1, "origin": f"{tmp_path / 'manifest.csv'}, line 3"},
    ]
    with pytest.raises(ValueError, match="split='train'.*no 'split' column"):
        read_manifest(tmp_path, split="train")


def test_empty_split_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path, "relative_path,label,split\na.png,0,train\nb.png,1,train\n")
    with pytest.raises(ValueError, match="no rows with split 'val'.*'train': 2"):
        read_manifest(tmp_path, split="val")


def test_missing_image_and_missing_manifest(tmp_path: Path) -> None:
    _write(tmp_path, "relative_path,label,split\na.png,0,train\ngone.png,1,train\n", images=("a.png",))
    with pytest.raises(FileNotFoundError, match=r"line 3: image not found: .*gone\.png"):
        read_manifest(tmp_path)
    assert len(read_manifest(tmp_path, check_files=False)) == 2
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        read_manifest(tmp_path / "nowhere")


def test_missing_column(tmp_path: Path) -> None:
    _write(tmp_path, "path,label\na.png,0\n")
    with pytest.raises(ValueError, match="missing column.*relative_path"):
        read_manifest(tmp_path)


def test_atomic_output_dir(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_output_dir(out) as work:
        write_manifest(work / "manifest.csv", [{"relative_path": "a.png", "label": 0, "split": "train"}])
    assert (out / "manifest.csv").read_text() == "relative_path,label,split\na.png,0,train\n"

    with pytest.raises(FileExistsError, match="not empty"):
        with atomic_output_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out, overwrite=True) as work:
            (work / "half.csv").write_text("x")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.csv"]

    with atomic_output_dir(out, overwrite=True) as work:
        (work / "new.txt").write_text("y")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    fresh = tmp_path / "fresh"
    with pytest.raises(ValueError):
        with atomic_output_dir(fresh):
            raise ValueError("bad input")
    assert not fresh.exists()
