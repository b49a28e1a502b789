"""Load any 2D picture file as the channel-first RGB image the bundles' networks take.

Fundus cameras, dermoscopes and hospital archives export DICOM, research pipelines store slices as
NIfTI, pathology tiles come as TIFF, and datasets ship PNG and JPEG. :class:`LoadRGBImage` reads
each through MONAI's reader for it, chosen by the file's content (checked against its extension):

============================  ===============================================================
PNG, JPEG, BMP, TIFF          ``PILReader(reverse_indexing=False)``
TIFF, > 8 bits per sample     ``ITKReader(reverse_indexing=True)``: Pillow would cut a 16-bit
and more than one sample      RGB TIFF to 8 bits per channel (extra ``formats``)
DICOM                         ``PydicomReader(swap_ij=False)`` (extra ``formats``)
NIfTI (``.nii``, ``.nii.gz``)  ``NibabelReader()`` (extra ``formats``)
============================  ===============================================================

and gives the same ``(3, rows, columns)`` float tensor, values in [0, 255], for the same picture
whatever the format: index ``[c, i, j]`` is channel ``c`` of the pixel in row ``i`` (top to
bottom) and column ``j`` (left to right), as an image viewer shows the PNG. A DICOM's ``Rows`` x
``Columns`` grid and a NIfTI's voxel array as stored (first axis = rows; the affine is not applied)
load in that orientation.

Conversions, the same for every format:

- **Intensity**: integer samples are scaled from their full range to [0, 255], never clipped:
  8-bit as is; 16-bit PNG and TIFF by 65535; DICOM by its bit depth, ``2**BitsStored - 1``
  (signed data from ``-2**(BitsStored-1)``), after its rescale slope and intercept, which are
  applied to the range too (so a positive slope leaves the picture unchanged). A DICOM's window
  (``WindowCenter``/``WindowWidth``) is **not** applied: it is a display preset that clips, and it
  differs between files of one dataset. NIfTI integers by their data type's range (after
  ``scl_slope``/``scl_inter``, the same way). Float images have no bit depth to scale by and are
  refused.
- **Grayscale** (PIL ``L``, ``1``, ``I;16``, DICOM ``MONOCHROME1``/``MONOCHROME2``, one-channel
  NIfTI) becomes 3 equal channels. ``MONOCHROME1`` (0 = white) is inverted, ``255 - value``.
- **Alpha** (RGBA, grayscale + alpha, palette with transparency) is composited over black,
  ``colour * alpha / alpha_max``: a transparent pixel is background, black as outside a fundus
  disc, whatever colour it happens to store. An opaque pixel keeps its colour exactly.
- **Colour spaces**: palette, CMYK and YCbCr images become RGB through Pillow; DICOM ``YBR_FULL``
  and ``YBR_FULL_422`` through pydicom's ``convert_color_space``; DICOM ``RGB`` with either planar
  configuration (0 = interleaved, 1 = by plane) as pydicom reshapes it.

A file that cannot be loaded raises :class:`BadImageError` naming the file and what was found:
missing, empty, corrupt or truncated, an extension that lies about the content, an unsupported
type, more than one frame, page or slice, a DICOM without pixel data, a channel count other than
1-4. A run stopped by one prints that message as its last line (see :class:`BadImageError`).
"""

from __future__ import annotations

import gzip
import logging
import os
import sys
import threading
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import torch
from monai.config import DtypeLike
from monai.data import ITKReader, MetaTensor, NibabelReader, PILReader, PydicomReader
from monai.transforms import Transform
from monai.utils import OptionalImportError, get_equivalent_dtype, optional_import

from monai_danil.data.images import IMAGE_FORMATS, image_suffix

itk, has_itk = optional_import("itk", allow_namespace_pkg=True)
_, has_pydicom = optional_import("pydicom")
_, has_nib = optional_import("nibabel")

__all__ = ["BadImageError", "LoadRGBImage", "image_format"]

_SUPPORTED = "PNG, JPEG, BMP, TIFF, DICOM (.dcm, .dicom or no extension), NIfTI (.nii, .nii.gz)"
_DICOM_PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422")
_CHANNELS = "1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA)"
# Pillow modes read as they are, and those Pillow converts first (to what the data means)
_PIL_MODES = ("L", "LA", "RGB", "RGBA", "I;16", "I;16L", "I;16B", "I;16N")
_PIL_CONVERSIONS = {
    "1": "L",
    "La": "LA",
    "PA": "RGBA",
    "RGBa": "RGBA",
    "RGBX": "RGB",
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "LAB": "RGB",
    "HSV": "RGB",
}
_TIFF_BITS_PER_SAMPLE, _TIFF_SAMPLES_PER_PIXEL = 258, 277


