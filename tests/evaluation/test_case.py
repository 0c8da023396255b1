"""evaluate_case on generated geometry: analytic Dice, regions, empty policy, confusion matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kidneyseg.errors import GeometryError, InputError, RegistryError
from kidneyseg.evaluation import COLUMNS, aggregate, confusion_matrix, evaluate_case, evaluate_case_full, markdown_table


def _cube(shape, lo, n, value=1, arr=None):
    a = np.zeros(shape, np.uint8) if arr is None else arr
    a[lo[0] : lo[0] + n, lo[1] : lo[1] + n, lo[2] : lo[2] + n] = value
    return a


@pytest.mark.parametrize("axis,k", [(0, 1), (1, 2), (2, 3)])
def test_shifted_cube_analytic(axis, k):
    spacing = (0.5, 1.25, 2.0)
    n = 10
    ref = _cube((20, 20, 20), (4, 4, 4), n)
    pred = np.roll(ref, k, axis=axis)
    (row,) = evaluate_case(pred, ref, spacing, "binary")
    assert list(row) == list(COLUMNS)
    assert row["dice"] == pytest.approx((n - k) / n)
    assert row["jaccard"] == pytest.approx((n - k) / (n + k))
    assert row["tp"] == n * n * (n - k) and row["fp"] == row["fn"] == n * n * k
    assert row["tp"] + row["fp"] + row["fn"] + row["tn"] == 20**3
    if axis == 0:  # finest axis: every surface distance is at most k * s0, the leading face is at k * s0
        assert row["hd95_mm"] == pytest.approx(k * spacing[0])
        assert 0 < row["assd_mm"] < k * spacing[0]


def test_kits_regions_and_tolerances():
    ref = _cube((24, 24, 24), (4, 4, 4), 14, 1)
    _cube(None, (6, 6, 6), 4, 2, ref)  # tumour
    _cube(None, (12, 12, 12), 3, 3, ref)  # cyst
    rows = evaluate_case(ref.copy(), ref, (1.0, 1.0, 1.0), "kits23", case="c1")
    assert [r["region"] for r in rows] == ["kidney_and_masses", "masses", "tumor", "cyst"]
    for r in rows:
        assert r["case"] == "c1"
        assert r["dice"] == 1.0 and r["surface_dice"] == 1.0 and r["hd95_mm"] == 0.0 and r["assd_mm"] == 0.0
        assert r["sdd_mm"] == 0.0
    assert rows[1]["tp"] == 4**3 + 3**3 and rows[2]["tp"] == 4**3 and rows[3]["tp"] == 3**3
    # swapping tumour and cyst keeps kidney_and_masses and masses perfect, tumour and cyst wrong
    swapped = ref.copy()
    swapped[ref == 2], swapped[ref == 3] = 3, 2
    rows = evaluate_case(swapped, ref, (1.0, 1.0, 1.0), "kits23")
    assert rows[0]["dice"] == rows[1]["dice"] == 1.0
    assert rows[2]["dice"] == 0.0 and rows[2]["tp"] == 0
    assert rows[3]["dice"] == 0.0 and rows[3]["tp"] == 0 and rows[3]["fp"] == 4**3 and rows[3]["fn"] == 3**3


def test_cyst_region_shifted_cube_dice_assd_sdd():
    """A cyst cube of n voxels shifted by one voxel along the finest axis (s0): Dice (n - 1) / n, HD95 s0,
    and ASSD / SDD from the surfel-area fraction f at distance s0 (every other surfel is at 0):
    ASSD = s0 f, SDD = s0 sqrt(f (1 - f)); the tumour and the kidney stay perfect."""
    from kidneyseg.evaluation import surface_distances

    spacing, n = (0.5, 1.25, 2.0), 6
    ref = _cube((20, 20, 20), (2, 2, 2), 16, 1)
    _cube(None, (4, 4, 4), 3, 2, ref)
    _cube(None, (9, 9, 9), n, 3, ref)
    pred = ref.copy()
    pred[9 : 9 + n, 9 : 9 + n, 9 : 9 + n] = 1
    pred[10 : 10 + n, 9 : 9 + n, 9 : 9 + n] = 3
    rows = {r["region"]: r for r in evaluate_case(pred, ref, spacing, "kits23")}
    cyst = rows["cyst"]
    assert cyst["dice"] == pytest.approx((n - 1) / n)
    assert cyst["tp"] == n * n * (n - 1) and cyst["fp"] == cyst["fn"] == n * n
    assert cyst["hd95_mm"] == pytest.approx(spacing[0])
    sd = surface_distances(ref == 3, pred == 3, spacing)
    d = np.concatenate([sd.ref_to_pred, sd.pred_to_ref])
    a = np.concatenate([sd.ref_areas, sd.pred_areas])
    assert set(np.round(d, 12)) == {0.0, spacing[0]}
    f = a[d > 0].sum() / a.sum()
    assert 0 < f < 1
    assert cyst["assd_mm"] == pytest.approx(spacing[0] * f, rel=1e-12)
    assert cyst["sdd_mm"] == pytest.approx(spacing[0] * np.sqrt(f * (1 - f)), rel=1e-12)
    assert rows["tumor"]["dice"] == 1.0 and rows["kidney_and_masses"]["dice"] == 1.0
    assert rows["masses"]["dice"] == pytest.approx((27 + n * n * (n - 1)) / (27 + n**3))


def test_cyst_absent_follows_the_tumour_policy_and_summary_counts_it():
    """No cyst in the reference: an empty prediction scores 1 with NaN distances, a spurious cyst 0 (as the
    tumour); the summary counts the cases without a reference cyst and averages the others apart."""
    ref = _cube((12, 12, 12), (2, 2, 2), 6, 1)
    with_cyst = ref.copy()
    with_cyst[3:5, 3:5, 3:5] = 3
    none = evaluate_case(ref.copy(), ref, (1, 1, 1), "kits23", case="a")
    assert none[3]["region"] == "cyst" and none[3]["dice"] == 1.0 and none[3]["surface_dice"] == 1.0
    assert all(math.isnan(none[3][m]) for m in ("assd_mm", "sdd_mm", "hd95_mm"))
    spurious = evaluate_case(with_cyst, ref, (1, 1, 1), "kits23", case="b")
    assert spurious[3]["dice"] == 0.0 and spurious[3]["surface_dice"] == 0.0 and math.isnan(spurious[3]["assd_mm"])
    missed = evaluate_case(ref.copy(), with_cyst, (1, 1, 1), "kits23", case="c")
    assert missed[3]["dice"] == 0.0 and missed[3]["fn"] == 8
    found = evaluate_case(with_cyst, with_cyst, (1, 1, 1), "kits23", case="d")
    s = aggregate(none + spurious + missed + found, task="kits23")
    cyst = s["regions"]["cyst"]
    assert cyst["n_cases"] == 4 and cyst["ref_empty"] == 2
    assert cyst["metrics"]["dice"]["mean"] == pytest.approx(0.5)  # 1, 0, 0, 1
    assert cyst["metrics_ref_present"]["dice"]["mean"] == pytest.approx(0.5)  # 0 (missed), 1 (found)
    assert cyst["metrics_ref_present"]["dice"]["n"] == 2
    assert cyst["metrics_ref_present"]["assd_mm"]["n"] == 1 and cyst["metrics_ref_present"]["assd_mm"]["mean"] == 0.0
    assert s["regions"]["kidney_and_masses"]["ref_empty"] == 0
    assert "| cyst |" in markdown_table(s) and markdown_table(s).splitlines()[0].endswith("| nan_distances | ref_empty |")


def test_empty_policy_in_rows():
    ref = _cube((12, 12, 12), (2, 2, 2), 6, 1)  # kidney only, no masses
    rows = evaluate_case(ref.copy(), ref, (1, 1, 1), "kits23")
    tumour = rows[2]
    assert tumour["dice"] == 1.0 and tumour["surface_dice"] == 1.0  # both empty
    assert all(math.isnan(tumour[m]) for m in ("assd_mm", "sdd_mm", "hd95_mm"))
    pred = ref.copy()
    pred[3, 3, 3] = 2  # a spurious tumour voxel
    tumour = evaluate_case(pred, ref, (1, 1, 1), "kits23")[2]
    assert tumour["dice"] == 0.0 and tumour["surface_dice"] == 0.0 and tumour["precision"] == 0.0
    assert math.isnan(tumour["hd95_mm"])
    empty = evaluate_case(np.zeros_like(ref), ref, (1, 1, 1), "kits23")[0]
    assert empty["dice"] == 0.0 and empty["recall"] == 0.0 and empty["surface_dice"] == 0.0
    assert empty["fn"] == 6**3 and empty["tn"] == 12**3 - 6**3


def test_confusion_matrix_and_aggregate():
    ref = _cube((10, 10, 10), (2, 2, 2), 4, 1)
    ref[3, 3, 3] = 2
    pred = ref.copy()
    pred[3, 3, 3] = 3
    pred[0, 0, 0] = 1
    labels, m = confusion_matrix(pred, ref, "kits23")
    assert labels == [0, 1, 2, 3]
    assert m.sum() == 1000 and m[2, 3] == 1 and m[0, 1] == 1 and m[1, 1] == 63 and m[0, 0] == 1000 - 64 - 1
    rows, (labels, m2) = evaluate_case_full(pred, ref, (1, 1, 1), "kits23", case="a")
    np.testing.assert_array_equal(m, m2)
    rows2, (_, m3) = evaluate_case_full(ref, ref, (1, 1, 1), "kits23", case="b")
    s = aggregate(rows + rows2, (labels, m2 + m3), task="kits23")
    assert s["n_cases"] == 2
    tum = s["regions"]["tumor"]
    assert tum["metrics"]["dice"]["mean"] == pytest.approx(0.5)
    assert tum["metrics"]["dice"]["std"] == pytest.approx(0.5)
    assert tum["nan_distances"] == 1 and tum["metrics"]["hd95_mm"]["n_nan"] == 1
    assert tum["confusion"]["fn"] == 1
    assert s["confusion_matrix"]["matrix"][2][2] == 1
    table = markdown_table(s)
    assert table.splitlines()[0].startswith("| region | dice |") and "± " in table


def test_2d_binary():
    ref = np.zeros((40, 40), np.uint8)
    ref[10:30, 10:30] = 1
    pred = np.roll(ref, 2, axis=1)
    (row,) = evaluate_case(pred, ref, (0.5, 0.25), "openkidney-us")
    assert row["region"] == "capsule" and row["dice"] == pytest.approx(0.9)
    assert row["hd95_mm"] == pytest.approx(0.5)


def test_input_errors():
    ref = np.zeros((5, 5, 5), np.uint8)
    with pytest.raises(GeometryError, match="shapes"):
        evaluate_case(np.zeros((5, 5, 4), np.uint8), ref, (1, 1, 1), "kits23")
    bad = ref.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(InputError, match="does not define"):
        evaluate_case(bad, ref, (1, 1, 1), "kits23")
    with pytest.raises(RegistryError, match="kits23"):
        evaluate_case(ref, ref, (1, 1, 1), "kits99")
    # the binary task takes any non-zero value as foreground
    assert evaluate_case(bad, ref, (1, 1, 1), "binary")[0]["fp"] == 1
