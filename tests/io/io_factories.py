"""Small generated files for the I/O tests: DICOM series written with pydicom, NIfTI volumes, NRRD images.

Imported by ``tests/io/conftest.py`` (fixtures) and, by file path, by other test folders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def write_dicom_series(
    folder: Path,
    hu: np.ndarray,
    *,
    origin: Sequence[float] = (-100.0, -80.0, 50.0),
    rowdir: Sequence[float] = (1.0, 0.0, 0.0),
    coldir: Sequence[float] = (0.0, 1.0, 0.0),
    pixel_spacing: tuple[float, float] = (0.8, 0.7),
    step: float = 2.5,
    slope: float = 2.0,
    intercept: float = -1024.0,
    series_uid: str | None = "auto",
    series_number: int = 1,
    description: str = "test series",
    modality: str = "CT",
) -> list[Path]:
    """Write ``hu`` (``[column, row, slice]``, HU) as one DICOM file per slice.

    The stored pixel is ``(hu - intercept) / slope`` (uint16), slice ``k`` sits
    at ``origin + k * step * (rowdir x coldir)`` (LPS mm).  File names are
    random and InstanceNumber runs backwards, so neither gives the order.
    Returns the files in slice order.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    cols, rows, n = hu.shape
    rowdir_a, coldir_a = np.asarray(rowdir, float), np.asarray(coldir, float)
    normal = np.cross(rowdir_a, coldir_a)
    uid = generate_uid() if series_uid == "auto" else (series_uid or "")
    study, frame = generate_uid(), generate_uid()
    sop_class = MRImageStorage if modality == "MR" else CTImageStorage
    files = []
    for k in range(n):
        stored = np.round((hu[:, :, k].T - intercept) / slope)
        assert stored.min() >= 0 and stored.max() < 65536  # test data sanity, not an input check
        meta = FileMetaDataset()
        sop = generate_uid()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop
        ds.Modality = modality
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.FrameOfReferenceUID = frame
        ds.InstanceNumber = n - k
        ds.ImagePositionPatient = [float(v) for v in np.asarray(origin, float) + k * step * normal]
        ds.ImageOrientationPatient = [float(v) for v in list(rowdir_a) + list(coldir_a)]
        ds.PixelSpacing = [float(pixel_spacing[0]), float(pixel_spacing[1])]
        ds.SliceThickness = float(step)
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.PixelData = stored.astype(np.uint16).tobytes()
        path = folder / f"IM{sop.replace('.', '')[-12:]}"  # random name, unrelated to k
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """Save ``data`` with ``affine`` (qform and sform code 1) with nibabel."""
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


def write_nrrd_lps(path: Path, shape: Sequence[int], directions: np.ndarray, origin: np.ndarray) -> Path:
    """An int16 zero image of ``shape`` saved as NRRD in LPS the way 3D Slicer saves a CT (``directions``: rows
    are the LPS directions of i, j, k in mm; ``origin``: LPS mm of the first voxel), with pynrrd."""
    import nrrd

    nrrd.write(str(path), np.zeros(tuple(shape), np.int16),
               {"space": "left-posterior-superior", "space directions": directions, "space origin": origin,
                "kinds": ["domain"] * 3}, index_order="F")
    return path