class BadImageError(ValueError):
    """An image file that cannot be loaded as a 2D picture; the message names it and says why.

    Its message reads ``"<origin>: <path>: <reason>"``, ``origin`` being where the item came from
    (``"<manifest>, line <n>"``, as :func:`monai_danil.data.read_manifest` writes it) when known.

    MONAI wraps an error raised in a transform in a ``RuntimeError`` ("applying transform ..."),
    and a bundle's config parser wraps that again ("Failed to instantiate component ..."), so the
    last line of a stopped run would name MONAI's wrapper, not the file. When a ``BadImageError``
    is raised, a ``sys.excepthook`` is added (once, chained to the one in place) that, for an
    uncaught error caused by a ``BadImageError``, prints the wrappers' one-line summaries and then
    the ``BadImageError`` with its own traceback, so the last line is the clear message, and ends
    the process with status 1 (without finalizing the interpreter when other threads still run:
    see the hook's comment). Other errors print as before.

    Args:
        path: the image file.
        reason: what was found, and what was expected.
        origin: where the item came from, e.g. ``"data/manifest.csv, line 12"``. Default ``None``.

    Example:
        >>> str(BadImageError("a.png", "empty file (0 bytes)", "manifest.csv, line 2"))
        'manifest.csv, line 2: a.png: empty file (0 bytes)'
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, origin: str | None = None) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        self.origin = origin
        where = f"{origin}: " if origin else ""
        super().__init__(f"{where}{self.path}: {reason}")

    def __reduce__(self):
        # the default rebuilds from the message alone; keep the fields across pickling
        return type(self), (self.path, self.reason, self.origin)

    def with_origin(self, origin: str | None) -> BadImageError:
        """The same error with ``origin`` (e.g. the manifest line) in front of its message."""
        return type(self)(self.path, self.reason, origin)


def _bad_image_in_chain(error: BaseException | None) -> BadImageError | None:
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, BadImageError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _show_bad_image_last(
    exc_type: type[BaseException], error: BaseException, tb: TracebackType | None, previous: Callable
) -> None:
    bad = _bad_image_in_chain(error)
    if bad is None or bad is error:
        previous(exc_type, error, tb)
    else:
        wrappers, outer = [], error
        while outer is not None and outer is not bad:
            wrappers.append(f"  {type(outer).__name__}: {str(outer).splitlines()[0] if str(outer) else ''}")
            outer = outer.__cause__ or outer.__context__
        sys.stderr.write(
            "A bad image stopped the run. MONAI reported it wrapped in (tracebacks left out):\n"
            + "\n".join(reversed(wrappers))
            + "\n\n"
            + "".join(traceback.format_exception(type(bad), bad, bad.__traceback__, chain=False))
        )
    if bad is not None and threading.active_count() > 1:
        # CacheDataset's thread pool goes on transforming the item it holds; finalizing the
        # interpreter while that thread is inside a torch call aborts the process after the
        # message ("terminate called without an active exception", status 134): end as Python
        # ends on an uncaught error, status 1, without finalizing
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def _install_excepthook() -> None:
    if getattr(sys.excepthook, "_monai_danil_bad_image", False):
        return
    previous = sys.excepthook

    def hook(exc_type, error, tb):
        _show_bad_image_last(exc_type, error, tb, previous)

    hook._monai_danil_bad_image = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def _sniff(head: bytes) -> str | None:
    """The format of a file from its first bytes, ``None`` when none of the supported ones."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # TIFF and BigTIFF
        return "TIFF"
    if head.startswith(b"BM"):
        return "BMP"
    if head[128:132] == b"DICM":
        return "DICOM"
    if head[344:348] == b"n+1\x00" or head[4:8] == b"n+2\x00":  # single-file NIfTI-1 / NIfTI-2
        return "NIfTI"
    return None


