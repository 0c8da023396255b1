"""Reading and writing images and label maps without losing geometry.

Entry points
------------
:func:`read`
    Any supported image (NIfTI, NRRD, MHA/MHD, DICOM series folder, PNG/JPEG/
    BMP/TIFF) into a :class:`~kidneyseg.case.Case`.
:func:`read_label`
    A label map, checked against the grid of its image when one is given.
:func:`write`
    An array (label map or image) on the grid of a case read earlier, in the
    format given by the output suffix (or ``fmt``), atomically.

Formats are chosen by suffix (see :data:`SUFFIXES`, the one table of file
suffixes; :data:`IMAGE_SUFFIXES`, :func:`image_suffix`, :func:`has_image_suffix`
and :func:`stem_of` are its helpers; :func:`case_name` is the case id of a file name, without
nnU-Net's channel suffix); a folder is read as a DICOM series.
:func:`atomic_path` is the one atomic writer of the package.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from kidneyseg.case import Case
from kidneyseg.errors import GeometryError, InputError, KidneysegError, OutputError
from kidneyseg.io._common import (
    CASE_FILE_SUFFIXES,
    DICOM_SUFFIX,
    IMAGE_2D_FORMATS,
    IMAGE_2D_SUFFIXES,
    IMAGE_SUFFIXES,
    SUFFIXES,
    atomic_path,
    check_exists,
    check_output,
    check_spacing_option,
    describe_exc,
    format_of,
    has_image_suffix,
    image_suffix,
    stem_of,
)

__all__ = [
    "CASE_FILE_SUFFIXES",
    "CHANNEL_SUFFIX",
    "DICOM_SUFFIX",
    "IMAGE_2D_SUFFIXES",
    "IMAGE_SUFFIXES",
    "SUFFIXES",
    "atomic_path",
    "case_name",
    "check_output",
    "drop_singleton_axis",
    "fit_to_grid",
    "format_of",
    "has_image_suffix",
    "image_suffix",
    "read",
    "read_label",
    "read_pair",
    "same_grid",
    "stem_of",
    "strip_channel_suffix",
    "write",
]

log = logging.getLogger(__name__)

#: nnU-Net's suffix of the first (only) channel of an image: ``case_00000_0000.nii.gz`` is case ``case_00000``.
CHANNEL_SUFFIX = "_0000"


def strip_channel_suffix(stem: str) -> str:
    """``stem`` without a trailing :data:`CHANNEL_SUFFIX` (``case_00000_0000`` -> ``case_00000``)."""
    return stem[: -len(CHANNEL_SUFFIX)] if len(stem) > len(CHANNEL_SUFFIX) and stem.endswith(CHANNEL_SUFFIX) else stem


def case_name(path: str | os.PathLike[str]) -> str:
    """The case id of an image or label file: :func:`stem_of` without nnU-Net's channel suffix ``_0000``.

    ``case_00000_0000.nii.gz`` and ``case_00000.nii.gz`` are both ``case_00000``, so a prediction
    made from an nnU-Net image pairs with its label (``predict`` names outputs with it, ``evaluate``
    and ``report --batch`` pair files with it).  A folder's case id is its name.
    """
    p = Path(path)
    return p.name if p.is_dir() else strip_channel_suffix(stem_of(p))


WRITE_FORMATS = ("nifti", "nrrd", "seg.nrrd", "mha", "png", "bmp", "tiff")


def read(
    path: str | os.PathLike[str],
    *,
    is_label: bool = False,
    spacing: tuple[float, float] | None = None,
    series_uid: str | None = None,
    modality: str | None = None,
) -> Case:
    """Read an image (or, with ``is_label``, a label map) into a :class:`Case`.

    Parameters
    ----------
    path:
        File, or folder holding one or more DICOM series.
    is_label:
        Read integer label values into ``case.label`` (uint8) instead of
        intensities into ``case.image`` (float32).
    spacing:
        Pixel spacing ``(row, col)`` in mm for 2D images; otherwise a sidecar
        JSON ``<stem>.json`` with ``{"spacing": [row, col]}`` is used, else
        1 mm with a warning.  It must be positive (else :class:`GeometryError`)
        and is ignored, with a logged warning, for volumes and DICOM series,
        whose header gives the spacing.
    series_uid:
        For a DICOM folder with several series, the SeriesInstanceUID to read
        (default: the series with the most slices, with a log message).
    modality:
        ``"ct"``, ``"mr"`` or ``"us"``; DICOM sets it from the header.
    """
    p = check_exists(path)
    check_spacing_option(spacing, path=p)
    fmt = format_of(p)
    if spacing is not None and fmt not in IMAGE_2D_FORMATS:
        log.warning("%s: --spacing is only used for 2D images; ignored for this %s, whose header gives its spacing",
                    p, "DICOM series" if fmt == "dicom" else "volume")
    try:
        case = _read_format(p, fmt, is_label=is_label, spacing=spacing, series_uid=series_uid)
    except KidneysegError:
        raise
    except _LIBRARY_ERRORS as exc:  # what a reader library raises on a file it cannot parse
        raise InputError(
            f"cannot read {_FORMAT_NAMES.get(fmt, fmt)} {'folder' if p.is_dir() else 'file'} (damaged or unsupported)",
            path=p,
            found=describe_exc(exc),
            expected=f"a complete, well-formed {_FORMAT_NAMES.get(fmt, fmt)} image",
            fix="re-export the image (it may be truncated, damaged or of a kind kidneyseg does not read)",
        ) from exc
    if modality is not None:
        case.modality = modality
    return case


#: Exceptions of the reader libraries (nibabel, pynrrd, SimpleITK, Pillow, pydicom) on files they cannot parse.
_LIBRARY_ERRORS: tuple[type[Exception], ...] = (
    OSError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, MemoryError,
    RuntimeError, StopIteration, zlib.error, struct.error, UnicodeDecodeError,
)
_FORMAT_NAMES = {"nifti": "NIfTI", "nrrd": "NRRD", "seg.nrrd": "3D Slicer .seg.nrrd", "mha": "MetaImage",
                 "dicom": "DICOM", "png": "PNG", "jpeg": "JPEG", "bmp": "BMP", "tiff": "TIFF"}


def _read_format(p: Path, fmt: str, *, is_label: bool, spacing: tuple[float, float] | None,
                 series_uid: str | None) -> Case:
    """The reader of ``fmt`` on ``p``; NRRD and MetaImage headers pass the size checks of :mod:`.headers` first."""
    if fmt == "nifti":
        from kidneyseg.io.nifti import read_nifti

        return read_nifti(p, is_label=is_label)
    if fmt in ("nrrd", "seg.nrrd", "mha"):
        from kidneyseg.io.headers import check_itk_header
        from kidneyseg.io.itk import read_itk

        check_itk_header(p)
        return read_itk(p, is_label=is_label)
    if fmt == "dicom":
        from kidneyseg.io.dicom import read_dicom_series

        if is_label:
            raise InputError(
                "a DICOM image series is not a label map",
                path=p,
                expected="a label map file (NIfTI, NRRD, .seg.nrrd, MHA, PNG)",
                fix="pass the segmentation file, not the image series",
            )
        return read_dicom_series(p, series_uid=series_uid)
    if fmt in IMAGE_2D_FORMATS:
        from kidneyseg.io.png import read_2d

        return read_2d(p, is_label=is_label, spacing=spacing)
    raise InputError("unsupported format", path=p, found=fmt)  # pragma: no cover - format_of returns the above


def same_grid(a: Case, b: Case, *, atol_mm: float = 1e-3) -> bool:
    """True when ``a`` and ``b`` have the same shape and the same affine within ``atol_mm``."""
    return a.shape == b.shape and bool(np.allclose(a.affine, b.affine, atol=atol_mm))


def drop_singleton_axis(case: Case, like: Case) -> Case:
    """``case`` as a 2D case on ``like``'s pixel grid when ``like`` is 2D and ``case`` is ``(rows, cols, 1)``.

    Volume writers store a 2D label map as ``(rows, cols, 1)`` (NIfTI, NRRD, MHA); against a 2D
    image or reference only the in-plane geometry counts, so the third axis (its spacing and
    origin) is dropped.  Any other case comes back unchanged.
    """
    if not (like.ndim == 2 and case.ndim == 3 and case.shape[2] == 1 and case.shape[:2] == like.shape):
        return case
    from dataclasses import replace

    affine = np.array(case.affine, dtype=np.float64)
    affine[2, :] = like.affine[2, :]
    affine[:, 2] = like.affine[:, 2]
    return replace(case, affine=affine,
                   image=None if case.image is None else case.image[:, :, 0],
                   label=None if case.label is None else case.label[:, :, 0])


def fit_to_grid(lab: Case, like: Case) -> Case:
    """A label map as it lies on ``like``'s grid, for the two ways a valid file differs from it.

    A ``(rows, cols, 1)`` map of a 2D ``like`` becomes 2D (:func:`drop_singleton_axis`), and a 3D
    Slicer ``.seg.nrrd`` cropped to its extent is placed on ``like``'s grid
    (:func:`kidneyseg.io.itk.place_on_grid`).  Anything else comes back unchanged (the caller
    then checks :func:`same_grid`).
    """
    lab = drop_singleton_axis(lab, like)
    if lab.meta.get("format") == "seg.nrrd" and not same_grid(lab, like):
        from kidneyseg.io.itk import place_on_grid

        lab = place_on_grid(lab, like)
    return lab


def read_label(path: str | os.PathLike[str], like: Case | None = None, *, spacing=None) -> Case:
    """Read a label map; with ``like``, refuse it unless it lies on ``like``'s grid.

    The returned case has ``label`` set (uint8) and ``image`` None.  A ``(rows, cols, 1)`` label
    map of a 2D ``like`` is read as 2D and a ``.seg.nrrd`` cropped to its extent is placed on
    ``like``'s grid (:func:`fit_to_grid`).
    """
    if like is not None and spacing is None and like.ndim == 2 and image_suffix(path) in IMAGE_2D_SUFFIXES:
        spacing = like.spacing  # a 2D label file has no spacing of its own: it lies on its image's pixels
    lab = read(path, is_label=True, spacing=spacing)
    if like is not None:
        lab = fit_to_grid(lab, like)
    if like is not None and not same_grid(lab, like):
        raise GeometryError(
            "label map grid differs from its image",
            path=path,
            found=f"shape {lab.shape}, spacing {_fmt(lab.spacing)}, origin {_fmt(lab.affine[:3, 3])}",
            expected=f"shape {like.shape}, spacing {_fmt(like.spacing)}, origin {_fmt(like.affine[:3, 3])} "
            f"(the grid of {like.source})",
            fix="resample the label map onto the image grid (nearest neighbour) or pair it with the right image",
        )
    return lab


def read_pair(image: str | os.PathLike[str], label: str | os.PathLike[str], **kwargs) -> Case:
    """Read an image and its label map into one case; the grids must agree."""
    case = read(image, **kwargs)
    lab = read_label(label, like=case, spacing=kwargs.get("spacing"))
    case.label = lab.label
    case.meta["label_source"] = str(label)
    return case


def write(
    array: np.ndarray,
    path: str | os.PathLike[str],
    like: Case,
    *,
    is_label: bool = True,
    fmt: str | None = None,
    task: str | None = None,
) -> Path:
    """Write ``array`` on the grid of ``like`` (the case read from the input), atomically.

    ``fmt`` defaults to the format named by the suffix of ``path``.  The output
    may not be the input file.  For ``seg.nrrd``, ``task`` names the segments.
    """
    inputs = [like.source, like.meta.get("label_source")] + list(like.meta.get("dicom_files", []))
    out = check_output(path, [i for i in inputs if i is not None])
    fmt = fmt or format_of(out)
    if fmt not in WRITE_FORMATS:
        raise OutputError(
            "cannot write this format",
            path=out,
            found=fmt,
            expected="one of " + ", ".join(WRITE_FORMATS) + " (DICOM-SEG through kidneyseg predict)",
            fix="use a .nii.gz, .nrrd, .seg.nrrd, .mha/.mhd or .png/.bmp/.tif output name",
        )
    if fmt == "nifti":
        from kidneyseg.io.nifti import write_nifti

        return write_nifti(array, out, like, is_label=is_label)
    if fmt in ("nrrd", "mha", "seg.nrrd"):
        from kidneyseg.io.itk import write_itk

        return write_itk(array, out, like, is_label=is_label, fmt=fmt, task=task)
    from kidneyseg.io.png import write_2d

    return write_2d(array, out, like, is_label=is_label)


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"
