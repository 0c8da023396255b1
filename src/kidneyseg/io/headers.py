"""What an image file's header claims and names, read before any reader allocates or decodes pixels.

One parser per header kind serves every check made from a header alone:

* :func:`check_itk_header` (called by :func:`kidneyseg.io.read` before SimpleITK
  or pynrrd read a NRRD ``.nrrd``/``.nhdr`` or MetaImage ``.mha``/``.mhd``): the
  size the header claims against :func:`check_voxels`, and, for a MetaImage
  that names one data file, that the file exists and can hold the voxels.
* :func:`detached_data_files` and :func:`check_data_files_inside` (used by the
  viewer, ``kidneyseg serve``): the data files a header names.  SimpleITK and
  pynrrd open whatever file is named, absolute or relative to the header, so a
  header of a few bytes can make a reader show any file on the machine as
  pixels; the viewer reads an upload only after every file so named is found
  inside the study's own folder.
* :func:`check_voxels` (also used by the NIfTI, DICOM and PNG readers) and
  :func:`check_png`: a header can claim more voxels than any machine holds
  (``100000^3``), or far more than the file can contain (a 400-byte ``.nii.gz``
  that claims 512^3 voxels); a PNG can claim 10^10 pixels in 60 bytes (a
  decompression bomb).  These are refused with an
  :class:`~kidneyseg.errors.InputError` naming the size found.

How the text is read (the same for both uses; each rule follows the reader that
opens the file afterwards, and takes the safe side where it cannot):

* Only the header is read, line by line (``\\n``): a MetaImage up to and
  including ``ElementDataFile`` (plus, for ``LIST``, the file names after it), a
  NRRD up to its blank line.  A header that does not end within
  :data:`MAX_HEADER_BYTES` (4 MiB: a real one is a few kB, a ``LIST`` of
  :data:`MAX_DATA_FILES` names fits) is refused, so neither check is skipped by
  a long comment.
* Decoding: MetaImage lines with :func:`os.fsdecode`, so a file name is the
  bytes SimpleITK passes to ``open`` (UTF-8 names as written, other bytes kept
  as surrogates); NRRD lines as ASCII with other bytes dropped, as pynrrd
  decodes them.
* Field names: MetaImage keys are matched as MetaIO spells them
  (``ElementDataFile``, ``DimSize``; MetaIO ignores ``elementdatafile``), its
  ``LOCAL`` and ``LIST`` values in any case (MetaIO upper-cases them).  NRRD
  field names are matched as pynrrd spells them (``sizes``, ``type``,
  ``encoding``), except the data file, taken in any case or spacing
  (``data file``, ``datafile``, ``Data File``): a header naming a data file in
  any spelling is treated as detached (its size is not compared with its own
  bytes) and its file is checked by the viewer.

Data file forms:

* MetaImage: ``LOCAL`` (the voxels follow the header: no other file); one file
  name (spaces included, as MetaIO reads it), which :func:`check_itk_header`
  requires to exist; ``LIST [nD]`` with one file name per line after the
  header; a ``printf`` pattern ``name%03d.raw [min [max [step]]]`` expanded the
  way MetaIO expands it (the missing numbers from the last ``DimSize``).  The
  size check does not look for the files of a ``LIST`` or a pattern (the reader
  reports a missing slice).  An empty ``ElementDataFile`` is refused.
* NRRD: one file name (after ``data file:`` or ``datafile:``, also as ``:=``).
  The ``LIST`` and pattern forms (and an empty name) are refused by
  :func:`detached_data_files`: pynrrd, which :func:`kidneyseg.io.read` uses for
  NRRD, reads none of them, and reports them itself when a file is read.

What the viewer cannot verify (a pattern with more than one number, a list or a
pattern of more than :data:`MAX_DATA_FILES` files) is refused with
:class:`~kidneyseg.errors.InputError`.
"""

from __future__ import annotations

import math
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kidneyseg.errors import InputError

#: Most voxels an image may have: 2^31 (e.g. 2048 x 1024 x 1024; 8.6 GB as float32), beyond any CT/MR/US volume.
MAX_VOXELS = 2**31
#: Largest expansion of deflate (gzip, zlib) data: 1032 to 1, so a compressed file of n bytes holds < 1032 n + 1 KB.
DEFLATE_MAX_RATIO = 1032
#: Most data files a header may name (a LIST or a pattern: one file per slice).
MAX_DATA_FILES = 10_000
#: Most bytes of header text read (a MetaImage LIST of :data:`MAX_DATA_FILES` names fits).
MAX_HEADER_BYTES = 4 * 1024 * 1024

