"""NIfTI pixels: the ISA-L fast path gives exactly what nibabel gives, scaled, with and without isal."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from kidneyseg.errors import InputError
from kidneyseg.io.nifti import read_nifti


def _write(path, slope=None, inter=None):
    import nibabel as nib

    rng = np.random.default_rng(0)
    raw = rng.integers(-1024, 2000, (17, 13, 9)).astype(np.int16)
    img = nib.Nifti1Image(raw, np.diag([0.7, 0.8, 2.5, 1.0]))
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    nib.save(img, str(path))
    return nib.load(str(path)).get_fdata(dtype=np.float32)


@pytest.mark.parametrize("with_isal", [True, False])
@pytest.mark.parametrize("slope,inter", [(None, None), (0.5, -1000.0)])
def test_pixels_equal_nibabel(tmp_path, monkeypatch, with_isal, slope, inter):
    if with_isal:
        pytest.importorskip("isal")
    else:
        monkeypatch.setitem(sys.modules, "isal", None)  # import isal raises ImportError
    ref = _write(tmp_path / "ct.nii.gz", slope, inter)
    case = read_nifti(tmp_path / "ct.nii.gz")
    assert case.image.dtype == np.float32
    np.testing.assert_array_equal(case.image, ref)


def test_truncated_gzip_is_one_input_error(tmp_path):
    _write(tmp_path / "ct.nii.gz")
    data = (tmp_path / "ct.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="unreadable or truncated"):
        read_nifti(tmp_path / "cut.nii.gz")
