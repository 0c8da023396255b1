"""Data files named by detached headers (MetaImage ElementDataFile, NRRD data file) and the inside-the-folder check."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from kidneyseg import io
from kidneyseg.errors import InputError
from kidneyseg.io.headers import MAX_DATA_FILES, check_data_files_inside, detached_data_files

SHAPE = (4, 3, 2)  # x, y, z


def _mhd(folder: Path, data_file: str, *, dims: str = "4 3 2", tail: str = "") -> Path:
    """A MetaImage header of a 4x3x2 uint8 image whose voxels are in ``data_file``."""
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "scan.mhd"
    p.write_text(f"ObjectType = Image\nNDims = 3\nDimSize = {dims}\nElementType = MET_UCHAR\n"
                 f"ElementSpacing = 1 1 1\nElementDataFile = {data_file}\n{tail}")
    return p


def _nhdr(folder: Path, data_file: str, *, key: str = "data file: ") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "scan.nhdr"
    p.write_text(f"NRRD0004\n# detached\ntype: uint8\ndimension: 3\nsizes: 4 3 2\nencoding: raw\n{key}{data_file}\n\n")
    return p


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside the study folder (24 bytes: a 4x3x2 uint8 image's worth)."""
    p = tmp_path / "secret.raw"
    p.write_bytes(bytes(range(100, 124)))
    return p


def test_readers_follow_names_outside_the_folder(tmp_path: Path, secret: Path) -> None:
    """Why the check exists: without it, an .mhd or .nhdr in a study folder shows any file as pixels."""
    study = tmp_path / "study"
    for header in (_mhd(study, str(secret)), _nhdr(study / "n", "../../secret.raw")):
        case = io.read(header)
        assert sorted(np.asarray(case.image).ravel().astype(int)) == list(range(100, 124))
        with pytest.raises(InputError, match="outside its folder"):
            check_data_files_inside(header, study)


def test_inside_names_pass(tmp_path: Path) -> None:
    study = tmp_path / "study"
    (study / "data").mkdir(parents=True)
    (study / "data" / "scan.raw").write_bytes(bytes(24))
    for header in (_mhd(study, "data/scan.raw"), _nhdr(study, "data/scan.raw"), _nhdr(study, "./data/../data/scan.raw")):
        assert check_data_files_inside(header, study) == [(study / "data" / "scan.raw").resolve()]
        assert io.read(header).shape == SHAPE


@pytest.mark.parametrize("name", ["/etc/passwd", "../secret.raw", "data/../../secret.raw"])
def test_mhd_outside_refused(tmp_path: Path, secret: Path, name: str) -> None:
    header = _mhd(tmp_path / "study", name)
    with pytest.raises(InputError, match="outside its folder") as e:
        check_data_files_inside(header, tmp_path / "study")
    assert "scan.mhd" in str(e.value) and name in str(e.value) and "Fix:" in str(e.value)


@pytest.mark.parametrize("key", ["data file: ", "datafile: ", "data file:=", "Data  File: ", "data\xfffile: "])
def test_nrrd_outside_refused_in_every_spelling(tmp_path: Path, secret: Path, key: str) -> None:
    """pynrrd reads ``data file`` and ``datafile`` (``:`` or ``:=``); bytes outside ASCII are dropped as it drops them."""
    header = _nhdr(tmp_path / "study", str(secret), key=key)
    with pytest.raises(InputError, match="outside its folder"):
        check_data_files_inside(header, tmp_path / "study")


def test_attached_nrrd_with_data_file_refused(tmp_path: Path, secret: Path) -> None:
    """A .nrrd (not only .nhdr) that names a data file is a detached header too."""
    study = tmp_path / "study"
    study.mkdir()
    p = study / "scan.nrrd"
    p.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 3 2\nencoding: raw\ndata file: "
                  + str(secret).encode() + b"\n\n")
    with pytest.raises(InputError, match="outside its folder"):
        check_data_files_inside(p, study)


