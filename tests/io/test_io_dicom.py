"""DICOM series reading: generated series (pydicom) and the real example series."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from kidneyseg import io
from kidneyseg.errors import GeometryError, InputError

pytest.importorskip("pydicom")


def _hu(shape=(6, 5, 4), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.integers(-500, 1500, size=shape) * 2).astype(np.float32)  # even, so slope 2 is exact


def _lps_to_ras(p):
    p = np.asarray(p, dtype=float)
    return np.array([-p[0], -p[1], p[2]])


def test_series_order_rescale_and_affine(tmp_path, dicom_series):
    hu = _hu()
    c, s = np.cos(0.3), np.sin(0.3)
    rowdir, coldir = (c, s, 0.0), (0.0, 0.0, -1.0)  # oblique coronal slices
    files = dicom_series(tmp_path / "ser", hu, rowdir=rowdir, coldir=coldir, pixel_spacing=(0.8, 0.7), step=2.5)
    case = io.read(tmp_path / "ser")
    assert case.shape == hu.shape
    np.testing.assert_array_equal(case.image, hu)  # slices in position order, HU after slope/intercept
    assert case.modality == "ct"
    np.testing.assert_allclose(case.spacing, (0.7, 0.8, 2.5), atol=1e-9)
    normal = np.cross(rowdir, coldir)
    for k in range(hu.shape[2]):
        for i, j in [(0, 0), (5, 0), (0, 4), (5, 4)]:
            lps = np.array([-100.0, -80.0, 50.0]) + k * 2.5 * normal + i * 0.7 * np.array(rowdir) + j * 0.8 * np.array(coldir)
            np.testing.assert_allclose(case.affine @ [i, j, k, 1], list(_lps_to_ras(lps)) + [1], atol=1e-9)
    assert case.meta["n_slices"] == 4
    assert case.meta["dicom_files"] == [str(f) for f in files]
    assert case.meta["series_uid"]


def test_series_written_in_reverse_slice_order(tmp_path, dicom_series):
    """Slices whose normal points against the position order are still sorted by position."""
    hu = _hu(seed=1)
    dicom_series(tmp_path / "s", hu, step=-3.0)
    case = io.read(tmp_path / "s")
    np.testing.assert_array_equal(case.image, hu[:, :, ::-1])
    # increasing k goes along the normal, 3 mm apart
    np.testing.assert_allclose(case.affine[:3, 2], [0, 0, 3.0], atol=1e-9)


def test_two_series_default_largest_and_choice(tmp_path, dicom_series, caplog):
    a, b = _hu((4, 4, 5), 2), _hu((4, 4, 3), 3) + 1000  # b: MR, positive values
    dicom_series(tmp_path / "mix", a, series_uid="1.2.3.4", series_number=1)
    dicom_series(tmp_path / "mix", b, series_uid="1.2.3.5", series_number=2, modality="MR", slope=1, intercept=0)
    with caplog.at_level(logging.INFO):
        case = io.read(tmp_path / "mix")
    assert case.meta["series_uid"] == "1.2.3.4"
    assert case.shape == (4, 4, 5)
    assert "2 series" in caplog.text and "1.2.3.5" in caplog.text
    other = io.read(tmp_path / "mix", series_uid="1.2.3.5")
    np.testing.assert_array_equal(other.image, b)
    assert other.modality == "mr"
    with pytest.raises(InputError, match=r"1\.2\.3\.4 \(5 slices\)"):
        io.read(tmp_path / "mix", series_uid="9.9")


def test_empty_series_uid_grouped_by_description(tmp_path, dicom_series):
    a, b = _hu((3, 3, 4), 4), _hu((3, 3, 2), 5)
    dicom_series(tmp_path / "anon", a, series_uid=None, description="body", series_number=3)
    dicom_series(tmp_path / "anon", b, series_uid=None, description="scout", series_number=4, origin=(0, 0, 0))
    case = io.read(tmp_path / "anon")
    np.testing.assert_array_equal(case.image, a)
    assert case.meta["series_uid"] == ""
    keys = [k for k, _ in case.meta["series_available"]]
    assert sorted(keys) == ["noUID-1", "noUID-2"]
    small = next(k for k, n in case.meta["series_available"] if n == 2)
    np.testing.assert_array_equal(io.read(tmp_path / "anon", series_uid=small).image, b)


def test_single_file_reads_its_series(tmp_path, dicom_series):
    files = dicom_series(tmp_path / "one", _hu((3, 3, 3), 6))
    renamed = files[1].with_suffix(".dcm")
    files[1].rename(renamed)
    case = io.read(renamed)
    assert case.shape == (3, 3, 3)


def test_duplicate_and_missing_slices_refused(tmp_path, dicom_series):
    files = dicom_series(tmp_path / "dup", _hu((3, 3, 4), 7))
    shutil.copy(files[1], tmp_path / "dup" / "copy_of_slice")
    with pytest.raises(GeometryError, match="same position"):
        io.read(tmp_path / "dup")
    files = dicom_series(tmp_path / "gap", _hu((3, 3, 5), 8))
    files[2].unlink()
    with pytest.raises(GeometryError, match="unevenly spaced"):
        io.read(tmp_path / "gap")


def test_non_dicom_files_are_skipped(tmp_path, dicom_series):
    dicom_series(tmp_path / "s", _hu((3, 3, 3), 9))
    (tmp_path / "s" / "README.txt").write_text("not dicom")
    assert io.read(tmp_path / "s").shape == (3, 3, 3)


@pytest.mark.shared
def test_real_series_to_nifti_matches_positions(shared_data, tmp_path):
    """The example CT: 512x512x20, and the NIfTI maps (0, 0, k) to each slice's ImagePositionPatient."""
    import nibabel as nib
    import pydicom

    from kidneyseg.cli import main

    folder = shared_data / "totalseg_example" / "example_ct_dicom"
    out = tmp_path / "ct.nii.gz"
    assert main(["-q", "convert", str(folder), str(out)]) == 0
    img = nib.load(str(out))
    assert img.shape == (512, 512, 20)
    aff = img.affine
    data = np.asarray(img.dataobj)
    seen = set()
    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        ras = _lps_to_ras([float(v) for v in ds.ImagePositionPatient])
        ijk = np.linalg.solve(aff[:3, :3], ras - aff[:3, 3])
        k = int(round(ijk[2]))
        np.testing.assert_allclose(ijk, [0, 0, k], atol=1e-6)
        np.testing.assert_allclose(aff @ [0, 0, k, 1], list(ras) + [1], atol=1e-3)
        # one pixel step along rows/columns follows ImageOrientationPatient x PixelSpacing
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        ps = [float(v) for v in ds.PixelSpacing]
        lps_corner = np.array([float(v) for v in ds.ImagePositionPatient]) + 511 * ps[1] * iop[:3] + 511 * ps[0] * iop[3:]
        np.testing.assert_allclose(aff @ [511, 511, k, 1], list(_lps_to_ras(lps_corner)) + [1], atol=1e-3)
        hu = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(data[:, :, k], hu.T)
        seen.add(k)
    assert seen == set(range(20))


@pytest.mark.shared
def test_real_series_info_json(shared_data, capsys):
    import json

    import pydicom

    from kidneyseg.cli import main

    folder = shared_data / "totalseg_example" / "example_ct_dicom"
    assert main(["info", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [512, 512, 20]
    assert info["n_slices"] == 20
    ds = pydicom.dcmread(next(iter(sorted(folder.iterdir()))), stop_before_pixels=True)
    ps = [float(v) for v in ds.PixelSpacing]
    zs = sorted(float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in folder.iterdir())
    np.testing.assert_allclose(info["spacing_mm"][:2], [ps[1], ps[0]], atol=1e-6)
    np.testing.assert_allclose(info["spacing_mm"][2], np.diff(zs).mean(), atol=1e-6)
    assert info["modality"] == "ct"
    assert info["intensity_range"][0] >= -1024
