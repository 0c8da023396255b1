"""Detection evaluation: IoU, matching and per-slice / per-kidney counts on hand-made boxes and label maps."""

from __future__ import annotations

import numpy as np
import pytest

from kidneyseg.errors import InputError, KidneysegError
from kidneyseg.evaluation.detection import (
    CaseDetections,
    DetectionCounts,
    aggregate_detections,
    box_iou,
    box_iou_3d,
    detection_markdown_table,
    evaluate_detections,
    kidney_label_values,
    match_boxes,
    read_detections,
    reference_kidney_boxes,
    reference_slice_boxes,
    write_detections,
)

# Two box kidneys on a (24, 20, 16) grid, K axial.  A: i 2..10, j 3..9, k 2..8 (6 slices);
# B: i 14..20, j 4..12, k 4..12 (8 slices), with a tumour (2) and a cyst (3) inside.
SHAPE = (24, 20, 16)
BOX_A = (3.0, 2.0, 9.0, 10.0)  # (x1, y1, x2, y2): x = column = J, y = row = I
BOX_B = (4.0, 14.0, 12.0, 20.0)


def _label() -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:10, 3:9, 2:8] = 1
    lab[14:20, 4:12, 4:12] = 1
    lab[15:17, 5:7, 5:7] = 2
    lab[18:20, 10:12, 10:12] = 3  # on the kidney's edge: still inside its box
    return lab


def _row(rows, level):
    (r,) = [r for r in rows if r["level"] == level]
    return r


# ------------------------------------------------------------------ IoU
def test_box_iou_known_values():
    a = [[0, 0, 4, 4], [10, 10, 12, 12], [0, 0, 0, 5]]
    b = [[0, 0, 4, 4], [2, 0, 6, 4], [4, 4, 8, 8]]
    iou = box_iou(a, b)
    assert iou.shape == (3, 3)
    assert iou[0, 0] == 1.0
    assert iou[0, 1] == pytest.approx(8 / 24)  # half of each box shared
    assert iou[0, 2] == 0.0  # touching corners share no area
    assert np.all(iou[1] == 0.0) and np.all(iou[2] == 0.0)  # disjoint; a zero-area box
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)


def test_box_iou_3d_known_values():
    a = [((0, 2), (0, 2), (0, 2)), ((0, 4), (0, 4), (0, 4))]
    b = [((1, 3), (0, 2), (0, 2)), ((0, 4), (0, 4), (0, 2))]
    iou = box_iou_3d(a, b)
    assert iou[0, 0] == pytest.approx(4 / 12)
    assert iou[1, 1] == pytest.approx(32 / 64)
    assert iou[0, 1] == pytest.approx(8 / 32)
    assert box_iou_3d([], b).shape == (0, 2)


# ------------------------------------------------------------------ matching
def test_matching_is_greedy_by_score_and_one_to_one():
    ref = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float)
    pred = np.array([
        [0, 0, 10, 8],    # IoU 0.8 with ref 0, lower score
        [0, 0, 10, 6],    # IoU 0.6 with ref 0, higher score: takes ref 0 first
        [20, 0, 30, 5],   # IoU exactly 0.5 with ref 1: a match (threshold inclusive)
        [40, 0, 50, 10],  # nothing
    ])
    c, matches = match_boxes(box_iou(pred, ref), [0.7, 0.9, 0.8, 0.99])
    assert (c.tp, c.fp, c.fn) == (2, 2, 0)
    assert sorted((p, r) for p, r, _ in matches) == [(1, 0), (2, 1)]
    # without scores the given order decides: pred 0 takes ref 0
    c, matches = match_boxes(box_iou(pred, ref))
    assert (c.tp, c.fp, c.fn) == (2, 2, 0) and (0, 0) in [(p, r) for p, r, _ in matches]
    # a stricter IoU drops the half-overlap
    c, _ = match_boxes(box_iou(pred, ref), [0.7, 0.9, 0.8, 0.99], iou_threshold=0.55)
    assert (c.tp, c.fp, c.fn) == (1, 3, 1)
    # one big prediction over both references matches one of them only
    c, _ = match_boxes(box_iou([[0, 0, 30, 10]], ref), iou_threshold=0.3)
    assert (c.tp, c.fp, c.fn) == (1, 0, 1)
    with pytest.raises(KidneysegError, match="IoU threshold"):
        match_boxes(box_iou(pred, ref), iou_threshold=0.0)


