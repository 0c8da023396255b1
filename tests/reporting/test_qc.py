"""Known answers for the per-structure QC scores, their flag, and QC in volumes.json and the summary line."""

from __future__ import annotations

import numpy as np
import pytest

from kidneyseg.errors import InputError
from kidneyseg.inference.uncertainty import compute_uncertainty
from kidneyseg.reporting.qc import (
    QC_THRESHOLD,
    html_table,
    qc_record,
    review_items,
    structure_scores,
    volume_plausibility,
)


def _two_class(p_fg: np.ndarray) -> np.ndarray:
    p = np.asarray(p_fg, np.float32)
    return np.stack([1 - p, p])


def test_certain_structure_scores_one():
    p = np.zeros((20, 20), np.float32)
    p[5:10, 5:10] = 1.0
    label = (p > 0.5).astype(np.uint8)
    unc = compute_uncertainty(_two_class(p), label, [0, 1])
    s = structure_scores(unc, label[5:10, 5:10] > 0, (5, 5), [1])
    assert s["expected_dice"] == pytest.approx(1.0)
    assert s["confident_share"] == 1.0 and s["inside_certainty"] == pytest.approx(1.0)
    assert s["boundary_certainty"] == pytest.approx(1.0)
    assert qc_record(s)["flag"] == "pass"


def test_hesitant_structure_known_answers():
    # a 4 x 4 square labelled at p = 0.6, and 20 voxels just outside it at p = 0.4
    p = np.zeros((20, 20), np.float32)
    p[8:12, 8:12] = 0.6
    p[7, 7:12] = 0.4
    p[12, 8:13] = 0.4
    p[8:13, 12] = 0.4
    p[7:12, 7] = 0.4
    outside = int((p == 0.4).sum())
    label = (p > 0.5).astype(np.uint8)
    unc = compute_uncertainty(_two_class(p), label, [0, 1])
    s = structure_scores(unc, label > 0, (0, 0), [1])
    # 2 * 16 * 0.6 / (16 + 16 * 0.6 + outside * 0.4)
    assert s["expected_dice"] == pytest.approx(2 * 16 * 0.6 / (16 + 16 * 0.6 + outside * 0.4), abs=1e-5)
    assert s["confident_share"] == 0.0  # every voxel has pmax 0.6 < 0.9
    h6 = -(0.6 * np.log(0.6) + 0.4 * np.log(0.4)) / np.log(2)
    assert s["inside_certainty"] == pytest.approx(1 - h6, abs=1e-5)
    rec = qc_record(s)
    assert rec["flag"] == "review" and 0 <= rec["score"] < QC_THRESHOLD
    assert set(rec) == {"score", "flag", "scores"}


def test_share_below_confidence_counts_voxels():
    p = np.zeros((10, 10), np.float32)
    p[2:6, 2:6] = 0.95
    p[2:6, 2] = 0.7   # 4 of 16 voxels not confident
    label = (p > 0.5).astype(np.uint8)
    unc = compute_uncertainty(_two_class(p), label, [0, 1])
    assert structure_scores(unc, label > 0, (0, 0), [1])["confident_share"] == pytest.approx(12 / 16)


def test_structure_of_several_labels_sums_their_probabilities():
    # kidney 0.5 + tumour 0.5: the kidney region (1 + 2) is certain, the tumour alone is not
    shape = (10, 10)
    probs = np.zeros((3,) + shape, np.float32)
    probs[0] = 1.0
    probs[:, 3:7, 3:7] = np.array([0.0, 0.5, 0.5])[:, None, None]
    label = np.zeros(shape, np.uint8)
    label[3:7, 3:7] = 1
    unc = compute_uncertainty(probs, label, [0, 1, 2])
    region = structure_scores(unc, label > 0, (0, 0), [1, 2])
    alone = structure_scores(unc, label > 0, (0, 0), [1])
    assert region["expected_dice"] == pytest.approx(1.0) and alone["expected_dice"] < 0.7


def test_volume_plausibility():
    assert volume_plausibility(150) == 1.0
    assert volume_plausibility(30) == pytest.approx(0.5)
    assert volume_plausibility(600) == pytest.approx(0.5)
    assert volume_plausibility(900) == 0.0


