"""Writing a :class:`~kidneyseg.inference.predictor.Prediction`: label map, probabilities, volumes.

Files written into ``out_dir`` for a case called ``NAME``:

============================ ==========================================================
``NAME.nii.gz`` (or ``.nrrd``, label map on the input grid, uint8 (format from ``fmt``)
``.seg.nrrd``, ``.png``,
``_seg.dcm`` for dicom-seg)
``NAME_probabilities.npz``   with ``save_probabilities``: ``probabilities`` float16
                             ``(C, *input shape)``, ``label_values`` (C,), ``affine`` 4x4
``NAME_volumes.json``        :func:`kidneyseg.reporting.volumes.measure` (mL, mm; mm^2 in 2D); with the
                             prediction's uncertainty, ``qc`` per structure (:mod:`kidneyseg.reporting.qc`)
``NAME_uncertainty.nii.gz``  with ``save_uncertainty``: float32 normalised uncertainty (0..1) on the
                             input grid (:mod:`kidneyseg.inference.uncertainty`; 0 outside its box)
============================ ==========================================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.errors import OutputError

FORMATS = {"nifti": ".nii.gz", "nrrd": ".nrrd", "seg.nrrd": ".seg.nrrd", "png": ".png", "dicom-seg": "_seg.dcm"}
TASK_OF_LABELS = {
    (0, 1, 2, 3): "kits23",
    (0, 1, 2): "kits19",
}


def _task_for(labels: dict[int, str]) -> str | None:
    from kidneyseg.labels import TASKS

    for name, task in TASKS.items():
        if {int(k): v for k, v in task.labels.items()} == labels:
            return name
    return TASK_OF_LABELS.get(tuple(sorted(labels)))


def save_prediction(
    prediction: Any,
    out_dir: str | os.PathLike[str],
    *,
    fmt: str = "nifti",
    save_probabilities: bool = False,
    name: str | None = None,
    save_uncertainty: bool = False,
    qc: bool = True,
) -> dict[str, Any]:
    """Write the label map, optional probabilities and ``volumes.json`` of one case.

    Returns ``{"label": path, "probabilities": path|None, "volumes": path,
    "uncertainty": path|None, "measures": dict, "line": str}``.  ``save_uncertainty`` needs a
    prediction made with ``uncertainty=True`` (else :class:`OutputError`); the map is NIfTI whatever ``fmt``.
    ``qc``: score every structure in ``volumes.json`` when the prediction has its uncertainty.  DICOM-SEG needs a case read from a
    DICOM series (``case.meta["dicom_files"]``); otherwise, or when the source
    headers lack a required attribute, :class:`OutputError` explains and
    suggests another format.
    """
    from kidneyseg import io
    from kidneyseg.reporting.volumes import measure, summary_line, write_volumes_json

    if fmt not in FORMATS:
        raise OutputError("unknown output format", found=fmt, expected=", ".join(FORMATS),
                          fix="pick one of the listed formats")
    case = prediction.case
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = name or case.name
    label_path = out / f"{stem}{FORMATS[fmt]}"
    if fmt == "dicom-seg":
        files = case.meta.get("dicom_files")
        if not files:
            raise OutputError("DICOM-SEG output needs a DICOM series as input", path=case.source,
                              found=f"input format {case.meta.get('format', 'unknown')}",
                              fix="use --output-format nifti (or nrrd, seg.nrrd) for this input")
        from kidneyseg.io.dicomseg import write_dicom_seg

        write_dicom_seg(prediction.label, case.affine, files, label_path, labels=prediction.labels)
    elif fmt == "png" and case.ndim == 3 and case.shape[2] != 1:
        raise OutputError("PNG output is for 2D images", path=case.source, found=f"a volume of shape {case.shape}",
                          fix="use --output-format nifti, nrrd or seg.nrrd for volumes")
    else:
        io.write(prediction.label, label_path, case, is_label=True, fmt=fmt, task=_task_for(prediction.labels))
    prob_path = None
    if save_probabilities and prediction.probabilities is not None:
        from kidneyseg.io._common import atomic_path

        prob_path = out / f"{stem}_probabilities.npz"
        with atomic_path(prob_path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, probabilities=prediction.probabilities.astype(np.float16),
                                label_values=np.asarray(prediction.label_values, np.int32),
                                affine=np.asarray(case.affine, np.float64))
    unc = getattr(prediction, "uncertainty", None)
    unc_path = None
    if save_uncertainty:
        if unc is None:
            raise OutputError("no uncertainty to write", path=case.source, found="a prediction made without it",
                              fix="predict with Predictor.predict_case(case, uncertainty=True)")
        unc_path = out / f"{stem}_uncertainty.nii.gz"
        # float32 whatever the source's dtype (an all-zero map would otherwise be written as the CT's int16)
        io.write(unc.full_map(), unc_path, case.copy(meta={**case.meta, "dtype": "float32"}), is_label=False,
                 fmt="nifti")
    m = measure(prediction.label, case.affine, labels=prediction.labels, name=stem, uncertainty=unc if qc else None)
    m["pipeline"] = prediction.pipeline
    m["source"] = str(case.source) if case.source is not None else None
    m["warnings"] = list(getattr(prediction, "warnings", None) or [])
    vol_path = write_volumes_json(m, out / f"{stem}_volumes.json")
    return {"label": label_path, "probabilities": prob_path, "volumes": vol_path, "uncertainty": unc_path,
            "measures": m,
            "line": summary_line(m)}
