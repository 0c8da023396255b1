"""The local web viewer behind ``kidneyseg serve`` (FastAPI; the page is plain HTML/JS in ``static/``).

What it does
------------
* Open a study from the working folder's ``inbox/`` or upload one (NIfTI, NRRD,
  MHA, PNG/JPEG, or a zip of one DICOM series).
* Run the model (``--model``) on it in a background thread, with progress.
* Serve slices in radiological display order (the same code as the report:
  :func:`kidneyseg.reporting.overlay.display_slice` on the RAS volume), with
  the label map, so the page draws the overlay with an opacity slider and
  per-label toggles.
* Give the volumes (:func:`kidneyseg.reporting.volumes.measure`), the label map
  on the input grid and the HTML report as downloads.

Safety
------
* The CLI binds to 127.0.0.1 unless told otherwise.
* Uploads larger than ``max_upload_bytes`` are refused (413) while streaming;
  zip members are checked for path traversal and total size.
* File names must be plain names (no folders, no ``..``, no hidden files, a
  known suffix); everything is written under ``workdir/studies/<id>/`` and each
  path is checked to lie inside ``workdir`` before it is written.

API (JSON unless said)
----------------------
``GET /`` page; ``GET /api/config``; ``GET /api/inbox``; ``POST /api/open?name=``;
``POST /api/upload?name=`` (raw body = the file); ``GET /api/studies/{id}``;
``GET /api/studies/{id}/slice?plane=&index=`` (binary: rows*cols grey bytes then
rows*cols label bytes; headers ``X-Rows``, ``X-Cols``, ``X-Row-Mm``, ``X-Col-Mm``);
``POST /api/studies/{id}/predict``; ``GET /api/studies/{id}/volumes``;
``GET /api/studies/{id}/label`` (download); ``GET /api/studies/{id}/report`` (download).
"""


import logging
import re
import shutil
import threading
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.case import Case
from kidneyseg.errors import InputError, KidneysegError
from kidneyseg.io import IMAGE_SUFFIXES

log = logging.getLogger("kidneyseg.serve")

STATIC = Path(__file__).with_name("static")
DEFAULT_MAX_UPLOAD_BYTES = 1024 * 1024 * 1024  # 1 GiB
MAX_UNZIPPED_BYTES = 4 * 1024 * 1024 * 1024
#: What an upload may be: a file :func:`kidneyseg.io.read` reads, or a zip of one DICOM series.
ALLOWED_SUFFIXES = (*IMAGE_SUFFIXES, ".zip")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+()\- ]{0,199}$")


def check_name(name: str) -> str:
    """Return ``name`` if it is a safe plain file name with an allowed suffix, else raise :class:`InputError`.

    Refused: empty names, folders (``/`` or ``\\``), ``..``, names starting with
    a dot or a dash, characters outside letters, digits and ``._+()- ``, and
    unknown suffixes.
    """
    if not name or "/" in name or "\\" in name or ".." in name or "\x00" in name or not _NAME_RE.match(name):
        raise InputError("file name refused", found=repr(name),
                         expected="a plain file name (letters, digits, . _ + ( ) - and spaces; no folders, no '..')",
                         fix="rename the file")
    if not name.lower().endswith(ALLOWED_SUFFIXES):
        raise InputError("file type not supported", found=repr(name), expected=", ".join(ALLOWED_SUFFIXES),
                         fix="upload NIfTI, NRRD, MHA, PNG/JPEG, DICOM, or a zip of one DICOM series")
    return name


def inside(root: Path, path: Path) -> Path:
    """``path`` resolved, if it lies inside ``root`` (resolved); else raise :class:`InputError`."""
    r, p = root.resolve(), path.resolve()
    if p != r and r not in p.parents:
        raise InputError("path leaves the working folder", found=str(path), expected=f"inside {r}",
                         fix="use a plain file name")
    return p


@dataclass
class Job:
    """State of one prediction run: ``idle``, ``running``, ``done`` or ``error``; progress in [0, 1]."""

    state: str = "idle"
    progress: float = 0.0
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "progress": round(self.progress, 3), "message": self.message}


@dataclass
class Study:
    """One opened image and, once predicted, its label map, on the grid as read and in RAS display form."""

    id: str
    folder: Path
    case: Case
    grey: np.ndarray  # uint8, RAS [x, y, z] for volumes, [row, col] for 2D
    spacing: tuple[float, ...]  # mm per axis of ``grey``
    label: np.ndarray | None = None  # on the input grid
    label_ras: np.ndarray | None = None  # on the grid of ``grey``
    label_path: Path | None = None
    volumes: dict[str, Any] | None = None
    job: Job = field(default_factory=Job)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def is_3d(self) -> bool:
        return self.grey.ndim == 3


