"""Volumes, diameters and left/right decided from the affine (patient space), not array order."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kidneyseg.reporting.volumes import (
    MIN_LESION_ML,
    max_diameter_mm,
    measure,
    summary_line,
    write_volumes_json,
)


def _two_kidneys():
    lab = np.zeros((40, 20, 20), np.uint8)
    lab[2:12, 5:15, 5:15] = 1  # low i: 1000 voxels
    lab[25:37, 5:15, 5:15] = 1  # high i: 1200 voxels
    lab[30:33, 8:11, 8:11] = 2  # tumour in the high-i kidney: 27 voxels
    lab[5:8, 8:11, 8:11] = 3  # cyst in the low-i kidney: 27 voxels (0.216 mL, above the 0.1 mL floor)
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
    assert left["cyst_count"] == 1 and left["cyst_ml"] == pytest.approx(27 * 8 / 1000)
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


def _ball(shape, centre, r):  # type: ignore[no-untyped-def]
    g = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((gg - c) ** 2 for gg, c in zip(g, centre)) <= r * r


def test_tumour_diameter_is_per_component_not_across_fragments():
    """Issue 23 bug 6: two tumours 40 mm apart in one kidney gave 'max 45 mm'; each is measured on its own."""
    shape = (80, 30, 30)
    lab = np.zeros(shape, np.uint8)
    lab[15:75, 5:25, 5:25] = 1  # one kidney at high i (RAS x): the patient's right of the field of view
    lab[_ball(shape, (25, 15, 15), 4)] = 2  # 8 mm across
    lab[_ball(shape, (65, 15, 15), 3)] = 2  # 6 mm across, 40 mm away
    m = measure(lab, np.eye(4), renal=False)
    right = m["kidneys"]["right"]
    assert right["tumor_count"] == 2
    assert right["tumor_max_diameter_mm"] == pytest.approx(8.0)  # across both fragments it was 40 + 4 + 3 = 47 mm
    assert [t["max_diameter_mm"] for t in right["tumors"]] == pytest.approx([8.0, 6.0])
    assert right["tumors"][0]["centroid_ras_mm"] == pytest.approx([25.0, 15.0, 15.0])
    assert right["tumors"][0]["offset_from_kidney_mm"] == pytest.approx([25.0 - 44.5, 15.0 - 14.5, 15.0 - 14.5], abs=0.1)
    assert m["total"]["tumor_max_diameter_mm"] == pytest.approx(8.0)
    assert "(2 tumours, largest 8.0 mm)" in summary_line(m)


def test_cyst_speckles_below_the_floor_are_not_counted():
    """Issue 23 bug 6: '2719 cyst(s)' from speckles; fragments under MIN_LESION_ML are not counted or listed."""
    assert MIN_LESION_ML == pytest.approx(0.1)
    shape = (70, 40, 40)
    lab = np.zeros(shape, np.uint8)
    lab[15:65, 5:35, 5:35] = 1
    lab[_ball(shape, (40, 20, 20), 5)] = 3  # 515 voxels = 0.515 mL at 1 mm
    speckles = [(18 + 4 * n, 8 + 2 * n, 8) for n in range(10)] + [(18 + 4 * n, 30, 30) for n in range(10)]
    for ijk in speckles:  # 20 isolated voxels (and pairs): 0.001-0.002 mL each
        lab[ijk] = 3
        lab[ijk[0], ijk[1], ijk[2] + 1] = 3
    m = measure(lab, np.eye(4), renal=False)
    s = m["kidneys"]["right"]
    assert s["cyst_count"] == 1 and len(s["cysts"]) == 1
    assert s["cysts"][0]["volume_ml"] == pytest.approx(0.515)
    assert s["cyst_fragments_below_floor"] == 20
    assert s["cyst_ml"] == pytest.approx((515 + 40) / 1000)  # the speckles still count in the volume
    assert "1 cyst(s)" in summary_line(m)
    assert m["lesion_floor"] == {"value": MIN_LESION_ML, "unit": "mL", "rule": m["lesion_floor"]["rule"]}
    # the floor is an argument: without it every fragment counts
    assert measure(lab, np.eye(4), renal=False, min_lesion_ml=0.0)["kidneys"]["right"]["cyst_count"] == 21
    # the floor is in mL, not voxels: at 0.4 mm voxels the big cyst (0.033 mL) is under it
    fine = measure(lab, np.diag([0.4, 0.4, 0.4, 1.0]), renal=False)["kidneys"]["right"]
    assert fine["cyst_count"] == 0 and fine["cyst_fragments_below_floor"] == 21


def test_2d_lesion_floor_is_in_mm2():
    lab = np.zeros((60, 60), np.uint8)
    lab[5:55, 5:55] = 1
    lab[10:20, 10:20] = 2  # 100 px = 25 mm2 at 0.5 mm: at the floor
    lab[40, 40] = 2  # 0.25 mm2: under it
    m = measure(lab, np.diag([0.5, 0.5, 1.0, 1.0]))
    img = m["image"]
    assert img["tumor_count"] == 1 and img["tumor_fragments_below_floor"] == 1
    assert img["tumor_max_diameter_mm"] == pytest.approx(9 * 0.5 * np.sqrt(2), abs=0.01)
    assert "renal" not in img["tumors"][0] and "offset_from_kidney_mm" not in img["tumors"][0]


def _embedded(lab: np.ndarray, shape=(120, 90, 70), at=(50, 40, 30)) -> np.ndarray:
    big = np.zeros(shape, np.uint8)
    big[at[0]:at[0] + lab.shape[0], at[1]:at[1] + lab.shape[1], at[2]:at[2] + lab.shape[2]] = lab
    return big


@pytest.mark.parametrize("affine", [np.diag([2.0, 1.5, 2.5, 1.0]),
                                    np.array([[-0.8, 0, 0, 30], [0, 0, 2.5, -12], [0, 0.8, 0, 5], [0, 0, 0, 1.0]])])
def test_measured_on_the_label_box_as_on_the_whole_grid(affine):
    """measure() works on the box of the labels (speed): every number equals the whole-grid computation."""
    from kidneyseg.reporting.volumes import _measure_grid

    big = _embedded(_two_kidneys())
    m = measure(big, affine)
    assert m == _measure_grid(big, affine)
    assert m["kidneys"]["right"]["present"] and m["kidneys"]["left"]["present"]


def test_single_kidney_box_keeps_the_field_of_view_midline():
    """One kidney: its side comes from the centre of the whole field of view, not of the label box."""
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[2:8, 2:8, 2:8] = 1
    ras = np.diag([1.0, 1, 1, 1])
    low = measure(_embedded(lab, at=(5, 40, 30)), ras)  # low i = smaller x than the centre: patient left
    high = measure(_embedded(lab, at=(100, 40, 30)), ras)
    assert low["kidneys"]["left"]["present"] and not low["kidneys"]["right"]["present"]
    assert high["kidneys"]["right"]["present"] and not high["kidneys"]["left"]["present"]
