"""The one table of file suffixes (kidneyseg.io) and its helpers agree for every suffix, and its users follow it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kidneyseg import io

# suffix -> format, as kidneyseg.io.SUFFIXES must hold them
EXPECTED = {
    ".nii": "nifti", ".nii.gz": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd", ".seg.nrrd": "seg.nrrd",
    ".mha": "mha", ".mhd": "mha", ".dcm": "dicom", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg",
    ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff",
}


def test_table_holds_every_expected_suffix() -> None:
    assert io.SUFFIXES == EXPECTED
    assert set(io.IMAGE_SUFFIXES) == set(EXPECTED)
    lengths = [len(s) for s in io.IMAGE_SUFFIXES]
    assert lengths == sorted(lengths, reverse=True)  # longest first: ".seg.nrrd" is matched before ".nrrd"


@pytest.mark.parametrize("suffix", sorted(EXPECTED))
@pytest.mark.parametrize("case", [str.lower, str.upper])
def test_helpers_agree(tmp_path: Path, suffix: str, case) -> None:
    path = tmp_path / ("case_001" + case(suffix))
    assert io.image_suffix(path) == suffix
    assert io.has_image_suffix(path)
    assert io.stem_of(path) == "case_001"
    assert io.format_of(path) == EXPECTED[suffix]
    assert (suffix in io.IMAGE_2D_SUFFIXES) == (EXPECTED[suffix] in ("png", "jpeg", "bmp", "tiff"))
    assert (suffix in io.CASE_FILE_SUFFIXES) == (suffix != io.DICOM_SUFFIX)


@pytest.mark.parametrize("name", ["notes.txt", "archive.zip", "nii", "case.gz", "case.nrrd.bak"])
def test_unknown_suffixes(name: str) -> None:
    assert io.image_suffix(name) == ""
    assert not io.has_image_suffix(name)
    assert io.stem_of(name) == Path(name).stem


def test_users_follow_the_table(tmp_path: Path) -> None:
    from kidneyseg.cli.predict import _is_image_file
    from kidneyseg.reporting.server import ALLOWED_SUFFIXES, check_name

    for suffix in EXPECTED:
        f = tmp_path / f"x{suffix}"
        f.write_bytes(b"")
        assert _is_image_file(f) == (suffix != ".dcm")  # a DICOM slice stands for its series folder
        assert check_name(f"x{suffix}") == f"x{suffix}"
    assert set(ALLOWED_SUFFIXES) == set(EXPECTED) | {".zip"}


def test_atomic_path_permissions_follow_umask(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "a.json"
    old = os.umask(0o022)
    try:
        with io.atomic_path(out, fsync=True) as tmp:
            assert tmp.name == out.name and tmp.parent.parent == out.parent  # the writer sees the real suffix
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert out.read_text() == "{}"
    if os.name == "posix":
        assert stat.S_IMODE(out.stat().st_mode) == 0o644  # as open() would create it, not mkstemp's 0600
    assert [p.name for p in out.parent.iterdir()] == ["a.json"]


def test_atomic_path_leaves_nothing_on_error(tmp_path: Path) -> None:
    out = tmp_path / "b.csv"
    out.write_text("old")
    with pytest.raises(RuntimeError), io.atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["b.csv"]
