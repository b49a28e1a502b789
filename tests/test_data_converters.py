"""Converters on the real dataset layouts (shared data, read-only) with outputs in tmp_path."""

from __future__ import annotations

import csv
import os
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from format_helpers import write_dicom, write_nifti
from PIL import Image

from monai_danil.data import (
    HAM10000_CLASSES,
    convert_aptos2019,
    convert_folders,
    convert_ham10000,
    convert_isic2018,
    convert_medmnist,
    read_manifest,
)
from monai_danil.data.__main__ import main
from monai_danil.transforms import LoadRGBImage, LoadRGBImaged

pytestmark = pytest.mark.data

HAM10000_COUNTS = {"nv": 5696, "mel": 946, "bkl": 936, "bcc": 441, "akiec": 279, "vasc": 121, "df": 96}


def _rows(manifest: Path) -> list[dict[str, str]]:
    with open(manifest, newline="") as handle:
        return list(csv.DictReader(handle))


def _write_csv(path: Path, header: list[str], rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


@pytest.fixture(scope="module")
def ham_metadata(skin_dir: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(skin_dir / "HAM10000_metadata.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _small_metadata(ham_metadata, tmp_path: Path, n: int = 40, edit=None) -> Path:
    header, rows = ham_metadata
    subset = [dict(r) for r in rows[:n]]
    if edit is not None:
        edit(subset)
    return _write_csv(tmp_path / "metadata.csv", header, subset)


def test_ham10000_full_file(skin_dir: Path, tmp_path: Path) -> None:
    manifest = convert_ham10000(skin_dir / "images", skin_dir / "HAM10000_metadata.csv", tmp_path / "ham")
    rows = _rows(manifest)
    assert list(rows[0]) == ["relative_path", "label", "split", "image_id", "lesion_id", "dx_type"]
    assert len(rows) == 8515 and Counter(r["label"] for r in rows) == HAM10000_COUNTS

    sides = defaultdict(set)
    for row in rows:
        sides[row["lesion_id"]].add(row["split"])
    assert all(len(s) == 1 for s in sides.values()), "a lesion is on both sides of the split"
    for dx, total in HAM10000_COUNTS.items():
        val = sum(r["label"] == dx and r["split"] == "val" for r in rows)
        assert 0.12 <= val / total <= 0.18, (dx, val, total)

    datalist = read_manifest(tmp_path / "ham", split="val", class_names=HAM10000_CLASSES)
    assert Path(datalist[0]["image"]).is_absolute() and Path(datalist[0]["image"]).is_file()
    # paths relative to the output folder, so the download and the output can move together
    assert all(r["relative_path"].startswith("../") for r in rows)
    assert Path(datalist[0]["image"]).resolve().parent == (skin_dir / "images").resolve()
    # the images are referenced, not copied
    assert sorted(p.name for p in (tmp_path / "ham").iterdir()) == ["manifest.csv"]


def test_ham10000_split_is_seeded(skin_dir: Path, ham_metadata, tmp_path: Path) -> None:
    metadata = _small_metadata(ham_metadata, tmp_path, n=300)
    first = _rows(convert_ham10000(skin_dir / "images", metadata, tmp_path / "a", seed=3))
    again = _rows(convert_ham10000(skin_dir / "images", metadata, tmp_path / "b", seed=3))
    other = _rows(convert_ham10000(skin_dir / "images", metadata, tmp_path / "c", seed=4))
    assert first == again and first != other


def test_ham10000_several_image_folders(skin_dir: Path, ham_metadata, tmp_path: Path) -> None:
    metadata = _small_metadata(ham_metadata, tmp_path)
    parts = [tmp_path / "part_1", tmp_path / "part_2"]
    for part in parts:
        part.mkdir()
    for k, row in enumerate(_rows(metadata)):
        name = f"{row['image_id']}.jpg"
        (parts[k % 2] / name).symlink_to(skin_dir / "images" / name)
    rows = _rows(convert_ham10000(parts, metadata, tmp_path / "out"))
    assert len(rows) == 40
    assert {Path(r["relative_path"]).parent.name for r in rows} == {"part_1", "part_2"}


@pytest.mark.parametrize(
    ("edit", "error", "pattern"),
    [
        (lambda rows: rows[4].update(dx="melanoma"), ValueError, r"line 6: dx: unknown label 'melanoma'.*'vasc'"),
        (lambda rows: rows[7].update(image_id=rows[2]["image_id"]), ValueError, r"line 9: duplicated image_id.*line 4"),
        (lambda rows: rows[9].update(image_id="ISIC_9999999"), FileNotFoundError, r"line 11: image 'ISIC_9999999'"),
        (lambda rows: rows[0].update(lesion_id=""), ValueError, r"line 2: empty lesion_id"),
    ],
)
def test_ham10000_bad_rows(skin_dir: Path, ham_metadata, tmp_path: Path, edit, error, pattern) -> None:
    metadata = _small_metadata(ham_metadata, tmp_path, edit=edit)
    out = tmp_path / "out"
    with pytest.raises(error, match=pattern) as info:
        convert_ham10000(skin_dir / "images", metadata, out)
    assert str(metadata) in str(info.value)
    _assert_nothing_written(out)


def test_isic2018_full_file_with_lesion_groupings(
    skin_dir: Path, formats_dir: Path, ham_metadata, tmp_path: Path
) -> None:
    manifest = convert_isic2018(
        skin_dir / "images",
        formats_dir / "isic2018_task3" / "ISIC2018_Task3_Training_GroundTruth.csv",
        tmp_path / "isic",
        lesion_groupings=skin_dir / "HAM10000_metadata.csv",
    )
    rows = _rows(manifest)
    assert len(rows) == 8515 and Counter(r["label"] for r in rows) == HAM10000_COUNTS
    # the one-hot ground truth and the HAM10000 metadata agree image by image
    dx = {r["image_id"]: r["dx"] for r in ham_metadata[1]}
    assert all(dx[r["image_id"]] == r["label"] for r in rows)
    sides = defaultdict(set)
    for row in rows:
        sides[row["lesion_id"]].add(row["split"])
    assert all(len(s) == 1 for s in sides.values())


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        ({"MEL": "1.0", "NV": "1.0"}, r"line 4: image 'ISIC_\d+' has one-hot values .*exactly one 1.0"),
        ({}, r"line 4: .*exactly one 1.0"),
        ({"NV": "yes"}, r"line 4: non-numeric one-hot value"),
    ],
)
def test_isic2018_bad_one_hot_row(skin_dir: Path, formats_dir: Path, tmp_path: Path, values, pattern) -> None:
    source = formats_dir / "isic2018_task3" / "ISIC2018_Task3_Training_GroundTruth.csv"
    with open(source, newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = list(reader.fieldnames or []), [r for _, r in zip(range(30), reader)]
    rows[2].update({"MEL": "0.0", "NV": "0.0", "BCC": "0.0", "AKIEC": "0.0", "BKL": "0.0", "DF": "0.0", "VASC": "0.0"})
    rows[2].update(values)
    ground_truth = _write_csv(tmp_path / "gt.csv", header, rows)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=pattern):
        convert_isic2018(skin_dir / "images", ground_truth, out)
    _assert_nothing_written(out)


def test_isic2018_subset_without_groupings(skin_dir: Path, formats_dir: Path, tmp_path: Path) -> None:
    source = formats_dir / "isic2018_task3" / "ISIC2018_Task3_Training_GroundTruth.csv"
    with open(source, newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = list(reader.fieldnames or []), list(reader)[:200]
    ground_truth = _write_csv(tmp_path / "gt.csv", header, rows)
    out = _rows(convert_isic2018(skin_dir / "images", ground_truth, tmp_path / "out", seed=1))
    assert list(out[0]) == ["relative_path", "label", "split", "image_id"]
    assert len(out) == 200 and set(r["label"] for r in out) <= set(HAM10000_CLASSES)


def test_aptos2019(formats_dir: Path, tmp_path: Path) -> None:
    source = formats_dir / "aptos2019"
    rows = _rows(convert_aptos2019(source / "train.csv", source / "train_images", tmp_path / "aptos"))
    expected = Counter(r["diagnosis"] for r in _rows(source / "train.csv"))
    assert len(rows) == 150 and Counter(r["label"] for r in rows) == expected
    for split in ("train", "val"):
        assert {r["label"] for r in rows if r["split"] == split} == {"0", "1", "2", "3", "4"}
    assert all(Path(r["relative_path"]).name == f"{r['id_code']}.png" for r in rows)
    assert len(read_manifest(tmp_path / "aptos", split="val")) == sum(r["split"] == "val" for r in rows)


def test_aptos2019_bad_rows(formats_dir: Path, tmp_path: Path) -> None:
    source = formats_dir / "aptos2019"
    header = ["id_code", "diagnosis"]
    rows = _rows(source / "train.csv")[:20]
    rows[5]["id_code"] = rows[1]["id_code"]
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"line 7: duplicated id_code .*line 3"):
        convert_aptos2019(_write_csv(tmp_path / "dup.csv", header, rows), source / "train_images", out)
    rows = _rows(source / "train.csv")[:20]
    rows[3]["diagnosis"] = "5"
    with pytest.raises(ValueError, match=r"line 5: diagnosis: unknown label '5'"):
        convert_aptos2019(_write_csv(tmp_path / "bad.csv", header, rows), source / "train_images", out)
    _assert_nothing_written(out)


def test_medmnist_retina_without_test_split(retina_dir: Path, tmp_path: Path) -> None:
    npz = retina_dir / "retinamnist_trainval.npz"
    rows = _rows(convert_medmnist(npz, tmp_path / "retina"))
    assert len(rows) == 1200
    assert Counter(r["split"] for r in rows) == {"train": 1080, "val": 120}
    assert Counter(int(r["label"]) for r in rows) == {0: 540, 1: 140, 2: 234, 3: 214, 4: 72}
    with np.load(npz) as data:
        for row in (rows[0], rows[1100]):
            split, index = row["split"], int(row["index"])
            with Image.open(tmp_path / "retina" / row["relative_path"]) as image:
                assert image.mode == "RGB" and image.size == (28, 28)
                assert np.array_equal(np.asarray(image), data[f"{split}_images"][index])
            assert int(row["label"]) == int(data[f"{split}_labels"][index, 0])
    with pytest.raises(ValueError, match="no rows with split 'test'"):
        read_manifest(tmp_path / "retina", split="test")


def test_medmnist_grayscale_with_test_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, 64, 64), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 3, size=(n, 1), dtype=np.uint8)
    np.savez(tmp_path / "organ.npz", **arrays)
    rows = _rows(convert_medmnist(tmp_path / "organ.npz", tmp_path / "out"))
    assert Counter(r["split"] for r in rows) == {"train": 6, "val": 2, "test": 3}
    with Image.open(tmp_path / "out" / rows[-1]["relative_path"]) as image:
        assert image.mode == "L" and image.size == (64, 64)
        assert np.array_equal(np.asarray(image), arrays["test_images"][2])