def test_symlink_out_refused(tmp_path: Path, secret: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    (study / "link.raw").symlink_to(secret)
    (study / "dir").symlink_to(tmp_path)
    for name in ("link.raw", "dir/secret.raw"):
        with pytest.raises(InputError, match="outside its folder"):
            check_data_files_inside(_mhd(study, name), study)


def test_attached_files_name_nothing(tmp_path: Path) -> None:
    case_arr = np.arange(24, dtype=np.uint8).reshape(SHAPE)
    from kidneyseg.case import Case

    like = Case(name="x", image=case_arr.astype(np.float32), affine=np.eye(4))
    for name in ("a.mha", "a.nrrd", "a.nii.gz"):
        io.write(case_arr, tmp_path / name, like=like, is_label=True)
        assert detached_data_files(tmp_path / name) == []
        assert check_data_files_inside(tmp_path / name, tmp_path) == []
    assert detached_data_files(_mhd(tmp_path / "local", "LOCAL")) == []


def test_mhd_list_checked_line_by_line(tmp_path: Path, secret: Path) -> None:
    study = tmp_path / "study"
    ok = _mhd(study, "LIST 2D", tail="s0.raw\ns1.raw\n")
    assert [p.name for p in check_data_files_inside(ok, study)] == ["s0.raw", "s1.raw"]
    bad = _mhd(study, "LIST 2D", tail=f"s0.raw\n{secret}\n")
    with pytest.raises(InputError, match="outside its folder"):
        check_data_files_inside(bad, study)


def test_mhd_pattern_expanded_as_metaio_does(tmp_path: Path) -> None:
    study = tmp_path / "study"
    # explicit min max step
    files = detached_data_files(_mhd(study, "slice%03d.raw 3 7 2"))
    assert [p.name for p in files] == ["slice003.raw", "slice005.raw", "slice007.raw"]
    # only the pattern: 1 .. last DimSize
    assert [p.name for p in detached_data_files(_mhd(study, "s%d.raw"))] == ["s1.raw", "s2.raw"]
    # min only: min .. min + last DimSize - 1
    assert [p.name for p in detached_data_files(_mhd(study, "s%d.raw 5"))] == ["s5.raw", "s6.raw"]
    with pytest.raises(InputError, match="outside its folder"):
        check_data_files_inside(_mhd(study, "../up%02d.raw 1 2 1"), study)


@pytest.mark.parametrize("value", ["s%s.raw 1 2 1", "s%d%d.raw 1 2 1", "s%d.raw 1 2 0", "s%d.raw 1 x 1",
                                   "my s%d.raw 1 2 1 2", "s%n.raw 1 2 1"])
def test_mhd_patterns_that_cannot_be_checked_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(InputError, match="cannot be checked"):
        detached_data_files(_mhd(tmp_path, value))


def test_too_many_files_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="too many data files"):
        detached_data_files(_mhd(tmp_path, f"s%d.raw 1 {MAX_DATA_FILES + 1} 1"))
    names = "".join(f"s{i}.raw\n" for i in range(MAX_DATA_FILES + 1))
    with pytest.raises(InputError, match="too many data files"):
        detached_data_files(_mhd(tmp_path, "LIST", tail=names))


@pytest.mark.parametrize("value", ["LIST", "LIST 2", "slice%03d.raw 1 2 1", "slice%03d.raw 1 2 1 2"])
def test_nrrd_multi_file_forms_refused(tmp_path: Path, value: str) -> None:
    """pynrrd reads one data file only: LIST and pattern forms are refused, not half-checked."""
    with pytest.raises(InputError, match="several files"):
        detached_data_files(_nhdr(tmp_path, value))


def test_endless_header_refused(tmp_path: Path) -> None:
    p = tmp_path / "long.mhd"
    with p.open("wb") as f:
        f.write(b"ObjectType = Image\n")
        f.write(b"Comment = " + b"x" * (5 * 1024 * 1024) + b"\n")
        f.write(b"ElementDataFile = /etc/passwd\n")
    with pytest.raises(InputError, match="too long"):
        detached_data_files(p)


def test_names_outside_root_refused_even_when_missing(tmp_path: Path) -> None:
    """The check does not depend on the named file existing (it may appear later)."""
    with pytest.raises(InputError, match="outside its folder"):
        check_data_files_inside(_mhd(tmp_path / "study", os.fspath(tmp_path / "nope.raw")), tmp_path / "study")
