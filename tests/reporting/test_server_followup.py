"""`kidneyseg serve`: QC per structure and RENAL per tumour in the volumes (and NAME_volumes.json), a follow-up
comparison beside the study in the inbox, and the report download with the viewer, QC, RENAL and comparison."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from live_server import live_server
from oracle_predictor import OraclePredictor
from phantom_case import phantom
from test_server import _req


def _comparison() -> dict:
    return {"before": {"name": "t0", "study_date": "2023-01-01", "segmentation": "t0_seg.nii.gz"},
            "after": {"name": "phantom", "study_date": "2024-07-02", "segmentation": None},
            "interval_days": 548.0,
            "kidneys": {"right": {"kidney_volume_before_ml": 3.1, "kidney_volume_after_ml": 3.4,
                                  "kidney_volume_change_ml": 0.3, "kidney_volume_change_percent": 9.68,
                                  "tumour_total_volume_before_ml": 0.2, "tumour_total_volume_after_ml": 0.35,
                                  "tumour_count_before": 1, "tumour_count_after": 1}},
            "tumours": [{"side": "right", "before_id": 1, "after_id": 1, "match_distance_mm": 1.2,
                         "tumour_volume_before_ml": 0.2, "tumour_volume_after_ml": 0.35,
                         "tumour_volume_change_ml": 0.15, "tumour_volume_change_percent": 75.0,
                         "tumour_max_diameter_before_mm": 9.0, "tumour_max_diameter_after_mm": 12.0,
                         "tumour_max_diameter_change_mm": 3.0, "tumour_volume_growth_ml_per_year": 0.1,
                         "tumour_diameter_growth_mm_per_year": 2.0, "tumour_volume_doubling_time_days": 678.9,
                         "renal_before": "R1 E3 N? L3 x", "renal_after": "R1 E2 N? L3 x"}],
            "new_tumours": [], "vanished_tumours": [{"side": "left", "before_id": 1, "tumour_volume_ml": 0.123,
                                                      "tumour_max_diameter_mm": 6.0,
                                                      "offset_from_kidney_mm": [1.0, 0.0, 4.0]}],
            "match_rule": "tumours of one side paired by their offset", "measures": {"before": {}, "after": {}}}


def test_serve_shows_qc_renal_and_the_comparison(tmp_path: Path) -> None:
    case, lab = phantom()
    work = tmp_path / "work"
    (work / "inbox").mkdir(parents=True)
    nib.save(nib.Nifti1Image(case.image, case.affine), work / "inbox" / "phantom.nii.gz")
    (work / "inbox" / "phantom_compare.json").write_text(json.dumps(_comparison()))
    model = tmp_path / "model"  # never loaded: the oracle stands for it
    model.mkdir()
    with live_server(work, model, predictor=OraclePredictor(lab)) as url:
        assert json.loads(_req(f"{url}/api/inbox")[1])["files"] == ["phantom.nii.gz"]  # the sidecar is no study
        code, body, _ = _req(f"{url}/api/open?name=phantom.nii.gz", b"")
        assert code == 200, body
        info = json.loads(body)
        assert info["comparison"]["tumours"][0]["tumour_volume_change_ml"] == 0.15
        assert "measures" not in info["comparison"]  # both studies' volumes stay on disk
        sid = info["id"]
        assert _req(f"{url}/api/studies/{sid}/predict", b"")[0] == 200
        deadline = time.monotonic() + 60
        while info["job"]["state"] not in ("done", "error") and time.monotonic() < deadline:
            time.sleep(0.2)
            info = json.loads(_req(f"{url}/api/studies/{sid}")[1])
        assert info["job"]["state"] == "done", info["job"]
        vols = info["volumes"]
        right = vols["kidneys"]["right"]
        assert right["qc"]["flag"] == "pass" and vols["kidneys"]["left"]["qc"]["flag"] == "pass"
        (tumour,) = right["tumors"]
        assert tumour["qc"]["flag"] == "pass" and tumour["renal"]["notation"].startswith("R1 ")
        assert vols["renal"]["available"] and vols["qc"]["method"] == "expected_dice"
        saved = json.loads(next(work.rglob("phantom_volumes.json")).read_text())
        assert saved["kidneys"]["right"]["tumors"][0]["renal"] == tumour["renal"]
        assert not info["has_uncertainty"]  # QC only: no uncertainty overlay without --uncertainty
        code, body, _ = _req(f"{url}/api/studies/{sid}/report")
        text = body.decode()
        assert code == 200 and 'id="kv-image"' in text  # the report carries the viewer, as report --viewer
        assert '<td class="qc-pass">pass (' in text
        assert f'<td class="renal">{tumour["renal"]["notation"]}' in text
        sec = text[text.index('<section id="followup">'):]
        assert "interval 548 days" in sec and "<td>right 1 → 1</td><td>0.200</td><td>0.350</td><td>0.150</td>" in sec
        assert "R1 E3 N? L3 x → R1 E2 N? L3 x" in sec and "<td>left 1</td><td>0.123</td>" in sec
    assert np.array_equal(np.asarray(nib.load(next(work.rglob("phantom_label.nii.gz"))).dataobj), lab)


def test_serve_without_qc_has_no_qc(tmp_path: Path) -> None:
    from kidneyseg.reporting.server import Viewer

    case, lab = phantom()
    viewer = Viewer(tmp_path / "work", tmp_path, qc=False)
    sid, folder = viewer.new_folder()
    nib.save(nib.Nifti1Image(case.image, case.affine), folder / "p.nii.gz")
    study = viewer.open_file(folder / "p.nii.gz", sid, folder)
    viewer._predictors[viewer.model_for(study)] = OraclePredictor(lab)
    viewer.predict(study)
    assert study.job.state == "done", study.job.message
    assert "qc" not in study.volumes and "qc" not in study.volumes["kidneys"]["right"]
    assert study.volumes["kidneys"]["right"]["tumors"][0]["renal"]["R"]["points"] == 1
