"""NIfTI, NRRD, .seg.nrrd and MHA/MHD: readers, writers, LPS <-> RAS, round trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from io_factories import write_nifti

from kidneyseg import io
from kidneyseg.errors import OutputError


def _labels(shape=(7, 6, 5), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4, size=shape).astype(np.uint8)


@pytest.fixture
def label_nifti(tmp_path, oblique_affine) -> Path:
    return write_nifti(tmp_path / "lab.nii.gz", _labels(), oblique_affine)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd"])
def test_label_round_trip_all_formats(tmp_path, label_nifti, suffix):
    case = io.read(label_nifti, is_label=True)
    out = io.write(case.label, tmp_path / f"out{suffix}", case, is_label=True)
    back = io.read(out, is_label=True)
    np.testing.assert_array_equal(back.label, case.label)
    assert back.label.dtype == np.uint8
    atol = 1e-12 if suffix.endswith(("nrrd", "nhdr")) or ".nii" in suffix else 1e-9
    np.testing.assert_allclose(back.affine, case.affine, atol=atol)
    assert back.orientation == case.orientation
    # nothing but the outputs (and detached data files) is left in the folder
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    assert leftovers == []


def test_nifti_nrrd_nifti_identical(tmp_path, label_nifti):
    case = io.read(label_nifti, is_label=True)
    mid = io.read(io.write(case.label, tmp_path / "a.nrrd", case), is_label=True)
    back = io.read(io.write(mid.label, tmp_path / "b.nii.gz", mid), is_label=True)
    np.testing.assert_array_equal(back.label, case.label)
    np.testing.assert_array_equal(back.affine, case.affine)


def test_itk_lps_matches_simpleitk_physical_points(tmp_path, oblique_affine):
    """Our RAS affine of an .mha equals SimpleITK's own index -> LPS mapping with x, y negated."""
    import SimpleITK as sitk

    src = io.read(write_nifti(tmp_path / "img.nii.gz", np.arange(210, dtype=np.int16).reshape(7, 6, 5), oblique_affine))
    out = io.write(src.image, tmp_path / "img.mha", src, is_label=False)
    img = sitk.ReadImage(str(out))
    case = io.read(out)
    for idx in [(0, 0, 0), (6, 0, 0), (0, 5, 0), (0, 0, 4), (6, 5, 4)]:
        lps = np.array(img.TransformIndexToPhysicalPoint(idx))
        ras = case.affine @ (list(idx) + [1])
        np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-9)
        np.testing.assert_allclose(ras, oblique_affine @ (list(idx) + [1]), atol=1e-9)
    # voxel values follow the [i, j, k] order of the NIfTI
    np.testing.assert_array_equal(case.image, src.image)
    assert img.GetPixel(6, 5, 4) == src.image[6, 5, 4]


def test_nrrd_spaces_ras_and_lps_agree(tmp_path):
    import nrrd

    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    dirs = np.array([[0.0, 0.0, -2.0], [0.0, 1.5, 0.0], [0.5, 0.0, 0.0]])
    origin = np.array([10.0, -20.0, 30.0])
    nrrd.write(str(tmp_path / "lps.nrrd"), data, {"space": "left-posterior-superior", "space directions": dirs,
                                                   "space origin": origin}, index_order="F")
    flip = np.array([-1.0, -1.0, 1.0])
    nrrd.write(str(tmp_path / "ras.nrrd"), data, {"space": "RAS", "space directions": dirs * flip,
                                                   "space origin": origin * flip}, index_order="F")
    a, b = io.read(tmp_path / "lps.nrrd"), io.read(tmp_path / "ras.nrrd")
    np.testing.assert_array_equal(a.affine, b.affine)
    np.testing.assert_array_equal(a.image, data)
    assert a.affine[0, 2] == -0.5 and a.affine[0, 3] == -10.0
    assert a.orientation == ("I", "P", "L")  # LPS (0,0,-2) inferior, (0,1.5,0) posterior, (0.5,0,0) left


