"""LoadRGBImage(d): the same picture gives the same tensor in PNG, TIFF, DICOM and NIfTI; bad files name themselves.

Real pictures (a RetinaMNIST fundus, a HAM10000 dermoscopy image, a PathMNIST H&E tile) are cut to
a non-square, asymmetric region, so a transpose changes the shape and a flip the content, and
written in every format the loader reads (DICOM with pydicom, NIfTI with nibabel, 16-bit RGB TIFF
with tifffile, as ``format_helpers`` describes). Each is then loaded alone and through each
bundle's inference preprocessing, and compared with the PNG.
"""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from format_helpers import rgb_to_ybr_full, write_dicom, write_nifti, write_tiff
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose, LoadImage, ScaleIntensityRanged
from PIL import Image

from bundle_helpers import BUNDLES, parse_config
from monai_danil.transforms import BadImageError, LoadRGBImage, LoadRGBImaged, image_format

pytestmark = pytest.mark.data

# bundle: (task folder, one image of its manifest, the region kept: rows, columns)
PICTURES = {
    "retina": ("retina", 0, (28, 22)),
    "skin": ("skin", 0, (60, 44)),
    "pathology": ("pathology", 0, (28, 20)),
}


def _first_image(task_dir: Path) -> Path:
    with open(task_dir / "manifest.csv", newline="") as handle:
        return task_dir / next(csv.DictReader(handle))["relative_path"]


def write_formats(rgb: np.ndarray, folder: Path) -> dict[str, tuple[Path, str]]:
    """``rgb`` (and its grey version) in every lossless format: ``{name: (path, "rgb" or "grey")}``."""
    folder.mkdir(parents=True, exist_ok=True)
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    files = {"png": (folder / "rgb.png", "rgb"), "grey.png": (folder / "grey.png", "grey")}
    Image.fromarray(rgb).save(files["png"][0])
    Image.fromarray(grey).save(files["grey.png"][0])
    Image.fromarray(rgb).save(folder / "rgb.tif")
    files["tiff"] = (folder / "rgb.tif", "rgb")
    files["tiff 16-bit RGB"] = (write_tiff(folder / "rgb16.tif", rgb.astype(np.uint16) * 257), "rgb")
    files["tiff 16-bit grey"] = (write_tiff(folder / "grey16.tif", grey.astype(np.uint16) * 257), "grey")
    files["png 16-bit grey"] = (folder / "grey16.png", "grey")
    Image.fromarray(grey.astype(np.uint16) * 257).save(files["png 16-bit grey"][0])
    files["dicom RGB planar 0"] = (write_dicom(folder / "rgb0.dcm", rgb, "RGB", planar_configuration=0), "rgb")
    files["dicom RGB planar 1"] = (write_dicom(folder / "rgb1.dcm", rgb, "RGB", planar_configuration=1), "rgb")
    files["dicom MONOCHROME2"] = (write_dicom(folder / "mono2.dcm", grey, "MONOCHROME2"), "grey")
    files["dicom MONOCHROME1"] = (write_dicom(folder / "mono1.dcm", 255 - grey, "MONOCHROME1"), "grey")
    # 16 bits stored, rescaled to Hounsfield-like units, with a window: scaled by the bit depth
    files["dicom MONOCHROME2 16-bit"] = (
        write_dicom(folder / "mono16.dcm", grey.astype(np.uint16) * 257, "MONOCHROME2", rescale=(2.0, -1024.0),
                    window=(40.0, 80.0)),
        "grey",
    )
    files["dicom signed 16-bit"] = (
        write_dicom(folder / "signed16.dcm", (grey.astype(np.int32) * 257 - 32768).astype(np.int16), "MONOCHROME2"),
        "grey",
    )
    files["nifti 2D"] = (write_nifti(folder / "grey2d.nii", grey), "grey")
    files["nifti 3D one slice"] = (write_nifti(folder / "grey3d.nii.gz", grey[:, :, None]), "grey")
    files["nifti RGB vector"] = (write_nifti(folder / "rgb.nii.gz", rgb[:, :, None, None, :]), "rgb")
    opaque = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    Image.fromarray(opaque).save(folder / "rgba.png")
    files["png RGBA opaque"] = (folder / "rgba.png", "rgb")
    return files


