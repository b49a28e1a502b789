"""Array transforms for colour fundus photographs: field-of-view crop and local-average colour.

A fundus camera images the retina through a circular aperture, so a fundus photograph is a bright
disc (the field of view, FOV) on a black background, sometimes cut at the top and bottom by the
sensor frame. Both transforms find that disc the same way: threshold the dark background and take
the bounding box of what remains (:func:`fundus_field_of_view`); the disc is then the circle whose
diameter is the box's longer side (:func:`circular_field_of_view_mask`), which stays right when
the frame cuts the disc.

Inputs are channel-first ``(C, H, W)`` RGB images with values in [0, 255] (float or uint8), as
``LoadImaged(..., ensure_channel_first=True)`` gives them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config import DtypeLike
from monai.config.type_definitions import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import Crop, InvertibleTransform, Transform
from monai.transforms.utils import generate_spatial_bounding_box
from monai.utils import TransformBackends, convert_data_type, convert_to_dst_type
from scipy.ndimage import gaussian_filter

from monai_danil.transforms.utils import convert_intensity_to_dst

__all__ = [
    "fundus_field_of_view",
    "circular_field_of_view_mask",
    "FundusFieldOfViewCrop",
    "FundusLocalAverageColor",
]

CHANNEL_REDUCTIONS = ("max", "mean")


def _check_image(img: NdarrayOrTensor) -> None:
    if img.ndim != 3:
        raise ValueError(f"expected a channel-first 2D image of shape (C, H, W), got shape {tuple(img.shape)}.")


def _check_channel_reduction(channel_reduction: str) -> None:
    if channel_reduction not in CHANNEL_REDUCTIONS:
        raise ValueError(f"channel_reduction must be one of {CHANNEL_REDUCTIONS}, got {channel_reduction!r}.")


def fundus_field_of_view(
    img: NdarrayOrTensor, threshold: float = 10.0, channel_reduction: str = "max"
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Bounding box of a fundus photograph's field of view.

    A pixel belongs to the field of view when the maximum (or mean) of its channels exceeds
    ``threshold``; the box is the smallest one holding every such pixel.

    Args:
        img: channel-first ``(C, H, W)`` image, values in [0, 255], numpy array or torch tensor.
        threshold: grey level above which a pixel counts as foreground. Defaults to 10: the black
            background of real fundus photographs is not exactly 0 (sensor noise, JPEG), but stays
            below about 8.
        channel_reduction: ``"max"`` (default; a red-dominated fundus stays foreground even where
            green and blue are near 0) or ``"mean"`` over channels.

    Returns:
        ``((row_start, col_start), (row_end, col_end))`` with exclusive ends, or ``None`` when no
        pixel exceeds ``threshold``.

    Raises:
        ValueError: when ``img`` is not 3-dimensional or ``channel_reduction`` is unknown.

    Example:
        >>> import numpy as np
        >>> img = np.zeros((3, 8, 10)); img[:, 2:6, 3:9] = 200
        >>> fundus_field_of_view(img)
        ((2, 3), (6, 9))
    """
    _check_image(img)
    _check_channel_reduction(channel_reduction)
    if channel_reduction == "max":

        def select(x: NdarrayOrTensor) -> NdarrayOrTensor:
            # generate_spatial_bounding_box takes "any over channels", which is "max over channels > t"
            return x > threshold

    else:

        def select(x: NdarrayOrTensor) -> NdarrayOrTensor:
            return (x.sum(0) / x.shape[0] > threshold)[None]

    start, end = generate_spatial_bounding_box(img, select_fn=select)
    if end[0] == 0:  # MONAI's answer for "no foreground": an all-zero box
        return None
    return (int(start[0]), int(start[1])), (int(end[0]), int(end[1]))


