"""NIfTI (.nii, .nii.gz) reading and writing with nibabel, keeping the header exactly."""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.case import Case
from kidneyseg.errors import GeometryError, InputError
from kidneyseg.io._common import (
    atomic_path,
    case_from_array,
    check_grid_shape,
    check_ndim,
    describe_exc,
    image_dtype,
    to_label_array,
)
from kidneyseg.io.headers import check_voxels


def _squeeze_trailing(arr: np.ndarray) -> np.ndarray:
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return arr


def read_nifti(path: str | os.PathLike[str], *, is_label: bool = False) -> Case:
    """Read a NIfTI file into a :class:`Case`.

    Intensities are scaled by the header's slope/intercept and returned as
    float32; with ``is_label`` the array is returned as uint8 (values must be
    integers in 0..255).  ``meta["nifti_header"]`` keeps the header for writing
    back with the same qform/sform codes.
    """
    import nibabel as nib
    from nibabel.spatialimages import HeaderDataError

    p = Path(path)
    try:
        with _quiet_nibabel():
            img = nib.load(str(p))  # the header only: pixels are read below, after the checks
        if not isinstance(img, nib.Nifti1Image):  # Nifti2Image is a subclass; CIFTI-2 and others are not
            raise InputError(
                "not a NIfTI-1/NIfTI-2 image",
                path=p,
                found=type(img).__name__,
                expected="a NIfTI-1 or NIfTI-2 .nii or .nii.gz image",
                fix="convert the file to NIfTI (e.g. with nibabel or SimpleITK)",
            )
        _check_header(img, p)
        with _quiet_nibabel(), np.errstate(over="ignore", invalid="ignore"):
            arr = _pixels(img, p, is_label=is_label)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise InputError(
            "cannot read NIfTI file (unreadable or truncated)",
            path=p,
            found=describe_exc(exc),
            expected="a complete .nii or .nii.gz file",
            fix="re-export or re-download the file",
        ) from exc
    except HeaderDataError as exc:  # e.g. "data code 1 not supported": DT_BINARY, float128, unknown codes
        raise InputError(
            "unsupported NIfTI voxel type",
            path=p,
            found=describe_exc(exc),
            expected="integer or floating-point voxels (uint8, int16, int32, float32, float64, ...)",
            fix="convert the image to int16 or float32 (e.g. with nibabel or SimpleITK)",
        ) from exc
    arr = _squeeze_trailing(arr)
    check_ndim(arr.shape, p)
    _check_raw_pixdim(img, arr.shape, p)
    affine = np.asarray(img.affine, dtype=np.float64)
    header = img.header.copy()
    return case_from_array(
        arr,
        affine,
        p,
        is_label=is_label,
        meta={
            "format": "nifti",
            "nifti_header": header,
            "qform_code": int(header["qform_code"]),
            "sform_code": int(header["sform_code"]),
            "dtype": str(img.get_data_dtype()),
        },
    )


def _pixels(img: Any, p: Path, *, is_label: bool) -> np.ndarray:
    """The voxels of a loaded NIfTI (header read, pixels not yet): labels as stored (scaled), images float32.

    A ``.nii.gz`` is decompressed with ISA-L (``isal``, about twice as fast as the standard library's gzip)
    when it is installed; anything ISA-L cannot read goes through nibabel, whose errors the caller turns
    into its one-line message.  Images are scaled by the header's slope and intercept (in float64 where they
    are not 1 and 0, as nibabel's ``get_fdata``) and returned as float32.
    """
    src = img
    if p.name.lower().endswith(".gz"):
        try:
            from isal import igzip

            with igzip.open(p) as f:
                src = type(img).from_bytes(f.read())
        except ImportError:
            pass
        except Exception:  # noqa: BLE001 - a stream ISA-L refuses: nibabel reads it again and names the fault
            src = img
    if is_label:
        return np.asanyarray(src.dataobj)
    proxy = src.dataobj
    raw = np.asanyarray(proxy.get_unscaled()) if hasattr(proxy, "get_unscaled") else np.asanyarray(proxy)
    slope = float(getattr(proxy, "slope", 1.0))
    inter = float(getattr(proxy, "inter", 0.0))
    if slope == 1.0 and inter == 0.0:
        return np.asarray(raw, dtype=np.float32)
    return np.asarray(raw * slope + inter, dtype=np.float32)


