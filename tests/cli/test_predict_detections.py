"""`kidneyseg predict --save-detections` writes the detector's boxes; `kidneyseg evaluate --detections` scores them."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("monai")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))

import predict_kit as kit

from kidneyseg.cli import main


def _phantom_files(tmp_path: Path) -> tuple[Path, Path, object]:
    import nibabel as nib

    from kidneyseg.case import Case
    from kidneyseg.data.phantoms import ct_phantom

    ph = ct_phantom(size=(40, 40, 20), seed=1)
    image, label = ph.image, ph.label
    affine = ph.affine @ np.diag([1, 1, 0.25, 1])  # 2.75 mm slices: the detector searches one every 10 mm
    src = tmp_path / "case_00010_0000.nii.gz"
    nib.save(nib.Nifti1Image(image.astype(np.int16), affine), str(src))
    (tmp_path / "labels").mkdir()
    nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), str(tmp_path / "labels" / "case_00010.nii.gz"))
    return src, tmp_path / "labels", Case(image.astype(np.float32), affine, label=label)


def test_saved_detections_of_a_perfect_detector_score_recall_one(tmp_path, monkeypatch, capsys):
    """The detector returns the phantom's own kidney boxes (on the slices it is asked to search): the file predict
    writes is read back by evaluate on the reference labels, recall 1.0 per slice and per kidney."""
    import kidneyseg.inference.engines as engines
    from kidneyseg.inference.cascades import DETECT_EVERY_MM
    from kidneyseg.models.boxes import detection_slices, reference_slice_boxes
    from kidneyseg.preprocessing.plan import Plan, apply_plan

    src, labels, case = _phantom_files(tmp_path)
    folder = kit.detect_vnet(tmp_path / "model", size=64)
    # the reference kidneys' own boxes on the detector's grid (every piece of a kidney, however small), score 1
    pre = apply_plan(case, Plan.from_json(kit.plan2d(None, [64, 64])))
    oracle = {k: np.c_[b, np.ones(len(b))].astype(np.float32) for k, b in reference_slice_boxes(pre.label).items()}
    searched: list[int] = []

    def perfect(detector, volume, *, slices=None, **kwargs):  # type: ignore[no-untyped-def]
        searched.extend(slices)
        return {k: oracle[k] for k in slices if k in oracle}

    monkeypatch.setattr(engines, "detect_slices", perfect)
    out = tmp_path / "out"
    assert main(["predict", str(src), "-o", str(out), "--model", str(folder), "--threads", "2",
                 "--save-detections", "--no-qc"]) == 0
    path = out / "case_00010_detections.json"
    assert path.is_file() and (out / "case_00010.nii.gz").is_file()
    doc = json.loads(path.read_text())
    entry = doc["cases"]["case_00010"]
    every, slab = detection_slices(case.shape[2], float(case.spacing[2]), DETECT_EVERY_MM)
    assert doc["format"] == "kidneyseg-detections" and entry["slices"] == searched == every and entry["slab"] == slab
    assert 1 < len(every) < case.shape[2]  # one slice in several searched, each standing for its slab
    assert entry["shape"] == list(case.shape) and len(entry["affine"]) == 4 and entry["score_threshold"] == 0.0
    assert sorted(int(k) for k in entry["boxes"]) == [k for k in searched if k in oracle]
    assert len(entry["kidney_boxes"]) == 2  # the phantom's two kidneys, as the cascade cropped them
    capsys.readouterr()

    csv_out = tmp_path / "det.csv"
    assert main(["evaluate", "--detections", str(path), "--ref", str(labels), "--task", "kits23",
                 "--out", str(csv_out)]) == 0
    assert "| slice |" in capsys.readouterr().out
    rows = {r["level"]: r for r in csv.DictReader(csv_out.read_text().splitlines())}
    assert int(rows["slice"]["tp"]) > 0 and float(rows["slice"]["recall"]) == 1.0
    assert float(rows["slice"]["precision"]) == 1.0
    assert int(rows["kidney"]["tp"]) == len(entry["kidney_boxes"]) and float(rows["kidney"]["recall"]) == 1.0
    # the output folder (one NAME_detections.json per case) scores the same
    assert main(["evaluate", "--detections", str(out), "--ref", str(labels), "--task", "kits23",
                 "--out", str(tmp_path / "det2.csv")]) == 0
    assert (tmp_path / "det2.csv").read_text() == csv_out.read_text()


def test_save_detections_refuses_a_model_without_a_detector(tmp_path, capsys):
    """A usage error (exit 2, one line) before any case runs: nothing is written."""
    src, _, _ = _phantom_files(tmp_path)
    folder = kit.slice2d(tmp_path / "m2d")
    assert main(["predict", str(src), "-o", str(tmp_path / "out"), "--model", str(folder), "--save-detections"]) == 2
    err = capsys.readouterr().err
    assert "--save-detections needs one ct-detect-vnet model" in err and "Fix: drop --save-detections" in err
    assert not (tmp_path / "out").exists()
