"""`kidneyseg evaluate --detections` end to end: boxes on the detector's RAS grid, references stored otherwise."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from kidneyseg.cli import main
from kidneyseg.evaluation.detection import DETECTION_COLUMNS, CaseDetections, write_detections


def _label() -> np.ndarray:
    """Two box kidneys on a (24, 20, 16) RAS grid (K axial): A 6 slices, B 8 slices, B with tumour and cyst."""
    lab = np.zeros((24, 20, 16), np.uint8)
    lab[2:10, 3:9, 2:8] = 1
    lab[14:20, 4:12, 4:12] = 1
    lab[15:17, 5:7, 5:7] = 2
    lab[18:20, 10:12, 10:12] = 3
    return lab


def _detections() -> dict[int, np.ndarray]:
    """As tests/evaluation/test_detection.py: per slice TP 10, FP 2, FN 4; per kidney TP 2 (B at IoU 0.5)."""
    a, b = [3.0, 2.0, 9.0, 10.0], [4.0, 14.0, 12.0, 20.0]  # (x1, y1, x2, y2), x = J, y = I
    dets: dict[int, list[list[float]]] = {k: [[*a, 0.95]] for k in range(2, 8)}
    for k in range(4, 8):
        dets[k].append([*b, 0.9])
    dets[0] = [[15.0, 0.0, 18.0, 3.0, 0.8]]
    dets[3].append([3.0, 2.0, 9.0, 8.0, 0.6])
    dets[1] = [[*a, 0.3]]
    return {k: np.asarray(v, np.float32) for k, v in dets.items()}

RAS_AFFINE = np.array([[0.8, 0, 0, -10.0], [0, 0.8, 0, 5.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])


def _save_kits_layout(ras: np.ndarray, path) -> None:
    """Store an (I, J, K) RAS label map as KiTS does: axial axis first, rows and columns flipped (file a, b, c =
    RAS k, I - 1 - i, J - 1 - j), with the affine that puts every voxel at the same place in the world."""
    arr = np.transpose(ras[::-1, ::-1, :], (2, 0, 1))
    n_i, n_j = ras.shape[0], ras.shape[1]
    p = np.zeros((4, 4))  # file voxel (a, b, c, 1) -> RAS voxel (i, j, k, 1)
    p[0, 1], p[0, 3] = -1, n_i - 1
    p[1, 2], p[1, 3] = -1, n_j - 1
    p[2, 0] = 1
    p[3, 3] = 1
    nib.save(nib.Nifti1Image(np.ascontiguousarray(arr), RAS_AFFINE @ p), str(path))


@pytest.fixture
def data(tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    _save_kits_layout(_label(), ref / "case_00001.nii.gz")
    _save_kits_layout(_label(), ref / "case_00002.nii.gz")
    # case 1: the boxes on the reference's RAS grid; case 2: on a crop of it (the detector grid of a plan that
    # crops the body): 1 voxel off in I, 2 in J, so every box moves by (-2, -1) in (x, y)
    crop = RAS_AFFINE.copy()
    crop[:3, 3] = RAS_AFFINE[:3, :3] @ [1, 2, 0] + RAS_AFFINE[:3, 3]
    shifted = {k: b - np.array([2, 1, 2, 1, 0], np.float32) for k, b in _detections().items()}
    dets = write_detections(tmp_path / "dets.json", {
        "case_00001": CaseDetections(boxes=_detections(), shape=(24, 20, 16), affine=RAS_AFFINE, score_threshold=0.5),
        "case_00002": CaseDetections(boxes=shifted, shape=(22, 18, 16), affine=crop),
    })
    return dets, ref


def test_detections_end_to_end(data, tmp_path, capsys):
    dets, ref = data
    out, summary = tmp_path / "det.csv", tmp_path / "det.json"
    code = main(["evaluate", "--detections", str(dets), "--ref", str(ref), "--task", "kits23",
                 "--out", str(out), "--summary", str(summary)])
    assert code == 0
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert out.read_text().splitlines()[0] == ",".join(DETECTION_COLUMNS)
    assert [(r["case"], r["level"]) for r in rows] == [("case_00001", "slice"), ("case_00001", "kidney"),
                                                       ("case_00002", "slice"), ("case_00002", "kidney")]
    # the known answer of tests/evaluation/test_detection.py, for both grids
    for r in rows:
        counts = (int(r["tp"]), int(r["fp"]), int(r["fn"]))
        assert counts == ((10, 2, 4) if r["level"] == "slice" else (2, 0, 0)), r
    s = json.loads(summary.read_text())
    assert s["task"] == "kits23" and s["n_cases"] == 2 and s["iou_threshold"] == 0.5
    assert s["levels"]["slice"]["recall"] == pytest.approx(20 / 28)
    assert s["levels"]["slice"]["precision"] == pytest.approx(20 / 24)
    assert s["levels"]["kidney"]["recall"] == 1.0
    stdout = capsys.readouterr().out
    assert stdout.startswith("| level | recall | precision |") and "| slice | 0.7143 | 0.8333 |" in stdout
    # a stricter IoU: B's 3D box (IoU 0.5) no longer matches
    assert main(["evaluate", "--detections", str(dets), "--ref", str(ref), "--task", "kits23", "--iou", "0.6"]) == 0
    assert "| kidney | 0.5000 | 0.5000 |" in capsys.readouterr().out


def test_csv_detections_lie_on_the_reference_reoriented_to_ras(tmp_path, capsys):
    ref = tmp_path / "case_00001.nii.gz"
    _save_kits_layout(_label(), ref)
    path = tmp_path / "boxes.csv"
    lines = ["case,slice,x1,y1,x2,y2,score"] + [
        f"case_00001,{k},{b[0]},{b[1]},{b[2]},{b[3]},{b[4]}" for k, bs in _detections().items() for b in bs]
    path.write_text("\n".join(lines) + "\n")
    assert main(["evaluate", "--detections", str(path), "--ref", str(ref), "--task", "kits23"]) == 0
    assert "| slice | 0.7143 | 0.8333 |" in capsys.readouterr().out


def test_detection_usage_errors(data, tmp_path, capsys):
    dets, ref = data
    assert main(["evaluate", "--detections", str(dets), "--pred", str(ref), "--ref", str(ref), "--task", "kits23"]) == 2
    assert "exactly one of them" in capsys.readouterr().err
    assert main(["evaluate", "--ref", str(ref), "--task", "kits23"]) == 2
    assert "neither --pred nor --detections" in capsys.readouterr().err
    _save_kits_layout(_label(), ref / "case_00003.nii.gz")
    assert main(["evaluate", "--detections", str(dets), "--ref", str(ref), "--task", "kits23"]) == 2
    err = capsys.readouterr().err
    assert "references without detections" in err and "case_00003" in err and "--allow-missing" in err
    assert main(["evaluate", "--detections", str(dets), "--ref", str(ref), "--task", "kits23", "--allow-missing"]) == 0
    assert "| slice | 0.4762 |" in capsys.readouterr().out  # 20 of 42: case 3's 14 boxes all missed
    assert main(["evaluate", "--detections", str(dets), "--ref", str(ref / "case_00001.nii.gz"),
                 "--task", "kits23"]) == 2
    err = capsys.readouterr().err
    assert "detections of cases without a reference" in err and "case_00002" in err