def test_counts_ratios_and_empty_policy():
    c = DetectionCounts(tp=3, fp=1, fn=2)
    assert c.recall == pytest.approx(3 / 5) and c.precision == pytest.approx(3 / 4)
    assert c.f1 == pytest.approx(6 / 9) and (c.n_ref, c.n_pred) == (5, 4)
    assert c + DetectionCounts(1, 0, 0) == DetectionCounts(4, 1, 2)
    nothing = DetectionCounts()
    assert nothing.recall == nothing.precision == nothing.f1 == 1.0  # nothing to find, nothing claimed
    only_fp = DetectionCounts(fp=2)
    assert only_fp.recall == only_fp.precision == only_fp.f1 == 0.0
    only_fn = DetectionCounts(fn=2)
    assert only_fn.recall == only_fn.precision == 0.0


# ------------------------------------------------------------------ reference boxes
def test_reference_boxes_per_slice_and_per_kidney():
    lab = _label()
    per_slice = reference_slice_boxes(lab, (1, 2, 3))
    assert sorted(per_slice) == list(range(2, 12))
    np.testing.assert_array_equal(per_slice[2], [BOX_A])
    np.testing.assert_array_equal(per_slice[5], [BOX_A, BOX_B])  # sorted by x1
    np.testing.assert_array_equal(per_slice[11], [BOX_B])
    assert reference_kidney_boxes(lab, (1, 2, 3)) == [((14, 20), (4, 12), (4, 12)), ((2, 10), (3, 9), (2, 8))]
    # the kidney region is kidney + masses: a cyst bulging out of B widens B's box
    lab[20:22, 6:8, 6:8] = 3
    assert reference_kidney_boxes(lab, (1, 2, 3))[0] == ((14, 22), (4, 12), (4, 12))
    assert reference_kidney_boxes(lab, (1,))[0] == ((14, 20), (4, 12), (4, 12))
    assert kidney_label_values("kits23") == (1, 2, 3) and kidney_label_values("chaos-mr") == (2, 3)
    assert kidney_label_values("ct-abdomen") == (1, 2, 3) and kidney_label_values("binary") is None


def test_small_components_and_third_kidneys_are_not_reference_kidneys():
    lab = _label()
    lab[0:3, 15:18, 13:16] = 1  # 27 voxels: below min_voxels 100
    assert len(reference_kidney_boxes(lab)) == 2
    lab[0:12, 12:20, 11:16] = 1  # 480 voxels, a third component larger than A: max_kidneys 2 keeps it and B
    boxes = reference_kidney_boxes(lab)
    assert len(boxes) == 2 and ((2, 10), (3, 9), (2, 8)) not in boxes
    assert len(reference_kidney_boxes(lab, max_kidneys=3)) == 3


def test_one_box_per_kidney_even_when_a_slice_cuts_it_in_two():
    lab = np.zeros((12, 12, 4), np.uint8)
    lab[2:10, 2:10, :] = 1
    lab[4:8, 2:6, 1] = 0  # slice 1: a U shape ...
    lab[2:10, 5, 1] = 0   # ... cut into two pieces on that slice, one kidney in 3D
    boxes = reference_slice_boxes(lab)
    np.testing.assert_array_equal(boxes[1], [[2, 2, 10, 10]])


