"""Every command in docs/data.md runs as written, on the download layouts rebuilt from ../shared/data.

The downloads are rebuilt under ``tmp_path/downloads`` with their original names (symlinks to the
development copies, restricted to a few images per class where the download is large; the
PathMNIST ``.npz`` is packed from the PathMNIST tiles, the ISIC 2018 lesion groupings from
HAM10000's metadata; the dermoscopy DICOM export is written from the HAM10000 JPEGs with pydicom).
Each converter command runs verbatim, as a subprocess, from a fresh
``repo/`` folder beside ``downloads/``, and every training command that reads its output is
resolved with the bundle's config (datalists, labels, the first training image through the
preprocessing): what training would do before its first iteration. The bundle tests train.
"""

from __future__ import annotations

import ast
import csv
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigParser
from PIL import Image

from conftest import REPO_ROOT
from format_helpers import write_dicom

pytestmark = pytest.mark.data

DOC = REPO_ROOT / "docs" / "data.md"
PER_CLASS = 40  # skin images per diagnosis in the rebuilt HAM10000 / ISIC 2018 downloads
NCT_CODES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
DICOM_PER_CLASS = 7  # dermoscopy DICOMs per diagnosis in the rebuilt DICOM export: one of each goes to val


def _commands(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.startswith("    python -m ")]


def _options(argv: list[str]) -> dict[str, str]:
    options, key = {}, None
    for token in argv:
        if token.startswith("--"):
            key = token[2:]
            options.setdefault(key, [])
        else:
            options[key].append(token)
    return {k: v[0] if len(v) == 1 else v for k, v in options.items()}


