"""Array transforms for dermoscopy images: Shades-of-Gray colour constancy and hair removal.

Inputs are channel-first ``(C, H, W)`` RGB images with values in [0, 255] (float or uint8), as
``LoadImaged(..., ensure_channel_first=True)`` gives them; outputs stay in [0, 255].
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.config import DtypeLike
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import Transform
from monai.utils import TransformBackends, convert_data_type, convert_to_tensor
from scipy import ndimage

from monai_danil.transforms.utils import convert_intensity_to_dst

__all__ = ["shades_of_gray_illuminant", "dullrazor_hair_mask", "ShadesOfGray", "HairRemoval"]


def _check_image(img: NdarrayOrTensor) -> None:
    if img.ndim != 3:
        raise ValueError(f"expected a channel-first 2D image of shape (C, H, W), got shape {tuple(img.shape)}.")


def shades_of_gray_illuminant(img: NdarrayOrTensor, power: float = 6.0) -> torch.Tensor:
    """Per-channel illuminant estimate of Shades of Gray: ``e_c = mean(I_c ** p) ** (1 / p)``.

    ``power=1`` is the grey-world estimate (the mean); growing ``power`` moves it towards max-RGB.

    Args:
        img: channel-first ``(C, H, W)`` image, values in [0, 255], numpy array or torch tensor.
        power: Minkowski norm ``p``. Defaults to 6, the value Finlayson & Trezzi found best.

    Returns:
        float32 tensor of shape ``(C,)``, on ``img``'s device when ``img`` is a tensor.

    Raises:
        ValueError: when ``img`` is not 3-dimensional or ``power`` is not a positive finite number.

    Example:
        >>> import numpy as np
        >>> shades_of_gray_illuminant(np.full((3, 4, 4), 100.0))
        tensor([100., 100., 100.])
    """
    _check_image(img)
    if not (0 < power < math.inf):
        raise ValueError(f"power must be a positive finite number, got {power}.")
    x = convert_to_tensor(img, dtype=torch.float32, track_meta=False)
    # scaled to [0, 1] first: 255 ** p overflows float32 from p = 16
    return (x / 255).pow(power).mean(dim=(1, 2)).pow(1 / power) * 255


def dullrazor_hair_mask(
    img: NdarrayOrTensor, kernel_size: int = 7, threshold: float = 25.0, min_area: int = 50
) -> np.ndarray:
    """Where the thin dark hairs of a dermoscopy image are, DullRazor style.

    The black-hat transform (grey closing minus image, with a ``kernel_size`` square) of the grey
    image responds to dark structures narrower than the square; pixels whose response exceeds
    ``threshold`` are kept when their connected component covers at least ``min_area`` pixels (a
    hair is long, a dot of pigment is not), and the result is grown by one pixel to take in the
    hair's blurred edge, which would otherwise remain as a faint outline.

    Pigment network and the dark globules of a lesion also respond to the black-hat; ``min_area``
    and ``threshold`` keep most of them out, not all (a limitation of DullRazor itself).

    Args:
        img: channel-first ``(C, H, W)`` image, values in [0, 255], numpy array or torch tensor.
        kernel_size: side of the square closing element, in pixels; hairs must be narrower.
            Defaults to 7, for HAM10000 at 200x150 pixels; scale it with the image (about 19 at the
            original 600x450).
        threshold: black-hat response, in grey levels of [0, 255], above which a pixel is hair.
            Defaults to 25.
        min_area: smallest connected component, in pixels, kept as hair. Defaults to 50 (at 200x150;
            scale it with the image area).

    Returns:
        Boolean numpy array of shape ``(H, W)``, True on hair.

    Raises:
        ValueError: when ``img`` is not 3-dimensional or ``kernel_size`` is below 2.

    Example:
        >>> import numpy as np
        >>> img = np.full((3, 40, 40), 200.0); img[:, 20, 5:35] = 30  # one dark hair, 30 px long
        >>> mask = dullrazor_hair_mask(img, min_area=20)
        >>> bool(mask[20, 5:35].all()), int(mask.sum())
        (True, 92)
    """
    _check_image(img)
    if kernel_size < 2:
        raise ValueError(f"kernel_size must be at least 2 pixels, got {kernel_size}.")
    img_np, *_ = convert_data_type(img, np.ndarray, dtype=np.float32)
    grey = img_np.mean(axis=0)
    black_hat = ndimage.grey_closing(grey, size=(kernel_size, kernel_size)) - grey
    labels, _ = ndimage.label(black_hat > threshold, structure=np.ones((3, 3)))
    large = np.bincount(labels.ravel()) >= min_area
    large[0] = False  # label 0 is the background
    mask: np.ndarray = ndimage.binary_dilation(large[labels])
    return mask


class ShadesOfGray(Transform):
    """Shades-of-Gray colour constancy (Finlayson & Trezzi 2004), as ISIC preprocessing does it.

    Estimates the illuminant ``e`` with :func:`shades_of_gray_illuminant` and scales channel ``c``
    by ``||e|| / (sqrt(C) * e_c)``: the illuminant becomes grey while its Euclidean norm (the image's
    brightness) is kept. This is the normalisation of Barata et al. (IEEE JBHI 19(3), 2015) used by
    the ISIC 2018/2019 challenge entries. The result is clipped to [0, 255]; clipping is why the
    illuminant of the output is grey only up to the few saturated pixels.

    Args:
        power: Minkowski norm ``p``; 1 is grey world. Defaults to 6.
        dtype: output data type; ``None`` keeps the input's. Defaults to float32.

    Raises:
        ValueError: when ``power`` is not a positive finite number.

    Example:
        >>> import numpy as np
        >>> img = np.stack([np.full((4, 4), 200.0), np.full((4, 4), 100.0), np.full((4, 4), 50.0)])
        >>> ShadesOfGray()(img)[:, 0, 0]
        array([132.28757, 132.28757, 132.28757], dtype=float32)
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, power: float = 6.0, dtype: DtypeLike | torch.dtype = np.float32) -> None:
        if not (0 < power < math.inf):
            raise ValueError(f"power must be a positive finite number, got {power}.")
        self.power = power
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Apply the transform to a channel-first ``(C, H, W)`` image with values in [0, 255].

        Returns:
            The colour-corrected image, values in [0, 255], same type as ``img``, in ``self.dtype``.
        """
        x = convert_to_tensor(img, dtype=torch.float32, track_meta=False)
        illuminant = shades_of_gray_illuminant(x, self.power)
        # an all-zero channel has e_c = 0; any finite gain leaves it 0, so avoid the 0 / 0
        gain = illuminant.norm() / (math.sqrt(x.shape[0]) * illuminant.clamp_min(torch.finfo(torch.float32).tiny))
        out = (x * gain[:, None, None]).clamp(0, 255)
        return convert_intensity_to_dst(out, img, self.dtype)


class HairRemoval(Transform):
    """Remove thin dark hairs from a dermoscopy image (DullRazor, Lee et al. 1997, made cheap).

    Hair is found by :func:`dullrazor_hair_mask`. It is filled by normalised convolution instead of
    DullRazor's interpolation or ``skimage.restoration.inpaint_biharmonic`` (seconds per image):
    each hair pixel becomes the Gaussian-weighted mean (sigma ``kernel_size / 2``) of the hair-free
    pixels around it, ``blur(img * valid) / blur(valid)``. A hair pixel with no hair-free pixel
    within ``2 * kernel_size`` (the Gaussian's reach) keeps its value. Pixels outside the mask are
    returned exactly as they came in.

    Args:
        kernel_size: side of the square closing element, in pixels. Defaults to 7 (HAM10000 at
            200x150).
        threshold: black-hat response, in grey levels, above which a pixel is hair. Defaults to 25.
        min_area: smallest connected component, in pixels, kept as hair. Defaults to 50.
        dtype: output data type; ``None`` keeps the input's. Defaults to float32.

    Raises:
        ValueError: when ``kernel_size`` is below 2.

    Example:
        >>> import numpy as np
        >>> img = np.full((3, 40, 40), 200.0); img[:, 20, 5:35] = 30
        >>> round(float(HairRemoval(min_area=20)(img).min()), 3)
        200.0
    """

    backend = [TransformBackends.NUMPY]

    def __init__(
        self,
        kernel_size: int = 7,
        threshold: float = 25.0,
        min_area: int = 50,
        dtype: DtypeLike | torch.dtype = np.float32,
    ) -> None:
        if kernel_size < 2:
            raise ValueError(f"kernel_size must be at least 2 pixels, got {kernel_size}.")
        self.kernel_size = kernel_size
        self.threshold = threshold
        self.min_area = min_area
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Apply the transform to a channel-first ``(C, H, W)`` image with values in [0, 255].

        Returns:
            The image with hair filled in, same type as ``img``, in ``self.dtype``.
        """
        img_np, *_ = convert_data_type(img, np.ndarray, dtype=np.float32)
        hair = dullrazor_hair_mask(img_np, self.kernel_size, self.threshold, self.min_area)
        valid = (~hair).astype(np.float32)
        sigma = self.kernel_size / 2
        weight = ndimage.gaussian_filter(valid, sigma)
        filled = ndimage.gaussian_filter(img_np * valid, (0, sigma, sigma)) / np.maximum(weight, 1e-6)
        out = np.where(hair & (weight > 1e-6), filled, img_np)
        return convert_intensity_to_dst(out, img, self.dtype)
