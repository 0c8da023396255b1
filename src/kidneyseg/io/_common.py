"""Shared helpers of the readers and writers: format detection, atomic writes, checks."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from kidneyseg.errors import GeometryError, InputError, OutputError

# suffix -> format name; the one table of file suffixes (match longest first: IMAGE_SUFFIXES).
SUFFIXES: dict[str, str] = {
    ".seg.nrrd": "seg.nrrd",
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "mha",
    ".mhd": "mha",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".bmp": "bmp",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".dcm": "dicom",
}

IMAGE_2D_FORMATS = ("png", "jpeg", "bmp", "tiff")

#: Every file suffix :func:`kidneyseg.io.read` accepts (lower case), longest first: the order to match in.
IMAGE_SUFFIXES: tuple[str, ...] = tuple(sorted(SUFFIXES, key=len, reverse=True))
#: The suffixes of 2D image files (PNG, JPEG, BMP, TIFF), longest first.
IMAGE_2D_SUFFIXES: tuple[str, ...] = tuple(s for s in IMAGE_SUFFIXES if SUFFIXES[s] in IMAGE_2D_FORMATS)
#: Suffix of a DICOM slice file: it stands for its series (:func:`read` reads the series of its folder).
DICOM_SUFFIX = ".dcm"
#: Suffixes of files that hold a whole image, so that each is one case when a folder is listed: all but
#: :data:`DICOM_SUFFIX` (a DICOM series is a folder of slice files).
CASE_FILE_SUFFIXES: tuple[str, ...] = tuple(s for s in IMAGE_SUFFIXES if s != DICOM_SUFFIX)


def image_suffix(path: str | os.PathLike[str]) -> str:
    """The known suffix of ``path`` (lower case, longest match: ``a.seg.nrrd`` -> ``.seg.nrrd``), or ``""``."""
    name = Path(path).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


def has_image_suffix(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` ends with one of :data:`IMAGE_SUFFIXES` (any case)."""
    return bool(image_suffix(path))


def format_of(path: str | os.PathLike[str]) -> str:
    """Format name of a path from its suffix; a folder is ``"dicom"``.

    Raises :class:`InputError` for an unknown suffix, listing the known ones.
    """
    p = Path(path)
    if p.is_dir():
        return "dicom"
    suffix = image_suffix(p)
    if suffix:
        return SUFFIXES[suffix]
    raise InputError(
        "unknown file type",
        path=p,
        found=repr(p.suffix or "no suffix"),
        expected="one of " + ", ".join(sorted(SUFFIXES)) + " or a DICOM folder",
        fix="rename the file with its format's suffix or convert it first",
    )


def stem_of(path: str | os.PathLike[str]) -> str:
    """File name without its (possibly double) format suffix: ``a.nii.gz`` -> ``a``.

    A name without a known suffix loses its last suffix only (``a.txt`` -> ``a``).
    """
    p = Path(path)
    suffix = image_suffix(p)
    return p.name[: -len(suffix)] if suffix else p.stem


def check_exists(path: str | os.PathLike[str]) -> Path:
    """The path as :class:`Path`; a missing path raises :class:`InputError`."""
    p = Path(path)
    if not p.exists():
        raise InputError(
            "no such file or folder",
            path=p,
            fix="check the path (relative paths start from the current folder: " + os.getcwd() + ")",
        )
    return p


