"""Edge cases of the header parser, pinned for both of its uses.

``check_itk_header`` (the size and missing-data-file checks before :func:`kidneyseg.io.read`
decodes pixels) and ``detached_data_files`` (the data files a header names, checked by the
viewer) read the MetaImage ``Key = Value ... ElementDataFile`` and NRRD ``key: value ...
data file`` text with one parser (:mod:`kidneyseg.io.headers`).  Where the readers (SimpleITK
for MetaImage, pynrrd for NRRD) decide, the tests ask them too, so a change of reader behaviour
shows up here.  "Was:" comments give the behaviour of the two parsers before they were merged.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kidneyseg import io
from kidneyseg.errors import InputError
from kidneyseg.io import headers as H
from kidneyseg.io.headers import MAX_HEADER_BYTES

BASE = b"ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_UCHAR\n"


def _write(p: Path, data: bytes) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def _mhd(folder: Path, data_file: bytes, *, head: bytes = BASE, tail: bytes = b"", name: str = "scan.mhd") -> Path:
    return _write(folder / name, head + b"ElementDataFile = " + data_file + b"\n" + tail)


def _nhdr(folder: Path, lines: bytes, *, name: str = "scan.nhdr") -> Path:
    return _write(folder / name, b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 3 2\nencoding: raw\n" + lines + b"\n")


def _sitk_reads(p: Path) -> bool:
    sitk = pytest.importorskip("SimpleITK")
    try:
        sitk.ReadImage(str(p))
    except RuntimeError:
        return False
    return True


# ----------------------------------------------------------------------------- key case


def test_metaimage_keys_are_case_sensitive_as_metaio(tmp_path: Path) -> None:
    """MetaIO reads ``ElementDataFile`` and ``DimSize`` only as spelled: lower-case keys are not fields."""
    _write(tmp_path / "secret.raw", bytes(24))
    lower = _mhd(tmp_path, str(tmp_path / "secret.raw").encode(), head=BASE.replace(b"DimSize", b"dimsize"))
    assert not _sitk_reads(lower)
    H.check_itk_header(lower)  # no DimSize: left to the reader
    key = _write(tmp_path / "k" / "scan.mhd", BASE + b"elementdatafile = /etc/passwd\n")
    assert not _sitk_reads(key)
    assert H.check_data_files_inside(key, key.parent) == []  # was: refused, any case was the data file
    H.check_itk_header(key)


def test_metaimage_local_in_any_case_is_attached(tmp_path: Path) -> None:
    for value in (b"LOCAL", b"local", b"Local"):
        p = _mhd(tmp_path, value, tail=bytes(24))
        assert H.detached_data_files(p) == []
        H.check_itk_header(p)
    short = _mhd(tmp_path / "short", b"local", tail=bytes(3))
    with pytest.raises(InputError, match="too short"):
        H.check_itk_header(short)


def test_nrrd_data_file_key_in_any_spelling(tmp_path: Path) -> None:
    """pynrrd reads ``data file`` and ``datafile`` exactly; any case or spacing is taken as a data file (safe side)."""
    for key in (b"data file: ", b"datafile: ", b"DataFile: ", b"Data  File:= "):
        p = _nhdr(tmp_path, key + b"x.raw\n")
        assert H.detached_data_files(p) == [tmp_path / "x.raw"]
        H.check_itk_header(p)  # detached: nothing to compare the size with (was: "too short" but for pynrrd's names)


def test_nrrd_field_names_other_than_data_file_are_exact(tmp_path: Path) -> None:
    """``Sizes`` is not ``sizes`` for pynrrd: a header without ``sizes`` is left to the reader."""
    p = _write(tmp_path / "a.nrrd", b"NRRD0004\ntype: float\ndimension: 3\nSizes: 100000 100000 100000\n"
                                    b"encoding: raw\n\n")
    H.check_itk_header(p)


# ----------------------------------------------------------------------------- non-ASCII file names


def test_metaimage_utf8_file_name(tmp_path: Path) -> None:
    name = "données.raw"
    _write(tmp_path / name, bytes(24))
    p = _mhd(tmp_path, name.encode())
    assert _sitk_reads(p)
    assert H.detached_data_files(p) == [tmp_path / name]
    H.check_itk_header(p)  # was: "missing" (decoded as latin-1, another name)
    assert io.read(p).shape == (4, 3, 2)


def test_metaimage_latin1_file_name(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 name the file with those bytes (SimpleITK opens them as they are)."""
    raw = b"lat\xe9.raw"
    _write(Path(os.fsdecode(os.fsencode(tmp_path) + b"/" + raw)), bytes(24))
    p = _mhd(tmp_path, raw)
    assert _sitk_reads(p)
    (found,) = H.detached_data_files(p)
    assert os.fsencode(found) == os.fsencode(tmp_path) + b"/" + raw and found.is_file()
    H.check_itk_header(p)  # was: "missing" (latin-1 'laté.raw' is another name)


def test_nrrd_non_ascii_bytes_dropped_as_pynrrd_drops_them(tmp_path: Path) -> None:
    p = _nhdr(tmp_path, "data file: données.raw\n".encode())
    assert H.detached_data_files(p) == [tmp_path / "donnes.raw"]
    H.check_itk_header(p)


# ----------------------------------------------------------------------------- several data files


def test_metaimage_list_and_pattern(tmp_path: Path) -> None:
    """LIST and patterns are expanded for the viewer; the size check does not look for their files."""
    lst = _mhd(tmp_path / "l", b"LIST 2D", tail=b"s0.raw\ns1.raw\n")
    assert [p.name for p in H.detached_data_files(lst)] == ["s0.raw", "s1.raw"]
    H.check_itk_header(lst)
    pat = _mhd(tmp_path / "p", b"s%02d.raw 1 2 1")
    assert [p.name for p in H.detached_data_files(pat)] == ["s01.raw", "s02.raw"]
    H.check_itk_header(pat)


