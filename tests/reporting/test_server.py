"""The viewer's HTTP API: safe names, upload limit, zip members, slices, prediction and downloads."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from live_server import live_server
from phantom_case import phantom

from kidneyseg.errors import InputError
from kidneyseg.reporting.server import check_name


def _req(url: str, data: bytes | None = None, method: str | None = None) -> tuple[int, bytes, Any]:
    r = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    try:
        with urllib.request.urlopen(r, timeout=60) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


@pytest.fixture
def nifti_bytes(tmp_path: Path) -> bytes:
    case, _ = phantom()
    (tmp_path / "src").mkdir()
    p = tmp_path / "src" / "ct.nii.gz"
    nib.save(nib.Nifti1Image(case.image, case.affine), p)
    return p.read_bytes()


@pytest.mark.parametrize("name", ["../evil.nii.gz", "a/b.nii.gz", "..\\x.nii.gz", "/etc/passwd.nii.gz", ".hidden.nii.gz",
                                  "x.exe", "", "-rf.nii.gz", "a\x00.nii.gz"])
def test_bad_names_refused(name: str) -> None:
    with pytest.raises(InputError):
        check_name(name)


@pytest.mark.filterwarnings("ignore:.*no pixel spacing given")  # the PNG upload has no spacing sidecar: 1 mm
def test_api(tmp_path: Path, nifti_bytes: bytes) -> None:
    work = tmp_path / "work"
    outside = tmp_path / "evil.nii.gz"
    with live_server(work, max_upload_bytes=len(nifti_bytes) + 1000) as url:
        # path traversal through the query string, encoded or not
        for name in ("../evil.nii.gz", "..%2Fevil.nii.gz", "%2e%2e/evil.nii.gz", "sub/x.nii.gz"):
            code, body, _ = _req(f"{url}/api/upload?name={name}", nifti_bytes)
            assert code == 400, (name, code, body)
        assert not outside.exists()
        code, _, _ = _req(f"{url}/api/open?name=" + urllib.parse.quote("../../etc/passwd.nii"), b"")
        assert code == 400
        # over the limit
        code, body, _ = _req(f"{url}/api/upload?name=big.nii.gz", nifti_bytes + b"\0" * 2000)
        assert code == 413, body
        # zip slip
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("../../escape.dcm", b"x")
        code, body, _ = _req(f"{url}/api/upload?name=series.zip", buf.getvalue())
        assert code == 400 and b"leaves the folder" in body
        assert not (tmp_path / "escape.dcm").exists() and not (work.parent / "escape.dcm").exists()
        # a good upload
        code, body, _ = _req(f"{url}/api/upload?name=ct.nii.gz", nifti_bytes)
        assert code == 200, body
        info = json.loads(body)
        assert info["planes"] == {"axial": 40, "coronal": 56, "sagittal": 64}
        code, body, headers = _req(f"{url}/api/studies/{info['id']}/slice?plane=axial&index=20")
        rows, cols = int(headers["X-Rows"]), int(headers["X-Cols"])
        assert (rows, cols) == (56, 64) and len(body) == 2 * rows * cols
        assert not any(body[rows * cols :])  # no label yet
        code, _, _ = _req(f"{url}/api/studies/{info['id']}/slice?plane=axial&index=99")
        assert code == 400
        code, body, _ = _req(f"{url}/api/studies/{info['id']}/predict", b"")
        assert code == 409 and b"--model" in body  # no model given
        code, _, _ = _req(f"{url}/api/studies/nope")
        assert code == 404
        # a 2D PNG (ultrasound-like) opens as one image
        from PIL import Image

        png = io.BytesIO()
        Image.fromarray((np.arange(30 * 40) % 200).astype(np.uint8).reshape(30, 40)).save(png, format="PNG")
        code, body, _ = _req(f"{url}/api/upload?name=us.png", png.getvalue())
        assert code == 200, body
        sid = json.loads(body)["id"]
        assert json.loads(body)["planes"] == {"image": 1}
        code, body, headers = _req(f"{url}/api/studies/{sid}/slice?plane=image&index=0")
        assert code == 200 and (int(headers["X-Rows"]), int(headers["X-Cols"])) == (30, 40)
    # everything written stays inside the working folder
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent != tmp_path / "src"]
    assert all(work in p.parents for p in written), written


def test_predict_and_downloads(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, nifti_bytes: bytes) -> None:
    import time

    from tiny_model import shared_tiny_model

    model = shared_tiny_model(tmp_path_factory)
    work = tmp_path / "work"
    (work / "inbox").mkdir(parents=True)
    (work / "inbox" / "ct.nii.gz").write_bytes(nifti_bytes)
    with live_server(work, model) as url:
        code, body, _ = _req(f"{url}/api/inbox")
        assert json.loads(body)["files"] == ["ct.nii.gz"]
        code, body, _ = _req(f"{url}/api/open?name=ct.nii.gz", b"")
        assert code == 200, body
        sid = json.loads(body)["id"]
        code, body, _ = _req(f"{url}/api/studies/{sid}/predict", b"")
        assert code == 200
        deadline = time.monotonic() + 60
        while True:
            info = json.loads(_req(f"{url}/api/studies/{sid}")[1])
            if info["job"]["state"] in ("done", "error") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert info["job"]["state"] == "done", info["job"]
        assert info["volumes"]["total"]["kidney_ml"] > 1.0
        code, body, _headers = _req(f"{url}/api/studies/{sid}/label")
        assert code == 200 and body[:2] == b"\x1f\x8b"  # gzip: a .nii.gz
        lab = np.asarray(nib.load(next(work.rglob("*_label.nii.gz"))).dataobj)
        assert lab.shape == (64, 56, 40) and (lab > 0).sum() > 500
        code, body, _ = _req(f"{url}/api/studies/{sid}/report")
        assert code == 200 and b"<!DOCTYPE html>" in body[:100] and b'data-plane="axial"' in body


def test_dicom_zip_upload(tmp_path: Path, shared_data: Path) -> None:
    series = shared_data / "totalseg_example" / "example_ct_dicom"
    if not series.is_dir():
        pytest.skip(f"{series} is absent")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in sorted(p for p in series.rglob("*") if p.is_file()):
            z.write(f, f"series/{f.relative_to(series)}")
    with live_server(tmp_path / "work") as url:
        code, body, _ = _req(f"{url}/api/upload?name=series.zip", buf.getvalue())
        assert code == 200, body
        info = json.loads(body)
        assert info["planes"]["axial"] == 20 and info["modality"] == "ct"
        code, body, headers = _req(f"{url}/api/studies/{info['id']}/slice?plane=coronal&index=200")
        assert code == 200 and int(headers["X-Rows"]) == 20


def test_prediction_warnings_reach_the_volumes(tmp_path: Path, nifti_bytes: bytes) -> None:
    """What the Predictor warns about a result (e.g. post-processing kept little) is shown with its volumes."""
    from types import SimpleNamespace

    from kidneyseg.reporting.server import Viewer

    viewer = Viewer(tmp_path / "work")
    sid, folder = viewer.new_folder()
    (folder / "ct.nii.gz").write_bytes(nifti_bytes)
    study = viewer.open_file(folder / "ct.nii.gz", sid, folder)
    label = np.zeros(study.case.shape, np.uint8)
    label[20:30, 20:30, 10:20] = 1

    class Stub:
        def predict_case(self, case):  # type: ignore[no-untyped-def]
            return SimpleNamespace(label=label, warnings=["post-processing kept 0.0 of the 9.0 mL"])

    viewer._predictor = Stub()
    viewer.predict(study)
    assert study.job.state == "done", study.job.message
    assert study.volumes["warnings"] == ["post-processing kept 0.0 of the 9.0 mL"]
    assert study.volumes["total"]["kidney_ml"] > 0