def test_seg_nrrd_slicer_fields(tmp_path, label_nifti):
    import nrrd

    case = io.read(label_nifti, is_label=True)
    lab = case.label.copy()
    lab[lab == 3] = 0  # cyst absent: still listed, with an empty extent
    out = io.write(lab, tmp_path / "seg.seg.nrrd", case, task="kits23")
    _, header = nrrd.read(str(out))
    names = {header[f"Segment{n}_Name"]: n for n in range(3)}
    assert set(names) == {"kidney", "tumor", "cyst"}
    for name, value in (("kidney", 1), ("tumor", 2), ("cyst", 3)):
        n = names[name]
        assert header[f"Segment{n}_LabelValue"] == str(value)
        assert header[f"Segment{n}_Layer"] == "0"
        assert header[f"Segment{n}_ID"]
        assert len(header[f"Segment{n}_Color"].split()) == 3
    ext = [int(v) for v in header[f"Segment{names['kidney']}_Extent"].split()]
    nz = np.argwhere(lab == 1)
    assert ext == [int(nz[:, 0].min()), int(nz[:, 0].max()), int(nz[:, 1].min()), int(nz[:, 1].max()),
                   int(nz[:, 2].min()), int(nz[:, 2].max())]
    assert header[f"Segment{names['cyst']}_Extent"] == "0 -1 0 -1 0 -1"
    assert header["Segmentation_MasterRepresentation"] == "Binary labelmap"
    back = io.read(out, is_label=True)
    assert back.meta["segments"][1] == "kidney"
    np.testing.assert_array_equal(back.label, lab)


