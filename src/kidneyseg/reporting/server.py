"""The local web viewer behind ``kidneyseg serve`` (FastAPI; the page is plain HTML/JS in ``static/``).

What it does
------------
* Open a study from the working folder's ``inbox/`` or upload one (NIfTI, NRRD,
  MHA, PNG/JPEG, or a zip of one DICOM series).
* Run the model (``--model``) on it in a background thread, with progress.
* Show the study in NiiVue (``static/niivue/niivue.umd.js``, BSD-2-Clause, shipped in the
  package; ``static/kviewer.js`` drives it): three planes and a 3D render, window/level with CT
  presets, zoom and pan, crosshair in world mm, the label map as an overlay with an opacity slider
  and per-label toggles, and the uncertainty map (when the prediction has one) as a second overlay.
  NiiVue loads the volumes as uncompressed NIfTI from ``/api/studies/{id}/nifti/{what}.nii``,
  same origin, so the token cookie goes with them.
* Serve slices in radiological display order (the same code as the report:
  :func:`kidneyseg.reporting.overlay.display_slice` on the RAS volume), with
  the label map (``/slice``, for scripts).
* Give the volumes (:func:`kidneyseg.reporting.volumes.measure`: with each structure's QC score and
  flag and each tumour's RENAL parts; also written as ``NAME_volumes.json`` in the study's folder), the
  label map on the input grid and the HTML report (with the viewer embedded, for volumes) as downloads.
* Show a follow-up comparison: ``NAME_compare.json`` (a ``compare.json`` of ``kidneyseg compare``) beside
  ``NAME.nii.gz`` in the inbox is opened with it and shown in the structures panel and the report.

Safety
------
* The CLI binds to 127.0.0.1 unless told otherwise.
* Every request needs the per-start token (``secrets.token_urlsafe``) that the
  command prints in its URL (``http://127.0.0.1:PORT/?token=...``, as Jupyter
  does): given once as ``?token=``, it is kept in an HttpOnly, SameSite=Strict
  cookie, so the page's own requests carry it; scripts may send it in the
  ``X-Kidneyseg-Token`` header.  ``Host`` must name the bound address and port
  (127.0.0.1, localhost, [::1] or the ``--host``) and ``Origin``, when sent,
  this server: other requests get 403, so DNS rebinding and cross-origin pages
  cannot drive the viewer.
* Uploads larger than ``max_upload_bytes`` are refused (413) while streaming;
  a zip is unpacked member by member, counting the bytes written, and refused
  as soon as it passes the same limit; members whose names leave the folder
  are refused.
* Detached headers (``.mhd``, ``.nhdr``, NRRD ``data file``) may name data only
  inside the study's folder (:func:`kidneyseg.io.headers.check_data_files_inside`).
* File names must be plain names (no folders, no ``..``, no hidden files, a
  known suffix); everything is written under ``workdir/studies/<id>/`` and each
  path is checked to lie inside ``workdir`` before it is written.
* At most ``max_studies`` studies are held in memory; opening one more closes
  the least recently used (its files stay in ``workdir/studies/<id>/``).

API (JSON unless said)
----------------------
``GET /`` page; ``GET /api/config``; ``GET /api/inbox``; ``POST /api/open?name=``;
``POST /api/upload?name=`` (raw body = the file); ``GET /api/studies/{id}``;
``GET /api/studies/{id}/slice?plane=&index=`` (binary: rows*cols grey bytes then
rows*cols label bytes; headers ``X-Rows``, ``X-Cols``, ``X-Row-Mm``, ``X-Col-Mm``);
``POST /api/studies/{id}/predict?modality=`` (``modality``: which built-in default model, when the
server has no ``--model``; guessed from the study when absent); ``GET /api/studies/{id}/volumes``;
``GET /api/studies/{id}/label`` (download); ``GET /api/studies/{id}/report`` (download);
``GET /api/studies/{id}/nifti/image.nii``, ``.../nifti/label.nii``, ``.../nifti/uncertainty.nii``
(NIfTI-1 bytes for NiiVue: the image as int16 when its values are integers in range, else float32;
the label map uint8; the uncertainty float32 0..1; 409 while absent); ``GET /static/niivue/niivue.umd.js``.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time
import ipaddress
import logging
import re
import secrets
import shutil
import threading
import uuid
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from kidneyseg.case import Case
from kidneyseg.default_models import MODALITIES, default_model_dir, guess_default_modality
from kidneyseg.errors import InputError, KidneysegError
from kidneyseg.io import IMAGE_SUFFIXES
from kidneyseg.io.headers import check_data_files_inside

log = logging.getLogger("kidneyseg.serve")

STATIC = Path(__file__).with_name("static")
DEFAULT_MAX_UPLOAD_BYTES = 1024 * 1024 * 1024  # 1 GiB
#: Studies held in memory at once (``--max-studies``); one more closes the least recently used.
DEFAULT_MAX_STUDIES = 8
#: Most files in an uploaded zip (a DICOM series has one per slice).
MAX_ZIP_MEMBERS = 20_000
#: Header that carries the token for clients other than the page (the page keeps it in a cookie).
TOKEN_HEADER = "x-kidneyseg-token"
#: Names that always mean this machine in ``Host`` and ``Origin``.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
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
    model_dir: Path | None = None  # the model that predicted ``label``
    window: tuple[float, float] = (0.0, 1.0)  # the display window of ``grey`` (HU for CT)
    modality: str | None = None  # the case's, else guessed from the intensities (a volume with air in HU: ct)
    uncertainty: np.ndarray | None = None  # float32 0..1 on the input grid, when the prediction gave one
    comparison: dict[str, Any] | None = None  # NAME_compare.json from the inbox (kidneyseg compare's compare.json)
    niftis: dict[str, Path] = field(default_factory=dict)  # what NiiVue loads, written on first request
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
    """The server's state: working folder, model, studies.  Used by :func:`create_app`.

    ``model_dir``: the model of 'Run prediction'; without one, the built-in
    default model of the study's modality is used
    (:func:`kidneyseg.default_models.default_model_dir`).  ``max_upload_bytes``
    bounds both an upload and what a zip unpacks to.  ``max_studies``: studies
    held in memory; opening one more closes the least recently used one.
    ``uncertainty``: ask the predictor for its uncertainty map (``predict_case(uncertainty=True)``,
    when it takes that argument), shown as a second overlay.  ``qc``: without the map, ask for the
    uncertainty around the structures only (``uncertainty="structures"``), enough for the QC score and
    flag of every structure (:mod:`kidneyseg.reporting.qc`).
    """

    def __init__(self, workdir: Path, model_dir: Path | None = None, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
                 task: str | None = None, max_studies: int = DEFAULT_MAX_STUDIES, uncertainty: bool = False,
                 qc: bool = True) -> None:
        if int(max_studies) < 1:
            raise InputError("max_studies must be at least 1", found=max_studies, expected=">= 1")
        if int(max_upload_bytes) < 1:
            raise InputError("max_upload_bytes must be positive", found=max_upload_bytes, expected="> 0")
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "inbox").mkdir(exist_ok=True)
        (self.workdir / "studies").mkdir(exist_ok=True)
        self.model_dir = Path(model_dir).resolve() if model_dir else None
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_studies = int(max_studies)
        self.task_name = task
        self.uncertainty = bool(uncertainty)
        self.qc = bool(qc)
        self.studies: OrderedDict[str, Study] = OrderedDict()  # least recently used first
        self._studies_lock = threading.Lock()
        self._predictors: dict[Path, Any] = {}
        self._predict_lock = threading.Lock()

    # ------------------------------------------------------------------ studies
    def task(self, study: Study | None = None):
        import json

        from kidneyseg.labels import get_task

        name = self.task_name
        model_dir = study.model_dir if study is not None and study.model_dir is not None else self.model_dir
        if name is None and model_dir is not None and (model_dir / "model.json").is_file():
            name = json.loads((model_dir / "model.json").read_text()).get("task")
        if name is None:
            name = "openkidney-us" if study is not None and study.case.modality == "us" else "kits23"
        return get_task(name)

    def new_folder(self) -> tuple[str, Path]:
        sid = uuid.uuid4().hex[:12]
        folder = inside(self.workdir, self.workdir / "studies" / sid)
        folder.mkdir(parents=True)
        return sid, folder

    def open_file(self, src: Path, sid: str, folder: Path) -> Study:
        """Read an image already inside ``folder`` (or a zip of a DICOM series) into a study.

        A detached header (``.mhd``, ``.nhdr``, NRRD ``data file``) must name
        data files inside ``folder`` only; others raise :class:`InputError`.
        """
        from kidneyseg import io
        from kidneyseg.reporting import overlay

        path = src
        if src.name.lower().endswith(".zip"):
            path = self._unzip(src, folder / "dicom")
        else:
            check_data_files_inside(src, folder)
        case = io.read(path)
        if case.image is None:
            raise InputError("no image in the file", path=src)
        modality = overlay.shown_modality(case)
        if case.ndim == 3:
            image, _, spacing = overlay.ras_arrays(case)
            if image is None:  # case.image checked above; reorienting keeps it
                raise InputError("no image in the file", path=src)
            window = overlay.display_window(image, modality)
        else:
            image, spacing = case.image, case.spacing
            window = overlay.display_window(image, modality)
        grey = overlay.to_grey(image, window)
        study = Study(sid, folder, case, np.ascontiguousarray(grey), tuple(spacing), window=window,
                      modality=modality)
        self.add(study)
        log.info("opened study %s from %s: shape %s", sid, src.name, case.shape)
        return study

    def add(self, study: Study) -> None:
        """Hold ``study`` (most recently used); close the least recently used beyond ``max_studies``.

        A study whose prediction is running is closed only when every other
        held study is running too.  Closed studies leave memory; their files
        stay in the working folder.
        """
        with self._studies_lock:
            self.studies[study.id] = study
            self.studies.move_to_end(study.id)
            while len(self.studies) > self.max_studies:
                idle = [sid for sid, s in self.studies.items() if sid != study.id and s.job.state != "running"]
                victim = idle[0] if idle else next(iter(self.studies))
                del self.studies[victim]
                log.info("closed study %s (the viewer holds at most %d)", victim, self.max_studies)

    def _unzip(self, zpath: Path, dest: Path) -> Path:
        """Unpack the files of ``zpath`` into ``dest`` as ``000000.dcm``, ... counting bytes as they are written.

        Refused (:class:`InputError`): a member name that leaves the folder
        (absolute, ``..``, drive letters), more than :data:`MAX_ZIP_MEMBERS`
        files, and more than ``max_upload_bytes`` unpacked, whether declared in
        the zip's directory or found while unpacking (a zip bomb is stopped at
        the limit, not after).
        """
        limit = self.max_upload_bytes
        dest = inside(self.workdir, dest)
        dest.mkdir(parents=True, exist_ok=True)
        try:
            zf = zipfile.ZipFile(zpath)
        except zipfile.BadZipFile as exc:
            raise InputError("not a valid zip file", path=zpath.name, found=str(exc)) from exc

        def too_large(found: str) -> InputError:
            return InputError("zip too large when unpacked", path=zpath.name, found=found,
                              expected=f"at most {limit} bytes (--max-upload-mb)",
                              fix="upload fewer files, or start the viewer with a larger --max-upload-mb")

        with zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if len(members) > MAX_ZIP_MEMBERS:
                raise InputError("too many files in the zip", path=zpath.name, found=len(members),
                                 expected=f"at most {MAX_ZIP_MEMBERS}", fix="zip one DICOM series")
            for m in members:
                name = m.filename.replace("\\", "/")
                if name.startswith("/") or ".." in name.split("/") or ":" in name:
                    raise InputError("zip member name leaves the folder", path=zpath.name, found=m.filename,
                                     expected="relative names without '..'", fix="zip the DICOM folder itself")
            declared = _declared_size(members)
            if declared > limit:
                raise too_large(f"{declared} bytes declared")
            written = 0
            try:
                for n, m in enumerate(members):
                    if Path(m.filename.replace("\\", "/")).name.startswith("."):
                        continue
                    target = inside(dest, dest / f"{n:06d}.dcm")
                    with zf.open(m) as fi, target.open("wb") as fo:
                        while chunk := fi.read(1024 * 1024):
                            written += len(chunk)
                            if written > limit:
                                raise too_large(f"more than {limit} bytes while unpacking")
                            fo.write(chunk)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as exc:
                raise InputError("cannot unpack the zip", path=zpath.name, found=f"{type(exc).__name__}: {exc}",
                                 expected="a zip of one DICOM series (stored or deflated)",
                                 fix="zip the DICOM folder again") from exc
        return dest

    def discard(self, sid: str) -> None:
        """Stop holding study ``sid`` (if held)."""
        with self._studies_lock:
            self.studies.pop(sid, None)

    def get(self, sid: str) -> Study:
        """The study ``sid`` (now the most recently used); :class:`KeyError` when it is not held."""
        with self._studies_lock:
            if sid not in self.studies:
                raise KeyError(sid)
            self.studies.move_to_end(sid)
            return self.studies[sid]

    # ------------------------------------------------------------------ prediction
    def model_for(self, study: Study, modality: str | None = None) -> Path:
        """The model folder that predicts ``study``: ``--model``, else the built-in default of its modality.

        ``modality`` (``ct``, ``mr``, ``us``) picks the default; without it the
        study's modality is used (DICOM), else a 2D image is taken for
        ultrasound and a volume with air (0.5th percentile below
        ``default_models.HU_AIR_THRESHOLD``) for CT (``default_models.guess_default_modality``, the rule
        ``kidneyseg predict`` uses); other volumes raise :class:`InputError`.
        """
        if self.model_dir is not None:
            return self.model_dir
        if modality is not None and modality not in MODALITIES:
            raise InputError("unknown modality", found=repr(modality), expected=" or ".join(MODALITIES),
                             fix="choose the modality in the page")
        chosen = modality
        if chosen is None:
            g = guess_default_modality(study.case)
            if g.modality is None:
                raise InputError("cannot tell the modality of the study for the default model",
                                 path=study.case.name, found=f"no DICOM Modality, 0.5th percentile {g.low:.0f}",
                                 expected="a DICOM series, a CT in HU, or a modality chosen in the page",
                                 fix="choose the modality (CT, MR, US) next to 'Run prediction'")
            chosen = g.modality
        return default_model_dir(str(chosen))

    def _load_predictor(self, model_dir: Path):
        if model_dir not in self._predictors:
            from kidneyseg.inference import Predictor

            self._predictors[model_dir] = Predictor(model_dir)
        return self._predictors[model_dir]

    def predict(self, study: Study, modality: str | None = None) -> None:
        """Run the model on the study (blocking; call from a thread); updates ``study.job``."""
        from kidneyseg import io
        from kidneyseg.reporting import overlay
        from kidneyseg.reporting.volumes import measure

        job = study.job
        try:
            job.state, job.progress, job.message = "running", 0.05, "loading the model"
            model_dir = self.model_for(study, modality)
            with self._predict_lock:
                predictor = self._load_predictor(model_dir)
                job.progress, job.message = 0.15, "predicting"

                def progress(fraction: float, message: str = "predicting") -> None:
                    job.progress = 0.15 + 0.7 * max(0.0, min(1.0, float(fraction)))
                    job.message = message

                mode: bool | str = True if self.uncertainty else ("structures" if self.qc else False)
                label, warnings, unc, unc_obj = _call_predict(predictor, study.case, progress, uncertainty=mode)
                if not self.uncertainty:
                    unc = None  # the structures' box only: for QC, not an overlay
            label = np.asarray(label).astype(np.uint8)
            if label.shape != study.case.shape:
                raise InputError("the prediction is not on the input grid", found=label.shape,
                                 expected=study.case.shape)
            study.model_dir = model_dir
            job.progress, job.message = 0.88, "writing the label map"
            suffix = ".png" if study.case.ndim == 2 else ".nii.gz"
            out = inside(self.workdir, study.folder / f"{study.case.name}_label{suffix}")
            io.write(label, out, like=study.case, is_label=True)
            job.progress, job.message = 0.94, "measuring volumes"
            vols = measure(label, study.case.affine, labels=self.task(study).labels, name=study.case.name,
                           uncertainty=unc_obj if self.qc and hasattr(unc_obj, "box") else None)
            vols["warnings"] = warnings  # shown above the volumes table (e.g. post-processing kept little)
            vols["model"] = str(model_dir)
            from kidneyseg.reporting.volumes import write_volumes_json

            write_volumes_json(vols, inside(self.workdir, study.folder / f"{study.case.name}_volumes.json"))
            if study.case.ndim == 3:
                _, (lab_ras,), _ = overlay.ras_arrays(study.case, label)
            else:
                lab_ras = label
            with study.lock:
                study.label, study.label_ras, study.label_path, study.volumes = label, lab_ras, out, vols
                study.uncertainty = unc
                study.niftis.pop("label", None)
                study.niftis.pop("uncertainty", None)
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
        cmp_path = study.folder / f"{study.case.name}_compare.json"
        return write_report(ReportInputs(study.case, study.label, self.task(study),
                                         model_dir=study.model_dir or self.model_dir,
                                         seg_source=str(study.label_path), uncertainty=study.uncertainty,
                                         saved_volumes=study.volumes, comparison=study.comparison,
                                         comparison_source=cmp_path.name if study.comparison else None),
                            out, viewer=study.is_3d)

    def attach_comparison(self, study: Study, src: Path) -> None:
        """Copy ``src`` (a ``compare.json`` of ``kidneyseg compare``) into the study as ``NAME_compare.json``."""
        from kidneyseg.reporting.compare import read_comparison

        data = read_comparison(src, what="the comparison beside the study", shown=src.name,
                               fix="write it again with kidneyseg compare, or move it out of the inbox")
        data.pop("measures", None)  # both studies' full volumes: not shown, and large
        shutil.copyfile(src, inside(self.workdir, study.folder / f"{study.case.name}_compare.json"))
        study.comparison = data


def _call_predict(predictor, case: Case, progress, *, uncertainty: bool | str = False
                  ) -> tuple[np.ndarray, list[str], np.ndarray | None, Any]:
    """Label map, warnings, uncertainty map (or None) and the result's own ``uncertainty`` of
    ``predictor.predict_case(case)``.

    ``progress`` is passed when ``predict_case`` accepts it, ``uncertainty`` (True, ``"map"`` or
    ``"structures"``) when asked for and accepted.  The map is :func:`uncertainty_map` of the result's
    ``uncertainty``.
    """
    import inspect

    params = inspect.signature(predictor.predict_case).parameters
    kwargs: dict[str, Any] = {}
    for name in ("progress", "callback", "progress_callback"):
        if name in params:
            kwargs[name] = progress
            break
    if uncertainty and "uncertainty" in params:
        kwargs["uncertainty"] = uncertainty
    result = predictor.predict_case(case, **kwargs)
    # Predictor.predict_case returns a Prediction (label on the input grid in ``.label``, ``.warnings``)
    unc = getattr(result, "uncertainty", None)
    return (np.asarray(getattr(result, "label", result)), [str(w) for w in getattr(result, "warnings", None) or []],
            uncertainty_map(unc, case.shape) if uncertainty else None, unc)


def uncertainty_map(unc: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """A float32 0..1 map on the grid ``shape`` from what a prediction gives as its uncertainty, else None.

    Accepted: an array of ``shape``, or an object with ``full_map()`` returning one (the
    :class:`~kidneyseg.inference.uncertainty.Uncertainty` of ``Prediction.uncertainty``).  Anything else
    (absent, another shape) gives None: the viewer then shows no uncertainty overlay.
    """
    if unc is None:
        return None
    arr = unc.full_map() if hasattr(unc, "full_map") else unc
    try:
        arr = np.asarray(arr, dtype=np.float32)
    except (TypeError, ValueError):
        return None
    if arr.shape != tuple(shape):
        log.warning("uncertainty map of shape %s is not on the input grid %s: not shown", arr.shape, shape)
        return None
    return np.clip(np.nan_to_num(arr, nan=0.0), 0.0, 1.0)


def viewer_nifti(arr: np.ndarray, affine: np.ndarray, *, kind: str) -> Any:
    """A ``nibabel.Nifti1Image`` of ``arr`` for NiiVue (world = RAS mm of ``affine``).

    ``kind``: ``image`` (int16 when every value is an integer in the int16 range, else float32),
    ``label`` (uint8) or ``uncertainty`` (float32).  2D arrays ``[row, col]`` become one slice
    ``[col, row, 0]`` whose affine puts row 0 at the top and column 0 at the left of NiiVue's axial view
    (radiological: screen left is +x, screen top +y), so the image shows as stored.
    """
    import nibabel as nib

    a = np.asarray(arr)
    if a.ndim == 2:
        sr = float(np.linalg.norm(np.asarray(affine)[:3, 0])) or 1.0
        sc = float(np.linalg.norm(np.asarray(affine)[:3, 1])) or 1.0
        a = a.T[:, :, None]
        affine = np.diag([-sc, -sr, 1.0, 1.0])
    if kind == "label":
        a = a.astype(np.uint8)
    elif kind == "uncertainty":
        a = a.astype(np.float32)
    else:
        a = compact_image(a)
    img = nib.Nifti1Image(np.asarray(a), np.asarray(affine, dtype=float))
    img.header.set_xyzt_units("mm")
    return img


def compact_image(a: np.ndarray) -> np.ndarray:
    """``a`` as int16 when that loses nothing (CT in HU), else float32."""
    if a.dtype.kind in "iub" and a.size and -32768 <= int(a.min()) and int(a.max()) <= 32767:
        return a.astype(np.int16)
    f = a.astype(np.float32)
    if f.size and np.isfinite(f).all() and -32768 <= float(f.min()) and float(f.max()) <= 32767:
        step = max(1, f.size // 1_000_000)
        sample = f.ravel(order="K")[::step]
        if np.array_equal(sample, np.round(sample)) and np.array_equal(f, np.round(f)):
            return f.astype(np.int16)
    return f


def _declared_size(members: list[zipfile.ZipInfo]) -> int:
    """Unpacked bytes that a zip's directory declares for ``members`` (a first check; unpacking counts again)."""
    return sum(m.file_size for m in members)