def check_affine(affine: np.ndarray, shape: tuple[int, ...], path: str | os.PathLike[str] | None) -> None:
    """Refuse zero, negative or NaN spacing and non-invertible affines.

    Parameters
    ----------
    affine:
        4x4 voxel-to-world matrix (mm).
    shape:
        Array shape, used to decide how many axes carry spacing.
    """
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise GeometryError(
            "the voxel-to-world matrix contains NaN or infinite values",
            path=path,
            found=np.array2string(affine[:3, :4], precision=4).replace("\n", ""),
            expected="finite numbers",
            fix="repair the header (e.g. set pixdim / spacing) with the tool that wrote the file",
        )
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))[: min(len(shape), 3)]
    if np.any(spacing <= 0) or np.any(~np.isfinite(spacing)):
        raise GeometryError(
            "voxel spacing is zero, negative or not a number",
            path=path,
            found=tuple(float(s) for s in spacing),
            expected="positive spacing in mm on every axis",
            fix="set the voxel size in the header (NIfTI pixdim, NRRD space directions, DICOM PixelSpacing)",
        )
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise GeometryError(
            "the voxel-to-world matrix is not invertible",
            path=path,
            found=np.array2string(affine[:3, :3], precision=4).replace("\n", ""),
            expected="a 3x3 direction/spacing block with non-zero determinant",
            fix="repair the orientation in the header (NIfTI qform/sform, NRRD space directions)",
        )


def check_spacing_option(spacing: tuple[float, ...] | list[float] | None, option: str = "--spacing",
                         path: str | os.PathLike[str] | None = None) -> None:
    """Refuse a pixel spacing given by the user (``--spacing ROW COL``) that is not two positive numbers (mm).

    ``path``: the image it was given for, named in the error.
    """
    if spacing is None:
        return
    values = tuple(float(s) for s in spacing)
    if len(values) != 2 or not all(np.isfinite(v) and v > 0 for v in values):
        raise GeometryError(
            f"pixel spacing {option} is zero, negative or not a number",
            path=path,
            found=" ".join(f"{v:g}" for v in values),
            expected="two positive values ROW COL in mm",
            fix=f"pass {option} ROW COL with positive millimetres (it is used for 2D images only)",
        )


def check_ndim(shape: tuple[int, ...], path: str | os.PathLike[str] | None, allowed: tuple[int, ...] = (2, 3)) -> None:
    """Refuse arrays that are not 2D or 3D (after squeezing trailing singleton axes)."""
    if len(shape) not in allowed:
        raise InputError(
            f"{len(shape)}D image",
            path=path,
            found=f"shape {tuple(shape)}",
            expected=" or ".join(f"{a}D" for a in allowed),
            fix="extract one 3D volume (e.g. one time point or channel) before using kidneyseg",
        )


def check_output(out: str | os.PathLike[str], inputs: list[str | os.PathLike[str]] | tuple = ()) -> Path:
    """Refuse an output path equal to an input path; create the parent folder."""
    o = Path(out)
    for inp in inputs:
        if inp is None:
            continue
        try:
            same = o.resolve() == Path(inp).resolve()
        except OSError:  # pragma: no cover
            same = False
        if same:
            raise OutputError(
                "output path is the same as an input",
                path=o,
                found=str(inp),
                expected="a different path",
                fix="choose another output name so the input is not overwritten",
            )
    o.parent.mkdir(parents=True, exist_ok=True)
    return o


#: Marker between an output's name and the random part of its temporary folder: ``.<name>.tmp-<host>-<pid>-<rand>``.
TEMP_MARKER = ".tmp-"
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<host>[0-9a-f]{6})-(?P<pid>[0-9]+)-[0-9a-f]{8}$")
#: The temporary files of earlier versions of this writer: ``.tmp-<8 hex>-<name>`` (0 bytes after a kill -9).
_OLD_TEMP_RE = re.compile(r"^\.tmp-[0-9a-f]{8}-(?P<name>.+)$")