def _display(study: Study, arr: np.ndarray, plane: str, index: int) -> np.ndarray:
    from kidneyseg.reporting import overlay

    if not study.is_3d:
        return arr
    return overlay.display_slice(arr, plane, index)


class Viewer:
    """The server's state: working folder, model, studies.  Used by :func:`create_app`."""

    def __init__(self, workdir: Path, model_dir: Path | None = None, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
                 task: str | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "inbox").mkdir(exist_ok=True)
        (self.workdir / "studies").mkdir(exist_ok=True)
        self.model_dir = Path(model_dir).resolve() if model_dir else None
        self.max_upload_bytes = int(max_upload_bytes)
        self.task_name = task
        self.studies: dict[str, Study] = {}
        self._predictor: Any = None
        self._predict_lock = threading.Lock()

    # ------------------------------------------------------------------ studies
    def task(self, study: Study | None = None):
        import json

        from kidneyseg.labels import get_task

        name = self.task_name
        if name is None and self.model_dir is not None and (self.model_dir / "model.json").is_file():
            name = json.loads((self.model_dir / "model.json").read_text()).get("task")
        if name is None:
            name = "openkidney-us" if study is not None and study.case.modality == "us" else "kits23"
        return get_task(name)

    def new_folder(self) -> tuple[str, Path]:
        sid = uuid.uuid4().hex[:12]
        folder = inside(self.workdir, self.workdir / "studies" / sid)
        folder.mkdir(parents=True)
        return sid, folder

    def open_file(self, src: Path, sid: str, folder: Path) -> Study:
        """Read an image already inside ``folder`` (or a zip of a DICOM series) into a study."""
        from kidneyseg import io
        from kidneyseg.reporting import overlay

        path = src
        if src.name.lower().endswith(".zip"):
            path = self._unzip(src, folder / "dicom")
        case = io.read(path)
        if case.image is None:
            raise InputError("no image in the file", path=src)
        if case.ndim == 3:
            image, _, spacing = overlay.ras_arrays(case)
            assert image is not None  # case.image checked above; reorienting keeps it
            grey = overlay.to_grey(image, overlay.display_window(image, case.modality))
        else:
            grey = overlay.to_grey(case.image, overlay.display_window(case.image, case.modality))
            spacing = case.spacing
        study = Study(sid, folder, case, np.ascontiguousarray(grey), tuple(spacing))
        self.studies[sid] = study
        log.info("opened study %s from %s: shape %s", sid, src.name, case.shape)
        return study

    def _unzip(self, zpath: Path, dest: Path) -> Path:
        dest = inside(self.workdir, dest)
        dest.mkdir(parents=True, exist_ok=True)
        try:
            zf = zipfile.ZipFile(zpath)
        except zipfile.BadZipFile as exc:
            raise InputError("not a valid zip file", path=zpath.name, found=str(exc)) from exc
        with zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            total = sum(m.file_size for m in members)
            if total > MAX_UNZIPPED_BYTES:
                raise InputError("zip too large when unpacked", path=zpath.name, found=f"{total / 1e9:.1f} GB",
                                 expected=f"<= {MAX_UNZIPPED_BYTES / 1e9:.0f} GB")
            for n, m in enumerate(members):
                parts = Path(m.filename).parts
                if m.filename.startswith(("/", "\\")) or ".." in parts or ":" in m.filename:
                    raise InputError("zip member name leaves the folder", path=zpath.name, found=m.filename,
                                     expected="relative names without '..'", fix="zip the DICOM folder itself")
                if Path(m.filename).name.startswith("."):
                    continue
                target = inside(dest, dest / f"{n:06d}.dcm")
                with zf.open(m) as fi, target.open("wb") as fo:
                    shutil.copyfileobj(fi, fo)
        return dest

    def get(self, sid: str) -> Study:
        if sid not in self.studies:
            raise KeyError(sid)
        return self.studies[sid]

    # ------------------------------------------------------------------ prediction
    def _load_predictor(self):
        if self._predictor is None:
            from kidneyseg.inference import Predictor

            self._predictor = Predictor(self.model_dir)
        return self._predictor

    def predict(self, study: Study) -> None:
        """Run the model on the study (blocking; call from a thread); updates ``study.job``."""
        from kidneyseg import io
        from kidneyseg.reporting import overlay
        from kidneyseg.reporting.volumes import measure

        job = study.job
        try:
            job.state, job.progress, job.message = "running", 0.05, "loading the model"
            with self._predict_lock:
                predictor = self._load_predictor()
                job.progress, job.message = 0.15, "predicting"

                def progress(fraction: float, message: str = "predicting") -> None:
                    job.progress = 0.15 + 0.7 * max(0.0, min(1.0, float(fraction)))
                    job.message = message

                label, warnings = _call_predict(predictor, study.case, progress)
            label = np.asarray(label).astype(np.uint8)
            if label.shape != study.case.shape:
                raise InputError("the prediction is not on the input grid", found=label.shape,
                                 expected=study.case.shape)
            job.progress, job.message = 0.88, "writing the label map"
            suffix = ".png" if study.case.ndim == 2 else ".nii.gz"
            out = inside(self.workdir, study.folder / f"{study.case.name}_label{suffix}")
            io.write(label, out, like=study.case, is_label=True)
            job.progress, job.message = 0.94, "measuring volumes"
            vols = measure(label, study.case.affine, labels=self.task(study).labels, name=study.case.name)
            vols["warnings"] = warnings  # shown above the volumes table (e.g. post-processing kept little)
            if study.case.ndim == 3:
                _, (lab_ras,), _ = overlay.ras_arrays(study.case, label)
            else:
                lab_ras = label
            with study.lock:
                study.label, study.label_ras, study.label_path, study.volumes = label, lab_ras, out, vols
            job.state, job.progress, job.message = "done", 1.0, "done"
        except KidneysegError as exc:
            job.state, job.message = "error", str(exc)
        except Exception as exc:  # shown to the user in the page, logged with the traceback
            log.exception("prediction failed")
            job.state, job.message = "error", f"{type(exc).__name__}: {exc}"

    def report(self, study: Study) -> Path:
        from kidneyseg.reporting.html import ReportInputs, write_report

        if study.label is None:
            raise InputError("no label map yet", fix="run the prediction first")
        out = inside(self.workdir, study.folder / f"{study.case.name}_report.html")
        return write_report(ReportInputs(study.case, study.label, self.task(study), model_dir=self.model_dir,
                                         seg_source=str(study.label_path)), out)


