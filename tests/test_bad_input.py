"""Every bad input gives one stderr line (file, found, expected, fix), exit 2, no traceback, no output.

Each test builds its bad file itself and runs the CLI in-process.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from kidneyseg.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["-q", *argv])
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code: int, err: str, *must_contain: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    line = lines[0]
    assert "error:" in line and "Fix:" in line, line
    for text in must_contain:
        assert text in line, (text, line)


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def _patched_nifti(path: Path, *, pixdim=None, srow=None, codes=(0, 0)) -> Path:
    """An uncompressed .nii whose header bytes are overwritten (nibabel refuses to save such headers)."""
    _nifti(path, np.zeros((3, 3, 3), np.int16))
    raw = bytearray(path.read_bytes())
    if pixdim is not None:
        raw[80:92] = struct.pack("<3f", *pixdim)
    raw[252:256] = struct.pack("<2h", *codes)
    if srow is not None:
        raw[280:328] = struct.pack("<12f", *np.ravel(srow))
    path.write_bytes(bytes(raw))
    return path


def _outputs(folder: Path, before: set[str]) -> set[str]:
    return {p.name for p in folder.iterdir()} - before


@pytest.mark.parametrize("command", ["info", "convert"])
def test_missing_path(tmp_path, capsys, command):
    args = [command, str(tmp_path / "nope.nii.gz")] + ([str(tmp_path / "out.nii.gz")] if command == "convert" else [])
    code, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, "nope.nii.gz", "no such file")
    assert not (tmp_path / "out.nii.gz").exists()


def test_unreadable_and_truncated_nifti(tmp_path, capsys):
    (tmp_path / "garbage.nii.gz").write_bytes(b"this is not a nifti file at all")
    code, err = run_cli(capsys, "info", str(tmp_path / "garbage.nii.gz"))
    assert_one_line_error(code, err, "garbage.nii.gz", "unreadable or truncated")
    good = _nifti(tmp_path / "good.nii.gz", np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32))
    data = good.read_bytes()
    (tmp_path / "trunc.nii.gz").write_bytes(data[: len(data) // 2])
    before = {p.name for p in tmp_path.iterdir()}
    code, err = run_cli(capsys, "convert", str(tmp_path / "trunc.nii.gz"), str(tmp_path / "out.nrrd"))
    assert_one_line_error(code, err, "trunc.nii.gz", "unreadable or truncated", "found")
    assert _outputs(tmp_path, before) == set()


def test_truncated_uncompressed_nifti(tmp_path, capsys):
    good = _nifti(tmp_path / "good.nii", np.zeros((20, 20, 20), np.float32))
    (tmp_path / "trunc.nii").write_bytes(good.read_bytes()[:5000])
    code, err = run_cli(capsys, "info", str(tmp_path / "trunc.nii"))
    assert_one_line_error(code, err, "trunc.nii", "truncated", "32,000 bytes")  # refused from the header


@pytest.mark.parametrize("shape, dims", [((4, 4, 4, 3), "4D"), ((10,), "1D")])
def test_4d_and_1d_images(tmp_path, capsys, shape, dims):
    path = _nifti(tmp_path / f"img{dims}.nii.gz", np.zeros(shape, np.float32))
    code, err = run_cli(capsys, "convert", str(path), str(tmp_path / "out.nii.gz"))
    assert_one_line_error(code, err, path.name, f"{dims} image", "expected 2D or 3D")
    assert not (tmp_path / "out.nii.gz").exists()


@pytest.mark.parametrize("pixdim", [(1.0, 0.0, 1.0), (1.0, -2.0, 1.0), (1.0, float("nan"), 1.0)],
                         ids=["zero", "negative", "nan"])
def test_bad_spacing_nifti(tmp_path, capsys, pixdim):
    path = _patched_nifti(tmp_path / "sp.nii", pixdim=pixdim)
    code, err = run_cli(capsys, "info", str(path))
    assert_one_line_error(code, err, "sp.nii", "spacing is zero, negative or not a number", "pixdim")


def test_bad_spacing_png_option(tmp_path, capsys):
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(tmp_path / "a.png")
    code, err = run_cli(capsys, "info", str(tmp_path / "a.png"), "--spacing", "0", "-1")
    assert_one_line_error(code, err, "a.png", "spacing")


def test_bad_spacing_sidecar(tmp_path, capsys):
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "a.json").write_text('{"spacing": [0.5, NaN]}')
    code, err = run_cli(capsys, "info", str(tmp_path / "a.png"))
    assert_one_line_error(code, err, "a.png", "spacing")


def test_non_invertible_affine(tmp_path, capsys):
    path = _patched_nifti(tmp_path / "sing.nii", srow=[[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0]], codes=(0, 1))
    code, err = run_cli(capsys, "info", str(path))
    assert_one_line_error(code, err, "sing.nii", "not invertible")


def test_nan_affine_nrrd(tmp_path, capsys):
    import nrrd

    nrrd.write(str(tmp_path / "nan.nrrd"), np.zeros((3, 3, 3), np.uint8),
               {"space": "left-posterior-superior", "space directions": np.diag([1.0, 1.0, 1.0]),
                "space origin": np.array([0.0, np.nan, 0.0])})
    code, err = run_cli(capsys, "info", str(tmp_path / "nan.nrrd"))
    assert_one_line_error(code, err, "nan.nrrd", "NaN")


def test_empty_dicom_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run_cli(capsys, "convert", str(tmp_path / "empty"), str(tmp_path / "out.nii.gz"))
    assert_one_line_error(code, err, "empty", "empty folder")
    assert not (tmp_path / "out.nii.gz").exists()


def test_folder_without_dicom(tmp_path, capsys):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    (folder / "scan.dcm").write_bytes(b"\x00" * 300)
    code, err = run_cli(capsys, "info", str(folder))
    assert_one_line_error(code, err, "docs", "no DICOM files", "notes.txt")


def test_png_with_transparency_refused(tmp_path, capsys):
    rgba = np.zeros((6, 7, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 10
    Image.fromarray(rgba).save(tmp_path / "t.png")
    code, err = run_cli(capsys, "convert", str(tmp_path / "t.png"), str(tmp_path / "o.nii.gz"), "--spacing", "1", "1")
    assert_one_line_error(code, err, "t.png", "transparent", "alpha")
    assert not (tmp_path / "o.nii.gz").exists()


def test_colour_label_png_refused(tmp_path, capsys):
    rgb = np.zeros((6, 7, 3), np.uint8)
    rgb[2:4, 2:4] = (255, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "lab.png")
    code, err = run_cli(capsys, "convert", str(tmp_path / "lab.png"), str(tmp_path / "o.png"), "--label",
                        "--spacing", "1", "1")
    assert_one_line_error(code, err, "lab.png", "label map is in colour", "grey")
    assert not (tmp_path / "o.png").exists()


def test_colour_image_png_converted_with_warning(tmp_path, capsys, recwarn):
    rgb = np.zeros((6, 7, 3), np.uint8)
    rgb[2:4, 2:4] = (255, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "img.png")
    code = main(["-q", "convert", str(tmp_path / "img.png"), str(tmp_path / "o.png"), "--spacing", "1", "1"])
    assert code == 0
    assert any("converted to grey" in str(w.message) for w in recwarn)
    assert (tmp_path / "o.png").exists()


def test_label_grid_differs_from_image(tmp_path, capsys):
    img = _nifti(tmp_path / "ct.nii.gz", np.zeros((8, 8, 4), np.float32), np.diag([0.8, 0.8, 2.5, 1]))
    lab = _nifti(tmp_path / "lab.nii.gz", np.zeros((8, 8, 5), np.uint8), np.diag([0.8, 0.8, 2.5, 1]))
    code, err = run_cli(capsys, "info", str(lab), "--label-of", str(img))
    assert_one_line_error(code, err, "lab.nii.gz", "grid differs", "(8, 8, 5)", "(8, 8, 4)")
    code, err = run_cli(capsys, "convert", str(lab), str(tmp_path / "o.nrrd"), "--like", str(img))
    assert_one_line_error(code, err, "lab.nii.gz", "grid differs")
    assert not (tmp_path / "o.nrrd").exists()
    shifted = _nifti(tmp_path / "lab2.nii.gz", np.zeros((8, 8, 4), np.uint8),
                     np.array([[0.8, 0, 0, 5.0], [0, 0.8, 0, 0], [0, 0, 2.5, 0], [0, 0, 0, 1]]))
    code, err = run_cli(capsys, "info", str(shifted), "--label-of", str(img))
    assert_one_line_error(code, err, "lab2.nii.gz", "origin (5, 0, 0)")


def test_output_equal_to_input(tmp_path, capsys):
    path = _nifti(tmp_path / "a.nii.gz", np.zeros((3, 3, 3), np.uint8))
    before = path.read_bytes()
    code, err = run_cli(capsys, "convert", str(path), str(tmp_path / "." / "a.nii.gz"), "--label")
    assert_one_line_error(code, err, "a.nii.gz", "same as an input")
    assert path.read_bytes() == before


def test_debug_shows_traceback(tmp_path):
    from kidneyseg.errors import InputError

    with pytest.raises(InputError):
        main(["--debug", "info", str(tmp_path / "missing.nii.gz")])


def test_gzip_of_garbage_is_unreadable(tmp_path, capsys):
    with gzip.open(tmp_path / "z.nii.gz", "wb") as f:
        f.write(b"\x01" * 400)
    code, err = run_cli(capsys, "info", str(tmp_path / "z.nii.gz"))
    assert_one_line_error(code, err, "z.nii.gz", "unreadable")
