"""Tests of monai_danil.transforms on real images of each domain.

Fundus: ``skimage.data.retina()``, a full-size colour fundus photograph. Dermoscopy: HAM10000
JPEGs (CC BY-NC 4.0). Histology: PathMNIST tiles and NCT-CRC-HE-100K-NONORM tiles. The data
fixtures come from ``conftest.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.apps.pathology.transforms import ExtractHEStains, NormalizeHEStains
from monai.data import MetaTensor
from PIL import Image
from skimage.color import rgb2hed
from skimage.data import retina

from monai_danil.transforms import (
    FundusFieldOfViewCrop,
    FundusFieldOfViewCropd,
    FundusFieldOfViewCropD,
    FundusLocalAverageColor,
    FundusLocalAverageColord,
    HairRemoval,
    HairRemovald,
    HEStainNormalize,
    HEStainNormalized,
    HEStainNormalizeDict,
    ShadesOfGray,
    ShadesOfGrayd,
    circular_field_of_view_mask,
    dullrazor_hair_mask,
    extractor_reports_eosin_first,
    fundus_field_of_view,
    shades_of_gray_illuminant,
)

# MONAI's default target (Macenko's reference), columns hematoxylin then eosin
REFERENCE_HE = np.array(((0.5626, 0.2159), (0.7201, 0.8012), (0.4062, 0.5581)))

# HAM10000 images picked by eye: dense dark hair on pink skin, and a lesion with no hair
HAIRY_IMAGE = "ISIC_0024421.jpg"
HAIRLESS_IMAGE = "ISIC_0024808.jpg"

# Found by running MONAI's NormalizeHEStains over all 801 PathMNIST tiles here (the scan test
# below repeats it): 9 tiles have no pixel above the absorbance threshold (ValueError), one has
# exactly one such pixel (NaN covariance, LinAlgError).
EMPTY_TILE = "train_0199.png"  # class 1, background
ONE_PIXEL_TILE = "train_0049.png"  # class 2, debris

CONTAINERS: dict[str, Callable[[np.ndarray], np.ndarray | torch.Tensor]] = {
    "numpy": lambda x: x,
    "torch": torch.as_tensor,
    "metatensor": lambda x: MetaTensor(torch.as_tensor(x)),
}


def _load_rgb(path: Path) -> np.ndarray:
    """An RGB image file as a channel-first uint8 array."""
    return np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1).copy()


def _angles_deg(estimated: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Angle between matching columns of two (3, 2) stain matrices, in degrees."""
    cosine = (estimated * reference).sum(0) / np.linalg.norm(estimated, axis=0) / np.linalg.norm(reference, axis=0)
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def _extract_he_first(extractor: ExtractHEStains, tile_hwc: np.ndarray, eosin_first: bool) -> np.ndarray:
    """MONAI's stain matrix of a tile, reordered hematoxylin first."""
    stains = extractor(tile_hwc)
    return stains[:, ::-1] if eosin_first else stains


@pytest.fixture(scope="module")
def fundus() -> np.ndarray:
    return retina().transpose(2, 0, 1).copy()


@pytest.fixture(scope="module")
def pathmnist_tiles(pathology_dir: Path) -> list[Path]:
    return sorted((pathology_dir / "pathmnist_train_first1000" / "images").glob("*.png"))


@pytest.fixture(scope="module")
def nonorm_tiles(pathology_dir: Path) -> dict[str, np.ndarray]:
    """The NCT-CRC-HE-100K-NONORM tiles by class, except BACK, which holds no tissue."""
    tiles = {path.name.split("-")[0]: _load_rgb(path) for path in (pathology_dir / "nct_crc_he_samples").glob("*.tif")}
    del tiles["BACK"]
    return tiles


# ---- fundus -------------------------------------------------------------------------------------