def test_bad_inputs_raise():
    p = np.zeros((8, 8), np.float32)
    p[2:4, 2:4] = 1
    unc = compute_uncertainty(_two_class(p), (p > 0.5).astype(np.uint8), [0, 1])
    with pytest.raises(InputError):
        structure_scores(unc, np.ones((2, 2, 2), bool), (0, 0, 0), [1])
    with pytest.raises(InputError):
        structure_scores(unc, np.ones((2, 2), bool), (2, 2), [7])
    with pytest.raises(InputError):
        qc_record({"expected_dice": 1.0}, method="nonsense")


def _phantom_volume():
    """Two box kidneys (right: certain; left: hesitant) with a tumour on the right, RAS 2 mm voxels."""
    shape = (60, 30, 30)
    probs = np.zeros((3,) + shape, np.float32)
    probs[0] = 1.0
    probs[:, 5:20, 8:22, 8:22] = np.array([0.0, 1.0, 0.0])[:, None, None, None]   # x small: patient left
    probs[:, 40:55, 8:22, 8:22] = np.array([0.0, 1.0, 0.0])[:, None, None, None]  # x large: patient right
    probs[:, 5:20, 8:22, 8:22] = np.array([0.4, 0.6, 0.0])[:, None, None, None]
    probs[:, 44:50, 12:18, 12:18] = np.array([0.0, 0.05, 0.95])[:, None, None, None]
    values = np.array([0, 1, 2], np.uint8)
    label = values[np.argmax(probs, axis=0)]
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    return probs, label, affine


def test_volumes_json_gets_qc_per_structure_and_the_summary_marks_review():
    from kidneyseg.reporting.volumes import measure, summary_line

    probs, label, affine = _phantom_volume()
    unc = compute_uncertainty(probs, label, [0, 1, 2])
    found: list = []
    m = measure(label, affine, labels={0: "background", 1: "kidney", 2: "tumor"}, uncertainty=unc, structures=found)
    right, left = m["kidneys"]["right"], m["kidneys"]["left"]
    assert right["qc"]["flag"] == "pass" and right["qc"]["score"] > 0.95
    assert left["qc"]["flag"] == "review" and left["qc"]["score"] < QC_THRESHOLD
    assert right["tumors"][0]["qc"]["flag"] == "pass"
    assert m["qc"]["method"] and m["qc"]["threshold"] == QC_THRESHOLD and "single" not in m["qc"]["uncertainty"]
    assert [k for k, _, _ in found] == ["kidneys.right", "kidneys.right.tumors.1", "kidneys.left"]
    line = summary_line(m)
    assert "left kidney" in line and f"[review: QC {left['qc']['score']:.2f}]" in line
    assert line.count("review") == 1
    rows = review_items(m)
    assert [(r["structure"], r["flag"]) for r in rows] == [
        ("right kidney", "pass"), ("right kidney, tumour 1", "pass"), ("left kidney", "review")]
    assert "REVIEW" in html_table(m) and html_table({"kidneys": {}}) == ""


def test_volumes_json_without_uncertainty_has_no_qc():
    from kidneyseg.reporting.volumes import measure

    _, label, affine = _phantom_volume()
    m = measure(label, affine)
    assert "qc" not in m and "qc" not in m["kidneys"]["right"]


def test_2d_image_region_gets_qc_and_an_empty_image_none():
    from kidneyseg.reporting.volumes import measure

    p = np.zeros((40, 40), np.float32)
    p[10:20, 10:20] = 0.97
    label = (p > 0.5).astype(np.uint8)
    unc = compute_uncertainty(_two_class(p), label, [0, 1])
    m = measure(label, np.eye(4), labels={0: "background", 1: "kidney"}, uncertainty=unc)
    assert m["image"]["qc"]["flag"] == "pass"
    empty = np.zeros((40, 40), np.uint8)
    unc0 = compute_uncertainty(_two_class(np.zeros((40, 40))), empty, [0, 1])
    m0 = measure(empty, np.eye(4), labels={0: "background", 1: "kidney"}, uncertainty=unc0)
    assert "qc" not in m0["image"] and "qc" in m0