_METAIMAGE_SUFFIXES = (".mha", ".mhd")
_NRRD_SUFFIXES = (".nrrd", ".nhdr")
# one printf integer conversion (%d, %03d, %-4i, %x ...); "%%" is a literal percent sign
_INT_CONVERSION = re.compile(r"%[-+ #0]*\d*(?:\.\d+)?[diouxX]")
_FIX = "keep the header and its data in one file (.mha, .nrrd, .nii.gz), or name data files beside the header"


def check_voxels(
    shape: tuple[int, ...] | list[int],
    path: str | os.PathLike[str],
    *,
    itemsize: int | None = None,
    available: int | None = None,
    compressed: bool = False,
    unit: str = "voxels",
) -> None:
    """Refuse a size from a header: an empty axis, more than :data:`MAX_VOXELS`, or more bytes than the file holds.

    Parameters
    ----------
    shape:
        Size of each axis (channels included) as the header gives it.
    itemsize:
        Bytes per value; with ``available`` the data must fit the file.
    available:
        Bytes of pixel data the file holds (its size less the header), compressed or not.
    compressed:
        The data is deflate-compressed: it may expand up to :data:`DEFLATE_MAX_RATIO` times.
    """
    dims = tuple(int(s) for s in shape)
    if not dims or any(s <= 0 for s in dims):
        raise InputError(
            f"image has no {unit}",
            path=path,
            found=f"size {dims} in the header",
            expected="at least one voxel along every axis",
            fix="re-export the image; a zero size means an empty or damaged file",
        )
    n = math.prod(dims)
    if n > MAX_VOXELS:
        size = f" = {n * itemsize / 1e9:.3g} GB" if itemsize else ""
        raise InputError(
            f"the header claims {n:.3g} {unit}, more than kidneyseg reads",
            path=path,
            found=f"size {' x '.join(str(s) for s in dims)}{size}",
            expected=f"at most {MAX_VOXELS:,} {unit}",
            fix="crop or downsample the image first (or, if it is not that large, repair its damaged header)",
        )
    if itemsize and available is not None:
        need = n * int(itemsize)
        fits = available * DEFLATE_MAX_RATIO + 1024 if compressed else available
        if need > fits:
            raise InputError(
                "file is too short for the image its header describes (truncated or damaged header)",
                path=path,
                found=f"the header claims {' x '.join(str(s) for s in dims)} {unit} of {itemsize} byte(s) = "
                      f"{need:,} bytes; the file holds {max(available, 0):,} {'compressed ' if compressed else ''}bytes",
                expected=f"at least {need:,} bytes of pixel data" + (" once decompressed" if compressed else ""),
                fix="re-export or re-download the file (the copy may not have finished)",
            )


# ----------------------------------------------------------------------------- the header parsers


def _header_lines(fh: BinaryIO, shown: str | Path) -> Iterator[bytes]:
    """The lines of ``fh`` from where it stands, refusing to read past :data:`MAX_HEADER_BYTES`."""
    while True:
        raw = fh.readline(MAX_HEADER_BYTES + 1 - fh.tell())
        if not raw:
            return
        if fh.tell() > MAX_HEADER_BYTES:
            raise InputError("image header too long to check", path=shown,
                             found=f"no end of header in the first {MAX_HEADER_BYTES:,} bytes",
                             expected="a header of a few kB (a MetaImage LIST of file names included)",
                             fix="re-export the image as one .nii.gz, .nrrd or .mha file (3D Slicer, SimpleITK)")
        yield raw


@dataclass(frozen=True)
class _MetaImage:
    """A MetaImage header: its ``Key = Value`` fields before ``ElementDataFile``, and that field's value."""

    fields: dict[str, str]
    #: The ``ElementDataFile`` value; ``None`` when the header has none (the reader refuses it).
    data_file: str | None
    #: Bytes up to and including the ``ElementDataFile`` line (where ``LOCAL`` voxels start).
    offset: int
    #: For ``LIST``: the non-empty lines after the header, one file name each.
    names: tuple[str, ...] = ()

    @property
    def form(self) -> str:
        """``"local"``, ``"list"``, ``"pattern"``, ``"file"`` or ``"empty"`` (as MetaIO tells them apart)."""
        value = self.data_file or ""
        if value.upper() == "LOCAL":
            return "local"
        if value.upper().startswith("LIST"):
            return "list"
        if "%" in value:
            return "pattern"
        return "file" if value else "empty"