def test_medmnist_refuses_multi_label(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "chestmnist.npz",
        train_images=rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8),
        train_labels=rng.integers(0, 2, size=(4, 14), dtype=np.uint8),
    )
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"chestmnist\.npz.*shape \(4, 14\).*multi-label"):
        convert_medmnist(tmp_path / "chestmnist.npz", out)
    _assert_nothing_written(out)


def test_medmnist_refuses_3d(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "organmnist3d.npz",
        train_images=np.zeros((2, 28, 28, 28), dtype=np.uint8),
        train_labels=np.zeros((2, 1), dtype=np.uint8),
    )
    with pytest.raises(ValueError, match=r"shape \(2, 28, 28, 28\).*3D MedMNIST"):
        convert_medmnist(tmp_path / "organmnist3d.npz", tmp_path / "out")


def test_medmnist_refuses_what_is_not_an_npz(tmp_path: Path) -> None:
    np.save(tmp_path / "single.npy", np.zeros((2, 28, 28), dtype=np.uint8))
    with pytest.raises(ValueError, match="single array"):
        convert_medmnist(tmp_path / "single.npy", tmp_path / "out")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match=r"broken\.npz: not a readable \.npz"):
        convert_medmnist(tmp_path / "broken.npz", tmp_path / "out")
    np.savez(tmp_path / "keys.npz", images=np.zeros((2, 28, 28), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"no '<split>_images' key.*found keys \['images'\]"):
        convert_medmnist(tmp_path / "keys.npz", tmp_path / "out")
    _assert_nothing_written(tmp_path / "out")


def test_folders_kather2016(pathology_dir: Path, tmp_path: Path) -> None:
    rows = _rows(convert_folders(pathology_dir / "kather2016_samples", tmp_path / "kather"))
    assert len(rows) == 32
    assert Counter(r["label"] for r in rows) == {
        f"{k:02d}_{name}": 4
        for k, name in enumerate(["TUMOR", "STROMA", "COMPLEX", "LYMPHO", "DEBRIS", "MUCOSA", "ADIPOSE", "EMPTY"], 1)
    }
    for split in ("train", "val"):
        assert len({r["label"] for r in rows if r["split"] == split}) == 8
    assert Counter(Path(r["relative_path"]).suffix for r in rows) == {".tif": 24, ".png": 8}
    # same files as the dataset's own manifest
    listed = _rows(pathology_dir / "manifest_kather2016_samples.csv")
    own = {str((pathology_dir / r["relative_path"]).resolve()) for r in listed}
    assert {os.path.normpath((tmp_path / "kather").resolve() / r["relative_path"]) for r in rows} == own


def test_folders_nct_crc_he(pathology_dir: Path, tmp_path: Path) -> None:
    samples = pathology_dir / "nct_crc_he_samples"
    with pytest.raises(ValueError, match="no class folders"):
        convert_folders(samples, tmp_path / "flat")
    _assert_nothing_written(tmp_path / "flat")
    # the real download is class-per-folder (NCT-CRC-HE-100K/ADI/ADI-....tif): rebuild that layout
    tree = tmp_path / "NCT-CRC-HE-100K"
    for tile in samples.glob("*.tif"):
        (tree / tile.name.split("-")[0]).mkdir(parents=True)
        (tree / tile.name.split("-")[0] / tile.name).symlink_to(tile)
    rows = _rows(convert_folders(tree, tmp_path / "nct"))
    assert sorted(r["label"] for r in rows) == ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]
    with Image.open(tmp_path / "nct" / rows[0]["relative_path"]) as tile:
        assert tile.size == (224, 224)


