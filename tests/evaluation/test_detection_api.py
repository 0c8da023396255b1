"""The recipe of docs/evaluation.md ("Detection"), run as written on a tiny ct-detect-vnet folder.

Besides ``kidneyseg predict --save-detections`` (tests/cli/test_predict_detections.py), the docs show how to get
the boxes through the Python API (the cascade's own steps) and score them in Python or with
``kidneyseg evaluate --detections``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("monai")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))

import predict_kit as kit


@pytest.mark.slow
def test_documented_recipe_scores_the_detector_of_a_model_folder(tmp_path, capsys):
    import nibabel as nib

    from kidneyseg.cli import main
    from kidneyseg.data.phantoms import ct_phantom
    from kidneyseg.evaluation.detection import (
        CaseDetections,
        evaluate_detections,
        reference_slice_boxes,
        write_detections,
    )
    from kidneyseg.inference.cascades import DETECT_EVERY_MM
    from kidneyseg.inference.engines import detect_slices, detection_slices
    from kidneyseg.io import read
    from kidneyseg.models.folder import load_model_folder
    from kidneyseg.preprocessing.plan import apply_plan

    ph = ct_phantom(size=(40, 40, 20), seed=1)
    nib.save(nib.Nifti1Image(ph.image.astype(np.float32), ph.affine), str(tmp_path / "case_00010_0000.nii.gz"))
    (tmp_path / "labels").mkdir()
    nib.save(nib.Nifti1Image(ph.label.astype(np.uint8), ph.affine), str(tmp_path / "labels" / "case_00010.nii.gz"))
    folder = kit.detect_vnet(tmp_path / "model", size=64, score_threshold=0.0)

    # --- the recipe, as docs/evaluation.md writes it
    model = load_model_folder(folder)
    det = model.stages["detector"]
    facts = det.spec.get("stage") or {}
    image = read(tmp_path / "case_00010_0000.nii.gz")
    ref = read(tmp_path / "labels" / "case_00010.nii.gz", is_label=True)
    pre = apply_plan(image.copy(label=ref.label), det.plan)  # the detector's grid; the label follows it
    ks, slab = detection_slices(pre.shape[2], pre.spacing[2], facts.get("detect_every_mm", DETECT_EVERY_MM))
    boxes = detect_slices(det.module, pre.image[None].astype(np.float32), slices=ks, score_threshold=0.0)
    threshold = facts.get("score_threshold", 0.5)
    rows = evaluate_detections(boxes, pre.label, task="kits23", slices=ks, slab=slab, score_threshold=threshold,
                               case="case_00010")
    write_detections(tmp_path / "detections.json", {"case_00010": CaseDetections(
        boxes, shape=pre.shape, affine=pre.affine, slices=ks, slab=slab, score_threshold=threshold)})
    # ---

    ref_boxes = reference_slice_boxes(pre.label, (1, 2, 3))
    per_slice = rows[0]
    assert per_slice["level"] == "slice" and per_slice["n_slices"] == len(ks)
    assert per_slice["n_ref"] == sum(len(ref_boxes.get(k, [])) for k in ks) > 0
    assert per_slice["n_pred"] == sum(int((b[:, 4] >= threshold).sum()) for b in boxes.values())
    out = tmp_path / "det.csv"
    assert main(["evaluate", "--detections", str(tmp_path / "detections.json"), "--ref", str(tmp_path / "labels"),
                 "--task", "kits23", "--out", str(out)]) == 0
    assert "| slice |" in capsys.readouterr().out
    line = out.read_text().splitlines()[1].split(",")
    assert line[:5] == ["case_00010", "slice", str(per_slice["tp"]), str(per_slice["fp"]), str(per_slice["fn"])]
