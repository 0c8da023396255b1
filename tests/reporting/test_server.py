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
from live_server import TOKEN, live_server
from phantom_case import phantom

from kidneyseg.errors import InputError
from kidneyseg.reporting.server import check_name


def _req(url: str, data: bytes | None = None, method: str | None = None, *, token: str | None = TOKEN,
         headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    """Status, body and headers of one request; ``token`` goes in the ``X-Kidneyseg-Token`` header (None: no token)."""
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["X-Kidneyseg-Token"] = token
    r = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"), headers=hdrs)
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
        code, body, _ = _req(f"{url}/api/studies/{info['id']}/predict?modality=xray", b"")
        assert code == 400 and b"unknown modality" in body
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

    viewer._predictors[viewer.model_for(study)] = Stub()
    viewer.predict(study)
    assert study.job.state == "done", study.job.message
    assert study.volumes["warnings"] == ["post-processing kept 0.0 of the 9.0 mL"]
    assert study.volumes["total"]["kidney_ml"] > 0


# ----------------------------------------------------------------------------- issue 22, security items 1-4


def _mhd_header(data_file: str) -> bytes:
    return (f"ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementType = MET_UCHAR\nElementSpacing = 1 1 1\n"
            f"ElementDataFile = {data_file}\n").encode()


def test_detached_headers_read_only_the_study_folder(tmp_path: Path) -> None:
    """An uploaded .mhd / .nhdr / .nrrd that names a data file elsewhere is refused (400, with the reason)."""
    secret = tmp_path / "secret.raw"
    secret.write_bytes(bytes(range(100, 124)))
    nhdr = f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 3 2\nencoding: raw\ndata file: {secret}\n\n".encode()
    work = tmp_path / "work"
    with live_server(work) as url:
        for name, body in (("a.mhd", _mhd_header(str(secret))), ("b.mhd", _mhd_header("../../../secret.raw")),
                           ("c.nhdr", nhdr), ("d.nrrd", nhdr), ("e.mhd", _mhd_header("LIST\n" + str(secret)))):
            code, resp, _ = _req(f"{url}/api/upload?name={name}", body)
            assert code == 400, (name, code, resp)
            assert b"outside its folder" in resp and b"secret.raw" in resp, resp
        # the inbox: a header and its data beside it open (the data is copied along); one pointing out does not
        (work / "inbox" / "scan.raw").write_bytes(bytes(24))
        (work / "inbox" / "scan.mhd").write_bytes(_mhd_header("scan.raw"))
        (work / "inbox" / "evil.mhd").write_bytes(_mhd_header(str(secret)))
        code, resp, _ = _req(f"{url}/api/open?name=scan.mhd", b"")
        assert code == 200, resp
        assert json.loads(resp)["shape"] == [4, 3, 2]
        code, resp, _ = _req(f"{url}/api/open?name=evil.mhd", b"")
        assert code == 400 and b"outside its folder" in resp, resp
    # no study folder was left by the refused ones
    assert len(list((work / "studies").iterdir())) == 1


def test_token_host_and_origin(tmp_path: Path) -> None:
    """No token, a foreign Host (DNS rebinding) or a foreign Origin (another page, another port): 403."""
    with live_server(tmp_path / "work") as url:
        port = int(url.rsplit(":", 1)[1])
        assert _req(f"{url}/api/config")[0] == 200
        for token in (None, "wrong", ""):
            code, body, _ = _req(f"{url}/api/config", token=token)
            assert code == 403 and b"token" in body, (token, code)
        assert _req(f"{url}/", token=None)[0] == 403
        assert _req(f"{url}/api/config?token=nope", token=None)[0] == 403
        # Host must be this server
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1:1", f"127.0.0.1.evil.example:{port}", ""):
            code, body, _ = _req(f"{url}/api/config", headers={"Host": host})
            assert code == 403 and b"Host" in body, (host, code)
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
            assert _req(f"{url}/api/config", headers={"Host": host})[0] == 200, host
        # Origin, when sent, must be this server: a cross-origin text/plain upload is refused, own origin passes
        for origin in ("http://evil.example", f"http://localhost:{port + 1}", "null", f"https://127.0.0.1:{port}"):
            code, body, _ = _req(f"{url}/api/upload?name=x.png", b"abc",
                                 headers={"Origin": origin, "Content-Type": "text/plain"})
            assert code == 403, (origin, code, body)
        assert not list((tmp_path / "work" / "studies").iterdir())
        assert _req(f"{url}/api/config", headers={"Origin": f"http://127.0.0.1:{port}"})[0] == 200

        # the printed address: ?token= once sets an HttpOnly SameSite=Strict cookie and leaves the address bar
        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
                return None

        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as e:
            opener.open(f"{url}/?token={TOKEN}", timeout=30)
        assert e.value.code == 303 and e.value.headers["Location"] == "/"
        cookie = e.value.headers["Set-Cookie"]
        e.value.close()
        assert TOKEN in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
        jar = cookie.split(";")[0]
        code, body, _ = _req(f"{url}/", token=None, headers={"Cookie": jar})
        assert code == 200 and b"viewer.js" in body
        assert _req(f"{url}/static/viewer.js", token=None, headers={"Cookie": jar})[0] == 200
        assert _req(f"{url}/api/config", token=None, headers={"Cookie": jar.replace(TOKEN, "x")})[0] == 403
        # the page's requests carry the cookie: fetch same-origin, nothing in the script adds a token of its own
        js = (Path(__file__).parents[2] / "src/kidneyseg/reporting/static/viewer.js").read_text()
        assert 'credentials: "same-origin"' in js


def _zip_of_zeros(n_bytes: int, members: int = 1) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for i in range(members):
            with z.open(f"series/{i:04d}.dcm", "w") as f:
                for _ in range(n_bytes // (1 << 20)):
                    f.write(bytes(1 << 20))
    return buf.getvalue()


def test_zip_unpack_cap_follows_max_upload(tmp_path: Path) -> None:
    """A small zip that unpacks to far more than --max-upload-mb is refused before it is unpacked."""
    bomb = _zip_of_zeros(64 << 20)  # 64 MiB of zeros: a ~64 kB zip
    assert len(bomb) < 100_000
    work = tmp_path / "work"
    with live_server(work, max_upload_bytes=1 << 20) as url:  # --max-upload-mb 1
        code, body, _ = _req(f"{url}/api/upload?name=series.zip", bomb)
        assert code == 400 and b"too large when unpacked" in body and b"--max-upload-mb" in body, body
    assert not list((work / "studies").iterdir())


def test_zip_counted_while_unpacking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cap holds while unpacking, whatever the zip's directory declares: unpacking stops at the cap."""
    from kidneyseg.reporting import server

    monkeypatch.setattr(server, "_declared_size", lambda members: 0)  # a directory that lies about the sizes
    zpath = tmp_path / "series.zip"
    zpath.write_bytes(_zip_of_zeros(3 << 20, members=4))  # 12 MiB in 4 members
    viewer = server.Viewer(tmp_path / "work", max_upload_bytes=5 << 20)
    dest = tmp_path / "work" / "studies" / "x" / "dicom"
    with pytest.raises(InputError, match="too large when unpacked"):
        viewer._unzip(zpath, dest)
    written = sum(p.stat().st_size for p in dest.iterdir())
    assert written <= 5 << 20, written


def test_zip_member_names(tmp_path: Path) -> None:
    from kidneyseg.reporting.server import Viewer

    viewer = Viewer(tmp_path / "work")
    for name in ("../x.dcm", "/abs.dcm", "a/../../x.dcm", "..\\x.dcm", "C:/x.dcm"):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(name, b"x")
        zpath = tmp_path / "m.zip"
        zpath.write_bytes(buf.getvalue())
        with pytest.raises(InputError, match="leaves the folder"):
            viewer._unzip(zpath, tmp_path / "work" / "studies" / "y")


def test_studies_are_bounded_lru(tmp_path: Path, nifti_bytes: bytes) -> None:
    """Opening one study more than max_studies closes the least recently used (a running one last)."""
    from kidneyseg.reporting.server import Viewer

    viewer = Viewer(tmp_path / "work", max_studies=2)

    def open_one():  # type: ignore[no-untyped-def]
        sid, folder = viewer.new_folder()
        (folder / "ct.nii.gz").write_bytes(nifti_bytes)
        return viewer.open_file(folder / "ct.nii.gz", sid, folder)

    a, b = open_one(), open_one()
    viewer.get(a.id)  # a is now the most recent
    c = open_one()
    assert list(viewer.studies) == [a.id, c.id]  # b, least recently used, closed
    a.job.state = "running"
    d = open_one()
    assert list(viewer.studies) == [a.id, d.id]  # c closed, not the running a
    assert (b.folder / "ct.nii.gz").is_file()  # its files stay
    with pytest.raises(KeyError):
        viewer.get(b.id)
    with pytest.raises(InputError):
        Viewer(tmp_path / "work", max_studies=0)


def test_evicted_study_is_404(tmp_path: Path, nifti_bytes: bytes) -> None:
    with live_server(tmp_path / "work", max_studies=1) as url:
        first = json.loads(_req(f"{url}/api/upload?name=ct.nii.gz", nifti_bytes)[1])["id"]
        assert _req(f"{url}/api/upload?name=ct.nii.gz", nifti_bytes)[0] == 200
        code, body, _ = _req(f"{url}/api/studies/{first}")
        assert code == 404 and b"most recent" in body


def test_default_model_without_model_option(tmp_path: Path, nifti_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --model, 'Run prediction' uses the built-in default of the study's modality (CT here: air in HU)."""
    import time
    from types import SimpleNamespace

    from kidneyseg.default_models import default_model_dir
    from kidneyseg.reporting import server

    used: list[Path] = []

    def fake_load(self, model_dir):  # type: ignore[no-untyped-def]
        used.append(model_dir)

        class Stub:
            def predict_case(self, case):  # type: ignore[no-untyped-def]
                label = np.zeros(case.shape, np.uint8)
                label[20:30, 20:30, 10:20] = 1
                return SimpleNamespace(label=label, warnings=[])

        return Stub()

    monkeypatch.setattr(server.Viewer, "_load_predictor", fake_load)
    with live_server(tmp_path / "work") as url:
        config = json.loads(_req(f"{url}/api/config")[1])
        assert config["model"] is None and config["default_models"] is True
        sid = json.loads(_req(f"{url}/api/upload?name=ct.nii.gz", nifti_bytes)[1])["id"]
        for query, expected in (("", "ct"), ("?modality=mr", "mr")):
            code, body, _ = _req(f"{url}/api/studies/{sid}/predict{query}", b"")
            assert code == 200, body
            deadline = time.monotonic() + 30
            while (info := json.loads(_req(f"{url}/api/studies/{sid}")[1]))["job"]["state"] not in ("done", "error"):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert info["job"]["state"] == "done", info["job"]
            assert used[-1] == default_model_dir(expected)
            assert info["volumes"]["model"] == str(default_model_dir(expected))


def test_default_model_predicts_for_real(tmp_path: Path, nifti_bytes: bytes) -> None:
    """The built-in CT model itself runs on an upload (no stub): a label map on the input grid."""
    from kidneyseg.default_models import default_model_dir
    from kidneyseg.reporting.server import Viewer

    viewer = Viewer(tmp_path / "work")
    sid, folder = viewer.new_folder()
    (folder / "ct.nii.gz").write_bytes(nifti_bytes)
    study = viewer.open_file(folder / "ct.nii.gz", sid, folder)
    viewer.predict(study)
    assert study.job.state == "done", study.job.message
    assert study.model_dir == default_model_dir("ct")
    assert study.label is not None and study.label.shape == study.case.shape


def test_serve_prints_the_real_port_and_token(tmp_path: Path) -> None:
    """`kidneyseg serve --port 0` prints http://127.0.0.1:PORT/?token=... with the port it listens on."""
    import re
    import subprocess
    import sys
    import threading

    proc = subprocess.Popen([sys.executable, "-m", "kidneyseg.cli", "serve", "--port", "0", "--workdir",
                             str(tmp_path / "work")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline() if proc.stdout else ""),
                                  daemon=True)
        reader.start()
        reader.join(120)
        assert lines and lines[0], (proc.poll(), proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        m = re.search(r"http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_\-]{20,})", lines[0])
        assert m, lines[0]
        port, token = int(m.group(1)), m.group(2)
        assert port != 0
        code, body, _ = _req(f"http://127.0.0.1:{port}/api/config", token=token)
        assert code == 200 and json.loads(body)["default_models"] is True
        assert _req(f"http://127.0.0.1:{port}/api/config", token=TOKEN)[0] == 403
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