def circular_field_of_view_mask(
    spatial_shape: Sequence[int],
    box_start: Sequence[int],
    box_end: Sequence[int],
    radius_scale: float = 1.0,
) -> np.ndarray:
    """The circular field of view inside its bounding box, as a boolean ``(H, W)`` mask.

    The circle is centred on the box and its diameter is the box's longer side, so a disc cut by
    the frame at the top and bottom (the box is then wider than high) keeps its true radius.

    Args:
        spatial_shape: ``(H, W)`` of the mask.
        box_start: ``(row, col)`` where the box starts.
        box_end: ``(row, col)`` where the box ends (exclusive).
        radius_scale: multiplies the radius; below 1 leaves out the rim. Defaults to 1.

    Returns:
        Boolean array of shape ``spatial_shape``, True inside the circle.

    Example:
        >>> circular_field_of_view_mask((5, 5), (0, 0), (5, 5)).sum()
        np.int64(21)
    """
    height, width = spatial_shape
    centre_row = (box_start[0] + box_end[0] - 1) / 2
    centre_col = (box_start[1] + box_end[1] - 1) / 2
    radius = max(box_end[0] - box_start[0], box_end[1] - box_start[1]) / 2 * radius_scale
    rows, cols = np.ogrid[:height, :width]
    mask: np.ndarray = (rows - centre_row) ** 2 + (cols - centre_col) ** 2 <= radius**2
    return mask


