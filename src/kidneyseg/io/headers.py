"""The data files that a detached image header names, and the check that they stay inside a folder.

MetaImage (``.mhd``/``.mha``) names its voxels with ``ElementDataFile`` and NRRD
(``.nhdr``/``.nrrd``) with ``data file``; SimpleITK and pynrrd open whatever
file is named, absolute or relative to the header, so a header of a few bytes
can make a reader show any file on the machine as pixels.  The viewer
(``kidneyseg serve``) reads uploads only after :func:`check_data_files_inside`
has made sure every file so named lies inside the study's own folder.

Forms understood (as the readers understand them):

* MetaImage: ``LOCAL`` (the voxels follow the header: no other file); one file
  name; ``LIST [nD]`` with one file name per line after the header; a
  ``printf`` pattern ``name%03d.raw [min [max [step]]]`` expanded the way
  MetaIO expands it (the missing numbers from the last ``DimSize``).
* NRRD: one file name (after ``data file:`` or ``datafile:``, also as ``:=``).
  The ``LIST`` and pattern forms of NRRD are refused: pynrrd, which
  :func:`kidneyseg.io.read` uses for NRRD, reads neither.

What cannot be verified (a pattern with more than one number, a list or a
pattern of more than :data:`MAX_DATA_FILES` files, a header longer than
:data:`MAX_HEADER_BYTES`) is refused with :class:`~kidneyseg.errors.InputError`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from kidneyseg.errors import InputError

#: Most data files a header may name (a LIST or a pattern: one file per slice).
MAX_DATA_FILES = 10_000
#: Most header bytes read to find the data file field (a LIST of 10 000 names fits).
MAX_HEADER_BYTES = 4 * 1024 * 1024

_METAIMAGE_SUFFIXES = (".mha", ".mhd")
# one printf integer conversion (%d, %03d, %-4i, %x ...); "%%" is a literal percent sign
_INT_CONVERSION = re.compile(r"%[-+ #0]*\d*(?:\.\d+)?[diouxX]")
_FIX = "keep the header and its data in one file (.mha, .nrrd, .nii.gz), or name data files beside the header"


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
    with p.open("rb") as f:
        head = f.read(MAX_HEADER_BYTES + 1)
    files: list[Path] = []
    if head.startswith(b"NRRD"):
        files += _nrrd_data_files(p, head)
    if p.name.lower().endswith(_METAIMAGE_SUFFIXES):
        files += _metaimage_data_files(p, head)
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


def _too_long(p: Path) -> InputError:
    return InputError("image header too long to check its data files", path=p.name,
                      found=f"no end of header in the first {MAX_HEADER_BYTES} bytes",
                      expected="a header of a few kB", fix=_FIX)


def _too_many(p: Path, n: int) -> InputError:
    return InputError("the header names too many data files", path=p.name, found=n,
                      expected=f"at most {MAX_DATA_FILES}", fix=_FIX)


# ----------------------------------------------------------------------------- NRRD


def _nrrd_data_files(p: Path, head: bytes) -> list[Path]:
    """``data file`` names of a NRRD header, parsed as pynrrd parses it (ASCII, bytes outside it dropped)."""
    lines = head.split(b"\n")
    ended = False
    values = []
    for raw in lines[1:]:
        line = raw.decode("ascii", "ignore").rstrip()
        if line == "":
            ended = True
            break
        if line.startswith("#") or ":" not in line:
            continue
        field, value = re.split(r":=?", line, maxsplit=1)
        if re.sub(r"\s+", "", field).lower() == "datafile":  # "data file", "datafile", any case or spacing
            values.append(value.strip())
    if not ended and len(head) > MAX_HEADER_BYTES:
        raise _too_long(p)
    files = []
    for value in values:
        if value.upper().startswith("LIST") or "%" in value:
            raise InputError("NRRD data split over several files is not supported", path=p.name,
                             found=f"data file: {value[:80]!r}", expected="one data file (or the data in the .nrrd)",
                             fix="save the image as one .nrrd file (3D Slicer, SimpleITK)")
        if not value:
            raise InputError("empty NRRD 'data file' field", path=p.name, found="data file: ''",
                             expected="a file name", fix=_FIX)
        files.append(p.parent / value)
    return files


# ----------------------------------------------------------------------------- MetaImage


def _metaimage_data_files(p: Path, head: bytes) -> list[Path]:
    """``ElementDataFile`` names of a MetaImage header, expanded as MetaIO expands them."""
    lines = head.split(b"\n")
    fields: dict[str, str] = {}
    for n, raw in enumerate(lines):
        if n == len(lines) - 1 and len(head) > MAX_HEADER_BYTES:
            raise _too_long(p)  # the last piece may be cut
        if b"=" not in raw:
            continue
        key_b, value_b = raw.split(b"=", 1)
        key = key_b.decode("latin-1").strip().lower()
        value = os.fsdecode(value_b).strip()
        if key != "elementdatafile":
            fields[key] = value
            continue
        # ElementDataFile is the last field: what follows is voxels (LOCAL) or file names (LIST)
        if value.upper() == "LOCAL":
            return []
        if value.upper().startswith("LIST"):
            return _metaimage_list(p, head, lines[n + 1:])
        if "%" in value:
            return _metaimage_pattern(p, value, fields)
        if not value:
            raise InputError("empty MetaImage ElementDataFile", path=p.name, found="ElementDataFile = ''",
                             expected="LOCAL or a file name", fix=_FIX)
        return [p.parent / value]
    return []  # no ElementDataFile: the reader refuses the file


def _metaimage_list(p: Path, head: bytes, rest: list[bytes]) -> list[Path]:
    if len(head) > MAX_HEADER_BYTES:
        raise _too_long(p)
    names = [os.fsdecode(line).rstrip() for line in rest]
    names = [name for name in names if name]
    if len(names) > MAX_DATA_FILES:
        raise _too_many(p, len(names))
    return [p.parent / name for name in names]


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
        last_dim = int(float(fields["dimsize"].split()[-1])) if len(numbers) < 3 else 1
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
