"""The bundles' loading transform in the bundles: mixed formats train, DICOMs infer, bad images name themselves.

The table of issue 10 (corrupt, truncated, grey, RGBA, 16-bit images among RetinaMNIST PNGs) runs
on the retina bundle's own datasets, built from its config as the training command builds them;
one real training subprocess shows what a user sees when a bad image stops it, and one trains on
a manifest that mixes PNG, TIFF, DICOM and NIfTI, then infers on DICOMs.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_helpers import BUNDLES, copy_bundle, parse_config, read_predictions, run_module, write_manifest
from format_helpers import rgb_to_ybr_full, write_dicom, write_nifti
from PIL import Image

from monai_danil.transforms import BadImageError

pytestmark = pytest.mark.data
TASKS = ("retina", "skin", "pathology")
LOADER = "monai_danil.transforms.LoadRGBImaged"


def _bad_image(error: BaseException) -> BadImageError | None:
    while error is not None and not isinstance(error, BadImageError):
        error = error.__cause__ or error.__context__
    return error


def _retina_rows(retina_dir: Path, split: str, count: int) -> list[dict[str, str]]:
    with open(retina_dir / "manifest.csv", newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["split"] == split][:count]


@pytest.mark.parametrize("task", TASKS)
def test_every_bundle_loads_train_val_and_inference_images_with_one_transform(task):
    train = json.loads((BUNDLES / task / "configs" / "train.json").read_text())
    assert train["load_image"]["_target_"] == LOADER and train["skip_bad_images"] is False
    for section in ("train", "validate"):
        assert train[section]["preprocessing"]["transforms"][0] == "@load_image"
    inference = json.loads((BUNDLES / task / "configs" / "inference.json").read_text())
    assert inference["preprocessing"]["transforms"][0]["_target_"] == LOADER and inference["skip_bad_images"] is False


def _write_case(case: str, source: Path, target: Path) -> None:
    rgb = np.asarray(Image.open(source).convert("RGB"))
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    if case == "corrupt PNG (first 100 bytes)":
        target.write_bytes(source.read_bytes()[:100])
    elif case == "truncated PNG (half the bytes)":
        data = source.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif case == "grey PNG":
        Image.fromarray(grey).save(target)
    elif case == "RGBA PNG":
        Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])).save(target)
    elif case == "16-bit grey PNG":
        Image.fromarray(grey.astype(np.uint16) * 257).save(target)


TABLE = {
    "corrupt PNG (first 100 bytes)": "cannot decode it as PNG (OSError: image file is truncated)",
    "truncated PNG (half the bytes)": "cannot decode it as PNG (OSError: image file is truncated)",
    "grey PNG": None,
    "RGBA PNG": None,
    "16-bit grey PNG": None,
}


@pytest.mark.parametrize("case", TABLE)
def test_broken_input_table_on_the_retina_bundles_datasets(case, retina_dir, tmp_path):
    """Each row of the table: an error naming manifest line, file and reason at dataset build, or a clean RGB batch."""
    data = tmp_path / "data"
    data.mkdir()
    rows = []
    for split, count in (("train", 6), ("val", 6)):
        for i, row in enumerate(_retina_rows(retina_dir, split, count)):
            name = f"{split}_{i}.png"
            shutil.copy(retina_dir / row["relative_path"], data / name)
            rows.append((name, row["label"], split))
    broken = data / "val_3.png"  # manifest line 11: header, 6 train rows, then val_0..val_3
    _write_case(case, retina_dir / _retina_rows(retina_dir, "val", 4)[3]["relative_path"], broken)
    write_manifest(data / "manifest.csv", rows)
    parser = parse_config(BUNDLES / "retina", dataset_dir=str(data))
    if TABLE[case] is not None:
        with pytest.raises(RuntimeError) as info:
            parser.get_parsed_content("validate#dataset")  # a CacheDataset: fails while it is built
        error = _bad_image(info.value)
        assert error is not None, info.value
        assert str(error) == f"{data / 'manifest.csv'}, line 11: {broken}: {error.reason}"
        assert TABLE[case] in error.reason and "expected a complete PNG image" in error.reason
        # --skip_bad_images true: the same datasets without it, and the report names it
        logs = tmp_path / "logs"
        parser = parse_config(BUNDLES / "retina", dataset_dir=str(data), skip_bad_images="true", log_dir=str(logs))
        batch = next(iter(parser.get_parsed_content("validate#dataloader")))
        assert batch["image"].shape == (5, 3, 28, 28) and batch["id"].tolist() == [6, 7, 8, 10, 11]
        with open(logs / "bad_images.csv", newline="") as handle:
            (row,) = list(csv.DictReader(handle))
        assert row == {"origin": f"{data / 'manifest.csv'}, line 11", "image": str(broken), "reason": error.reason}
        return
    batch = next(iter(parser.get_parsed_content("validate#dataloader")))  # the collate that failed before
    images = batch["image"]
    assert images.shape == (6, 3, 28, 28) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    # the documented conversion: grey (8- or 16-bit) is the grey picture on 3 channels, opaque RGBA the RGB one
    source = retina_dir / _retina_rows(retina_dir, "val", 4)[3]["relative_path"]
    expected = tmp_path / "expected.png"
    if case == "RGBA PNG":
        shutil.copy(source, expected)
    else:
        Image.open(source).convert("L").save(expected)
    preprocessing = parser.get_parsed_content("validate#preprocessing")
    assert torch.equal(images[3], preprocessing({"image": str(expected), "label": 0})["image"])


def test_inference_names_a_bad_image_when_it_is_loaded(retina_dir, tmp_path):
    rows = [(str(retina_dir / r["relative_path"]), r["label"], "val") for r in _retina_rows(retina_dir, "val", 3)]
    broken = tmp_path / "broken.png"
    broken.write_bytes((retina_dir / rows[1][0]).read_bytes()[:100])
    rows[1] = (str(broken), rows[1][1], "val")
    write_manifest(tmp_path / "manifest.csv", rows)
    parser = parse_config(BUNDLES / "retina", "inference.json", dataset_dir=str(tmp_path))
    dataset = parser.get_parsed_content("dataset")  # a plain Dataset: nothing is loaded yet
    assert dataset[0]["image"].shape == (3, 28, 28)
    with pytest.raises(RuntimeError) as info:
        dataset[1]
    assert str(_bad_image(info.value)).startswith(f"{tmp_path / 'manifest.csv'}, line 3: {broken}: cannot decode")


def test_a_bad_image_stops_training_before_any_step_with_a_clear_last_line(retina_dir, tmp_path):
    bundle = copy_bundle("retina", tmp_path)
    rows = [(str(retina_dir / r["relative_path"]), r["label"], r["split"])
            for split in ("train", "val") for r in _retina_rows(retina_dir, split, 8)]
    broken = tmp_path / "broken.png"
    broken.write_bytes((retina_dir / rows[4][0]).read_bytes()[:100])
    rows[4] = (str(broken), rows[4][1], "train")
    write_manifest(tmp_path / "manifest.csv", rows)
    result = run_module(["monai.bundle", "run", "training", "--config_file", "bundles/retina/train.json",
                         "--dataset_dir", str(tmp_path), "--epochs", "1", "--batch_size", "4"], cwd=tmp_path, check=False)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"monai_danil.transforms.io.array.BadImageError: {tmp_path / 'manifest.csv'}, line 6: {broken}: cannot "
        "decode it as PNG (OSError: image file is truncated): the file is corrupt or truncated; expected a complete "
        "PNG image."
    ), result.stderr[-3000:]
    assert len(result.stderr.splitlines()) < 40, result.stderr  # not MONAI's 130-line wrapped traceback
    assert not (bundle / "models").exists()  # failed while the dataset was built: no training step


# 16-bit RGB TIFF (ITK, whose first use costs seconds) is left to test_transforms_io
MIXED = ("png", "tiff", "dicom RGB", "dicom RGB planar 1", "dicom YBR_FULL", "dicom MONOCHROME1",
         "nifti RGB vector", "nifti grey 3D one slice", "RGBA png", "16-bit grey png")


def _write_mixed(kind: str, rgb: np.ndarray, stem: Path) -> Path:
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    if kind == "png":
        Image.fromarray(rgb).save(path := stem.with_suffix(".png"))
    elif kind == "tiff":
        Image.fromarray(rgb).save(path := stem.with_suffix(".tif"))
    elif kind == "dicom RGB":
        path = write_dicom(stem.with_suffix(".dcm"), rgb, "RGB")
    elif kind == "dicom RGB planar 1":
        path = write_dicom(stem.with_suffix(".dcm"), rgb, "RGB", planar_configuration=1)
    elif kind == "dicom YBR_FULL":
        path = write_dicom(stem.with_suffix(".dcm"), rgb_to_ybr_full(rgb), "YBR_FULL")
    elif kind == "dicom MONOCHROME1":
        path = write_dicom(stem.with_suffix(".dcm"), 255 - grey, "MONOCHROME1")
    elif kind == "nifti RGB vector":
        path = write_nifti(stem.with_suffix(".nii.gz"), rgb[:, :, None, None, :])
    elif kind == "nifti grey 3D one slice":
        path = write_nifti(stem.with_suffix(".nii"), grey[:, :, None])
    elif kind == "RGBA png":
        Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])).save(path := stem.with_suffix(".png"))
    else:
        Image.fromarray(grey.astype(np.uint16) * 257).save(path := stem.with_suffix(".png"))
    return path


@pytest.mark.slow
def test_retina_trains_on_mixed_formats_and_infers_on_a_dicom_folder(retina_dir, tmp_path):
    """One epoch on 110 real images in 10 formats (16 per batch), then inference.json on DICOMs: a manifest, a folder."""
    bundle = copy_bundle("retina", tmp_path)
    data, dicoms = tmp_path / "mixed", tmp_path / "dicoms"
    data.mkdir()
    dicoms.mkdir()
    train, dicom_rows = [], []
    for i, row in enumerate(_retina_rows(retina_dir, "train", 110)):
        rgb = np.asarray(Image.open(retina_dir / row["relative_path"]).convert("RGB"))
        path = _write_mixed(MIXED[i % len(MIXED)], rgb, data / f"train_{i:03d}")
        train.append((path.name, row["label"], "train"))
    for i, row in enumerate(_retina_rows(retina_dir, "val", 20)):
        rgb = np.asarray(Image.open(retina_dir / row["relative_path"]).convert("RGB"))
        path = write_dicom(dicoms / f"val_{i:03d}.dcm", rgb, "RGB")
        dicom_rows.append((path.name, row["label"], "val"))
        train.append((str(path), row["label"], "val"))
    write_manifest(data / "manifest.csv", train)
    write_manifest(dicoms / "manifest.csv", dicom_rows)
    run_module(["monai.bundle", "run", "training", "--config_file", "bundles/retina/train.json",
                "--dataset_dir", str(data), "--epochs", "1", "--batch_size", "16"], cwd=tmp_path)
    checkpoint = torch.load(bundle / "models" / "checkpoint.pt", weights_only=True)
    assert checkpoint["trainer"]["iteration"] == 110 // 16
    assert not (bundle / "logs" / "bad_images.csv").exists()  # skip_bad_images is off by default
    run_module(["monai.bundle", "run", "--config_file", "bundles/retina/configs/inference.json",
                "--dataset_dir", str(dicoms)], cwd=tmp_path)
    predictions = read_predictions(bundle / "eval" / "predictions.csv")
    assert sorted(Path(row[0]).name for row in predictions) == [name for name, _, _ in dicom_rows]
    assert all(abs(sum(map(float, row[1:])) - 1.0) < 1e-4 for row in predictions)
    # the same DICOMs as a plain folder (no manifest): every image under it, the same probabilities
    (dicoms / "manifest.csv").unlink()
    run_module(["monai.bundle", "run", "--config_file", "bundles/retina/configs/inference.json",
                "--dataset_dir", str(dicoms)], cwd=tmp_path)
    from_folder = read_predictions(bundle / "eval" / "predictions.csv")
    by_name = {Path(row[0]).name: row[1:] for row in predictions}
    assert {Path(row[0]).name: row[1:] for row in from_folder} == by_name