def _call_predict(predictor, case: Case, progress) -> tuple[np.ndarray, list[str]]:
    """The label map and warnings of ``predictor.predict_case(case)``, passing ``progress`` when it accepts one."""
    import inspect

    params = inspect.signature(predictor.predict_case).parameters
    kwargs = {}
    for name in ("progress", "callback", "progress_callback"):
        if name in params:
            kwargs[name] = progress
            break
    result = predictor.predict_case(case, **kwargs)
    # Predictor.predict_case returns a Prediction (label on the input grid in ``.label``, ``.warnings``)
    return np.asarray(getattr(result, "label", result)), [str(w) for w in getattr(result, "warnings", None) or []]


def create_app(viewer: Viewer):
    """The FastAPI application serving the page and the API of ``viewer``."""
    from kidneyseg._optional import require

    require("fastapi", "kidneyseg serve")
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

    app = FastAPI(title="kidneyseg viewer", docs_url=None, redoc_url=None)

    def study_or_404(sid: str) -> Study:
        try:
            return viewer.get(sid)
        except KeyError:
            raise HTTPException(404, f"no study {sid!r}") from None

    @app.exception_handler(KidneysegError)
    async def _kerr(_: Request, exc: KidneysegError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse((STATIC / "viewer.html").read_text(encoding="utf-8"))

    @app.get("/static/{name}")
    def static(name: str) -> FileResponse:
        if name not in ("viewer.js", "viewer.css"):
            raise HTTPException(404, "not found")
        media = "text/javascript" if name.endswith(".js") else "text/css"
        return FileResponse(STATIC / name, media_type=media)

    @app.get("/api/config")
    def config() -> dict[str, Any]:
        t = viewer.task()
        return {"model": str(viewer.model_dir) if viewer.model_dir else None,
                "max_upload_bytes": viewer.max_upload_bytes, "task": t.name,
                "labels": {str(v): {"name": t.label_name(v), "color": list(t.colors.get(v, (255, 127, 14)))}
                           for v in t.foreground_labels}}

    @app.get("/api/inbox")
    def inbox() -> dict[str, list[str]]:
        files = sorted(p.name for p in (viewer.workdir / "inbox").iterdir()
                       if p.is_file() and p.name.lower().endswith(ALLOWED_SUFFIXES) and not p.name.startswith("."))
        return {"files": files}

    @app.post("/api/open")
    def open_inbox(name: str) -> dict[str, Any]:
        check_name(name)
        src = inside(viewer.workdir / "inbox", viewer.workdir / "inbox" / name)
        if not src.is_file():
            raise HTTPException(404, f"{name} is not in the inbox")
        sid, folder = viewer.new_folder()
        dst = inside(viewer.workdir, folder / name)
        shutil.copyfile(src, dst)
        return info(viewer.open_file(dst, sid, folder).id)

    @app.post("/api/upload")
    async def upload(request: Request, name: str) -> dict[str, Any]:
        check_name(name)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > viewer.max_upload_bytes:
            raise HTTPException(413, f"upload of {int(length)} bytes is over the limit of {viewer.max_upload_bytes}")
        sid, folder = viewer.new_folder()
        dst = inside(viewer.workdir, folder / name)
        size = 0
        try:
            with dst.open("wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > viewer.max_upload_bytes:
                        raise HTTPException(413, f"upload is over the limit of {viewer.max_upload_bytes} bytes")
                    f.write(chunk)
            if size == 0:
                raise InputError("empty upload", path=name, fix="choose a non-empty file")
            return info(viewer.open_file(dst, sid, folder).id)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            viewer.studies.pop(sid, None)
            raise

    @app.get("/api/studies/{sid}")
    def info(sid: str) -> dict[str, Any]:
        s = study_or_404(sid)
        planes = ({"axial": int(s.grey.shape[2]), "coronal": int(s.grey.shape[1]), "sagittal": int(s.grey.shape[0])}
                  if s.is_3d else {"image": 1})
        return {"id": s.id, "name": s.case.name, "shape": list(s.case.shape),
                "spacing_mm": [round(x, 4) for x in s.case.spacing], "modality": s.case.modality,
                "planes": planes, "has_label": s.label is not None, "job": s.job.as_dict(),
                "volumes": s.volumes}

    @app.get("/api/studies/{sid}/slice")
    def slice_(sid: str, plane: str = "axial", index: int = 0) -> Response:
        from kidneyseg.reporting import overlay

        s = study_or_404(sid)
        if s.is_3d:
            if plane not in overlay.PLANE_AXIS:
                raise HTTPException(400, f"plane must be one of {overlay.PLANES}")
            n = s.grey.shape[overlay.PLANE_AXIS[plane]]
            if not 0 <= index < n:
                raise HTTPException(400, f"index {index} outside 0..{n - 1}")
            row_mm, col_mm = overlay.slice_spacing(s.spacing, plane)
        else:
            row_mm, col_mm = s.spacing[0], s.spacing[1]
        g = _display(s, s.grey, plane, index)
        with s.lock:
            lab = s.label_ras
        lab2 = np.zeros_like(g) if lab is None else _display(s, lab, plane, index).astype(np.uint8)
        body = np.ascontiguousarray(g).tobytes() + np.ascontiguousarray(lab2).tobytes()
        return Response(body, media_type="application/octet-stream",
                        headers={"X-Rows": str(g.shape[0]), "X-Cols": str(g.shape[1]),
                                 "X-Row-Mm": f"{row_mm:.5g}", "X-Col-Mm": f"{col_mm:.5g}",
                                 "Cache-Control": "no-store"})

    @app.post("/api/studies/{sid}/predict")
    def predict(sid: str) -> dict[str, Any]:
        s = study_or_404(sid)
        if viewer.model_dir is None:
            raise HTTPException(409, "no model: start the server with --model DIR")
        if s.job.state == "running":
            return s.job.as_dict()
        s.job = Job("running", 0.0, "queued")
        threading.Thread(target=viewer.predict, args=(s,), daemon=True, name=f"predict-{sid}").start()
        return s.job.as_dict()

    @app.get("/api/studies/{sid}/volumes")
    def volumes(sid: str) -> dict[str, Any]:
        s = study_or_404(sid)
        if s.volumes is None:
            raise HTTPException(409, "no label map yet: run the prediction first")
        return s.volumes

    @app.get("/api/studies/{sid}/label")
    def label(sid: str) -> FileResponse:
        s = study_or_404(sid)
        if s.label_path is None:
            raise HTTPException(409, "no label map yet: run the prediction first")
        return FileResponse(s.label_path, filename=s.label_path.name, media_type="application/octet-stream")

    @app.get("/api/studies/{sid}/report")
    def report(sid: str) -> FileResponse:
        s = study_or_404(sid)
        if s.label is None:
            raise HTTPException(409, "no label map yet: run the prediction first")
        path = viewer.report(s)
        return FileResponse(path, filename=path.name, media_type="text/html")

    return app