def image_format(path: str | os.PathLike[str]) -> str:
    """The format of an image file, by its content, checked against its extension.

    Args:
        path: the file.

    Returns:
        One of ``"PNG"``, ``"JPEG"``, ``"BMP"``, ``"TIFF"``, ``"DICOM"``, ``"NIfTI"``.

    Raises:
        BadImageError: when the file is missing or empty, when its extension names another format
            than its content (a JPEG named ``.png``, a PNG named ``.dcm``), or when its content is
            none of the supported formats (a ``.png`` that is not a PNG at all is corrupt).

    Example:
        >>> image_format("../shared/data/retina/images/train/train_0000.png")  # doctest: +SKIP
        'PNG'
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BadImageError(path, "file not found.")
    with open(path, "rb") as handle:
        head = handle.read(540)
    if not head:
        raise BadImageError(path, "empty file (0 bytes); expected an image.")
    suffix = image_suffix(path)
    claimed = IMAGE_FORMATS.get(suffix)
    found = _sniff(head)
    if found is None and head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as handle:
                found = "NIfTI" if _sniff(handle.read(540)) == "NIfTI" else None
        except (OSError, EOFError):
            found = None
        if found is None and claimed == "NIfTI":
            raise BadImageError(path, "a gzip file that holds no NIfTI image (corrupt or another format).")
    if found is None:
        if claimed is not None:
            raise BadImageError(
                path,
                f"not a valid {claimed} file: its first bytes {head[:16]!r} are no {claimed} signature "
                "(corrupt, or another type under this extension).",
            )
        raise BadImageError(
            path, f"unsupported file type (extension {suffix or 'none'!r}, content not recognised); "
            f"supported: {_SUPPORTED}."
        )
    if claimed is not None and claimed != found:
        raise BadImageError(
            path, f"the extension {suffix!r} says {claimed} but the content is a {found} file; "
            f"rename the file to match its content."
        )
    return found


@dataclass
class _Samples:
    """Decoded samples ``(rows, columns[, channels])`` and the range that maps to [0, 255]."""

    array: np.ndarray
    low: float
    high: float
    invert: bool = False  # DICOM MONOCHROME1: the lowest value is white


def _require(available: bool, package: str, path: str, what: str) -> None:
    if not available:
        raise OptionalImportError(
            f"{path}: reading {what} needs {package}, which is not installed; "
            "install the extra: pip install 'monai-danil[formats]'."
        )


def _integer_range(dtype: np.dtype, path: str, what: str) -> tuple[float, float]:
    if not np.issubdtype(dtype, np.integer) or dtype.itemsize > 2:
        raise BadImageError(
            path, f"{what} with {dtype} samples; expected 8- or 16-bit integers, whose bit depth sets the scale."
        )
    info = np.iinfo(dtype)
    return float(info.min), float(info.max)


def _decode_failed(path: str, fmt: str, error: Exception) -> BadImageError:
    return BadImageError(
        path, f"cannot decode it as {fmt} ({type(error).__name__}: {error}): the file is corrupt or truncated; "
        f"expected a complete {fmt} image."
    )


def _read_pil(path: str, fmt: str) -> _Samples:
    reader = PILReader(reverse_indexing=False)  # PIL's (rows, columns) as stored: no transpose
    try:
        image = reader.read(path)
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, ... on bad headers
        raise _decode_failed(path, fmt, error) from None
    with image:
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            raise BadImageError(path, f"{fmt} with {frames} frames or pages; expected one 2D image.")
        bits = image.tag_v2.get(_TIFF_BITS_PER_SAMPLE, 8) if fmt == "TIFF" else 8
        bits = max(bits) if isinstance(bits, tuple) else bits
        if fmt == "TIFF" and bits > 8 and image.tag_v2.get(_TIFF_SAMPLES_PER_PIXEL, 1) > 1:
            image.close()
            return _read_itk_tiff(path, bits)
        mode = image.mode
        if mode == "P":
            target = "RGBA" if "transparency" in image.info else "RGB"
        else:
            target = _PIL_CONVERSIONS.get(mode, mode)
        if target not in _PIL_MODES and mode != "I":
            raise BadImageError(
                path, f"unsupported pixel type: Pillow mode {mode!r}; expected 8- or 16-bit grey, grey + alpha, "
                "RGB, RGBA or palette pixels (float images have no bit depth to scale by)."
            )
        try:
            if target != mode:
                image = image.convert(target)
            array, _ = reader.get_data(image)
        except MemoryError:
            raise
        except Exception as error:
            raise _decode_failed(path, fmt, error) from None
    if mode == "I":  # 32-bit integers in Pillow: a 16-bit grey PNG or TIFF in some Pillow versions
        depth = _png_bit_depth(path) if fmt == "PNG" else bits
        if depth > 16 or array.min() < 0:
            raise BadImageError(path, f"{depth}-bit integer samples; expected 8- or 16-bit integers.")
        return _Samples(array, 0.0, float(2**depth - 1))
    return _Samples(array, *_integer_range(array.dtype, path, fmt))


def _png_bit_depth(path: str) -> int:
    with open(path, "rb") as handle:
        return handle.read(25)[24]  # IHDR's bit depth, after the signature and IHDR's length, type, size


def _read_itk_tiff(path: str, bits: int) -> _Samples:
    _require(has_itk, "ITK", path, f"a TIFF with {bits} bits per sample and several samples per pixel")
    if bits > 16:
        raise BadImageError(path, f"TIFF with {bits} bits per sample; expected 8 or 16.")
    # ITK's Python wheels wrap no 16-bit RGB pixel type: fall back to a vector image of uint16
    reader = ITKReader(reverse_indexing=True, pixel_type=itk.VariableLengthVector[itk.US], fallback_only=True)
    try:
        array, _ = reader.get_data(reader.read(path))
    except Exception as error:
        raise _decode_failed(path, "TIFF", error) from None
    return _Samples(array, *_integer_range(array.dtype, path, "TIFF"))


def _read_dicom(path: str) -> _Samples:
    _require(has_pydicom, "pydicom", path, "DICOM")
    reader = PydicomReader(swap_ij=False)  # Rows x Columns as stored
    try:
        dataset = reader.read(path)
    except Exception as error:
        raise _decode_failed(path, "DICOM", error) from None
    if "PixelData" not in dataset:
        other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in dataset]
        if other:
            raise BadImageError(path, f"DICOM with {other[0]}; expected integer PixelData.")
        sop = dataset.get("SOPClassUID")
        kind = f" (SOP class {getattr(sop, 'name', sop)})" if sop is not None else ""
        raise BadImageError(path, f"DICOM without pixel data{kind}; expected an image.")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise BadImageError(path, f"multi-frame DICOM with {frames} frames; expected one 2D image.")
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
    if photometric not in _DICOM_PHOTOMETRIC:
        raise BadImageError(
            path, f"DICOM photometric interpretation {photometric!r}; expected one of {', '.join(_DICOM_PHOTOMETRIC)}."
        )
    try:
        with warnings.catch_warnings():
            # no patient geometry in photographs and slides; the affine is not used here
            warnings.filterwarnings("ignore", message="PydicomReader: ImageOrientationPatient")
            array, _ = reader.get_data(dataset)  # applies RescaleSlope / RescaleIntercept
    except Exception as error:
        raise _decode_failed(path, "DICOM", error) from None
    photometric = str(dataset.PhotometricInterpretation).strip()  # as the decoder left it
    bits = int(dataset.get("BitsStored") or dataset.get("BitsAllocated") or 8)
    signed = int(dataset.get("PixelRepresentation", 0) or 0) == 1
    low, high = (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) if signed else (0.0, 2.0**bits - 1)
    if photometric.startswith("YBR"):
        if bits != 8:
            raise BadImageError(path, f"{photometric} DICOM with {bits} bits stored; expected 8.")
        from pydicom.pixel_data_handlers.util import convert_color_space

        # pydicom has already expanded the 4:2:2 subsampling: both are YBR_FULL samples here
        array = convert_color_space(array, "YBR_FULL", "RGB")
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    low, high = sorted((low * slope + intercept, high * slope + intercept))
    return _Samples(array, low, high, invert=photometric == "MONOCHROME1")


def _read_nifti(path: str) -> _Samples:
    _require(has_nib, "nibabel", path, "NIfTI")
    reader = NibabelReader()  # the voxel array as stored, no reorientation
    try:
        image = reader.read(path)
        array, _ = reader.get_data(image)
    except Exception as error:
        raise _decode_failed(path, "NIfTI", error) from None
    shape = tuple(array.shape)
    expected = "expected a 2D image, a volume of one slice, or RGB in the vector form (rows, columns, 1, 1, 3)"
    if not 2 <= len(shape) <= 5:
        raise BadImageError(path, f"NIfTI of {len(shape)} dimensions, shape {shape}; {expected}.")
    if len(shape) > 2 and shape[2] != 1:
        raise BadImageError(path, f"NIfTI volume of {shape[2]} slices, shape {shape}; {expected}.")
    if len(shape) > 3 and shape[3] != 1:
        raise BadImageError(path, f"NIfTI series of {shape[3]} time points, shape {shape}; {expected}.")
    array = array.reshape(shape[0], shape[1], shape[4] if len(shape) == 5 else 1)
    stored = np.dtype(image.get_data_dtype())
    if stored.names is not None:
        raise BadImageError(path, f"NIfTI with {stored} voxels (an RGB data type); store RGB in the vector form.")
    low, high = _integer_range(stored, path, "NIfTI")
    slope, intercept = image.dataobj.slope, image.dataobj.inter
    low, high = sorted((low * slope + intercept, high * slope + intercept))
    return _Samples(array, low, high)


def _with_channels(array: np.ndarray, path: str) -> np.ndarray:
    """``array`` as ``(rows, columns, channels)``, checking there are 1 to 4 channels."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise BadImageError(
            path, f"{array.shape[-1]} channels (array shape {tuple(array.shape)}); expected {_CHANNELS}."
        )
    return array