@pytest.mark.parametrize("container", CONTAINERS)
def test_fov_crop_removes_dark_border(fundus: np.ndarray, container: str) -> None:
    img = CONTAINERS[container](fundus)
    out = FundusFieldOfViewCrop()(img)
    assert type(out) is type(img) and out.dtype == img.dtype
    foreground = np.asarray(out).max(axis=0) > 10
    assert out.shape[1] < fundus.shape[1] and out.shape[2] < fundus.shape[2]
    # the box is tight: each border line touches the disc
    for line in (foreground[0], foreground[-1], foreground[:, 0], foreground[:, -1]):
        assert line.any()
    # and the disc fills its box as a circle fills its square
    assert foreground.mean() == pytest.approx(np.pi / 4, abs=0.02)


def test_fov_crop_of_a_frame_cut_disc(fundus: np.ndarray) -> None:
    """APTOS-like framing: the disc cut at top and bottom, wide black margins left and right."""
    framed = np.pad(fundus[:, 250:1160], ((0, 0), (0, 0), (300, 300)))
    out = FundusFieldOfViewCrop()(framed)
    foreground = out.max(axis=0) > 10
    assert out.shape[1] == 910
    assert out.shape[2] == pytest.approx(1400, abs=10)  # the disc's diameter, margins gone
    assert foreground[0].mean() > 0.5 and foreground[-1].mean() > 0.5  # the cut edges
    assert foreground[:, 0].any() and foreground[:, -1].any()


def test_fov_crop_mask_outside_follows_the_real_disc(fundus: np.ndarray) -> None:
    out = FundusFieldOfViewCrop(mask_outside=True)(fundus)
    unmasked = FundusFieldOfViewCrop()(fundus)
    inside = circular_field_of_view_mask(out.shape[1:], (0, 0), out.shape[1:])
    assert (out[:, ~inside] == 0).all()
    np.testing.assert_array_equal(out[:, inside], unmasked[:, inside])
    # the fitted circle is the photograph's own disc: it keeps all but a sliver of the bright
    # pixels, and holds few dark ones
    bright = unmasked.max(axis=0) > 10
    assert (bright & ~inside).sum() / bright.sum() < 0.005
    assert (~bright & inside).sum() / inside.sum() < 0.01


def test_fov_crop_keeps_a_black_image_and_inverts_on_metatensor(fundus: np.ndarray) -> None:
    black = np.zeros((3, 64, 80), dtype=np.float32)
    assert fundus_field_of_view(black) is None
    np.testing.assert_array_equal(FundusFieldOfViewCrop(mask_outside=True)(black), black)

    cropper = FundusFieldOfViewCrop()
    img = MetaTensor(torch.as_tensor(fundus, dtype=torch.float32))
    out = cropper(img)
    (row, col), _ = fundus_field_of_view(fundus)
    # the affine follows the crop, and the inverse pads it back where it came from
    np.testing.assert_allclose(out.affine[:2, 3].numpy(), [row, col])
    restored = cropper.inverse(out)
    assert restored.shape == img.shape
    np.testing.assert_array_equal(restored[:, row : row + out.shape[1], col : col + out.shape[2]], out)


def test_fov_crop_dict_crops_every_key_with_the_source_box(fundus: np.ndarray) -> None:
    label = np.ones((1, *fundus.shape[1:]), dtype=np.uint8)
    data = {"image": fundus, "vessels": label, "name": "retina"}
    out = FundusFieldOfViewCropd(keys=["image", "vessels", "missing"], allow_missing_keys=True)(data)
    assert out["vessels"].shape[1:] == out["image"].shape[1:] != fundus.shape[1:]
    assert out["name"] == "retina"
    assert FundusFieldOfViewCropD is FundusFieldOfViewCropd
    with pytest.raises(ValueError, match="channel_reduction"):
        FundusFieldOfViewCropd(keys="image", channel_reduction="median")