def _read_metaimage(p: Path, shown: str | Path) -> _MetaImage:
    fields: dict[str, str] = {}
    with p.open("rb") as fh:
        lines = _header_lines(fh, shown)
        for raw in lines:
            key, sep, value = (part.strip() for part in os.fsdecode(raw).partition("="))
            if not sep:
                continue
            if key != "ElementDataFile":
                fields[key] = value
                continue
            # ElementDataFile is the last field: what follows is voxels (LOCAL) or file names (LIST)
            offset = fh.tell()
            names: tuple[str, ...] = ()
            if value.upper().startswith("LIST"):
                names = tuple(name for name in (os.fsdecode(line).rstrip() for line in lines) if name)
            return _MetaImage(fields, value, offset, names)
    return _MetaImage(fields, None, 0)


@dataclass(frozen=True)
class _Nrrd:
    """A NRRD header: its fields (names as pynrrd keeps them) and the values of its data file fields."""

    fields: dict[str, str]
    data_files: tuple[str, ...]
    #: Bytes up to and including the blank line (where attached data starts).
    offset: int


def _read_nrrd(p: Path, shown: str | Path) -> _Nrrd | None:
    """The header of the NRRD file ``p``, or ``None`` when ``p`` does not start with ``NRRD``."""
    fields: dict[str, str] = {}
    data_files: list[str] = []
    with p.open("rb") as fh:
        lines = _header_lines(fh, shown)
        if not next(lines, b"").startswith(b"NRRD"):
            return None
        for raw in lines:
            line = raw.decode("ascii", "ignore").rstrip()
            if line == "":
                break
            if line.startswith("#") or ":" not in line:
                continue
            field, value = (part.strip() for part in re.split(r":=?", line, maxsplit=1))
            if re.sub(r"\s+", "", field).lower() == "datafile":  # "data file", "datafile", any case or spacing
                data_files.append(value)
            fields[field] = value
        return _Nrrd(fields, tuple(data_files), fh.tell())


# ----------------------------------------------------------------------------- size checks of NRRD and MetaImage

_MET_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}
_NRRD_BYTES = {
    "int8": 1, "uint8": 1, "signed char": 1, "uchar": 1, "unsigned char": 1, "char": 1,
    "int16": 2, "uint16": 2, "short": 2, "ushort": 2, "unsigned short": 2, "short int": 2, "signed short": 2,
    "int32": 4, "uint32": 4, "int": 4, "uint": 4, "unsigned int": 4, "signed int": 4,
    "int64": 8, "uint64": 8, "longlong": 8, "ulonglong": 8, "long long": 8, "unsigned long long": 8,
    "float": 4, "double": 8,
}


def check_itk_header(path: str | os.PathLike[str]) -> None:
    """Check a NRRD or MetaImage header's size against :func:`check_voxels` (reads the header text only).

    For a MetaImage whose ``ElementDataFile`` names one file, that file must exist.
    Headers without a size the checks understand are left to the reader (it
    reports them); a header too long to read, or an empty ``ElementDataFile``,
    is refused (see the module docstring).
    """
    p = Path(path)
    name = p.name.lower()
    try:
        if name.endswith(_NRRD_SUFFIXES):
            _check_nrrd(p)
        elif name.endswith(_METAIMAGE_SUFFIXES):
            _check_metaimage(p)
    except OSError:
        return  # unreadable: the reader says what is wrong


def _check_nrrd(p: Path) -> None:
    header = _read_nrrd(p, p)
    if header is None:
        return
    fields = header.fields
    try:
        sizes = [int(s) for s in fields["sizes"].split()]
    except (KeyError, ValueError):
        return  # the reader says what is wrong
    encoding = fields.get("encoding", "raw").lower()
    itemsize = _NRRD_BYTES.get(fields.get("type", "").lower())
    known = encoding in ("raw", "gzip", "gz")
    available = None if header.data_files or not known else p.stat().st_size - header.offset
    check_voxels(sizes, p, itemsize=itemsize, available=available, compressed=encoding in ("gzip", "gz"))