def test_folders_corrupt_image_leaves_no_output(pathology_dir: Path, tmp_path: Path) -> None:
    tree = tmp_path / "kather"
    shutil.copytree(pathology_dir / "kather2016_samples", tree)
    (tree / "03_COMPLEX" / "broken.png").write_bytes(b"this is not a png \x00\x01\x02")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"cannot read image .*03_COMPLEX[/\\]broken\.png"):
        convert_folders(tree, out)
    _assert_nothing_written(out)


def test_folders_of_dicom_nifti_and_tiff_point_at_the_files_as_they_are(pathology_dir: Path, tmp_path: Path) -> None:
    """Kather 2016 tiles exported as DICOM (with and without extension), NIfTI and TIFF, one folder per class."""
    tree = tmp_path / "export"
    written = {}
    for n, tile in enumerate(sorted((pathology_dir / "kather2016_samples").glob("*/*.tif"))):
        rgb = np.asarray(Image.open(tile).convert("RGB"))
        folder = tree / tile.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        kind = n % 4
        if kind == 0:
            path = write_dicom(folder / f"{tile.stem}.dcm", rgb, "RGB")
        elif kind == 1:
            path = write_dicom(folder / f"IM{n:04d}", rgb, "RGB", planar_configuration=1)  # archives name them so
        elif kind == 2:
            path = write_nifti(folder / f"{tile.stem}.nii.gz", rgb[:, :, None, None, :])
        else:
            path = folder / tile.name
            shutil.copy(tile, path)
        written[str(path.resolve())] = (tile, tile.parent.name)
    write_dicom(tree / "DICOMDIR", np.zeros((2, 2), np.uint8), "MONOCHROME2", pixel_data=False)
    (tree / "01_TUMOR" / "notes.txt").write_text("not an image")
    rows = _rows(convert_folders(tree, tmp_path / "out"))
    out = (tmp_path / "out").resolve()
    assert {os.path.normpath(out / r["relative_path"]): r["label"] for r in rows} == {
        path: label for path, (_, label) in written.items()
    }
    load = LoadRGBImaged(keys="image")
    for item in read_manifest(tmp_path / "out", class_names=sorted({label for _, label in written.values()})):
        tile = written[item["image"]][0]
        assert torch.equal(load(item)["image"], LoadRGBImage()(tile)), item["image"]
    # a DICOM without pixel data in a class folder stops the conversion, naming it
    write_dicom(tree / "02_STROMA" / "report.dcm", np.zeros((2, 2), np.uint8), "MONOCHROME2", pixel_data=False)
    with pytest.raises(ValueError, match=r"cannot read image .*02_STROMA[/\\]report\.dcm: DICOM without pixel data"):
        convert_folders(tree, tmp_path / "again")
    _assert_nothing_written(tmp_path / "again")


