"""A DICOM image series (one file per slice) from a folder, with pydicom.

What the reader does
--------------------
* Every file under the folder (recursively) is tried as DICOM; files that are
  not DICOM, and DICOM objects without image geometry (DICOMDIR, SEG, SR,
  multi-frame), are skipped.
* Slices are grouped by ``SeriesInstanceUID``.  When the UID is empty (some
  anonymisers blank it), slices are grouped by Series Number, Series
  Description, Frame of Reference UID and Modality, and the group is called
  ``noUID-1``, ``noUID-2``, ...  With several series the one with the most
  slices is read (and the choice is logged) unless ``series_uid`` names one.
* Slices are ordered by ``ImagePositionPatient`` projected on the slice normal
  (``row direction x column direction``), never by file name or
  InstanceNumber.
* ``RescaleSlope`` / ``RescaleIntercept`` are applied per slice, so CT is in HU.

Geometry
--------
The array is ``[i, j, k]`` = ``[column, row, slice]`` (``pixel_array.T``
stacked along the last axis), the order dcm2niix and SimpleITK use.  In LPS::

    world_lps(i, j, k) = IPP_0 + i * PixelSpacing[1] * rowdir
                               + j * PixelSpacing[0] * coldir
                               + k * (IPP_last - IPP_0) / (n - 1)

with ``rowdir, coldir = ImageOrientationPatient[:3], [3:]``; the case affine is
``diag(-1, -1, 1, 1)`` times that (RAS+).  The slice step is the real distance
between positions (not SliceThickness), so gantry tilt is kept as a shear.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg._optional import require
from kidneyseg.case import Case
from kidneyseg.errors import GeometryError, InputError
from kidneyseg.io._common import check_affine, describe_exc, image_dtype, lps_to_ras
from kidneyseg.io.headers import check_voxels

log = logging.getLogger(__name__)

MODALITY_OF = {"CT": "ct", "MR": "mr", "US": "us"}

_GEOMETRY_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")


@dataclass
class SeriesInfo:
    """One image series found in a folder.

    ``key`` is the SeriesInstanceUID, or ``noUID-<n>`` when the files leave it
    empty; ``files`` are the slice files (unsorted); ``headers`` their datasets
    read without pixel data.
    """

    key: str
    uid: str
    files: list[Path] = field(default_factory=list)
    headers: list[Any] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        return len(self.files)

    @property
    def description(self) -> str:
        return str(self.headers[0].get("SeriesDescription", "")) if self.headers else ""

    @property
    def modality(self) -> str:
        return str(self.headers[0].get("Modality", "")) if self.headers else ""


def _str(ds: Any, tag: str) -> str:
    value = ds.get(tag, "")
    return "" if value is None else str(value).strip()


def scan_folder(folder: str | os.PathLike[str]) -> list[SeriesInfo]:
    """Find the DICOM image series under ``folder``, largest first.

    Raises :class:`InputError` for an empty folder, a folder without DICOM
    files, or DICOM files none of which is an image slice with geometry.
    """
    pydicom = require("pydicom", "reading DICOM")
    from pydicom.errors import InvalidDicomError

    root = Path(folder)
    files = sorted(f for f in root.rglob("*") if f.is_file())
    if not files:
        raise InputError(
            "empty folder",
            path=root,
            found="no files",
            expected="a folder with the DICOM files of one CT/MR series",
            fix="point to the folder that holds the .dcm slice files",
        )
    groups: dict[tuple, SeriesInfo] = {}
    not_dicom: list[Path] = []
    other_dicom: list[str] = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError, KeyError):
            not_dicom.append(f)
            continue
        if not all(t in ds for t in _GEOMETRY_TAGS) or int(ds.get("NumberOfFrames", 1) or 1) > 1:
            sop = _str(ds, "SOPClassUID")
            kind = getattr(ds.get("SOPClassUID"), "name", sop) or _str(ds, "Modality") or "unknown"
            other_dicom.append(f"{f.name} ({kind})")
            continue
        uid = _str(ds, "SeriesInstanceUID")
        if uid:
            key: tuple = (uid,)
        else:
            key = (
                "",
                _str(ds, "StudyInstanceUID"),
                _str(ds, "SeriesNumber"),
                _str(ds, "SeriesDescription"),
                _str(ds, "FrameOfReferenceUID"),
                _str(ds, "Modality"),
            )
        info = groups.setdefault(key, SeriesInfo(key=uid, uid=uid))
        info.files.append(f)
        info.headers.append(ds)
    if not groups:
        if other_dicom:
            raise InputError(
                "no DICOM image slices in folder",
                path=root,
                found=f"{len(other_dicom)} DICOM object(s) without slice geometry, e.g. {', '.join(other_dicom[:3])}",
                expected="single-frame CT/MR slices with ImagePositionPatient, ImageOrientationPatient, PixelSpacing",
                fix="point to the image series folder; convert multi-frame DICOM with dcm2niix first",
            )
        raise InputError(
            "no DICOM files in folder",
            path=root,
            found=f"{len(not_dicom)} file(s), none DICOM, e.g. {', '.join(f.name for f in not_dicom[:3])}",
            expected="DICOM files (with the 'DICM' preamble)",
            fix="point to the folder that holds the DICOM slice files",
        )
    series = list(groups.values())
    no_uid = sorted((s for s in series if not s.uid), key=lambda s: str(s.files[0]))
    for n, s in enumerate(no_uid, start=1):
        s.key = f"noUID-{n}"
    series.sort(key=lambda s: (-s.n_slices, s.key))
    return series


def read_dicom_series(path: str | os.PathLike[str], *, series_uid: str | None = None) -> Case:
    """Read one DICOM series from a folder (or the series of one ``.dcm`` file) into a :class:`Case`.

    Parameters
    ----------
    path:
        Folder of slice files, or one slice file (its folder is scanned and
        its series read).
    series_uid:
        SeriesInstanceUID (or ``noUID-<n>`` key, see :func:`scan_folder`) to
        read; default: the series with the most slices.

    Returns
    -------
    Case
        ``image`` float32 ``[column, row, slice]`` in HU for CT (rescale
        applied), RAS+ affine, ``modality`` ``ct``/``mr``/``us`` from the
        header; ``meta`` holds ``series_uid`` (as in the files, may be empty),
        ``series_key``, ``n_slices``, ``modality_dicom``, ``study_uid``,
        ``frame_of_reference_uid``, ``dicom_files`` (slice paths in array
        order, for DICOM-SEG writing), ``sop_instance_uids`` and
        ``series_available`` (key, slices) of every series in the folder.
    """
    pydicom = require("pydicom", "reading DICOM")
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    series = scan_folder(folder)
    if series_uid is None and not p.is_dir():
        for s in series:
            if any(f.resolve() == p.resolve() for f in s.files):
                series_uid = s.key
                break
        else:
            raise InputError(
                "file is not a DICOM image slice",
                path=p,
                expected="a CT/MR slice with ImagePositionPatient and PixelSpacing",
                fix="pass the folder of the series instead",
            )
    if series_uid is not None:
        chosen = [s for s in series if series_uid in (s.key, s.uid)]
        if not chosen:
            raise InputError(
                "series not found in folder",
                path=folder,
                found=series_uid,
                expected="one of " + ", ".join(f"{s.key} ({s.n_slices} slices)" for s in series),
                fix="pass one of the listed series UIDs (kidneyseg info FOLDER lists them)",
            )
        info = chosen[0]
    else:
        info = series[0]
        if len(series) > 1:
            log.info(
                "%s holds %d series; reading %s (%d slices, the most); others: %s. Choose with --series",
                folder,
                len(series),
                info.key,
                info.n_slices,
                ", ".join(f"{s.key} ({s.n_slices})" for s in series[1:]),
            )
    files, headers = _one_geometry(info, folder)
    rowdir, coldir, normal = _directions(headers[0], files[0])
    positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers], dtype=np.float64)
    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    files = [files[o] for o in order]
    positions, dist = positions[order], dist[order]
    step = _slice_step(positions, dist, headers[0], files, normal)
    ps = [float(v) for v in headers[0].PixelSpacing]
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = rowdir * ps[1]
    affine_lps[:3, 1] = coldir * ps[0]
    affine_lps[:3, 2] = step
    affine_lps[:3, 3] = positions[0]
    affine = lps_to_ras(affine_lps)
    rows, cols = int(headers[0].Rows), int(headers[0].Columns)
    bits = int(headers[0].get("BitsAllocated", 16) or 16)
    check_voxels((cols, rows, len(files)), files[0], itemsize=max(1, bits // 8))  # before the allocation below
    image = np.empty((cols, rows, len(files)), dtype=np.float32)
    datasets = []
    for k, f in enumerate(files):
        try:
            ds = pydicom.dcmread(f)
            pix = ds.pixel_array
        except Exception as exc:  # pydicom raises many types for broken pixel data
            raise InputError(
                "cannot decode DICOM pixel data",
                path=f,
                found=describe_exc(exc),
                expected="a readable slice (uncompressed, JPEG, JPEG 2000, JPEG-LS or RLE)",
                fix="install the decoder pydicom names (pylibjpeg, pillow) or re-export the series uncompressed",
            ) from exc
        if pix.shape != (rows, cols):
            raise InputError(
                "slice has a different size or several samples per pixel",
                path=f,
                found=f"pixel array shape {pix.shape}",
                expected=f"({rows}, {cols}) grey values",
                fix="read one series at a time (--series) or convert colour DICOM to grey first",
            )
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        image[:, :, k] = (pix.astype(np.float64) * slope + intercept).T
        datasets.append(ds.get("SOPInstanceUID", ""))
    check_affine(affine, image.shape, folder)
    first = headers[0]
    modality_dicom = _str(first, "Modality")
    meta = {
        "format": "dicom",
        "series_uid": info.uid,
        "series_key": info.key,
        "n_slices": len(files),
        "modality_dicom": modality_dicom,
        "series_description": _str(first, "SeriesDescription"),
        "study_uid": _str(first, "StudyInstanceUID"),
        "frame_of_reference_uid": _str(first, "FrameOfReferenceUID"),
        "dicom_files": [str(f) for f in files],
        "sop_instance_uids": [str(u) for u in datasets],
        "series_available": [(s.key, s.n_slices) for s in series],
        "dtype": str(image_dtype(image)),
    }
    return Case(
        image=image,
        affine=affine,
        name=folder.name if p.is_dir() else p.stem,
        modality=MODALITY_OF.get(modality_dicom.upper()),
        source=p,
        meta=meta,
    )


def _one_geometry(info: SeriesInfo, folder: Path) -> tuple[list[Path], list[Any]]:
    """Keep the slices that share the series' most common orientation and size (scouts dropped, logged)."""
    sub: dict[tuple, list[int]] = {}
    for n, h in enumerate(info.headers):
        key = (
            tuple(round(float(v), 4) for v in h.ImageOrientationPatient),
            int(h.Rows),
            int(h.Columns),
            tuple(round(float(v), 6) for v in h.PixelSpacing),
        )
        sub.setdefault(key, []).append(n)
    best = max(sub.values(), key=len)
    if len(sub) > 1:
        log.warning(
            "%s: series %s mixes %d slice orientations/sizes; reading the %d slices that share the most common one",
            folder,
            info.key,
            len(sub),
            len(best),
        )
    return [info.files[n] for n in best], [info.headers[n] for n in best]


