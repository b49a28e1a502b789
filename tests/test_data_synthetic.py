"""The SYNTHETIC retina demo set: content, balance, determinism and the command line."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_danil.data import draw_synthetic_fundus, make_synthetic_retina, read_manifest


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def default_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "retina"
    make_synthetic_retina(out)
    return out


def test_default_set(default_set: Path) -> None:
    rows = _rows(default_set)
    assert len(rows) == 300 and list(rows[0]) == ["relative_path", "label", "split"]
    assert Counter(r["split"] for r in rows) == {"train": 240, "val": 60}
    for split in ("train", "val"):
        assert {r["label"] for r in rows if r["split"] == split} == {"0", "1", "2", "3", "4"}
    readme = (default_set / "README.txt").read_text()
    assert "SYNTHETIC" in readme and "NOT medical data" in readme
    assert len(list((default_set / "images").glob("*.png"))) == 300
    datalist = read_manifest(default_set, split="val")
    assert len(datalist) == 60 and {d["label"] for d in datalist} == set(range(5))


def test_images_are_rgb_of_the_requested_size(tmp_path: Path) -> None:
    make_synthetic_retina(tmp_path / "s", num_images=20, image_size=48, seed=2)
    for row in _rows(tmp_path / "s"):
        with Image.open(tmp_path / "s" / row["relative_path"]) as image:
            assert image.mode == "RGB" and image.size == (48, 48)


def test_picture_looks_like_a_fundus() -> None:
    pixels = draw_synthetic_fundus(0, 64, np.random.default_rng(0)).astype(float)
    assert pixels.shape == (64, 64, 3)
    assert pixels[0, 0].max() < 10 and pixels[-1, -1].max() < 10  # black corners
    centre = pixels[24:40, 24:40].mean(axis=(0, 1))
    assert centre[0] > centre[1] > centre[2] and centre[0] > 80  # orange-red field of view


def test_lesion_load_grows_with_grade(default_set: Path) -> None:
    def lesion_pixels(path: Path) -> int:
        with Image.open(path) as image:
            rgb = np.asarray(image, dtype=float)
        yellow = (rgb[..., 0] > 190) & (rgb[..., 1] > 150) & (rgb[..., 2] < 140)
        return int(yellow.sum())

    by_grade: dict[int, list[int]] = {g: [] for g in range(5)}
    for row in _rows(default_set):
        by_grade[int(row["label"])].append(lesion_pixels(default_set / row["relative_path"]))
    means = [np.mean(by_grade[g]) for g in range(5)]
    assert means[0] < means[2] < means[4], means


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        make_synthetic_retina(tmp_path / name, num_images=15, image_size=32, seed=seed)

    def content(name: str) -> list[bytes]:
        folder = tmp_path / name
        images = sorted((folder / "images").iterdir())
        return [(folder / "manifest.csv").read_bytes()] + [p.read_bytes() for p in images]

    assert content("a") == content("b")
    assert content("a") != content("c")


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_images is 9"):
        make_synthetic_retina(tmp_path / "few", num_images=9)
    with pytest.raises(ValueError, match="image_size is 8"):
        make_synthetic_retina(tmp_path / "tiny", image_size=8)
    assert not (tmp_path / "few").exists() and not (tmp_path / "tiny").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        make_synthetic_retina(tmp_path / "full", num_images=10)
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["keep.txt"]


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "monai_danil.data", "synthetic", "--task", "retina", "--out", str(out)]
    result = subprocess.run(
        [*command, "--num-images", "25", "--image-size", "40", "--seed", "3"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "25 rows" in result.stdout and "SYNTHETIC" in result.stdout
    assert len(_rows(out)) == 25
    with Image.open(out / _rows(out)[0]["relative_path"]) as image:
        assert image.size == (40, 40)

    again = subprocess.run(command, capture_output=True, text=True, check=False)
    assert again.returncode == 1 and "not empty" in again.stderr

    usage = subprocess.run(
        [sys.executable, "-m", "monai_danil.data", "synthetic", "--help"], capture_output=True, text=True, check=True
    )
    assert "SYNTHETIC" in usage.stdout