def test_output_must_not_overlap_input(pathology_dir: Path, tmp_path: Path) -> None:
    tree = tmp_path / "kather"
    shutil.copytree(pathology_dir / "kather2016_samples" / "01_TUMOR", tree / "01_TUMOR")
    with pytest.raises(ValueError, match="overlaps the input"):
        convert_folders(tree, tree / "manifest")
    with pytest.raises(ValueError, match="overlaps the input"):
        convert_folders(tree, tmp_path, overwrite=True)
    assert sorted(p.name for p in tree.iterdir()) == ["01_TUMOR"]


def test_existing_output_needs_overwrite(pathology_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    convert_folders(pathology_dir / "kather2016_samples", out, seed=0)
    with pytest.raises(FileExistsError, match="not empty"):
        convert_folders(pathology_dir / "kather2016_samples", out, seed=1)
    convert_folders(pathology_dir / "kather2016_samples", out, seed=1, overwrite=True)
    assert len(_rows(out / "manifest.csv")) == 32


def test_cli_converters(retina_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    npz = str(retina_dir / "retinamnist_trainval.npz")
    assert main(["medmnist", "--npz", npz, "--out", str(tmp_path / "mm")]) == 0
    assert "1200 rows (train 1080, val 120)" in capsys.readouterr().out
    assert main(["medmnist", "--npz", npz, "--out", str(tmp_path / "mm")]) == 1
    assert "error: output folder" in capsys.readouterr().err
    assert main(["folders", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "f")]) == 1
    assert "class-folder root not found" in capsys.readouterr().err
