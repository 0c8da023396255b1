"""Checks made from a file's header alone, before any reader allocates or decodes pixels.

A header can claim more voxels than any machine holds (``100000^3``), or far
more than the file can contain (a 400-byte ``.nii.gz`` that claims 512^3
voxels); a PNG can claim 10^10 pixels in 60 bytes (a decompression bomb).
These are refused here with an :class:`~kidneyseg.errors.InputError` naming
the size found, before a reader would try to allocate it.

* :func:`check_voxels`: the shared rule (at least one voxel per axis, at most
  :data:`MAX_VOXELS`, and no more bytes than the file can hold).
* :func:`check_itk_header`: NRRD (``.nrrd``/``.nhdr``) and MetaImage
  (``.mha``/``.mhd``) headers, read as text (no pixel data, no SimpleITK).
* :func:`check_png`: a PNG's chunk structure and CRCs, and its IHDR size
  against Pillow's decompression-bomb limit.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from pathlib import Path

from kidneyseg.errors import InputError

#: Most voxels an image may have: 2^31 (e.g. 2048 x 1024 x 1024; 8.6 GB as float32), beyond any CT/MR/US volume.
MAX_VOXELS = 2**31
#: Largest expansion of deflate (gzip, zlib) data: 1032 to 1, so a compressed file of n bytes holds < 1032 n + 1 KB.
DEFLATE_MAX_RATIO = 1032


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


# ----------------------------------------------------------------------------- NRRD and MetaImage

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


def _unusable(p: Path, kind: str, what: str, found: object) -> InputError:
    return InputError(f"{kind} header {what}", path=p, found=found, expected=f"a complete {kind} file",
                      fix="re-export the file (3D Slicer, ITK-SNAP, SimpleITK)")


def check_itk_header(path: str | os.PathLike[str]) -> None:
    """Check a NRRD or MetaImage header's size against :func:`check_voxels` (reads the header text only).

    For a MetaImage whose ``ElementDataFile`` names one file, that file must exist.
    Files whose header cannot be parsed are left to the reader (it reports them).
    """
    p = Path(path)
    name = p.name.lower()
    if name.endswith((".nrrd", ".nhdr")):
        _check_nrrd(p)
    elif name.endswith((".mha", ".mhd")):
        _check_metaimage(p)


def _check_nrrd(p: Path) -> None:
    import nrrd

    try:
        with open(p, "rb") as fh:
            header = nrrd.read_header(fh)
            offset = fh.tell()
        sizes = [int(s) for s in header["sizes"]]
    except (nrrd.NRRDError, OSError, ValueError, TypeError, KeyError, UnicodeDecodeError, StopIteration):
        return  # the reader says what is wrong
    encoding = str(header.get("encoding", "raw")).lower()
    detached = any(k in header for k in ("data file", "datafile"))
    itemsize = _NRRD_BYTES.get(str(header.get("type", "")).lower())
    known = encoding == "raw" or encoding in ("gzip", "gz")
    available = None if detached or not known else p.stat().st_size - offset
    check_voxels(sizes, p, itemsize=itemsize, available=available, compressed=encoding in ("gzip", "gz"))


def _metaimage_fields(p: Path) -> tuple[dict[str, str], int]:
    """The ``Key = Value`` lines of a MetaImage header up to ``ElementDataFile``, and the byte offset after it."""
    fields: dict[str, str] = {}
    with open(p, "rb") as fh:
        head = fh.read(1 << 16)
    offset = 0
    for raw in head.splitlines(keepends=True):
        offset += len(raw)
        line = raw.decode("latin-1").strip()
        if "=" not in line:
            continue
        key, _, value = line.partition("=")
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            break
    return fields, offset


def _check_metaimage(p: Path) -> None:
    try:
        fields, offset = _metaimage_fields(p)
        sizes = [int(s) for s in fields["DimSize"].split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
        datafile = fields["ElementDataFile"]
    except (OSError, ValueError, KeyError):
        return  # not a MetaImage header the checks understand: the reader says what is wrong
    compressed = fields.get("CompressedData", "False").lower() == "true"
    itemsize = _MET_BYTES.get(fields.get("ElementType", "").upper())
    shape = sizes + ([channels] if channels != 1 else [])
    if datafile.upper() == "LOCAL":
        available: int | None = p.stat().st_size - offset
    elif datafile.upper().startswith("LIST") or "%" in datafile or " " in datafile:
        available = None  # one file per slice: not checked here
    else:
        data = Path(datafile) if os.path.isabs(datafile) else p.parent / datafile
        if not data.is_file():
            raise InputError(
                "the data file named in the MetaImage header is missing",
                path=p,
                found=f"ElementDataFile = {datafile} (no such file)",
                expected=f"{data.name} beside {p.name}",
                fix="copy the .raw/.zraw data file together with the .mhd header (or use a one-file .mha)",
            )
        available = data.stat().st_size
    check_voxels(shape, p, itemsize=itemsize, available=available, compressed=compressed)


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