@contextlib.contextmanager
def atomic_path(out: str | os.PathLike[str], *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path with ``out``'s file name; ``out`` appears complete or not at all.

    The one atomic writer of the package: write the file at the yielded path
    (any writer that takes a path; writers that choose the format by suffix see
    the real name), and it is renamed onto ``out`` on success.  On any exception
    the temporary file is removed and ``out`` is untouched.

    The yielded path lies in a hidden folder ``.<name>.tmp-<host>-<pid>-<random>``
    beside ``out``, whose name does not end in the output's suffix: what a
    process killed with ``kill -9`` leaves behind is not matched by ``*.nii.gz``
    (or ``*.json``...) globs of the output folder, and such leftovers of this
    writer (of processes of this machine that are no longer running) are
    removed the next time anything is written into the folder.

    The file gets the permissions a plain ``open(out, "w")`` would give
    (``0o666`` less the umask), not ``mkstemp``'s ``0o600``.  With ``fsync`` the
    data is flushed to disk before the rename (checkpoints that must survive a
    power cut).
    """
    o = Path(out)
    o.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(o.parent)
    tmp_dir = _create_temp_dir(o)
    tmp_path = tmp_dir / o.name
    try:
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.close(fd)
        yield tmp_path
        if fsync:
            with open(tmp_path, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp_path, o)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def _create_temp_dir(out: Path) -> Path:
    """Create a new, empty folder ``.<name>.tmp-<host>-<pid>-<random>`` beside ``out``."""
    for _ in range(100):
        tmp = out.parent / f".{out.name}{TEMP_MARKER}{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            tmp.mkdir(mode=0o700)
        except FileExistsError:  # pragma: no cover - 32 random bits
            continue
        return tmp
    raise OutputError("cannot create a temporary folder", path=out.parent,  # pragma: no cover
                      fix="remove the .*.tmp-* folders left in the folder")


def _running(pid: int) -> bool:
    """Whether ``pid`` is a process of this machine (POSIX); elsewhere every pid counts as running."""
    if os.name != "posix":  # pragma: no cover - os.kill(pid, 0) would end the process on Windows
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it runs, as another user
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove what :func:`atomic_path` left in ``folder`` when its process was killed; returns what went.

    Only this writer's own names are touched: folders ``.<name>.tmp-<host>-<pid>-<random>``
    made on this machine by a process that no longer runs, and the 0-byte or
    stale ``.tmp-<8 hex>-<name>`` files of earlier versions of the writer.
    """
    removed: list[Path] = []
    here = _host_tag()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith("."):
            continue
        m = _TEMP_RE.match(entry.name)
        if m and m["host"] == here and entry.is_dir(follow_symlinks=False) and not _running(int(m["pid"])):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
        elif _OLD_TEMP_RE.match(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if st.st_size == 0 or time.time() - st.st_mtime > 24 * 3600:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


# ----------------------------------------------------------------------------- conventions

#: Multiply a RAS+ affine by this (on the left) to get LPS+ (ITK, DICOM, NRRD) and back.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """Voxel-to-LPS (ITK/DICOM) 4x4 affine -> voxel-to-RAS (NIfTI) affine; exact (sign flips)."""
    return RAS_TO_LPS @ np.asarray(affine_lps, dtype=np.float64)


def ras_to_lps(affine_ras: np.ndarray) -> np.ndarray:
    """Voxel-to-RAS 4x4 affine -> voxel-to-LPS affine; exact (sign flips)."""
    return RAS_TO_LPS @ np.asarray(affine_ras, dtype=np.float64)


def check_grid_shape(array: np.ndarray, like_shape: tuple[int, ...], path: str | os.PathLike[str] | None) -> None:
    """Refuse an array that is not on the grid it is written on (shape ``like_shape``)."""
    shape = tuple(int(s) for s in np.shape(array))
    squeezed = shape[:2] if len(shape) == 3 and shape[2] == 1 else shape
    if shape != tuple(like_shape) and squeezed != tuple(like_shape):
        raise OutputError(
            "array does not match the grid it is written on",
            path=path,
            found=f"shape {shape}",
            expected=f"shape {tuple(like_shape)}",
            fix="write the prediction after undoing the preprocessing (kidneyseg.preprocessing.geometry.undo)",
        )


def image_dtype(array: np.ndarray, source_dtype: str | None = None) -> np.dtype:
    """On-disk dtype for an image: the source's integer dtype (or int16) when the values fit, else float32.

    Integer-valued intensities (CT in HU, 8-bit ultrasound) are kept as
    integers so a conversion does not inflate the file; anything else is
    float32.
    """
    arr = np.asarray(array)
    if arr.size == 0:
        return np.dtype(np.float32)
    if source_dtype:
        try:
            if np.dtype(source_dtype).kind == "f":
                return np.dtype(np.float32)
        except TypeError:
            source_dtype = None
    if arr.dtype.kind in "iub":
        integral = True
    elif arr.dtype.kind == "f":
        integral = bool(np.all(np.isfinite(arr))) and bool(np.all(arr == np.round(arr)))
    else:
        integral = False
    if not integral:
        return np.dtype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    candidates = [np.dtype(source_dtype)] if source_dtype else []
    candidates += [np.dtype(np.uint8), np.dtype(np.int16), np.dtype(np.int32)]
    for dt in candidates:
        if dt.kind in "iu" and np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
            return dt
    return np.dtype(np.float32)


def describe_exc(exc: BaseException) -> str:
    """``"Type: message"`` of an exception on one line (for an error's ``found``)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def to_label_array(arr: np.ndarray, path: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Check that ``arr`` holds integer labels 0..255 and return it as uint8."""
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError(
                "label map holds non-integer values",
                path=path,
                found=f"dtype {arr.dtype}, e.g. {arr[arr != np.round(arr)][:3].tolist() if np.isfinite(arr).all() else 'NaN'}",
                expected="integer label values 0..255",
                fix="pass a label map (segmentation), not an image or probability map",
            )
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise InputError(
            "label values out of range",
            path=path,
            found=f"{arr.min()}..{arr.max()}",
            expected="0..255",
            fix="pass a label map with small non-negative integer values",
        )
    return arr.astype(np.uint8, copy=False)


def check_finite(image: np.ndarray, path: str | os.PathLike[str] | None) -> None:
    """Refuse a float32 image with infinite values (or beyond float32's range) or without any finite value.

    Some NaN voxels (outside a field of view) are allowed; an image of NaN only is not.
    """
    finite = np.isfinite(image)
    if finite.all():
        return
    n_inf = int(np.count_nonzero(np.isinf(image)))
    if n_inf:
        raise InputError(
            "image holds infinite values or values beyond float32's range",
            path=path,
            found=f"{n_inf} voxel(s) of {image.size} infinite as float32 (|value| > 3.4e38)",
            expected="finite intensities",
            fix="rescale the image (e.g. to HU for CT) or replace the infinite values before using kidneyseg",
        )
    if not finite.any():
        raise InputError(
            "image holds no finite values (every voxel is NaN)",
            path=path,
            found=f"{image.size} NaN voxel(s)",
            expected="an image with intensities",
            fix="re-export the image; an all-NaN volume is empty or damaged",
        )


def case_from_array(
    arr: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike[str],
    *,
    is_label: bool,
    meta: dict,
):
    """The :class:`~kidneyseg.case.Case` a reader returns for one file.

    Checks the affine (spacing, invertibility), then stores ``arr`` as the label
    map (uint8, integer values 0..255 checked) or as the image (float32).
    """
    from kidneyseg.case import Case

    check_affine(affine, arr.shape, path)
    if arr.size == 0:
        raise InputError(
            "image has no voxels",
            path=path,
            found=f"shape {tuple(arr.shape)}",
            expected="at least one voxel along every axis",
            fix="re-export the image; a zero size means an empty or damaged file",
        )
    if is_label:
        arr = to_label_array(arr, path)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            arr = arr.astype(np.float32, copy=False)
        check_finite(arr, path)
    p = Path(path)
    return Case(
        image=None if is_label else arr,
        label=arr if is_label else None,
        affine=affine,
        name=stem_of(p),
        source=p,
        meta=meta,
    )