def test_reference_boxes_are_the_detector_training_boxes():
    """Per-slice reference boxes equal kidneyseg.models.detection.boxes_from_volume (what the detector learns)."""
    pytest.importorskip("torch")
    from kidneyseg.models.detection import boxes_from_volume

    rng = np.random.default_rng(3)
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.standard_normal((30, 28, 18)), 2.0)
    lab = (field > 0.8 * field.std()).astype(np.uint8)
    lab[lab > 0] = rng.choice([1, 2, 3], size=int(lab.sum()), p=[0.8, 0.1, 0.1])
    ours = reference_slice_boxes(lab, (1, 2, 3))
    theirs = boxes_from_volume(lab, (1, 2, 3))
    assert ours.keys() == theirs.keys() and len(ours) > 3
    for k in ours:
        np.testing.assert_array_equal(ours[k], theirs[k])


# ------------------------------------------------------------------ one case, known counts
def _detections() -> dict[int, np.ndarray]:
    """A found on all of its 6 slices, B on 4 of its 8 (slices 4..7), a false box on slice 0, a duplicate of A
    on slice 3 (0.7 of its height: IoU 0.75 but A is taken), and a low-score box on slice 1."""
    dets: dict[int, list[list[float]]] = {}
    for k in range(2, 8):
        dets.setdefault(k, []).append([*BOX_A, 0.95])
    for k in range(4, 8):
        dets.setdefault(k, []).append([*BOX_B, 0.9])
    dets.setdefault(0, []).append([15.0, 0.0, 18.0, 3.0, 0.8])
    dets[3].append([3.0, 2.0, 9.0, 8.0, 0.6])
    dets.setdefault(1, []).append([*BOX_A, 0.3])
    return {k: np.asarray(v, np.float32) for k, v in dets.items()}


def test_known_counts_per_slice_and_per_kidney():
    rows = evaluate_detections(_detections(), _label(), task="kits23", case="c1")
    s = _row(rows, "slice")
    # TP: 6 (A) + 4 (B); FP: the false box and the duplicate; FN: B on slices 8..11
    assert (s["tp"], s["fp"], s["fn"]) == (10, 2, 4)
    assert s["recall"] == pytest.approx(10 / 14) and s["precision"] == pytest.approx(10 / 12)
    assert s["n_slices"] == 16 and s["case"] == "c1" and s["n_ref"] == 14 and s["n_pred"] == 12
    k = _row(rows, "kidney")
    # boxes_to_3d: A exact (IoU 1); B over k 4..8 of 4..12 (IoU 0.5, a match); the lone false box is a third
    # component, dropped (two kidneys at most)
    assert (k["tp"], k["fp"], k["fn"]) == (2, 0, 0) and k["recall"] == 1.0
    strict = _row(evaluate_detections(_detections(), _label(), iou_threshold=0.6), "kidney")
    assert (strict["tp"], strict["fp"], strict["fn"]) == (1, 1, 1)
    # the low-score box counts once the threshold is lowered: one more false box on slice 1 (A starts at 2)
    low = _row(evaluate_detections(_detections(), _label(), score_threshold=0.2), "slice")
    assert (low["tp"], low["fp"], low["fn"]) == (10, 3, 4)


def test_searched_slices_only_count_there():
    """The detector ran on every second slice (ct-detect-vnet: one every 10 mm), each standing for 2 slices."""
    ks = list(range(0, 16, 2))
    dets = {k: b for k, b in _detections().items() if k in ks}
    rows = evaluate_detections(dets, _label(), slices=ks, slab=2)
    s = _row(rows, "slice")
    # reference slices among 0, 2, ..., 14: A on 2, 4, 6; B on 4, 6, 8, 10.  Found: A on 2, 4, 6; B on 4, 6
    assert (s["tp"], s["fp"], s["fn"]) == (5, 1, 2) and s["n_slices"] == 8
    with pytest.raises(InputError, match="not searched"):
        evaluate_detections(_detections(), _label(), slices=ks)


