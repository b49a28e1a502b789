"""Array transforms for H&E histology tiles: MONAI's Macenko stain normalisation, made pipeline-safe.

MONAI's :py:class:`monai.apps.pathology.transforms.NormalizeHEStains` takes channel-last uint8
numpy images and raises on a tile with (almost) no stained tissue: background, debris, fat. About
1 tile in 80 of PathMNIST is such a tile, so one epoch rarely survives it. The wrapper here feeds
it the channel-first images of a MONAI pipeline and returns those tiles unchanged.

It also keeps each stain's colour across MONAI versions. ``NormalizeHEStains`` paints the stain
its extractor reports first with ``target_he[:, 0]``. Before MONAI PR #8551 the extractor
reported hematoxylin first (the stain with the larger red absorbance, as in Macenko's code),
matching the reference matrix, whose first column is hematoxylin. Since that PR (MONAI 1.6.1 has
it) it orders by the red/blue ratio of the *absorbance* and so reports eosin first, which paints
nuclei pink and stroma purple with MONAI's own default target. The wrapper asks the installed
extractor which order it uses (:func:`extractor_reports_eosin_first`) and hands MONAI the target
in that order.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from monai.apps.pathology.transforms import ExtractHEStains, NormalizeHEStains
from monai.config import DtypeLike
from monai.config.type_definitions import NdarrayOrTensor
from monai.transforms import Transform
from monai.utils import TransformBackends, convert_data_type

from monai_danil.transforms.utils import convert_intensity_to_dst

__all__ = ["extractor_reports_eosin_first", "HEStainNormalize"]

logger = logging.getLogger(__name__)

# The message of the ValueError MONAI's ExtractHEStains raises when no pixel is stained; any other
# ValueError from MONAI means something else is wrong and must propagate.
NO_TISSUE_MESSAGE = "below the absorbance threshold"


def extractor_reports_eosin_first(extractor: ExtractHEStains, stains: np.ndarray) -> bool:
    """Whether MONAI's stain extractor reports the second of two known stains first.

    Renders a 16x16 tile from ``stains`` (Beer-Lambert, every mix of concentrations 0 to 1.5 of
    either stain), extracts its stain matrix with ``extractor`` and checks which known stain the
    first extracted column is closer to.

    Args:
        extractor: the MONAI extractor whose ordering is asked for.
        stains: ``(3, 2)`` absorbance matrix, columns hematoxylin then eosin, rows RGB.

    Returns:
        True when the extractor's first column is the eosin (second) stain of ``stains``.

    Example:
        >>> import numpy as np
        >>> from monai.apps.pathology.transforms import ExtractHEStains
        >>> reference = np.array(((0.5626, 0.2159), (0.7201, 0.8012), (0.4062, 0.5581)))
        >>> isinstance(extractor_reports_eosin_first(ExtractHEStains(), reference), bool)
        True
    """
    levels = np.linspace(0.0, 1.5, 16)
    concentrations = np.stack(np.meshgrid(levels, levels)).reshape(2, -1)
    # MONAI adds 1 to every pixel before taking the absorbance, so subtract it here
    pixels = extractor.tli * np.exp(-stains @ concentrations) - 1
    tile = np.clip(np.rint(pixels.T), 0, 255).astype(np.uint8).reshape(16, 16, 3)
    first = extractor(tile)[:, 0]
    return bool(np.linalg.norm(first - stains[:, 1]) < np.linalg.norm(first - stains[:, 0]))


class HEStainNormalize(Transform):
    """Macenko H&E stain normalisation of channel-first images, passing tissue-free tiles through.

    Converts the ``(3, H, W)`` image to ``(H, W, 3)`` uint8 (rounded), runs MONAI's
    :py:class:`monai.apps.pathology.transforms.NormalizeHEStains`, and converts back to the input's
    type. ``target_he`` and ``max_cref`` are given hematoxylin first and reach MONAI in the order
    its extractor reports the stains, so nuclei stay blue with any MONAI version (see the module's
    docstring). A tile on which MONAI cannot estimate stains is returned unchanged (in ``dtype``)
    and a debug message is logged. Two failures of MONAI's code mean that, and only they are caught:

    - no pixel has an absorbance above ``beta`` in all channels: MONAI raises ``ValueError``
      ("All pixels of the input image are below the absorbance threshold.");
    - exactly one pixel does: the covariance of a single sample is NaN and ``numpy.linalg.eigh``
      raises ``LinAlgError`` (numpy also warns about the degrees of freedom).

    Args:
        tli: transmitted light intensity. Defaults to 240.
        alpha: tolerance in percentile for the pseudo-min and pseudo-max stain angles. Defaults to 1.
        beta: absorbance threshold for transparent pixels. Defaults to 0.15.
        target_he: target stain absorbance matrix, columns hematoxylin then eosin, rows RGB.
            Defaults to the reference of Macenko's code (MONAI's default)
            ``((0.5626, 0.2159), (0.7201, 0.8012), (0.4062, 0.5581))``.
        max_cref: reference maximum stain concentrations for H and E. Defaults to (1.9705, 1.0308).
        dtype: output data type; ``None`` keeps the input's. Defaults to float32.

    Raises:
        ValueError: (on call) when the image is not ``(3, H, W)`` or has values outside [0, 255].

    Example:
        >>> import numpy as np
        >>> background = np.full((3, 28, 28), 235.0)  # no tissue: MONAI's own class would raise
        >>> out = HEStainNormalize()(background)
        >>> out.dtype, bool((out == background).all())
        (dtype('float32'), True)
    """

    backend = [TransformBackends.NUMPY]

    def __init__(
        self,
        tli: float = 240,
        alpha: float = 1,
        beta: float = 0.15,
        target_he: tuple | np.ndarray = ((0.5626, 0.2159), (0.7201, 0.8012), (0.4062, 0.5581)),
        max_cref: tuple | np.ndarray = (1.9705, 1.0308),
        dtype: DtypeLike | torch.dtype = np.float32,
    ) -> None:
        target = np.asarray(target_he, dtype=np.float64)
        max_conc = np.asarray(max_cref, dtype=np.float64)
        if extractor_reports_eosin_first(ExtractHEStains(tli=tli, alpha=alpha, beta=beta), target):
            target, max_conc = target[:, ::-1], max_conc[::-1]
        self.normalizer = NormalizeHEStains(tli=tli, alpha=alpha, beta=beta, target_he=target, max_cref=max_conc)
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Normalise a channel-first ``(3, H, W)`` RGB tile with values in [0, 255].

        Returns:
            The normalised tile (values in [0, 255]), or the input itself when it
            holds no tissue; same type as ``img``, in ``self.dtype``.
        """
        if img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"expected a channel-first RGB image of shape (3, H, W), got shape {tuple(img.shape)}.")
        img_np, *_ = convert_data_type(img, np.ndarray)
        low, high = float(img_np.min()), float(img_np.max())
        if low < 0 or high > 255:
            raise ValueError(f"expected values in [0, 255], got values in [{low}, {high}].")
        tile = np.rint(img_np).astype(np.uint8).transpose(1, 2, 0)
        try:
            out = self.normalizer(tile).transpose(2, 0, 1)
        except np.linalg.LinAlgError:  # first: LinAlgError is a ValueError
            logger.debug("HEStainNormalize: one stained pixel in a %s tile, returned unchanged.", tile.shape)
            out = img_np
        except ValueError as error:
            if NO_TISSUE_MESSAGE not in str(error):
                raise
            logger.debug("HEStainNormalize: no stained pixel in a %s tile, returned unchanged.", tile.shape)
            out = img_np
        return convert_intensity_to_dst(out, img, self.dtype)
