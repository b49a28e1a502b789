"""Writers of the medical image formats for the tests: a picture as DICOM, NIfTI and 16-bit TIFF.

The DICOM files are built with pydicom the way a Secondary Capture export is (explicit VR little
endian, uncompressed, no patient geometry); the NIfTI files with nibabel from the picture's numpy
array as PIL gives it, identity affine (grey ``(rows, columns)`` or ``(rows, columns, 1)``, RGB in
the vector form ``(rows, columns, 1, 1, 3)``); 16-bit RGB TIFFs with tifffile.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    photometric: str,
    planar_configuration: int = 0,
    bits_stored: int | None = None,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    frames: int = 1,
    pixel_data: bool = True,
) -> Path:
    """``pixels`` (``(rows, columns)`` grey or ``(rows, columns, 3)`` colour samples) as a DICOM file.

    ``pixels`` are written as given: for ``MONOCHROME1`` pass the inverted grey, for ``YBR_FULL``
    the YBR samples, for ``YBR_FULL_422`` full-size YBR samples (the chroma of each pixel pair is
    averaged here). ``frames > 1`` repeats the picture as a multi-frame image; ``pixel_data=False``
    leaves the pixels out, as in a structured report.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.PatientName, ds.PatientID = "Test^Picture", "0"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.is_little_endian, ds.is_implicit_VR = True, False  # pydicom 2.4 (the extra pins < 3)
    if not pixel_data:
        ds.save_as(path, write_like_original=False)
        return path
    bits_allocated = pixels.dtype.itemsize * 8
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 1 if pixels.ndim == 2 else pixels.shape[2]
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if np.issubdtype(pixels.dtype, np.signedinteger) else 0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    data = pixels
    if pixels.ndim == 3:
        ds.PlanarConfiguration = planar_configuration
        if photometric == "YBR_FULL_422":
            data = _subsample_422(pixels)
        elif planar_configuration == 1:
            data = pixels.transpose(2, 0, 1)
    if frames > 1:
        ds.NumberOfFrames = frames
        data = np.stack([data] * frames)
    ds.PixelData = np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<")).tobytes()
    ds.save_as(path, write_like_original=False)
    return path


def _subsample_422(ybr: np.ndarray) -> np.ndarray:
    """YBR_FULL_422 pixel data: per pixel pair ``Y1 Y2 Cb Cr``, chroma averaged over the pair."""
    assert ybr.shape[1] % 2 == 0, "YBR_FULL_422 needs an even number of columns"
    pairs = ybr.reshape(ybr.shape[0], ybr.shape[1] // 2, 2, 3).astype(np.float64)
    chroma = np.round(pairs[..., 1:].mean(axis=2)).astype(np.uint8)
    return np.concatenate([pairs[..., 0].astype(np.uint8), chroma], axis=-1)


def rgb_to_ybr_full(rgb: np.ndarray) -> np.ndarray:
    """RGB samples as YBR_FULL, with pydicom's conversion."""
    from pydicom.pixel_data_handlers.util import convert_color_space

    return convert_color_space(rgb, "RGB", "YBR_FULL")


def write_nifti(path: Path, voxels: np.ndarray) -> Path:
    """``voxels`` as a NIfTI-1 file (``.nii`` or ``.nii.gz``) with an identity affine.

    Colour ``(rows, columns, 1, 1, 3)`` arrays are marked as vectors (intent code 1007).
    """
    import nibabel as nib

    image = nib.Nifti1Image(voxels, np.eye(4))
    if voxels.ndim == 5:
        image.header.set_intent("vector")
    nib.save(image, str(path))
    return path


def write_tiff(path: Path, pixels: np.ndarray) -> Path:
    """``pixels`` as an uncompressed TIFF, any sample type (16-bit RGB too)."""
    import tifffile

    photometric = "rgb" if pixels.ndim == 3 else "minisblack"
    tifffile.imwrite(path, pixels, photometric=photometric)
    return path