@pytest.fixture(scope="module")
def pictures(data_root: Path, tmp_path_factory) -> dict[str, dict]:
    """Per bundle: the picture, its files in every format, and their loads."""
    out = {}
    for bundle, (task, _, (rows, columns)) in PICTURES.items():
        rgb = np.asarray(Image.open(_first_image(data_root / task)).convert("RGB"))[:rows, :columns].copy()
        folder = tmp_path_factory.mktemp(bundle)
        out[bundle] = {"rgb": rgb, "folder": folder, "files": write_formats(rgb, folder)}
    return out


@pytest.mark.parametrize("bundle", PICTURES)
def test_every_format_loads_as_the_png_in_the_same_orientation(pictures, bundle):
    picture = pictures[bundle]
    load = LoadRGBImage()
    reference = {kind: load(picture["files"][name][0]) for kind, name in (("rgb", "png"), ("grey", "grey.png"))}
    rows, columns = picture["rgb"].shape[:2]
    assert reference["rgb"].shape == (3, rows, columns) and rows != columns
    # the picture is asymmetric: any flip or transpose of it would differ
    for flipped in (reference["rgb"].flip(1), reference["rgb"].flip(2)):
        assert not torch.equal(flipped, reference["rgb"])
    # an 8-bit RGB PNG loads exactly as the bundles' LoadImaged did, so trained numerics do not change
    legacy = LoadImage(reader="PILReader", reverse_indexing=False, ensure_channel_first=True, image_only=True)
    assert torch.equal(torch.as_tensor(legacy(picture["files"]["png"][0])), reference["rgb"].as_tensor())
    assert torch.equal(reference["grey"][0], torch.as_tensor(np.asarray(Image.open(picture["files"]["grey.png"][0]),
                                                                       dtype=np.float32)))
    for name, (path, kind) in picture["files"].items():
        image = load(path)
        assert image.dtype == torch.float32 and image.shape == (3, rows, columns), name
        assert torch.equal(image, reference[kind]), f"{name}: max difference {(image - reference[kind]).abs().max()}"
        assert image.meta["filename_or_obj"] == str(path)