def _value(text: str):
    """A command-line value as MONAI's ``fire`` reads it: a Python literal where it is one."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def downloads(tmp_path_factory, data_root) -> Path:
    """The downloads docs/data.md names, under their original names."""
    root = tmp_path_factory.mktemp("docs") / "downloads"
    skin = data_root / "skin"
    metadata = _read_csv(skin / "HAM10000_metadata.csv")
    kept, per_class = [], {}
    for record in metadata:
        if per_class.get(record["dx"], 0) < PER_CLASS:
            per_class[record["dx"]] = per_class.get(record["dx"], 0) + 1
            kept.append(record)
    ids = {record["image_id"] for record in kept}
    for i, record in enumerate(kept):  # HAM10000 ships its images in two folders
        part = "HAM10000_images_part_1" if i % 2 else "HAM10000_images_part_2"
        _link(skin / "images" / f"{record['image_id']}.jpg", root / part / f"{record['image_id']}.jpg")
        _link(skin / "images" / f"{record['image_id']}.jpg",
              root / "ISIC2018_Task3_Training_Input" / f"{record['image_id']}.jpg")
    header = list(metadata[0])
    _write_csv(root / "HAM10000_metadata.csv", header, [[r[h] for h in header] for r in kept])
    truth = _read_csv(data_root / "formats" / "isic2018_task3" / "ISIC2018_Task3_Training_GroundTruth.csv")
    header = list(truth[0])
    _write_csv(root / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv", header,
               [[r[h] for h in header] for r in truth if r["image"] in ids])
    _write_csv(root / "ISIC2018_Task3_Training_LesionGroupings.csv", ["image", "lesion_id", "diagnosis_confirm_type"],
               [[r["image_id"], r["lesion_id"], r["dx_type"]] for r in kept])

    _link(data_root / "formats" / "aptos2019", root / "aptos2019-blindness-detection")
    _link(data_root / "retina" / "retinamnist_trainval.npz", root / "retinamnist.npz")

    pathology = data_root / "pathology"
    arrays = {}
    for split in ("train", "val"):
        rows = [r for r in _read_csv(pathology / "manifest.csv") if r["split"] == split]
        arrays[f"{split}_images"] = np.stack([np.asarray(Image.open(pathology / r["relative_path"])) for r in rows])
        arrays[f"{split}_labels"] = np.array([[int(r["label"])] for r in rows], dtype=np.uint8)
    np.savez(root / "pathmnist.npz", **arrays)
    # one NONORM tile per class in the development copy: seven links each, so that val gets one
    for code in NCT_CODES:
        (tile,) = (pathology / "nct_crc_he_samples").glob(f"{code}-*.tif")
        for name in ("NCT-CRC-HE-100K", "NCT-CRC-HE-100K-NONORM"):
            for copy in range(7):
                _link(tile, root / name / code / f"{code}-{copy}.tif")
    _link(pathology / "kather2016_samples", root / "Kather_texture_2016_image_tiles_5000")
    # a DICOM export of dermoscopy images, one folder per diagnosis, half the files without extension
    for dx in sorted(per_class):
        folder = root / "dermoscopy_dicom" / dx
        folder.mkdir(parents=True)
        for n, record in enumerate([r for r in kept if r["dx"] == dx][:DICOM_PER_CLASS]):
            rgb = np.asarray(Image.open(skin / "images" / f"{record['image_id']}.jpg").convert("RGB"))
            write_dicom(folder / (f"{record['image_id']}.dcm" if n % 2 else record["image_id"]), rgb, "RGB")
    return root


def _check_training_command(command: str, repo: Path, monkeypatch) -> None:
    argv = shlex.split(command)
    assert argv[:5] == ["python", "-m", "monai.bundle", "run", "training"], command
    options = {k: _value(v) for k, v in _options(argv[5:]).items()}
    config_files = options.pop("config_file")
    config_files = config_files if isinstance(config_files, list) else [config_files]
    monkeypatch.chdir(repo)
    for config_file in config_files:
        assert Path(config_file).is_file(), f"{command}: no {config_file}"
    # MONAI's rule: metadata.json beside the first config file
    parser = ConfigParser()
    parser.read_config(config_files)
    parser.read_meta(str(Path(config_files[0]).parent / "metadata.json"))
    for key in options:
        assert key in parser, f"{command}: --{key} overrides nothing in {config_files}"
    parser.update(options)
    num_classes = parser.get_parsed_content("num_classes")
    for section in ("train", "validate"):
        datalist = parser.get_parsed_content(f"{section}#dataset#data")
        assert datalist and all(0 <= item["label"] < num_classes for item in datalist), command
    item = parser.get_parsed_content("train#dataset#data")[0]
    image = parser.get_parsed_content("train#preprocessing")(item)["image"]
    size = parser.get_parsed_content("image_size")
    assert tuple(image.shape) == (3, size, size), command


def test_the_doc_names_every_converter_and_bundle():
    commands = " ".join(_commands(DOC.read_text()))
    for converter in ("ham10000", "isic2018", "aptos2019", "medmnist", "folders"):
        assert f"python -m monai_danil.data {converter} " in commands
    for task in ("skin", "retina", "pathology"):
        assert f"--config_file bundles/{task}/train.json" in commands
    text = DOC.read_text()
    assert "CC BY-NC 4.0: non-commercial use only" in text and text.count("CC BY 4.0") >= 3


def test_bundle_readmes_show_the_converter_commands_of_the_doc():
    documented = set(_commands(DOC.read_text()))
    for task in ("skin", "pathology"):
        readme = REPO_ROOT / "bundles" / task / "docs" / "README.md"
        for command in _commands(readme.read_text()):
            if command.startswith("python -m monai_danil.data"):
                assert command in documented, f"{readme}: {command}"


def test_every_command_runs_as_written(downloads, monkeypatch):
    commands = _commands(DOC.read_text())
    converters = [c for c in commands if c.startswith("python -m monai_danil.data ")]
    trainings = [c for c in commands if c.startswith("python -m monai.bundle run training ")]
    checked = set()
    for n, converter in enumerate(converters):
        repo = downloads.parent / f"run{n}" / "repo"
        repo.mkdir(parents=True)
        (repo / "bundles").symlink_to(REPO_ROOT / "bundles")
        (repo.parent / "downloads").symlink_to(downloads)
        result = subprocess.run(
            [sys.executable, *shlex.split(converter)[1:]], cwd=repo, capture_output=True, text=True, timeout=600,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        assert result.returncode == 0, f"{converter}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        out = _options(shlex.split(converter)[4:])["out"]
        for training in trainings:
            if _options(shlex.split(training)[5:]).get("dataset_dir") == out:
                _check_training_command(training, repo, monkeypatch)
                checked.add(training)
    assert checked == set(trainings), f"training commands without a converter above them: {set(trainings) - checked}"