def _directions(ds: Any, f: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    iop = np.array([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
    rowdir, coldir = iop[:3], iop[3:]
    normal = np.cross(rowdir, coldir)
    if iop.size != 6 or np.linalg.norm(normal) < 1e-6:
        raise GeometryError(
            "ImageOrientationPatient does not give two independent directions",
            path=f,
            found=iop.tolist(),
            expected="two orthogonal unit vectors",
            fix="repair the DICOM header with the tool that wrote the series",
        )
    return rowdir, coldir, normal / np.linalg.norm(normal)


def _slice_step(positions: np.ndarray, dist: np.ndarray, first: Any, files: list[Path], normal: np.ndarray) -> np.ndarray:
    """The LPS vector from one slice to the next (mm); refuses duplicate or unevenly spaced slices."""
    n = len(positions)
    if n == 1:
        thick = float(first.get("SpacingBetweenSlices", 0) or 0) or float(first.get("SliceThickness", 0) or 0) or 1.0
        return normal * thick
    gaps = np.diff(dist)
    if np.any(gaps < 1e-4):
        k = int(np.argmin(gaps))
        raise GeometryError(
            "several slices at the same position",
            path=files[k + 1].parent,
            found=f"{files[k].name} and {files[k + 1].name} both at {dist[k]:.3f} mm along the slice normal",
            expected="one slice per position",
            fix="the folder mixes acquisitions or echoes: choose one series (--series) or separate the files",
        )
    median = float(np.median(gaps))
    if np.max(np.abs(gaps - median)) > max(0.01, 0.01 * median):
        raise GeometryError(
            "slices are unevenly spaced (missing or extra slices?)",
            path=files[0].parent,
            found=f"gaps between {gaps.min():.4g} and {gaps.max():.4g} mm",
            expected=f"a constant step (median {median:.4g} mm)",
            fix="check that every slice file of the series is present",
        )
    return (positions[-1] - positions[0]) / (n - 1)
