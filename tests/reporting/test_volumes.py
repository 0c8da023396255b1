"""Volumes, diameters and left/right decided from the affine (patient space), not array order."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kidneyseg.reporting.volumes import max_diameter_mm, measure, summary_line, write_volumes_json


def _two_kidneys():
    lab = np.zeros((40, 20, 20), np.uint8)
    lab[2:12, 5:15, 5:15] = 1  # low i: 1000 voxels
    lab[25:37, 5:15, 5:15] = 1  # high i: 1200 voxels
    lab[30:33, 8:11, 8:11] = 2  # tumour in the high-i kidney: 27 voxels
    lab[5:7, 8:10, 8:10] = 3  # cyst in the low-i kidney: 8 voxels
    return lab


def test_sides_follow_the_affine_not_the_array():
    lab = _two_kidneys()
    # RAS affine, 2 mm on every axis: high i = larger x = patient right
    ras = np.diag([2.0, 2.0, 2.0, 1.0])
    m = measure(lab, ras)
    right, left = m["kidneys"]["right"], m["kidneys"]["left"]
    assert right["kidney_ml"] == pytest.approx(1200 * 8 / 1000)
    assert right["parenchyma_ml"] == pytest.approx((1200 - 27) * 8 / 1000)
    assert right["tumor_ml"] == pytest.approx(27 * 8 / 1000)
    assert right["tumor_count"] == 1 and right["cyst_count"] == 0
    assert left["cyst_count"] == 1 and left["cyst_ml"] == pytest.approx(8 * 8 / 1000)
    # the same array with the first axis pointing to patient left (LAS): sides swap
    las = np.diag([-2.0, 2.0, 2.0, 1.0])
    m2 = measure(lab, las)
    assert m2["kidneys"]["left"]["kidney_ml"] == pytest.approx(1200 * 8 / 1000)
    assert m2["kidneys"]["left"]["tumor_count"] == 1


def test_single_kidney_uses_field_of_view_centre():
    lab = np.zeros((40, 10, 10), np.uint8)
    lab[30:35, 2:8, 2:8] = 1
    m = measure(lab, np.diag([1.0, 1, 1, 1]))
    assert m["kidneys"]["right"]["present"] and not m["kidneys"]["left"]["present"]


def test_diameter_known_answer():
    m = np.zeros((30, 30, 30), bool)
    m[5:15, 10, 10] = True  # 10 voxels in a line: centres 9 voxels apart
    assert max_diameter_mm(m, np.diag([2.0, 1, 1, 1])) == pytest.approx(18.0)
    cube = np.zeros((30, 30, 30), bool)
    cube[0:11, 0:11, 0:11] = True  # diagonal of 10 voxels at 1 mm
    assert max_diameter_mm(cube, np.eye(4)) == pytest.approx(10 * np.sqrt(3))


def test_2d_reports_areas(tmp_path):
    lab = np.zeros((50, 50), np.uint8)
    lab[10:20, 10:30] = 1
    aff = np.diag([0.5, 0.5, 1.0, 1.0])
    m = measure(lab, aff, labels={0: "background", 1: "kidney"}, name="us1")
    assert m["image"]["kidney_mm2"] == pytest.approx(200 * 0.25)
    assert "kidneys" not in m
    assert "50.0 mm2" in summary_line(m)
    p = write_volumes_json(m, tmp_path / "v.json")
    assert json.loads(p.read_text())["image"]["kidney_mm2"] == pytest.approx(50.0)


def test_real_geometry_chaos_labels(shared_data):
    """CHAOS: label 2 is the right kidney, 3 the left (LAS orientation); the rule must agree."""
    import nibabel as nib

    img = nib.load(str(shared_data / "chaos_t2" / "case_01_label.nii.gz"))
    lab = np.asarray(img.dataobj).astype(np.uint8)
    right_only = np.where(lab == 2, 1, 0).astype(np.uint8)
    left_only = np.where(lab == 3, 1, 0).astype(np.uint8)
    both = np.where(np.isin(lab, (2, 3)), 1, 0).astype(np.uint8)
    m = measure(both, img.affine)
    vox = float(np.prod(img.header.get_zooms()[:3])) / 1000
    assert m["kidneys"]["right"]["kidney_ml"] == pytest.approx(right_only.sum() * vox, rel=0.02)
    assert m["kidneys"]["left"]["kidney_ml"] == pytest.approx(left_only.sum() * vox, rel=0.02)
    line = summary_line(m)
    assert "right kidney" in line and "left kidney" in line


@pytest.mark.parametrize("names", [{2: "kidney_right", 3: "kidney_left"}, {2: "right kidney", 3: "Left-Kidney"}])
def test_side_labels_are_measured_and_keep_their_side(names):
    """MR label maps (2 right, 3 left, any spelling): both kidneys measured, each on its labelled side."""
    lab = np.zeros((40, 20, 20), np.uint8)
    lab[2:12, 5:15, 5:15] = 2  # labelled right, at low i: the patient's LEFT under this RAS affine
    lab[25:37, 5:15, 5:15] = 3
    ras = np.diag([2.0, 2.0, 2.0, 1.0])
    m = measure(lab, ras, labels={0: "background", **names})
    assert m["kidneys"]["right"]["kidney_ml"] == pytest.approx(1000 * 8 / 1000)
    assert m["kidneys"]["left"]["kidney_ml"] == pytest.approx(1200 * 8 / 1000)
    assert "label" in m["side_rule"]
    # a single kidney labelled right stays right, though it lies on the patient's left of the field of view
    one = np.where(lab == 2, 2, 0).astype(np.uint8)
    m1 = measure(one, ras, labels={0: "background", **names})
    assert m1["kidneys"]["right"]["present"] and not m1["kidneys"]["left"]["present"]
    assert "right kidney 8.0 mL; left kidney: none" in summary_line(m1)