def test_local_average_color_maps_the_local_average_to_beta(fundus: np.ndarray) -> None:
    out = FundusLocalAverageColor()(fundus)
    assert out.dtype == np.float32 and out.shape == fundus.shape
    assert out.min() >= 0 and out.max() <= 255
    box = fundus_field_of_view(fundus)
    kept = circular_field_of_view_mask(fundus.shape[1:], *box, radius_scale=0.9)
    assert (out[:, ~kept] == 128).all()
    np.testing.assert_allclose(out[:, kept].mean(axis=1), 128, atol=3)
    # locally too: 64-pixel blocks inside the disc vary 70 to 120 grey levels before, and come
    # out near beta, except around the optic disc
    size = 64
    block_means = []
    for top in range(0, fundus.shape[1] - size, size):
        for left in range(0, fundus.shape[2] - size, size):
            if kept[top : top + size, left : left + size].all():
                block_means.append(out[:, top : top + size, left : left + size].mean(axis=(1, 2)))
    assert np.mean(np.abs(np.array(block_means) - 128) < 15) > 0.9


def test_local_average_color_dict_keeps_the_container(fundus: np.ndarray) -> None:
    small = torch.as_tensor(fundus[:, ::4, ::4].copy())
    out = FundusLocalAverageColord(keys="image", dtype=None)({"image": small})["image"]
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8 and out.shape == small.shape


# ---- dermoscopy ---------------------------------------------------------------------------------


def test_shades_of_gray_makes_the_illuminant_grey(skin_dir: Path) -> None:
    paths = sorted((skin_dir / "images").glob("*.jpg"))[:12]
    corrector = ShadesOfGray(power=6)
    casts_before = []
    for path in paths:
        img = _load_rgb(path)
        before = shades_of_gray_illuminant(img, power=6)
        out = corrector(img)
        after = shades_of_gray_illuminant(out, power=6)
        casts_before.append(float(before.max() / before.min()))
        assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 255
        assert float(after.max() / after.min()) < 1.01, path.name
        # brightness (the illuminant's norm) is kept, up to the clipped pixels
        assert float(after.norm()) == pytest.approx(float(before.norm()), rel=0.01)
    # dermoscopy images do have a colour cast to correct
    assert np.median(casts_before) > 1.2


def test_shades_of_gray_keeps_type_and_dtype(skin_dir: Path) -> None:
    img = torch.as_tensor(_load_rgb(skin_dir / "images" / HAIRLESS_IMAGE))
    out = ShadesOfGrayd(keys="image", dtype=None)({"image": img})["image"]
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8
    with pytest.raises(ValueError, match="power"):
        ShadesOfGray(power=0)


@pytest.mark.parametrize("container", CONTAINERS)
def test_hair_removal_changes_only_the_hair(skin_dir: Path, container: str) -> None:
    raw = _load_rgb(skin_dir / "images" / HAIRY_IMAGE)
    img = CONTAINERS[container](raw)
    mask = dullrazor_hair_mask(raw)
    out = HairRemoval()(img)
    assert type(out) is type(img) and out.shape == img.shape
    out_np = np.asarray(out)
    changed = (out_np != raw).any(axis=0)
    assert 0.1 < mask.mean() < 0.6
    assert not (changed & ~mask).any()
    assert changed[mask].mean() > 0.95
    # filled hair is no longer dark and thin: the detector finds a fraction of it
    assert dullrazor_hair_mask(out_np).sum() < 0.2 * mask.sum()


def test_hair_removal_leaves_a_hairless_image_almost_untouched(skin_dir: Path) -> None:
    img = _load_rgb(skin_dir / "images" / HAIRLESS_IMAGE)
    out = HairRemovald(keys="image")({"image": img})["image"]
    assert (out != img).any(axis=0).mean() < 0.01


# ---- histology ----------------------------------------------------------------------------------


def test_installed_monai_stain_order_is_detected() -> None:
    """MONAI 1.6 reports eosin first; the probe must say so, and agree with the real tiles below."""
    assert extractor_reports_eosin_first(ExtractHEStains(), REFERENCE_HE)