class FundusFieldOfViewCrop(InvertibleTransform):
    """Crop a fundus photograph to the bounding box of its circular field of view.

    The box comes from :func:`fundus_field_of_view`. When no pixel passes the threshold (a black
    or failed capture) the image keeps its full extent, unchanged. The crop is MONAI's
    :py:class:`monai.transforms.Crop`, so a MetaTensor's affine and its trace are updated and
    ``inverse`` pads the crop back.

    Args:
        threshold: grey level (of [0, 255]) above which a pixel is field of view. Defaults to 10.
        channel_reduction: ``"max"`` or ``"mean"`` over channels before thresholding. Defaults to
            ``"max"``.
        mask_outside: also set the corners outside the circular field of view to 0, so that
            what the crop leaves of the black background is exactly black. Defaults to False.

    Raises:
        ValueError: when ``channel_reduction`` is neither ``"max"`` nor ``"mean"``.

    Example:
        >>> import numpy as np
        >>> from skimage.data import retina
        >>> img = np.pad(retina().transpose(2, 0, 1), ((0, 0), (0, 0), (200, 200)))  # 4:3 frame
        >>> FundusFieldOfViewCrop()(img).shape
        (3, 1398, 1396)
    """

    backend = Crop.backend

    def __init__(self, threshold: float = 10.0, channel_reduction: str = "max", mask_outside: bool = False) -> None:
        _check_channel_reduction(channel_reduction)
        self.threshold = threshold
        self.channel_reduction = channel_reduction
        self.mask_outside = mask_outside
        self.cropper = Crop()

    def compute_bounding_box(self, img: NdarrayOrTensor) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """The field of view's box in ``img``, or ``None`` when there is none (see :func:`fundus_field_of_view`)."""
        return fundus_field_of_view(img, self.threshold, self.channel_reduction)

    def crop(self, img: NdarrayOrTensor, box: tuple[Sequence[int], Sequence[int]] | None) -> NdarrayOrTensor:
        """Crop ``img`` to ``box`` (``None``: its full extent) and mask outside the circle if asked.

        Args:
            img: channel-first ``(C, H, W)`` image.
            box: ``(start, end)`` as :meth:`compute_bounding_box` returns it, possibly from another
                image of the same size (the dictionary version crops a label with the image's box).

        Returns:
            The cropped image, same type as ``img``.
        """
        _check_image(img)
        # a full-extent crop still records a trace, so that inverting a Compose stays consistent
        start, end = box if box is not None else ((0, 0), tuple(img.shape[1:]))
        out = self.cropper(img, slices=Crop.compute_slices(roi_start=start, roi_end=end))
        if self.mask_outside and box is not None:
            mask = circular_field_of_view_mask(out.shape[1:], (0, 0), out.shape[1:])
            out = out * convert_to_dst_type(mask, dst=out)[0]
        cropped, *_ = convert_to_dst_type(out, dst=img)
        return cropped

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Crop ``img`` (channel-first, values in [0, 255]) to its field of view; same type as ``img``."""
        return self.crop(img, self.compute_bounding_box(img))

    def inverse(self, img: MetaTensor) -> MetaTensor:
        """Pad a cropped MetaTensor back to its original size (what was masked stays 0)."""
        return self.cropper.inverse(img)


class FundusLocalAverageColor(Transform):
    """Subtract the local average colour of a fundus photograph (Ben Graham's preprocessing).

    Computes, per channel, ``alpha * img - alpha * GaussianBlur(img, sigma) + beta``, clipped to
    [0, 255]: the slowly varying illumination and pigmentation become mid-grey ``beta`` and vessels,
    exudates and haemorrhages stand out at ``alpha`` times their local contrast. The blur is
    ``scipy.ndimage.gaussian_filter`` with reflecting borders, so a disc cut by the frame gets no
    dark band at the cut. Graham then set everything outside 90% of the disc's radius to ``beta``:
    the blur mixes the black background into the rim, which would otherwise come out as a bright ring.

    Reference: B. Graham, "Kaggle Diabetic Retinopathy Detection competition report", 2015
    (``cv2.addWeighted(img, 4, cv2.GaussianBlur(img, (0, 0), radius / 30), -4, 128)``).

    Args:
        alpha: contrast gain. Defaults to 4.
        beta: the grey level the local average maps to. Defaults to 128.
        sigma_fraction: Gaussian sigma as a fraction of the field of view's diameter (of the
            image's shorter side when no field of view is found). Defaults to 1/60, Graham's
            radius / 30.
        mask_fov: set the pixels outside ``fov_radius_scale`` times the disc's radius to ``beta``.
            Defaults to True. Nothing is masked when no field of view is found.
        fov_radius_scale: fraction of the disc's radius kept by ``mask_fov``. Defaults to 0.9.
        fov_threshold: grey level above which a pixel is field of view. Defaults to 10.
        channel_reduction: ``"max"`` or ``"mean"`` over channels before thresholding. Defaults to
            ``"max"``.
        dtype: output data type; ``None`` keeps the input's. Defaults to float32.

    Raises:
        ValueError: when ``sigma_fraction`` or ``fov_radius_scale`` is not positive, or
            ``channel_reduction`` is unknown.

    Example:
        >>> import numpy as np
        >>> from skimage.data import retina
        >>> out = FundusLocalAverageColor()(retina().transpose(2, 0, 1))
        >>> out.shape, out.dtype, float(out[:, 0, 0].max())
        ((3, 1411, 1411), dtype('float32'), 128.0)
    """

    backend = [TransformBackends.NUMPY]

    def __init__(
        self,
        alpha: float = 4.0,
        beta: float = 128.0,
        sigma_fraction: float = 1 / 60,
        mask_fov: bool = True,
        fov_radius_scale: float = 0.9,
        fov_threshold: float = 10.0,
        channel_reduction: str = "max",
        dtype: DtypeLike | torch.dtype = np.float32,
    ) -> None:
        if sigma_fraction <= 0:
            raise ValueError(f"sigma_fraction must be positive, got {sigma_fraction}.")
        if fov_radius_scale <= 0:
            raise ValueError(f"fov_radius_scale must be positive, got {fov_radius_scale}.")
        _check_channel_reduction(channel_reduction)
        self.alpha = alpha
        self.beta = beta
        self.sigma_fraction = sigma_fraction
        self.mask_fov = mask_fov
        self.fov_radius_scale = fov_radius_scale
        self.fov_threshold = fov_threshold
        self.channel_reduction = channel_reduction
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Apply the transform to a channel-first ``(C, H, W)`` image with values in [0, 255].

        Returns:
            The normalised image, values in [0, 255], same type as ``img``, in ``self.dtype``.
        """
        _check_image(img)
        img_np, *_ = convert_data_type(img, np.ndarray, dtype=np.float32)
        box = fundus_field_of_view(img_np, self.fov_threshold, self.channel_reduction)
        if box is None:
            diameter = min(img_np.shape[1:])
        else:
            diameter = max(box[1][0] - box[0][0], box[1][1] - box[0][1])
        sigma = self.sigma_fraction * diameter
        blurred = gaussian_filter(img_np, sigma=(0, sigma, sigma))
        out = np.clip(self.alpha * (img_np - blurred) + self.beta, 0, 255)
        if self.mask_fov and box is not None:
            inside = circular_field_of_view_mask(img_np.shape[1:], box[0], box[1], self.fov_radius_scale)
            out = np.where(inside, out, np.float32(self.beta))
        return convert_intensity_to_dst(out, img, self.dtype)
