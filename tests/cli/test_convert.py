"""`kidneyseg convert`: every writable format from every readable one, geometry preserved."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from kidneyseg import io
from kidneyseg.cli import main

AFF = np.array([[0.0, 0.0, -2.5, 10.0], [0.0, -0.8, 0.0, 20.0], [-0.7, 0.0, 0.0, 30.0], [0.0, 0.0, 0.0, 1.0]])


@pytest.fixture
def ct(tmp_path):
    data = np.random.default_rng(0).integers(-1000, 1000, size=(6, 5, 4)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, AFF), str(tmp_path / "ct.nii.gz"))
    return tmp_path / "ct.nii.gz", data


@pytest.mark.parametrize("chain", [(".nrrd", ".mha", ".nii.gz"), (".mhd", ".nhdr", ".nii")])
def test_image_chain_keeps_voxels_and_geometry(tmp_path, ct, chain):
    src, data = ct
    prev = src
    for n, suffix in enumerate(chain):
        out = tmp_path / f"step{n}{suffix}"
        assert main(["-q", "convert", str(prev), str(out)]) == 0
        case = io.read(out)
        np.testing.assert_array_equal(case.image, data)
        np.testing.assert_allclose(case.affine, AFF, atol=1e-9)
        prev = out


def test_label_to_seg_nrrd_and_back(tmp_path):
    lab = np.zeros((6, 5, 4), np.uint8)
    lab[1:4, 1:3, 1:3] = 1
    lab[2, 2, 2] = 2
    nib.save(nib.Nifti1Image(lab, AFF), str(tmp_path / "lab.nii.gz"))
    assert main(["-q", "convert", str(tmp_path / "lab.nii.gz"), str(tmp_path / "lab.seg.nrrd"), "--label"]) == 0
    assert main(["-q", "convert", str(tmp_path / "lab.seg.nrrd"), str(tmp_path / "back.nii.gz")]) == 0
    back = nib.load(str(tmp_path / "back.nii.gz"))
    assert back.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(back.dataobj), lab)
    np.testing.assert_allclose(back.affine, AFF, atol=1e-6)


def test_label_with_reference_header(tmp_path, ct):
    src, _ = ct
    lab = np.zeros((6, 5, 4), np.uint8)
    lab[0, 0, 0] = 1
    assert main(["-q", "convert", str(src), str(tmp_path / "ct.nrrd")]) == 0
    io.write(lab, tmp_path / "lab.nrrd", io.read(tmp_path / "ct.nrrd"))
    out = tmp_path / "lab_on_ct.nii.gz"
    assert main(["-q", "convert", str(tmp_path / "lab.nrrd"), str(out), "--like", str(src)]) == 0
    written, ref = nib.load(str(out)), nib.load(str(src))
    assert int(written.header["sform_code"]) == int(ref.header["sform_code"])
    np.testing.assert_array_equal(written.affine, ref.affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), lab)


def test_png_label_to_nifti_and_back(tmp_path):
    lab = np.zeros((9, 11), np.uint8)
    lab[2:5, 3:8] = 1
    Image.fromarray(lab).save(tmp_path / "lab.png")
    assert main(["-q", "convert", str(tmp_path / "lab.png"), str(tmp_path / "lab.nii.gz"), "--label",
                 "--spacing", "0.4", "0.5"]) == 0
    img = nib.load(str(tmp_path / "lab.nii.gz"))
    assert img.shape == (9, 11, 1)
    np.testing.assert_allclose(img.header.get_zooms()[:2], (0.4, 0.5))
    assert main(["-q", "convert", str(tmp_path / "lab.nii.gz"), str(tmp_path / "again.png"), "--label"]) == 0
    with Image.open(tmp_path / "again.png") as im:
        assert im.size == (11, 9)
        np.testing.assert_array_equal(np.asarray(im), lab)


def test_unknown_output_format(tmp_path, ct, capsys):
    src, _ = ct
    assert main(["-q", "convert", str(src), str(tmp_path / "out.xyz")]) == 2
    err = capsys.readouterr().err
    assert "out.xyz" in err and ".nrrd" in err
    assert not (tmp_path / "out.xyz").exists()


def test_volume_to_png_refused(tmp_path, ct, capsys):
    src, _ = ct
    assert main(["-q", "convert", str(src), str(tmp_path / "out.png")]) == 2
    assert "cannot hold a volume" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


def test_dicom_to_nifti(tmp_path):
    """A generated DICOM series converts to NIfTI with the same voxels and positions."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "kidneyseg_test_io_factories", Path(__file__).resolve().parents[1] / "io" / "io_factories.py"
    )
    factories = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(factories)
    write_dicom_series = factories.write_dicom_series
    hu = (np.random.default_rng(3).integers(-400, 400, size=(5, 4, 3)) * 2).astype(np.float32)
    files = write_dicom_series(tmp_path / "dcm", hu, origin=(-10.0, 20.0, -30.0), step=1.25)
    assert main(["-q", "convert", str(tmp_path / "dcm"), str(tmp_path / "ct.nii.gz")]) == 0
    img = nib.load(str(tmp_path / "ct.nii.gz"))
    np.testing.assert_array_equal(np.asarray(img.dataobj), hu)
    import pydicom

    for k, f in enumerate(files):
        ipp = [float(v) for v in pydicom.dcmread(f).ImagePositionPatient]
        np.testing.assert_allclose(img.affine @ [0, 0, k, 1], [-ipp[0], -ipp[1], ipp[2], 1], atol=1e-4)