def test_stain_vectors_reach_the_target(nonorm_tiles: dict[str, np.ndarray], pathmnist_tiles: list[Path]) -> None:
    extractor = ExtractHEStains()
    eosin_first = extractor_reports_eosin_first(extractor, REFERENCE_HE)
    normalizer = HEStainNormalize(dtype=np.uint8)
    tiles = dict(nonorm_tiles)
    tiles.update({path.name: _load_rgb(path) for path in pathmnist_tiles[:20]})
    before, after = {}, {}
    for name, tile in tiles.items():
        before[name] = _angles_deg(_extract_he_first(extractor, tile.transpose(1, 2, 0), eosin_first), REFERENCE_HE)
        out = normalizer(tile).transpose(1, 2, 0)
        after[name] = _angles_deg(_extract_he_first(extractor, out, eosin_first), REFERENCE_HE)
    # mucus holds almost no hematoxylin, so its H vector stays loose; every other tile lands
    # within 4 degrees of the target (the two target stains are 22 degrees apart)
    for name, angles in after.items():
        if name != "MUC":
            assert angles.max() < 4.0, (name, angles)
    assert np.mean([a.max() for a in after.values()]) < 0.3 * np.mean([b.max() for b in before.values()])


def test_hematoxylin_stays_hematoxylin(nonorm_tiles: dict[str, np.ndarray]) -> None:
    """scikit-image's fixed Ruifrok-Johnston unmixing, independent of MONAI, must find the
    input's hematoxylin in the output's hematoxylin, not in its eosin."""
    normalizer = HEStainNormalize(dtype=np.uint8)
    for name, tile in nonorm_tiles.items():
        hed_in = rgb2hed(tile.transpose(1, 2, 0))
        hed_out = rgb2hed(normalizer(tile).transpose(1, 2, 0))
        h_to_h = np.corrcoef(hed_in[..., 0].ravel(), hed_out[..., 0].ravel())[0, 1]
        h_to_e = np.corrcoef(hed_in[..., 0].ravel(), hed_out[..., 1].ravel())[0, 1]
        assert h_to_h > 0.8 and h_to_h > h_to_e, (name, h_to_h, h_to_e)


@pytest.mark.parametrize(("name", "error"), [(EMPTY_TILE, ValueError), (ONE_PIXEL_TILE, np.linalg.LinAlgError)])
@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_near_empty_tile_passes_through(
    pathmnist_tiles: list[Path], name: str, error: type[Exception], container: str, caplog: pytest.LogCaptureFixture
) -> None:
    raw = next(_load_rgb(path) for path in pathmnist_tiles if path.name == name)
    with pytest.raises(error):
        NormalizeHEStains()(raw.transpose(1, 2, 0))
    img = CONTAINERS[container](raw.astype(np.float32))
    with caplog.at_level(logging.DEBUG, logger="monai_danil.transforms.histology.array"):
        out = HEStainNormalize()(img)
    assert type(out) is type(img)
    np.testing.assert_array_equal(np.asarray(out), raw)
    assert "returned unchanged" in caplog.text


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_every_pathmnist_tile_goes_through(pathmnist_tiles: list[Path]) -> None:
    """Over the 801 tiles: the wrapper never raises, and passes through exactly the tiles MONAI raises on."""
    monai_normalizer = NormalizeHEStains()
    wrapper = HEStainNormalized(keys="image", dtype=np.uint8)
    raised, unchanged = set(), set()
    for path in pathmnist_tiles:
        tile = _load_rgb(path)
        try:
            monai_normalizer(tile.transpose(1, 2, 0))
        except (ValueError, np.linalg.LinAlgError):
            raised.add(path.name)
        if np.array_equal(wrapper({"image": tile})["image"], tile):
            unchanged.add(path.name)
    assert {EMPTY_TILE, ONE_PIXEL_TILE} <= raised
    assert unchanged == raised
    assert 1 / 200 < len(raised) / len(pathmnist_tiles) < 1 / 40


def test_stain_normalize_rejects_what_is_not_an_rgb_tile(nonorm_tiles: dict[str, np.ndarray]) -> None:
    tile = nonorm_tiles["TUM"].astype(np.float32)
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        HEStainNormalize()(tile - 255)
    with pytest.raises(ValueError, match="shape"):
        HEStainNormalizeDict(keys="image")({"image": tile[:2]})