@contextlib.contextmanager
def _quiet_nibabel() -> Iterator[None]:
    """Silence nibabel's own log lines ("pixdim[1,2,3] should be non-zero; setting 0 dims to 1") while loading.

    nibabel prints them to stderr through its own handler; kidneyseg raises its
    own one-line error for these headers instead (:func:`_check_raw_pixdim`).
    """
    logger = logging.getLogger("nibabel.global")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_header(img, p: Path) -> None:
    """Refuse, from the header alone, voxel types kidneyseg cannot use and sizes the file cannot hold."""
    dtype = img.get_data_dtype()
    if dtype.kind == "c":
        raise InputError(
            "complex voxel type",
            path=p,
            found=f"NIfTI datatype {dtype} (complex numbers)",
            expected="real voxel values (an image or label map)",
            fix="save the magnitude (abs) or the real part as float32",
        )
    if dtype.kind == "V" or dtype.fields:
        raise InputError(
            "colour (RGB/RGBA) NIfTI image",
            path=p,
            found=f"NIfTI datatype {dtype}",
            expected="one grey value per voxel",
            fix="convert the image to grey (one channel) first",
        )
    compressed = p.name.lower().endswith(".gz")
    size = p.stat().st_size
    available = size if compressed else size - int(img.header.get("vox_offset", 352) or 352)
    check_voxels(img.header.get_data_shape(), p, itemsize=dtype.itemsize, available=available, compressed=compressed)


def _check_raw_pixdim(img, shape: tuple[int, ...], p: Path) -> None:
    """Refuse zero, negative or NaN voxel sizes as stored in the file.

    nibabel silently replaces zero pixdim by 1 and negative by its absolute
    value when it loads a header, so the raw header is read again unchecked.
    Axes of size 1 are not checked.
    """
    from nibabel.openers import ImageOpener

    with ImageOpener(str(p)) as fobj:
        raw = type(img.header).from_fileobj(fobj, check=False)
    pix = np.asarray(raw["pixdim"][1 : 1 + len(shape)], dtype=np.float64)
    bad = [ax for ax, (n, d) in enumerate(zip(shape, pix)) if n > 1 and not (np.isfinite(d) and d > 0)]
    if bad:
        raise GeometryError(
            "voxel spacing is zero, negative or not a number",
            path=p,
            found="pixdim " + ", ".join(f"{float(d):g}" for d in pix),
            expected="positive voxel sizes in mm on every axis",
            fix="set the voxel size in the header (e.g. nibabel header.set_zooms) with the tool that wrote the file",
        )


def write_nifti(
    array: np.ndarray,
    path: str | os.PathLike[str],
    like: Case,
    *,
    is_label: bool = True,
) -> Path:
    """Write ``array`` on ``like``'s grid as NIfTI, atomically.

    The affine, qform/sform (with their codes) and the other header fields of
    ``like`` are kept when ``like`` was read from NIfTI.  Labels are written as
    uint8 with slope 1 and intercept 0; images in the source's integer type
    when their values are integers that fit (CT in HU: int16), else float32.
    A 2D case is written as ``(rows, cols, 1)``.
    """
    import nibabel as nib

    array = np.asarray(array)
    check_grid_shape(array, like.shape, path)
    dtype = np.uint8 if is_label else image_dtype(array, like.meta.get("dtype"))
    data = to_label_array(array, path) if is_label else array.astype(dtype, copy=False)
    if data.ndim == 2:
        data = data[:, :, None]
    header = like.meta.get("nifti_header")
    if header is not None:
        header = header.copy()
        img = nib.Nifti1Image(data, None, header=header)
        # Restore both matrices with their original codes; nibabel would
        # otherwise derive one from the other.
        img.set_qform(header.get_qform(), code=int(header["qform_code"]))
        img.set_sform(header.get_sform(), code=int(header["sform_code"]))
        if int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0:
            img.set_sform(like.affine, code=1)
    else:
        img = nib.Nifti1Image(data, like.affine)
        img.set_qform(like.affine, code=1)
        img.set_sform(like.affine, code=1)
    img.set_data_dtype(dtype)
    img.header.set_slope_inter(1.0 if is_label else np.nan, 0.0 if is_label else np.nan)
    if is_label:
        img.header["cal_min"] = 0
        img.header["cal_max"] = float(data.max()) if data.size else 0.0
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)