def test_explicit_kidney_boxes_and_no_detection():
    lab = _label()
    rows = evaluate_detections({}, lab, kidney_boxes=[((2, 10), (3, 9), (2, 8))])
    assert (_row(rows, "kidney")["tp"], _row(rows, "kidney")["fn"]) == (1, 1)
    assert _row(rows, "slice")["fn"] == 14 and _row(rows, "slice")["recall"] == 0.0
    nothing = evaluate_detections({}, np.zeros(SHAPE, np.uint8))
    assert all(r["recall"] == 1.0 and r["precision"] == 1.0 for r in nothing)


def test_bad_detections_are_refused():
    lab = _label()
    with pytest.raises(InputError, match="outside the volume"):
        evaluate_detections({16: [[0, 0, 1, 1, 1.0]]}, lab)
    with pytest.raises(InputError, match="invalid boxes"):
        evaluate_detections({3: [[5, 0, 1, 1, 1.0]]}, lab)
    with pytest.raises(InputError, match="wrong shape"):
        evaluate_detections({3: [[0, 0, 1]]}, lab)
    with pytest.raises(InputError, match="3D label map"):
        evaluate_detections({}, lab[:, :, 0])


def test_aggregate_sums_counts_over_cases():
    a = evaluate_detections(_detections(), _label(), case="a")
    b = evaluate_detections({}, _label(), case="b")
    s = aggregate_detections(a + b, iou_threshold=0.5)
    assert s["n_cases"] == 2
    sl = s["levels"]["slice"]
    assert (sl["tp"], sl["fp"], sl["fn"]) == (10, 2, 18) and sl["recall"] == pytest.approx(10 / 28)
    assert sl["recall_mean_over_cases"] == pytest.approx((10 / 14 + 0) / 2)
    assert s["levels"]["kidney"]["recall"] == pytest.approx(2 / 4)
    table = detection_markdown_table(s)
    assert table.splitlines()[0] == "| level | recall | precision | f1 | tp | fp | fn |"
    assert "| slice | 0.3571 | 0.8333 |" in table


# ------------------------------------------------------------------ files
def test_json_and_csv_round_trip(tmp_path):
    dets = _detections()
    path = write_detections(tmp_path / "d.json", {"c1": CaseDetections(
        boxes=dets, shape=SHAPE, affine=np.diag([1.0, 2.0, 3.0, 1.0]), slices=list(range(16)), slab=1,
        score_threshold=0.5, kidney_boxes=[((2, 10), (3, 9), (2, 8))])})
    back = read_detections(path)["c1"]
    assert back.shape == SHAPE and back.slices == list(range(16)) and back.score_threshold == 0.5
    assert back.kidney_boxes == [((2, 10), (3, 9), (2, 8))]
    np.testing.assert_allclose(back.affine, np.diag([1.0, 2.0, 3.0, 1.0]))
    for k in dets:
        np.testing.assert_allclose(back.boxes[k], dets[k], rtol=1e-6)
    csv_path = tmp_path / "d.csv"
    lines = ["case,slice,x1,y1,x2,y2,score"] + [
        f"c1,{k},{b[0]},{b[1]},{b[2]},{b[3]},{b[4]}" for k, bs in dets.items() for b in bs]
    csv_path.write_text("\n".join(lines) + "\n")
    from_csv = read_detections(csv_path)["c1"]
    assert from_csv.shape is None and from_csv.slices is None
    assert evaluate_detections(from_csv.boxes, _label()) == evaluate_detections(dets, _label())


def test_unreadable_files_say_what_is_expected(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"boxes": []}')
    with pytest.raises(InputError, match="not a detections file"):
        read_detections(bad)
    bad.write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        read_detections(bad)
    c = tmp_path / "x.csv"
    c.write_text("case,slice,x1\nc1,2,3\n")
    with pytest.raises(InputError, match="lacks columns"):
        read_detections(c)
    c.write_text("case,slice,x1,y1,x2,y2\nc1,two,0,0,1,1\n")
    with pytest.raises(InputError, match="line 2"):
        read_detections(c)