def _check_metaimage(p: Path) -> None:
    header = _read_metaimage(p, p)
    fields = header.fields
    try:
        sizes = [int(s) for s in fields["DimSize"].split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
    except (ValueError, KeyError):
        return  # not a MetaImage header the checks understand: the reader says what is wrong
    if header.data_file is None:
        return
    compressed = fields.get("CompressedData", "False").lower() == "true"
    itemsize = _MET_BYTES.get(fields.get("ElementType", "").upper())
    shape = sizes + ([channels] if channels != 1 else [])
    form = header.form
    if form == "empty":
        raise _empty_metaimage(p)
    if form == "local":
        available: int | None = p.stat().st_size - header.offset
    elif form in ("list", "pattern"):
        available = None  # one file per slice: not checked here
    else:
        data = p.parent / header.data_file  # an absolute name stays absolute
        if not data.is_file():
            raise InputError(
                "the data file named in the MetaImage header is missing",
                path=p,
                found=f"ElementDataFile = {header.data_file} (no such file)",
                expected=f"{data.name} beside {p.name}",
                fix="copy the .raw/.zraw data file together with the .mhd header (or use a one-file .mha)",
            )
        available = data.stat().st_size
    check_voxels(shape, p, itemsize=itemsize, available=available, compressed=compressed)


def _empty_metaimage(shown: str | Path) -> InputError:
    return InputError("empty MetaImage ElementDataFile", path=shown, found="ElementDataFile = ''",
                      expected="LOCAL or a file name", fix=_FIX)


# ----------------------------------------------------------------------------- data files named by a header


def detached_data_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files other than ``path`` itself that a MetaImage or NRRD header at ``path`` names for its voxels.

    Names are joined to the header's folder as the readers join them
    (absolute names stay absolute) and are not resolved: see
    :func:`check_data_files_inside`.  An attached header (MetaImage ``LOCAL``,
    NRRD without ``data file``) and any other kind of file give ``[]``.
    Raises :class:`~kidneyseg.errors.InputError` for forms that cannot be
    verified (see the module docstring).
    """
    p = Path(path)
    files: list[Path] = []
    nrrd = _read_nrrd(p, p.name)
    if nrrd is not None:
        files += _nrrd_data_files(p, nrrd)
    if p.name.lower().endswith(_METAIMAGE_SUFFIXES):
        files += _metaimage_data_files(p, _read_metaimage(p, p.name))
    return files


def check_data_files_inside(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> list[Path]:
    """The data files of the header at ``path`` (resolved), after checking that each lies inside ``root``.

    Absolute names, ``..`` and symbolic links are all followed
    (:meth:`pathlib.Path.resolve`) before the check, so a name that leaves
    ``root`` by any of them is refused with :class:`~kidneyseg.errors.InputError`.
    """
    p = Path(path)
    r = Path(root).resolve()
    out = []
    for name in detached_data_files(p):
        resolved = name.resolve()
        if resolved != r and r not in resolved.parents:
            raise InputError("the header names a data file outside its folder", path=p.name,
                             found=_shown(name, p), expected=f"data files inside the folder of {p.name}",
                             fix=_FIX)
        out.append(resolved)
    return out


def _shown(name: Path, header: Path) -> str:
    """A data file name as the header wrote it (relative to the header's folder when it was relative)."""
    try:
        return repr(str(name.relative_to(header.parent)))
    except ValueError:
        return repr(str(name))


def _too_many(p: Path, n: int) -> InputError:
    return InputError("the header names too many data files", path=p.name, found=n,
                      expected=f"at most {MAX_DATA_FILES}", fix=_FIX)


def _nrrd_data_files(p: Path, header: _Nrrd) -> list[Path]:
    files = []
    for value in header.data_files:
        if value.upper().startswith("LIST") or "%" in value:
            raise InputError("NRRD data split over several files is not supported", path=p.name,
                             found=f"data file: {value[:80]!r}", expected="one data file (or the data in the .nrrd)",
                             fix="save the image as one .nrrd file (3D Slicer, SimpleITK)")
        if not value:
            raise InputError("empty NRRD 'data file' field", path=p.name, found="data file: ''",
                             expected="a file name", fix=_FIX)
        files.append(p.parent / value)
    return files


def _metaimage_data_files(p: Path, header: _MetaImage) -> list[Path]:
    """``ElementDataFile`` names of a MetaImage header, expanded as MetaIO expands them."""
    form = header.form
    if header.data_file is None or form == "local":
        return []  # no ElementDataFile: the reader refuses the file
    if form == "empty":
        raise _empty_metaimage(p.name)
    if form == "list":
        if len(header.names) > MAX_DATA_FILES:
            raise _too_many(p, len(header.names))
        return [p.parent / name for name in header.names]
    if form == "pattern":
        return _metaimage_pattern(p, header.data_file, header.fields)
    return [p.parent / header.data_file]


def _metaimage_pattern(p: Path, value: str, fields: dict[str, str]) -> list[Path]:
    """Expand ``name%03d.raw [min [max [step]]]`` as MetaIO does (``for i = min; i <= max; i += step``)."""
    words = value.split()
    fmt = words[0]
    refused = InputError("MetaImage file-name pattern that cannot be checked", path=p.name,
                         found=f"ElementDataFile = {value[:80]!r}",
                         expected="'name%03d.raw min max step' with one integer conversion and no spaces",
                         fix=_FIX)
    if len(words) > 4 or len(_INT_CONVERSION.findall(fmt)) != 1 or "%" in _INT_CONVERSION.sub("", fmt).replace("%%", ""):
        raise refused
    try:
        numbers = [int(float(w)) for w in words[1:]]
        last_dim = int(float(fields["DimSize"].split()[-1])) if len(numbers) < 3 else 1
    except (ValueError, KeyError, IndexError):
        raise refused from None
    lo, hi, step = 1, last_dim, 1
    if numbers:
        lo = numbers[0]
        hi = lo + last_dim - 1
    if len(numbers) >= 2:
        hi = numbers[1]
        step = (hi - lo) // last_dim if last_dim > 0 else 0
    if len(numbers) >= 3:
        step = numbers[2]
    if step <= 0:
        raise refused
    count = len(range(lo, hi + 1, step))
    if count > MAX_DATA_FILES:
        raise _too_many(p, count)
    return [p.parent / (fmt % i) for i in range(lo, hi + 1, step)]


# ----------------------------------------------------------------------------- PNG

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png(path: str | os.PathLike[str], max_pixels: int | None) -> None:
    """Check a PNG's chunks (lengths, CRCs, IHDR first, IEND present) and its IHDR size, decoding nothing.

    ``max_pixels``: Pillow's ``Image.MAX_IMAGE_PIXELS`` (``None``: no limit).  Files
    that do not start with the PNG signature are left to Pillow (a mislabelled
    JPEG is read as JPEG; anything else gets Pillow's error).
    """
    p = Path(path)
    with open(p, "rb") as fh:
        data = fh.read()
    if not data.startswith(_PNG_SIGNATURE):
        return
    pos, n_chunk, seen_end = len(_PNG_SIGNATURE), 0, False
    while pos < len(data):
        if pos + 8 > len(data):
            raise _broken_png(p, f"{len(data) - pos} stray byte(s) after chunk {n_chunk}")
        length, kind = struct.unpack(">I4s", data[pos: pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise _broken_png(p, f"chunk {kind.decode('latin-1')!r} needs {length} bytes, the file ends "
                                 f"{end - len(data)} byte(s) short (truncated)")
        (crc,) = struct.unpack(">I", data[end - 4: end])
        if zlib.crc32(data[pos + 4: end - 4]) & 0xFFFFFFFF != crc:
            raise _broken_png(p, f"bad CRC in chunk {kind.decode('latin-1')!r} at byte {pos}")
        if n_chunk == 0:
            if kind != b"IHDR" or length != 13:
                raise _broken_png(p, f"first chunk is {kind.decode('latin-1')!r}, not IHDR")
            width, height = struct.unpack(">II", data[pos + 8: pos + 16])
            if max_pixels is not None and width * height > max_pixels:
                raise too_many_pixels(p, width, height, max_pixels)
            check_voxels((height, width), p, unit="pixels")
        n_chunk += 1
        pos = end
        if kind == b"IEND":
            seen_end = True
            break
    if not seen_end:
        raise _broken_png(p, "no IEND chunk (truncated)")


def too_many_pixels(p: Path, width: int, height: int, max_pixels: int) -> InputError:
    """The error for a 2D image over Pillow's decompression-bomb limit."""
    return InputError(
        "image has more pixels than Pillow's decompression-bomb limit",
        path=p,
        found=f"{width} x {height} = {width * height:,} pixels",
        expected=f"at most {max_pixels:,} pixels (PIL.Image.MAX_IMAGE_PIXELS)",
        fix="downsample or crop the image first; a 2D ultrasound or slice image is far smaller",
    )


def _broken_png(p: Path, found: str) -> InputError:
    return InputError("broken PNG file (unreadable or truncated)", path=p, found=found,
                      expected="a complete PNG file with valid chunks", fix="re-export the image")
