"""The viewer's NiiVue endpoints: NIfTI volumes and the bundle, behind the same token and Host checks."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
from live_server import live_server
from phantom_case import phantom
from test_server import _req

from kidneyseg.reporting.server import Viewer, uncertainty_map


def _nifti(tmp_path: Path) -> bytes:
    case, _ = phantom()
    p = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(case.image, case.affine), p)
    return p.read_bytes()


def test_nifti_endpoints_and_bundle(tmp_path: Path) -> None:
    case, _ = phantom()
    with live_server(tmp_path / "work") as url:
        info = json.loads(_req(f"{url}/api/upload?name=ct.nii.gz", _nifti(tmp_path))[1])
        assert info["modality_shown"] == "ct" and info["window"]["low"] == -160.0 and not info["has_uncertainty"]
        sid = info["id"]
        code, body, _ = _req(f"{url}/api/studies/{sid}/nifti/image.nii")
        assert code == 200
        img = nib.Nifti1Image.from_bytes(body)
        assert img.shape == case.shape and np.allclose(img.affine, case.affine)
        assert np.allclose(np.asarray(img.dataobj, dtype=np.float32), case.image)  # float HU: float32 kept
        assert _req(f"{url}/api/studies/{sid}/nifti/label.nii")[0] == 409
        assert _req(f"{url}/api/studies/{sid}/nifti/uncertainty.nii")[0] == 409
        assert _req(f"{url}/api/studies/{sid}/nifti/secret.nii")[0] == 404
        # the same token and Host rules as every other request
        assert _req(f"{url}/api/studies/{sid}/nifti/image.nii", token=None)[0] == 403
        assert _req(f"{url}/api/studies/{sid}/nifti/image.nii", headers={"Host": "evil.example"})[0] == 403
        code, body, headers = _req(f"{url}/static/niivue/niivue.umd.js")
        assert code == 200 and b"niivue" in body[:400] and "javascript" in headers["Content-Type"]
        assert _req(f"{url}/static/niivue/niivue.umd.js", token=None)[0] == 403
        assert _req(f"{url}/static/niivue/..%2F..%2Fserver.py")[0] == 404
        assert _req(f"{url}/static/kviewer.js")[0] == 200
    written = [p for p in (tmp_path / "work").rglob("viewer_*.nii")]
    assert written and all((tmp_path / "work" / "studies") in p.parents for p in written)


def test_prediction_uncertainty_reaches_the_viewer(tmp_path: Path) -> None:
    """A prediction whose result has an uncertainty map (an array or ``full_map()``) is served as a second overlay."""
    viewer = Viewer(tmp_path / "work", uncertainty=True)
    sid, folder = viewer.new_folder()
    (folder / "ct.nii.gz").write_bytes(_nifti(tmp_path))
    study = viewer.open_file(folder / "ct.nii.gz", sid, folder)
    label = np.zeros(study.case.shape, np.uint8)
    label[20:30, 20:30, 10:20] = 1
    unc = np.zeros(study.case.shape, np.float32)
    unc[18:32, 18:32, 8:22] = 1.5  # clipped to 1
    asked: list[object] = []

    class Stub:
        def predict_case(self, case, uncertainty=False):  # type: ignore[no-untyped-def]
            asked.append(uncertainty)
            return SimpleNamespace(label=label, warnings=[], uncertainty=SimpleNamespace(full_map=lambda: unc))

    viewer._predictors[viewer.model_for(study)] = Stub()
    viewer.predict(study)
    assert study.job.state == "done", study.job.message
    assert asked == [True]
    assert study.uncertainty is not None and study.uncertainty.max() == 1.0
    assert uncertainty_map(None, (2, 2)) is None and uncertainty_map(np.zeros((3, 3)), (2, 2)) is None
