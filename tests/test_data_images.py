"""Inference datalists from a folder of real images or a manifest without labels; the split to score."""

from __future__ import annotations

import shutil

import pytest

from monai_danil.bundle import flag
from monai_danil.data import IMAGE_EXTENSIONS, evaluation_split, find_images, image_datalist, read_manifest

RETINA = ["no DR", "mild", "moderate", "severe", "proliferative DR"]


def test_a_folder_gives_every_image_recursively_in_path_order(tmp_path, retina_dir, pathology_dir):
    pngs = sorted((retina_dir / "images" / "val").glob("*.png"))[:2]
    tif = sorted((pathology_dir / "nct_crc_he_samples").glob("*.tif"))[0]
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / ".cache").mkdir()
    shutil.copy(pngs[0], tmp_path / "b" / "deep" / "one.PNG")
    shutil.copy(pngs[1], tmp_path / "a.png")
    shutil.copy(tif, tmp_path / "b" / "tile.tif")
    shutil.copy(pngs[0], tmp_path / ".cache" / "hidden.png")
    shutil.copy(pngs[0], tmp_path / ".hidden.png")
    (tmp_path / "b" / "readme.txt").write_text("not an image")
    items = image_datalist(tmp_path, split="val")  # a folder has no split: ignored
    assert [i["relative_path"] for i in items] == ["a.png", "b/deep/one.PNG", "b/tile.tif"]
    assert [i["id"] for i in items] == [0, 1, 2] and all("label" not in i for i in items)
    assert items[2]["image"] == str((tmp_path / "b" / "tile.tif").resolve())
    assert find_images(tmp_path, extensions=(".tif",)) == [tmp_path / "b" / "tile.tif"]
    assert ".png" in IMAGE_EXTENSIONS and ".tiff" in IMAGE_EXTENSIONS


def test_a_manifest_may_have_no_label_and_no_split(tmp_path, retina_dir):
    image = sorted((retina_dir / "images" / "val").glob("*.png"))[0]
    shutil.copy(image, tmp_path / "x.png")
    (tmp_path / "manifest.csv").write_text(f"relative_path\nx.png\n{image}\n")
    items = image_datalist(tmp_path, split="val", class_names=RETINA)  # no split column: every row
    manifest = tmp_path / "manifest.csv"
    assert items == [
        {"image": str(tmp_path / "x.png"), "id": 0, "origin": f"{manifest}, line 2", "relative_path": "x.png"},
        {"image": str(image), "id": 1, "origin": f"{manifest}, line 3", "relative_path": str(image)},
    ]
    # with labels, they are read and checked as in training; training still requires them
    (tmp_path / "manifest.csv").write_text("relative_path,label,split\nx.png,mild,val\nx.png,2,train\n")
    assert image_datalist(tmp_path, "val", RETINA) == [
        {"image": str(tmp_path / "x.png"), "label": 1, "id": 0, "origin": f"{manifest}, line 2", "relative_path": "x.png"}
    ]
    (tmp_path / "manifest.csv").write_text("relative_path\nx.png\n")
    with pytest.raises(ValueError, match="missing column"):
        read_manifest(tmp_path, None, RETINA)
    with pytest.raises(ValueError, match="missing column"):
        read_manifest(tmp_path, None, RETINA, columns=("lesion_id",))


def test_bad_inputs_name_the_folder_or_row(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image found"):
        image_datalist(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="dataset_dir not found"):
        image_datalist(tmp_path / "missing")
    (tmp_path / "manifest.csv").write_text("relative_path,label\nmissing.png,0\n")
    with pytest.raises(FileNotFoundError, match="line 2: image not found"):
        image_datalist(tmp_path, class_names=RETINA)


def test_the_split_to_score_is_test_if_present_else_val(tmp_path, retina_dir):
    assert evaluation_split(retina_dir) == "val"
    (tmp_path / "manifest.csv").write_text("relative_path,label,split\na.png,0,train\nb.png,0,test\nc.png,1,val\n")
    assert evaluation_split(tmp_path) == "test"
    (tmp_path / "manifest.csv").write_text("relative_path,label\na.png,0\n")
    assert evaluation_split(tmp_path) is None
    (tmp_path / "manifest.csv").write_text("relative_path,label,split\na.png,0,train\n")
    with pytest.raises(ValueError, match=r"splits found: \['train'\]"):
        evaluation_split(tmp_path)


def test_flags_read_the_command_line_spellings():
    assert [flag(v) for v in (True, "true", "True", " 1 ", "yes", 1)] == [True] * 6
    assert [flag(v) for v in (False, "false", "OFF", "0", "no", 0)] == [False] * 6
    with pytest.raises(ValueError, match="save_gradcam must be true or false, got 'maybe'"):
        flag("maybe", "save_gradcam")