def test_metaimage_name_with_a_space_is_one_file(tmp_path: Path) -> None:
    _write(tmp_path / "my scan.raw", bytes(24))
    p = _mhd(tmp_path, b"my scan.raw")
    assert _sitk_reads(p)  # MetaIO: one file, spaces and all
    assert H.detached_data_files(p) == [tmp_path / "my scan.raw"]
    missing = _mhd(tmp_path / "m", b"my scan.raw")
    assert not _sitk_reads(missing)
    with pytest.raises(InputError, match="missing"):  # was: taken for a pattern and not looked for
        H.check_itk_header(missing)


@pytest.mark.parametrize("value", [b"LIST", b"LIST 2D", b"s%03d.raw 1 2 1"])
def test_nrrd_list_and_pattern(tmp_path: Path, value: bytes) -> None:
    p = _nhdr(tmp_path, b"data file: " + value + b"\n")
    with pytest.raises(InputError, match="several files"):
        H.detached_data_files(p)
    H.check_itk_header(p)


# ----------------------------------------------------------------------------- header size


def test_metaimage_header_over_64_kb(tmp_path: Path) -> None:
    """A long comment before the fields: the data file and the size claim are still found."""
    head = b"ObjectType = Image\nComment = " + b"x" * 100_000 + b"\nNDims = 3\nDimSize = 100000 100000 100000\n" \
           b"ElementType = MET_FLOAT\n"
    p = _mhd(tmp_path, b"LOCAL", head=head, tail=bytes(64))
    assert H.detached_data_files(p) == []
    with pytest.raises(InputError, match="claims"):  # was: ElementDataFile not in the first 64 KB, not checked
        H.check_itk_header(p)


def test_headers_over_4_mib(tmp_path: Path) -> None:
    comment = b"x" * (5 * 1024 * 1024)
    mhd = _write(tmp_path / "long.mhd", b"ObjectType = Image\nComment = " + comment + b"\n" + BASE
                 + b"ElementDataFile = LOCAL\n" + bytes(24))
    nrrd = _write(tmp_path / "long.nrrd", b"NRRD0004\n# " + comment + b"\ntype: uint8\ndimension: 3\nsizes: 4 3 2\n"
                  b"encoding: raw\n\n" + bytes(24))
    for p in (mhd, nrrd):
        with pytest.raises(InputError, match="too long"):
            H.detached_data_files(p)
        with pytest.raises(InputError, match="too long") as e:  # was: read on (pynrrd) or not checked (MetaImage)
            H.check_itk_header(p)
        assert str(p) in str(e.value) and "Fix:" in str(e.value)


def test_header_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    head = BASE + b"ElementDataFile = LOCAL\n"
    pad = b"Comment = " + b"x" * (MAX_HEADER_BYTES - len(head) - len(b"Comment = \n")) + b"\n"
    p = _write(tmp_path / "edge.mha", pad + head + bytes(24))
    assert p.stat().st_size == MAX_HEADER_BYTES + 24
    assert H.detached_data_files(p) == []
    H.check_itk_header(p)
    with pytest.raises(InputError, match="too long"):
        H.check_itk_header(_write(tmp_path / "over.mha", b"#" + pad + head + bytes(24)))


def test_nrrd_attached_size_checked_against_the_file(tmp_path: Path) -> None:
    short = _write(tmp_path / "short.nrrd", b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 3 2\nencoding: raw\n\n"
                   + bytes(3))
    with pytest.raises(InputError, match="too short"):
        H.check_itk_header(short)
    assert H.detached_data_files(short) == []
    huge = _write(tmp_path / "huge.nrrd", b"NRRD0004\ntype: float\ndimension: 3\nsizes: 100000 100000 100000\n"
                  b"encoding: gzip\n\n" + bytes(64))
    with pytest.raises(InputError, match="claims"):
        H.check_itk_header(huge)


# ----------------------------------------------------------------------------- missing or absent data file


def test_metaimage_without_element_data_file(tmp_path: Path) -> None:
    p = _write(tmp_path / "a.mhd", BASE)
    assert H.detached_data_files(p) == []
    H.check_itk_header(p)  # the reader refuses it


def test_metaimage_missing_data_file(tmp_path: Path) -> None:
    p = _mhd(tmp_path, b"image.raw")
    with pytest.raises(InputError, match="data file named in the MetaImage header is missing"):
        H.check_itk_header(p)
    assert H.detached_data_files(p) == [tmp_path / "image.raw"]


def test_metaimage_data_file_too_short(tmp_path: Path) -> None:
    _write(tmp_path / "image.raw", bytes(5))
    with pytest.raises(InputError, match="too short"):
        H.check_itk_header(_mhd(tmp_path, b"image.raw"))


def test_empty_data_file_value(tmp_path: Path) -> None:
    p = _mhd(tmp_path, b"")
    with pytest.raises(InputError, match="empty MetaImage ElementDataFile"):
        H.detached_data_files(p)
    with pytest.raises(InputError, match="empty MetaImage ElementDataFile"):  # was: "missing" (the folder)
        H.check_itk_header(p)
    n = _nhdr(tmp_path, b"data file:\n")
    with pytest.raises(InputError, match="empty NRRD"):
        H.detached_data_files(n)
    H.check_itk_header(n)


def test_not_a_header(tmp_path: Path) -> None:
    for name in ("notes.mha", "notes.nrrd"):
        p = _write(tmp_path / name, b"This is a text file.\n" * 5)
        assert H.detached_data_files(p) == []
        H.check_itk_header(p)