def split_host(value: str) -> tuple[str, int | None] | None:
    """``(name, port)`` of a ``Host`` header value (``127.0.0.1:8000``, ``[::1]:8000``, ``localhost``); None if malformed."""
    value = value.strip()
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?|([^:\[\]/@\s]+)(?::(\d{1,5}))?", value)
    if not m:
        return None
    name = (m.group(1) or m.group(3)).lower()
    port = m.group(2) or m.group(4)
    return name, None if port is None else int(port)


class RequestGuard:
    """ASGI middleware: refuse (403) requests whose ``Host`` or ``Origin`` is not this server, or without the token.

    ``host``/``port``: the address the server is bound to.  Accepted names in
    ``Host`` and ``Origin``: :data:`LOOPBACK_NAMES` and ``host``; when ``host``
    is a wildcard (``0.0.0.0``, ``::``), any IP literal too (DNS rebinding
    needs a DNS name).  The port must be ``port``.  Starlette's
    ``TrustedHostMiddleware`` ignores the port and cannot parse ``[::1]:PORT``,
    and ``CORSMiddleware`` does not refuse simple cross-origin requests, hence
    this class.

    The token is accepted as ``?token=`` (then kept in an HttpOnly,
    SameSite=Strict cookie named ``kidneyseg-token-PORT``; ``GET /?token=``
    redirects to ``/`` so it leaves the address bar), as the cookie, or in the
    ``X-Kidneyseg-Token`` header.
    """

    def __init__(self, app: Any, *, host: str, port: int, token: str) -> None:
        self.app = app
        self.port = int(port)
        self.token = token.encode()
        bound = host.strip("[]").lower()
        self.names = frozenset((*LOOPBACK_NAMES, bound))
        self.any_ip = bound in ("0.0.0.0", "::", "")
        self.cookie = f"kidneyseg-token-{self.port}"

    def _name_ok(self, value: str | None) -> bool:
        parsed = split_host(value) if value else None
        if parsed is None:
            return False
        name, port = parsed
        if port != self.port and not (port is None and self.port == 80):
            return False
        if name in self.names:
            return True
        if self.any_ip:
            try:
                ipaddress.ip_address(name)
                return True
            except ValueError:
                return False
        return False

    def _origin_ok(self, origin: str) -> bool:
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        return parts.scheme == "http" and not parts.path.strip("/") and self._name_ok(parts.netloc)

    def _same(self, given: str | None) -> bool:
        return bool(given) and secrets.compare_digest(str(given).encode("utf-8", "replace"), self.token)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for k, v in scope.get("headers", []):
            headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
        if not self._name_ok(headers.get("host")):
            await _refuse(scope, send, f"Host {headers.get('host')!r} is not this viewer: open the address that "
                          "`kidneyseg serve` printed")
            return
        origin = headers.get("origin")
        if origin is not None and not self._origin_ok(origin):
            await _refuse(scope, send, f"requests from {origin!r} are refused: the viewer answers its own page only")
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        from_query = self._same((query.get("token") or [None])[0])
        cookie_value = None
        try:
            jar = SimpleCookie(headers.get("cookie", ""))
            cookie_value = jar[self.cookie].value if self.cookie in jar else None
        except CookieError:
            pass
        if not (from_query or self._same(cookie_value) or self._same(headers.get(TOKEN_HEADER))):
            await _refuse(scope, send, "missing or wrong token: open the address that `kidneyseg serve` printed "
                          "(it ends in ?token=...)")
            return
        if not from_query or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        set_cookie = (f"{self.cookie}={self.token.decode()}; Path=/; HttpOnly; SameSite=Strict").encode("latin-1")
        if scope["method"] == "GET" and scope["path"] == "/":
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", b"/"), (b"set-cookie", set_cookie), (b"content-length", b"0"),
                                    (b"cache-control", b"no-store")]})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cookie(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", set_cookie)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


async def _refuse(scope: dict[str, Any], send: Any, detail: str) -> None:
    """Answer 403 with ``{"detail": ...}`` (a websocket is closed with code 1008, policy violation)."""
    import json

    log.warning("refused %s %s: %s", scope.get("method", "WEBSOCKET"), scope.get("path"), detail)
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(viewer: Viewer, *, port: int, host: str = "127.0.0.1", token: str | None = None):
    """The FastAPI application serving the page and the API of ``viewer`` on ``host:port``.

    Every request goes through :class:`RequestGuard` with ``token`` (a new
    ``secrets.token_urlsafe(32)`` when None; it is ``app.state.token``).
    ``port`` is the real port the server listens on (not 0).
    """
    from kidneyseg._optional import require

    require("fastapi", "kidneyseg serve")
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

    if not 0 < int(port) <= 65535:
        raise InputError("the viewer needs the port it listens on", found=port, expected="1..65535",
                         fix="bind the socket first and pass its port")
    app = FastAPI(title="kidneyseg viewer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.token = token or secrets.token_urlsafe(32)
    app.add_middleware(RequestGuard, host=host, port=int(port), token=app.state.token)

    def study_or_404(sid: str) -> Study:
        try:
            return viewer.get(sid)
        except KeyError:
            raise HTTPException(404, f"no study {sid!r} (the viewer holds the {viewer.max_studies} most recent "
                                     "studies: open it again)") from None

    @app.exception_handler(KidneysegError)
    async def _kerr(_: Request, exc: KidneysegError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse((STATIC / "viewer.html").read_text(encoding="utf-8"))

    @app.get("/static/{name}")
    def static(name: str) -> FileResponse:
        if name not in ("viewer.js", "viewer.css", "kviewer.js"):
            raise HTTPException(404, "not found")
        media = "text/javascript" if name.endswith(".js") else "text/css"
        return FileResponse(STATIC / name, media_type=media)

    @app.get("/static/niivue/{name}")
    def static_niivue(name: str) -> FileResponse:
        if name not in ("niivue.umd.js", "LICENSE", "SOURCE.txt"):
            raise HTTPException(404, "not found")
        media = "text/javascript" if name.endswith(".js") else "text/plain"
        return FileResponse(STATIC / "niivue" / name, media_type=media)

    @app.get("/api/config")
    def config() -> dict[str, Any]:
        t = viewer.task()
        return {"model": str(viewer.model_dir) if viewer.model_dir else None,
                "default_models": viewer.model_dir is None, "modalities": list(MODALITIES),
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
        inbox_dir = (viewer.workdir / "inbox").resolve()
        data_files = [] if name.lower().endswith(".zip") else check_data_files_inside(src, inbox_dir)
        sid, folder = viewer.new_folder()
        try:
            dst = inside(viewer.workdir, folder / name)
            shutil.copyfile(src, dst)
            for f in data_files:  # a detached header's data, beside it as in the inbox
                target = inside(folder, folder / f.relative_to(inbox_dir))
                if f.is_file() and target != dst:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, target)
            study = viewer.open_file(dst, sid, folder)
            from kidneyseg.io import stem_of

            beside = inbox_dir / f"{stem_of(src)}_compare.json"
            if beside.is_file():
                viewer.attach_comparison(study, beside)
            return info(study.id)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            viewer.discard(sid)
            raise

    async def drain(request: Request) -> None:
        """Read (and drop) the body of a request refused before its body was read, up to the upload limit: a
        server that answers and closes while the client is still sending makes the client's TCP stack reset
        the connection, and the client may never read the answer (seen as ConnectionResetError in tests)."""
        n = 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > viewer.max_upload_bytes:
                return

    @app.post("/api/upload")
    async def upload(request: Request, name: str) -> dict[str, Any]:
        try:
            check_name(name)
        except InputError:
            await drain(request)
            raise
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
            viewer.discard(sid)
            raise

    @app.get("/api/studies/{sid}")
    def info(sid: str) -> dict[str, Any]:
        s = study_or_404(sid)
        planes = ({"axial": int(s.grey.shape[2]), "coronal": int(s.grey.shape[1]), "sagittal": int(s.grey.shape[0])}
                  if s.is_3d else {"image": 1})
        return {"id": s.id, "name": s.case.name, "shape": list(s.case.shape),
                "spacing_mm": [round(x, 4) for x in s.case.spacing], "modality": s.case.modality,
                "planes": planes, "has_label": s.label is not None, "job": s.job.as_dict(),
                "volumes": s.volumes, "modality_shown": s.modality, "has_uncertainty": s.uncertainty is not None,
                "comparison": s.comparison,
                "window": {"low": round(s.window[0], 3), "high": round(s.window[1], 3), "modality": s.modality}}

    @app.get("/api/studies/{sid}/nifti/{what}.nii")
    def nifti(sid: str, what: str) -> FileResponse:
        import nibabel as nib

        s = study_or_404(sid)
        if what not in ("image", "label", "uncertainty"):
            raise HTTPException(404, "not found: image.nii, label.nii or uncertainty.nii")
        with s.lock:
            path = s.niftis.get(what)
            if path is None or not path.is_file():
                arr = {"image": s.case.image, "label": s.label, "uncertainty": s.uncertainty}[what]
                if arr is None:
                    raise HTTPException(409, f"no {what} map for this study" + (
                        " yet: run the prediction first" if what == "label" else ""))
                path = inside(viewer.workdir, s.folder / f"viewer_{what}.nii")
                tmp = inside(viewer.workdir, path.with_name(path.name + ".tmp.nii"))
                nib.save(viewer_nifti(arr, s.case.affine, kind=what), tmp)
                tmp.replace(path)
                s.niftis[what] = path
        return FileResponse(path, media_type="application/octet-stream", headers={"Cache-Control": "no-store"})

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
    def predict(sid: str, modality: str | None = None) -> dict[str, Any]:
        s = study_or_404(sid)
        if s.job.state == "running":
            return s.job.as_dict()
        viewer.model_for(s, modality or None)  # an unknown or unguessable modality: 400 now, not a failed job
        s.job = Job("running", 0.0, "queued")
        threading.Thread(target=viewer.predict, args=(s, modality or None), daemon=True,
                         name=f"predict-{sid}").start()
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