def _to_rgb(samples: _Samples, path: str, dtype: np.dtype) -> np.ndarray:
    """``(rows, columns[, channels])`` samples as ``(3, rows, columns)`` in [0, 255], of ``dtype``."""
    array = _with_channels(samples.array, path)
    channels = array.shape[-1]
    values = array
    if (samples.low, samples.high) != (0.0, 255.0) or samples.invert:  # 8-bit samples are used as they are
        values = (array.astype(np.float64) - samples.low) / (samples.high - samples.low) * 255.0
        if samples.invert:
            values = 255.0 - values
    colour = values[..., : 1 if channels <= 2 else 3]
    if channels in (2, 4):
        alpha = values[..., -1:]
        if not (alpha == 255).all():
            colour = colour * (alpha / 255.0)
    exact = np.float64 if dtype == np.float64 else np.float32
    out = np.empty((3,) + array.shape[:2], dtype=exact)
    out[...] = np.moveaxis(colour, -1, 0)  # one grey channel broadcasts to three
    if not np.issubdtype(dtype, np.floating):
        return np.round(out).astype(dtype)
    return out.astype(dtype, copy=False)


class LoadRGBImage(Transform):
    """Load a 2D image file of any supported format as a ``(3, rows, columns)`` RGB ``MetaTensor``.

    The reader is chosen by the file's content, checked against its extension; the conversions to
    RGB and to [0, 255] are those of :mod:`monai_danil.transforms.io.array` (grey to 3 channels,
    alpha over black, bit-depth scaling, DICOM photometric interpretations). An 8-bit RGB PNG loads
    exactly as ``LoadImage(reader="PILReader", reverse_indexing=False, ensure_channel_first=True)``
    loads it, so a bundle's later transforms (``ScaleIntensityRanged`` from 0-255 to 0-1) are
    unchanged. The metadata holds ``filename_or_obj`` (the path), ``format`` and
    ``spatial_shape``, the same keys for every format so that a mixed batch collates.

    Args:
        dtype: data type of the output. Defaults to ``np.float32``. An integer type rounds to the
            nearest value (exact for 8-bit files).

    Raises:
        BadImageError: when the file cannot be loaded (see :func:`image_format` and the module
            documentation): the message names the file and what was found.
        OptionalImportError: when the file needs ``pydicom``, ``nibabel`` or ``itk`` and it is not
            installed (``pip install 'monai-danil[formats]'``).

    Example:
        >>> image = LoadRGBImage()("../shared/data/retina/images/train/train_0000.png")  # doctest: +SKIP
        >>> image.shape, image.meta["format"]  # doctest: +SKIP
        (torch.Size([3, 28, 28]), 'PNG')
    """

    def __init__(self, dtype: DtypeLike | torch.dtype = np.float32) -> None:
        self.dtype = dtype

    def __call__(self, filename: str | os.PathLike[str]) -> MetaTensor:
        """Load ``filename``; see the class documentation."""
        path = os.fspath(filename)
        try:
            fmt, samples = self._decode(path)
            rgb = _to_rgb(samples, path, np.dtype(get_equivalent_dtype(self.dtype, np.ndarray)))
        except BadImageError:
            _install_excepthook()
            raise
        meta = {"filename_or_obj": path, "format": fmt, "spatial_shape": np.asarray(rgb.shape[1:])}
        return MetaTensor(torch.from_numpy(rgb), meta=meta)

    def verify(self, filename: str | os.PathLike[str]) -> str:
        """Decode ``filename`` and check it as loading does, without building the image (for converters).

        Args:
            filename: the image file.

        Returns:
            Its format, as :func:`image_format` names it.

        Raises:
            BadImageError: when loading it would raise one.
        """
        path = os.fspath(filename)
        fmt, samples = self._decode(path)
        _with_channels(samples.array, path)
        return fmt

    @staticmethod
    def _decode(path: str) -> tuple[str, _Samples]:
        fmt = image_format(path)
        if fmt == "DICOM":
            return fmt, _read_dicom(path)
        if fmt == "NIfTI":
            return fmt, _read_nifti(path)
        return fmt, _read_pil(path, fmt)