@pytest.mark.parametrize("bundle", PICTURES)
def test_ybr_dicom_is_converted_to_rgb(pictures, bundle):
    picture = pictures[bundle]
    rgb = picture["rgb"][:, : picture["rgb"].shape[1] // 2 * 2]  # YBR_FULL_422 pairs columns
    folder = picture["folder"]
    ybr = rgb_to_ybr_full(rgb)
    full = LoadRGBImage()(write_dicom(folder / "ybr.dcm", ybr, "YBR_FULL"))
    half = LoadRGBImage()(write_dicom(folder / "ybr422.dcm", ybr, "YBR_FULL_422"))
    expected = torch.as_tensor(rgb, dtype=torch.float32).permute(2, 0, 1)
    # 8-bit YBR <-> RGB rounds; 4:2:2 also shares the chroma of each pixel pair
    assert (full - expected).abs().max() <= 2
    error = (half - expected).abs().mean()
    assert error < 3 and error < (half - expected.flip(2)).abs().mean()


@pytest.mark.parametrize("bundle", PICTURES)
def test_every_format_gives_the_pngs_tensor_through_the_bundles_preprocessing(pictures, bundle):
    picture = pictures[bundle]
    preprocessing = parse_config(BUNDLES / bundle, "inference.json").get_parsed_content("preprocessing")
    reference = {
        kind: preprocessing({"image": str(picture["files"][name][0])})["image"]
        for kind, name in (("rgb", "png"), ("grey", "grey.png"))
    }
    assert 0.0 <= reference["rgb"].min() and reference["rgb"].max() <= 1.0
    for name, (path, kind) in picture["files"].items():
        image = preprocessing({"image": str(path)})["image"]
        assert torch.equal(image, reference[kind]), name


def test_conversions_alpha_bit_depth_palette(tmp_path):
    load = LoadRGBImage()
    rgb = np.array([[[200, 100, 50], [10, 20, 30]]], dtype=np.uint8)
    rgba = np.dstack([rgb, np.array([[255, 0]], dtype=np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    image = load(tmp_path / "rgba.png")  # alpha over black: opaque kept, transparent black
    assert image[:, 0, 0].tolist() == [200, 100, 50] and image[:, 0, 1].tolist() == [0, 0, 0]
    Image.fromarray(np.dstack([rgb, np.array([[128, 128]], dtype=np.uint8)])).save(tmp_path / "half.png")
    assert torch.allclose(load(tmp_path / "half.png")[:, 0, 0], torch.tensor([200.0, 100.0, 50.0]) * 128 / 255)
    # 16-bit grey: by 65535, not clipped to 0-255 (a raw 300 is 1.17, not 255)
    Image.fromarray(np.array([[300, 65535]], dtype=np.uint16)).save(tmp_path / "g16.png")
    assert torch.allclose(load(tmp_path / "g16.png")[0, 0], torch.tensor([300 * 255 / 65535, 255.0]))
    # 12 bits stored in DICOM: by 4095
    write_dicom(tmp_path / "g12.dcm", np.array([[0, 4095, 1000]], dtype=np.uint16), "MONOCHROME2", bits_stored=12)
    assert torch.allclose(load(tmp_path / "g12.dcm")[0, 0], torch.tensor([0.0, 255.0, 1000 * 255 / 4095]))
    # palette images become RGB as Pillow converts them; a grey + alpha PNG composites the same way
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    expected = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
    assert np.array_equal(load(tmp_path / "p.png").numpy(), expected)
    Image.fromarray(np.dstack([rgb[..., 0], np.array([[255, 0]], dtype=np.uint8)]), "LA").save(tmp_path / "la.png")
    assert load(tmp_path / "la.png")[:, 0].tolist() == [[200.0, 0.0]] * 3
    # a DICOM file without an extension is read by its content
    shutil.copy(write_dicom(tmp_path / "x.dcm", rgb, "RGB"), tmp_path / "IM0001")
    assert image_format(tmp_path / "IM0001") == "DICOM"
    assert torch.equal(load(tmp_path / "IM0001"), load(tmp_path / "x.dcm"))


def _corrupt(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)] if keep < 1 else data[:100])
    return path


def _error_cases(folder: Path, rgb: np.ndarray) -> list[tuple[Path, str]]:
    """``(file, what the message says)`` for every kind of bad file."""
    Image.fromarray(rgb).save(folder / "good.png")
    cases = []
    shutil.copy(folder / "good.png", folder / "first100.png")
    cases.append((_corrupt(folder / "first100.png", 1), r"cannot decode it as PNG .*truncated"))
    shutil.copy(folder / "good.png", folder / "half.png")
    cases.append((_corrupt(folder / "half.png", 0.5), r"cannot decode it as PNG .*corrupt or truncated"))
    shutil.copy(folder / "good.png", folder / "png_named.dcm")
    cases.append((folder / "png_named.dcm", r"the extension '\.dcm' says DICOM but the content is a PNG file"))
    write_dicom(folder / "dicom_named.png", rgb, "RGB")
    cases.append((folder / "dicom_named.png", r"the extension '\.png' says PNG but the content is a DICOM file"))
    (folder / "not_a.png").write_bytes(b"<html>not an image</html>" * 4)
    cases.append((folder / "not_a.png", r"not a valid PNG file"))
    (folder / "empty.jpg").write_bytes(b"")
    cases.append((folder / "empty.jpg", r"empty file"))
    Image.fromarray(rgb).save(folder / "picture.gif")
    cases.append((folder / "picture.gif", r"unsupported file type \(extension '\.gif'"))
    write_tiff(folder / "float.tif", rgb[..., 0].astype(np.float32))
    cases.append((folder / "float.tif", r"unsupported pixel type: Pillow mode 'F'"))
    pages = [Image.fromarray(rgb), Image.fromarray(rgb[::-1].copy())]
    pages[0].save(folder / "pages.tif", save_all=True, append_images=pages[1:])
    cases.append((folder / "pages.tif", r"TIFF with 2 frames or pages; expected one 2D image"))
    write_dicom(folder / "frames.dcm", rgb, "RGB", frames=3)
    cases.append((folder / "frames.dcm", r"multi-frame DICOM with 3 frames"))
    write_dicom(folder / "report.dcm", rgb, "RGB", pixel_data=False)
    cases.append((folder / "report.dcm", r"DICOM without pixel data \(SOP class Secondary Capture Image Storage\)"))
    write_dicom(folder / "truncated.dcm", rgb, "RGB")
    cases.append((_corrupt(folder / "truncated.dcm", 0.9), r"cannot decode it as DICOM .*corrupt or truncated"))
    write_dicom(folder / "palette.dcm", rgb[..., 0], "PALETTE COLOR")
    cases.append((folder / "palette.dcm", r"DICOM photometric interpretation 'PALETTE COLOR'; expected one of MONO"))
    write_nifti(folder / "volume.nii.gz", rgb)  # (rows, columns, 3) is 3 slices, not RGB
    cases.append((folder / "volume.nii.gz", r"NIfTI volume of 3 slices"))
    write_nifti(folder / "five.nii", np.zeros(rgb.shape[:2] + (1, 1, 5), np.uint8))
    cases.append((folder / "five.nii", r"5 channels .*expected 1 \(grey\), 2 \(grey \+ alpha\), 3 \(RGB\) or 4"))
    write_nifti(folder / "float.nii", rgb[..., 0].astype(np.float32))
    cases.append((folder / "float.nii", r"NIfTI with float32 samples"))
    cases.append((folder / "missing.png", r"file not found"))
    return cases


def test_bad_files_raise_errors_naming_the_file_and_the_manifest_line(tmp_path, retina_dir):
    rgb = np.asarray(Image.open(_first_image(retina_dir)).convert("RGB"))
    load = LoadRGBImaged(keys="image")
    for number, (path, reason) in enumerate(_error_cases(tmp_path, rgb)):
        with pytest.raises(BadImageError, match=f"^{re.escape(str(path))}: {reason}") as info:
            LoadRGBImage()(path)
        assert info.value.path == str(path)
        origin = f"{tmp_path / 'manifest.csv'}, line {number + 2}"
        with pytest.raises(BadImageError) as info:
            load({"image": str(path), "origin": origin})
        assert str(info.value).startswith(f"{origin}: {path}: ") and info.value.origin == origin


def test_skip_bad_images_leaves_them_out_of_the_batch_and_reports_them(tmp_path, retina_dir):
    rgb = np.asarray(Image.open(_first_image(retina_dir)).convert("RGB"))
    items = []
    for i in range(5):
        Image.fromarray(np.roll(rgb, i, axis=0)).save(tmp_path / f"{i}.png")
        items.append({"image": str(tmp_path / f"{i}.png"), "label": i % 2, "id": i, "origin": f"m.csv, line {i + 2}"})
    _corrupt(tmp_path / "3.png", 0.5)
    report = tmp_path / "logs" / "bad_images.csv"
    load = LoadRGBImaged(keys="image", skip_bad_images="true", report_file=report)
    transform = Compose([load, ScaleIntensityRanged("image", 0, 255, 0.0, 1.0)])
    batch = next(iter(DataLoader(CacheDataset(items, transform, progress=False), batch_size=5)))
    assert batch["image"].shape == (4, 3, 28, 28) and batch["id"].tolist() == [0, 1, 2, 4]
    assert batch["origin"] == [f"m.csv, line {i + 2}" for i in (0, 1, 2, 4)]
    with open(report, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["origin"], r["image"]) for r in rows] == [("m.csv, line 5", str(tmp_path / "3.png"))]
    assert "corrupt or truncated" in rows[0]["reason"]
    with pytest.raises(ValueError):
        LoadRGBImaged(keys="image", skip_bad_images="maybe")