def test_seg_nrrd_multilayer_is_merged(tmp_path):
    import nrrd

    layers = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    layers[0, 1, 1, 1] = 1
    layers[1, 1:3, 1, 1] = 1  # overlaps segment 0 at (1, 1, 1): the later segment wins
    dirs = np.array([[np.nan] * 3, [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    header = {"space": "left-posterior-superior", "space directions": dirs, "space origin": np.zeros(3),
              "kinds": ["list", "domain", "domain", "domain"],
              "Segment0_Name": "kidney", "Segment0_LabelValue": "1", "Segment0_Layer": "0",
              "Segment1_Name": "tumor", "Segment1_LabelValue": "1", "Segment1_Layer": "1"}
    nrrd.write(str(tmp_path / "m.seg.nrrd"), layers, header, index_order="F")
    case = io.read(tmp_path / "m.seg.nrrd", is_label=True)
    assert case.shape == (4, 4, 3)
    assert case.meta["segments"] == {1: "kidney", 2: "tumor"}
    assert case.label[1, 1, 1] == 2 and case.label[2, 1, 1] == 2 and case.label.sum() == 4


def test_image_dtype_kept_and_float_images(tmp_path, oblique_affine):
    hu = np.arange(-500, -500 + 210, dtype=np.int16).reshape(7, 6, 5)
    src = io.read(write_nifti(tmp_path / "ct.nii.gz", hu, oblique_affine))
    for suffix in (".nrrd", ".mha", ".nii.gz"):
        out = io.write(src.image, tmp_path / f"out{suffix}", src, is_label=False)
        back = io.read(out)
        assert back.meta["dtype"] == "int16"
        np.testing.assert_array_equal(back.image, hu)
    frac = src.image * 0.25 + 0.1
    back = io.read(io.write(frac, tmp_path / "f.nrrd", src, is_label=False))
    assert back.meta["dtype"] == "float32"
    np.testing.assert_allclose(back.image, frac, rtol=1e-6)


def test_nifti_header_kept_for_labels(tmp_path):
    import nibabel as nib

    aff = np.diag([-0.8, -0.8, 2.5, 1.0])
    img = nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), aff)
    img.set_qform(None, code=0)
    img.set_sform(aff, code=2)
    nib.save(img, str(tmp_path / "ct.nii.gz"))
    case = io.read(tmp_path / "ct.nii.gz")
    out = io.write(np.ones((4, 4, 3), np.uint8), tmp_path / "lab.nii.gz", case)
    written = nib.load(str(out))
    assert int(written.header["sform_code"]) == 2 and int(written.header["qform_code"]) == 0
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(written.affine, img.affine)


def test_write_refuses_wrong_shape_and_volume_to_png(tmp_path, label_nifti):
    case = io.read(label_nifti, is_label=True)
    for suffix in (".nii.gz", ".nrrd", ".mha"):
        with pytest.raises(OutputError, match="does not match the grid"):
            io.write(np.zeros((3, 3, 3), np.uint8), tmp_path / f"x{suffix}", case)
        assert not (tmp_path / f"x{suffix}").exists()
    with pytest.raises(OutputError, match="cannot hold a volume"):
        io.write(case.label, tmp_path / "x.png", case)
    assert not (tmp_path / "x.png").exists()


def test_failed_write_leaves_nothing(tmp_path, label_nifti):
    """A label map with a value > 255 fails inside the writer: no output, no temporary file."""
    case = io.read(label_nifti, is_label=True)
    bad = case.label.astype(np.int32)
    bad[0, 0, 0] = 300
    for suffix in (".nii.gz", ".seg.nrrd", ".mhd"):
        with pytest.raises(Exception, match="out of range"):
            io.write(bad, tmp_path / "out" / f"x{suffix}", case)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def test_info_json_lists_label_names(tmp_path, label_nifti, capsys):
    from kidneyseg.cli import main

    assert main(["info", str(label_nifti), "--label", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["task"] == "kits23" and info["task_guessed"] is True
    assert [(lab["value"], lab["name"]) for lab in info["labels"]] == [
        (0, "background"), (1, "kidney"), (2, "tumor"), (3, "cyst")]


_KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from kidneyseg.io import atomic_path
out = Path(sys.argv[1])
with atomic_path(out) as tmp:
    os.kill(os.getpid(), signal.SIGKILL)  # as `kill -9` during a write: the temporary is left behind
"""


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGKILL"), reason="POSIX kill -9")
def test_killed_writer_leaves_nothing_a_glob_matches_and_the_next_write_cleans_up(tmp_path):
    import glob
    import subprocess
    import sys

    out = tmp_path / "imaging.nii.gz"
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(out)], capture_output=True, timeout=60)
    assert proc.returncode < 0, proc.stderr  # killed by the signal
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith("."), left  # the leftover of the killed write
    assert not left[0].endswith(".nii.gz") and not io.has_image_suffix(left[0]), left
    assert list(tmp_path.glob("*.nii.gz")) == [] and list(tmp_path.glob(".*.nii.gz")) == []
    assert glob.glob(str(tmp_path / "*.nii.gz"), include_hidden=True) == []
    with io.atomic_path(tmp_path / "other.json") as tmp:  # any later write into the folder removes it
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json"]


def test_stale_temporaries_of_running_processes_and_other_files_are_kept(tmp_path):
    import os

    from kidneyseg.io._common import _create_temp_dir, remove_stale_temporaries

    live = _create_temp_dir(tmp_path / "a.nii.gz")  # this process: still writing
    old_empty = tmp_path / ".tmp-0123abcd-b.nii.gz"  # an earlier version's 0-byte leftover
    old_empty.write_bytes(b"")
    keep = [tmp_path / ".tmp-notours", tmp_path / "c.nii.gz", tmp_path / ".c.nii.gz.tmp-zz"]
    for k in keep:
        k.write_bytes(b"x")
    dead = tmp_path / f".d.nii.gz.tmp-{live.name.split('.tmp-')[1].split('-')[0]}-999999999-0123abcd"
    dead.mkdir()
    assert not os.path.exists("/proc/999999999")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted([old_empty.name, dead.name])
    assert live.is_dir() and all(k.exists() for k in keep)
