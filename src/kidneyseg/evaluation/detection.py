"""Detection evaluation of the kidney detector (``ct-detect-vnet``): recall and precision of kidney boxes.

Two levels, as the detection cascade's paper reports them (recall 96.13 %):

* **per slice**: on every axial slice the detector searched, its boxes against the
  reference boxes of that slice.  A reference box is the bounding box, on that slice,
  of one reference kidney (the same boxes the detector is trained on,
  :func:`kidneyseg.models.detection.boxes_from_volume`): the kidneys are the
  ``max_kidneys`` largest 26-connected 3D components of the kidney region (kidney +
  masses) with at least ``min_voxels`` voxels, and the pixels of one kidney on a slice
  give one box even when they fall into several 2D pieces.
* **per kidney**: the 3D box of each predicted kidney against the 3D bounding box of each
  reference kidney.  The predicted 3D boxes are the ones the cascade crops:
  :func:`kidneyseg.inference.engines.boxes_to_3d` of the slice boxes (each slice standing
  for its ``slab``), unless the detections carry 3D boxes of their own.

Matching (one rule for both levels, as PASCAL VOC and COCO): predictions in order of
decreasing score each take the still unmatched reference box with the highest IoU, if
that IoU is at least ``iou_threshold`` (0.5 by default); a matched prediction is a true
positive (TP), an unmatched prediction a false positive (FP), an unmatched reference box a
false negative (FN).  Counts are summed over slices (and over cases); ``recall = TP / (TP +
FN)``, ``precision = TP / (TP + FP)``, with the empty policy of
:mod:`kidneyseg.evaluation.overlap`: both denominators 0 (no reference box and no
prediction) 1.0, exactly one of them 0 then 0.0.

Conventions (those of :func:`kidneyseg.inference.engines.detect_slices`): a volume is
``(I, J, K)`` with K axial (the detector's RAS grid); a slice box is ``(x1, y1, x2, y2)``
in pixels with x along the columns (J) and y along the rows (I), ``x2``/``y2`` one past the
last pixel; a 3D box is ``((i0, i1), (j0, j1), (k0, k1))``, half-open voxel ranges.

Files (``kidneyseg evaluate --detections FILE``): JSON (:func:`write_detections`, with the
grid the boxes lie on) or CSV ``case,slice,x1,y1,x2,y2,score`` (no grid: the boxes lie on the
reference reoriented to RAS).  :func:`read_detections` reads both; ``kidneyseg predict --save-detections``
writes the JSON form of what a ``ct-detect-vnet`` model found.

The IoU, the matching, the reference boxes and the JSON writer are defined in
:mod:`kidneyseg.models.boxes` (the detector's validation in training counts with the same functions, and
prediction writes the file) and re-exported here unchanged.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.errors import GeometryError, InputError, KidneysegError
from kidneyseg.labels import KIDNEY_NAMES, LESION_NAMES, Task, get_task, values_named

# the pure box arithmetic and the detections file live in kidneyseg.models.boxes (the detector's validation in
# training scores boxes by the same rule, and prediction writes the file); re-exported here, the public API
from kidneyseg.models.boxes import DETECTIONS_FORMAT as DETECTIONS_FORMAT
from kidneyseg.models.boxes import Box3D as Box3D
from kidneyseg.models.boxes import CaseDetections as CaseDetections
from kidneyseg.models.boxes import DetectionCounts as DetectionCounts
from kidneyseg.models.boxes import as_boxes as _as_boxes
from kidneyseg.models.boxes import box_iou as box_iou
from kidneyseg.models.boxes import box_iou_3d as box_iou_3d
from kidneyseg.models.boxes import kidney_3d_boxes as _kidney_boxes
from kidneyseg.models.boxes import kidney_slice_boxes as _slice_boxes
from kidneyseg.models.boxes import match_boxes as match_boxes
from kidneyseg.models.boxes import reference_kidney_boxes as reference_kidney_boxes
from kidneyseg.models.boxes import reference_kidneys as reference_kidneys
from kidneyseg.models.boxes import reference_slice_boxes as reference_slice_boxes
from kidneyseg.models.boxes import write_detections as write_detections

__all__ = [
    "DETECTIONS_FORMAT",
    "DETECTION_COLUMNS",
    "CaseDetections",
    "DetectionCounts",
    "aggregate_detections",
    "box_iou",
    "box_iou_3d",
    "detection_markdown_table",
    "evaluate_detection_paths",
    "evaluate_detections",
    "kidney_label_values",
    "match_boxes",
    "read_detections",
    "reference_kidney_boxes",
    "reference_kidneys",
    "reference_slice_boxes",
    "write_detection_csv",
    "write_detections",
]

#: Columns of the per-case detection table and keys of every row of :func:`evaluate_detections`.
DETECTION_COLUMNS = ("case", "level", "tp", "fp", "fn", "recall", "precision", "f1", "n_ref", "n_pred", "n_slices")


# ---------------------------------------------------------------- reference boxes
def kidney_label_values(task: Task | str) -> tuple[int, ...] | None:
    """Label values of the kidney region (kidney + masses) of ``task``; ``None`` for ``binary`` (any non-zero).

    kits23: ``(1, 2, 3)``; kits19: ``(1, 2)``; chaos-mr and totalseg-ct: ``(2, 3)``; ct-abdomen:
    ``(1, 2, 3)`` (liver, pancreas, spleen left out).
    """
    t = task if isinstance(task, Task) else get_task(task)
    if t.name == "binary":
        return None
    values = values_named(t.labels, KIDNEY_NAMES + LESION_NAMES)
    if not values:
        raise KidneysegError(f"task '{t.name}' has no kidney label", found=dict(t.labels),
                             expected="a kidney label (kidney, kidney_right, kidney_left)",
                             fix="evaluate detections with a task that labels kidneys (e.g. kits23, binary)")
    return values


# ---------------------------------------------------------------- one case
def _checked_detections(detections: Mapping[int, Any], n_slices: int, slices: Sequence[int] | None,
                        case: str) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    allowed = None if slices is None else {int(k) for k in slices}
    for k, boxes in detections.items():
        arr = np.asarray(boxes, dtype=np.float64)
        if arr.size == 0:
            continue
        if arr.ndim == 2 and arr.shape[1] == 4:  # no scores: every box counts
            arr = np.c_[arr, np.ones(len(arr))]
        arr = _as_boxes(arr, 5, f"case {case}: the boxes of slice {k}")
        kk = int(k)
        if not 0 <= kk < n_slices:
            raise InputError(f"case {case}: boxes on a slice outside the volume", found=f"slice {kk}",
                             expected=f"0..{n_slices - 1} (axis K of the detector's grid)",
                             fix="write the boxes on the grid of the reference (reoriented to RAS) or record "
                                 "the detector's grid (shape, affine) with them")
        if allowed is not None and kk not in allowed:
            raise InputError(f"case {case}: boxes on a slice the detections say was not searched",
                             found=f"slice {kk}", expected=f"one of the {len(allowed)} searched slices",
                             fix="list every slice the detector ran on in \"slices\"")
        bad = ~np.all(np.isfinite(arr), axis=1) | (arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1])
        if bad.any():
            raise InputError(f"case {case}: invalid boxes on slice {kk}", found=arr[bad][:3].tolist(),
                             expected="finite (x1, y1, x2, y2, score) with x2 >= x1 and y2 >= y1")
        out[kk] = arr
    return out


def evaluate_detections(
    detections: Mapping[int, Any],
    label: np.ndarray,
    *,
    task: Task | str = "kits23",
    slices: Sequence[int] | None = None,
    slab: int = 1,
    kidney_boxes: Sequence[Sequence[Sequence[float]]] | None = None,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.5,
    max_kidneys: int = 2,
    min_voxels: int = 100,
    case: str = "case",
) -> list[dict[str, Any]]:
    """Score a detector's boxes of one case against a reference label map, per slice and per kidney.

    Parameters
    ----------
    detections:
        Slice index ``k`` -> ``(n, 5)`` rows ``(x1, y1, x2, y2, score)`` (or ``(n, 4)``: no
        scores), as :func:`kidneyseg.inference.engines.detect_slices` returns them, on the grid
        of ``label``.
    label:
        Reference label map ``(I, J, K)`` on the detector's grid (K axial), e.g.
        ``apply_plan(reference_case, detector.plan).label``.
    task:
        Label convention; its kidney region (kidney + masses, :func:`kidney_label_values`) makes
        the reference kidneys.
    slices:
        The slices the detector searched (``ct-detect-vnet`` searches one every 10 mm,
        :func:`kidneyseg.inference.engines.detection_slices`); per slice, only their reference
        boxes count.  ``None``: every slice.
    slab:
        Slices each searched slice stands for when the 3D boxes are built (``detection_slices``).
    kidney_boxes:
        Predicted 3D kidney boxes; ``None``: :func:`~kidneyseg.inference.engines.boxes_to_3d` of
        the slice boxes kept by ``score_threshold`` (what the cascade crops).
    iou_threshold:
        Smallest IoU of a match (2D per slice, 3D per kidney).
    score_threshold:
        Boxes with a lower score are dropped first (the detector stage's ``score_threshold``).
    max_kidneys, min_voxels:
        Reference kidneys: the largest ``max_kidneys`` components of at least ``min_voxels`` voxels.
    case:
        Value of the ``case`` column.

    Returns
    -------
    list[dict]
        Two rows with the keys of :data:`DETECTION_COLUMNS`: ``level`` ``"slice"`` (counts summed
        over the searched slices) and ``"kidney"``; ``n_slices`` is the number of searched slices.
    """
    lab = np.asarray(label)
    if lab.ndim != 3:
        raise InputError(f"case {case}: detection evaluation needs a 3D label map", found=f"shape {lab.shape}",
                         expected="(I, J, K) with K axial")
    n_k = int(lab.shape[2])
    ks = list(range(n_k)) if slices is None else sorted({int(k) for k in slices})
    if any(not 0 <= k < n_k for k in ks):
        raise InputError(f"case {case}: searched slices outside the volume", found=[k for k in ks if not 0 <= k < n_k][:5],
                         expected=f"0..{n_k - 1}")
    dets = _checked_detections(detections, n_k, slices, case)
    dets = {k: b[b[:, 4] >= score_threshold] for k, b in dets.items()}
    dets = {k: b for k, b in dets.items() if len(b)}
    kidneys = reference_kidneys(lab, kidney_label_values(task), max_kidneys=max_kidneys, min_voxels=min_voxels)
    ref_slices = _slice_boxes(kidneys)
    per_slice = DetectionCounts()
    empty = np.zeros((0, 4))
    for k in ks:
        pred = dets.get(k, np.zeros((0, 5)))
        ref = ref_slices.get(k, empty)
        c, _ = match_boxes(box_iou(pred[:, :4], ref), pred[:, 4], iou_threshold=iou_threshold)
        per_slice = per_slice + c
    if kidney_boxes is None:
        from kidneyseg.models.boxes import boxes_to_3d

        pred3 = boxes_to_3d({k: b.astype(np.float32) for k, b in dets.items()}, lab.shape, max_kidneys=max_kidneys,
                            slab=int(slab))
    else:
        pred3 = [tuple(tuple(int(v) for v in lohi) for lohi in box) for box in kidney_boxes]  # type: ignore[misc]
    per_kidney, _ = match_boxes(box_iou_3d(pred3, _kidney_boxes(kidneys)), iou_threshold=iou_threshold)
    return [_row(case, "slice", per_slice, len(ks)), _row(case, "kidney", per_kidney, len(ks))]


def _row(case: str, level: str, c: DetectionCounts, n_slices: int) -> dict[str, Any]:
    return {"case": case, "level": level, "tp": c.tp, "fp": c.fp, "fn": c.fn, "recall": c.recall,
            "precision": c.precision, "f1": c.f1, "n_ref": c.n_ref, "n_pred": c.n_pred, "n_slices": n_slices}


def aggregate_detections(rows: Iterable[Mapping[str, Any]], *, iou_threshold: float | None = None,
                         score_threshold: float | None = None) -> dict[str, Any]:
    """Summary over cases: counts summed per level, recall/precision/F1 from the sums (micro average).

    Returns ``{"n_cases": N, "iou_threshold": ..., "score_threshold": ..., "levels": {LEVEL: {"tp", "fp",
    "fn", "recall", "precision", "f1", "n_ref", "n_pred", "recall_mean_over_cases"}}}``; the last
    is the mean of the per-case recalls (cases without any reference box left out; ``None`` if none).
    """
    rows = list(rows)
    levels: dict[str, dict[str, Any]] = {}
    for level in dict.fromkeys(str(r["level"]) for r in rows):
        rr = [r for r in rows if r["level"] == level]
        c = DetectionCounts(sum(int(r["tp"]) for r in rr), sum(int(r["fp"]) for r in rr),
                            sum(int(r["fn"]) for r in rr))
        per_case = [float(r["recall"]) for r in rr if int(r["tp"]) + int(r["fn"]) > 0]
        levels[level] = {"tp": c.tp, "fp": c.fp, "fn": c.fn, "recall": c.recall, "precision": c.precision,
                         "f1": c.f1, "n_ref": c.n_ref, "n_pred": c.n_pred,
                         "recall_mean_over_cases": float(np.mean(per_case)) if per_case else None}
    return {"n_cases": len({str(r["case"]) for r in rows}), "iou_threshold": iou_threshold,
            "score_threshold": score_threshold, "levels": levels}


def detection_markdown_table(summary: Mapping[str, Any]) -> str:
    """Markdown table of a detection summary: one row per level (slice, kidney)."""
    head = ["level", "recall", "precision", "f1", "tp", "fp", "fn"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for level, s in summary["levels"].items():
        lines.append(f"| {level} | {s['recall']:.4f} | {s['precision']:.4f} | {s['f1']:.4f} | "
                     f"{s['tp']} | {s['fp']} | {s['fn']} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- files
def _json_detections(p: Path) -> dict[str, CaseDetections]:
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise InputError("detections file is not valid JSON", path=p, found=str(e),
                         fix="write it with kidneyseg.evaluation.detection.write_detections") from None
    if not isinstance(doc, dict) or doc.get("format") != DETECTIONS_FORMAT or not isinstance(doc.get("cases"), dict):
        raise InputError("not a detections file", path=p,
                         found=f"format {doc.get('format')!r}" if isinstance(doc, dict) else type(doc).__name__,
                         expected=f'{{"format": "{DETECTIONS_FORMAT}", "version": 1, "cases": {{CASE: ...}}}}',
                         fix="write it with kidneyseg.evaluation.detection.write_detections, or use the CSV form "
                             "case,slice,x1,y1,x2,y2,score")
    out = {}
    for name, entry in doc["cases"].items():
        try:
            boxes = {int(k): np.asarray(v, dtype=np.float64) for k, v in (entry.get("boxes") or {}).items()}
            shape = None if entry.get("shape") is None else tuple(int(v) for v in entry["shape"])
            affine = None if entry.get("affine") is None else np.asarray(entry["affine"], dtype=np.float64).reshape(4, 4)
            slices = None if entry.get("slices") is None else [int(k) for k in entry["slices"]]
            kb = entry.get("kidney_boxes")
            kidney_boxes = None if kb is None else [tuple(tuple(int(v) for v in lohi) for lohi in box) for box in kb]
            thr = entry.get("score_threshold")
            out[str(name)] = CaseDetections(boxes=boxes, shape=shape, affine=affine,  # type: ignore[arg-type]
                                            slices=slices, slab=int(entry.get("slab", 1)),
                                            score_threshold=None if thr is None else float(thr),
                                            kidney_boxes=kidney_boxes)  # type: ignore[arg-type]
        except (TypeError, ValueError, AttributeError) as err:
            raise InputError(f"case {name}: detections cannot be read", path=p, found=str(err),
                             expected="boxes {slice: [[x1, y1, x2, y2, score], ...]}, shape [I, J, K], "
                                      "affine 4x4, slices [k, ...]") from None
    return out


def _csv_detections(p: Path) -> dict[str, CaseDetections]:
    out: dict[str, dict[int, list[list[float]]]] = {}
    with open(p, newline="") as fh:
        reader = csv.DictReader(fh)
        need = ["case", "slice", "x1", "y1", "x2", "y2"]
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError("detections CSV lacks columns", path=p, found=reader.fieldnames,
                             expected="case,slice,x1,y1,x2,y2[,score]", fix=f"add the columns {', '.join(missing)}")
        for n, row in enumerate(reader, start=2):
            try:
                k = int(row["slice"])
                vals = [float(row[c]) for c in ("x1", "y1", "x2", "y2")]
                vals.append(float(row["score"]) if row.get("score") not in (None, "") else 1.0)
            except (TypeError, ValueError):
                raise InputError(f"detections CSV line {n} is not a box", path=p, found=dict(row),
                                 expected="an integer slice and numbers x1, y1, x2, y2, score") from None
            out.setdefault(row["case"], {}).setdefault(k, []).append(vals)
    return {c: CaseDetections(boxes={k: np.asarray(v) for k, v in b.items()}) for c, b in out.items()}


def read_detections(path: str | os.PathLike[str]) -> dict[str, CaseDetections]:
    """Detections by case name from a JSON file (:func:`write_detections`) or a CSV ``case,slice,x1,y1,x2,y2,score``.

    A CSV lists boxes only: the detector searched every slice and its boxes lie on the reference
    reoriented to RAS; cases without any box have no row (they are scored as finding nothing when
    the reference holds them).

    A folder: every ``*_detections.json`` in it (what ``kidneyseg predict --save-detections`` writes, one
    file per case), merged; a case in two files is an error.
    """
    from kidneyseg.io._common import check_exists

    p = check_exists(path)
    if p.is_dir():
        files = sorted(p.glob("*_detections.json"))
        if not files:
            raise InputError("no detections files in the folder", path=p, expected="NAME_detections.json files",
                             fix="write them with kidneyseg predict --save-detections, or pass one file")
        out: dict[str, CaseDetections] = {}
        where: dict[str, Path] = {}
        for f in files:
            for name, d in _json_detections(f).items():
                if name in out:
                    raise InputError(f"case {name} is in two detections files", path=f,
                                     found=f"also in {where[name]}", fix="keep one file per case")
                out[name], where[name] = d, f
        return out
    if p.suffix.lower() == ".csv":
        return _csv_detections(p)
    return _json_detections(p)


def _label_on_grid(ref: Any, shape: Sequence[int] | None, affine: np.ndarray | None, case: str) -> np.ndarray:
    """The reference label (a :class:`~kidneyseg.case.Case`) on the detections' grid.

    No affine: the reference reoriented to RAS (its shape must be ``shape`` when given).  An affine:
    nearest neighbour in world (RAS mm) coordinates, exact when the grids share their voxel centres
    (reorientation, crop); on a resampled grid a box edge may move by one voxel.
    """
    from kidneyseg.preprocessing.geometry import reorient

    ras = reorient(ref, "RAS")
    lab = ras.require_label()
    if affine is None:
        if shape is not None and tuple(shape) != lab.shape:
            raise GeometryError(f"case {case}: the detections' grid is not the reference's", path=ref.source,
                                found=f"detections shape {tuple(shape)}, no affine",
                                expected=f"shape {lab.shape} (the reference reoriented to RAS) or an affine",
                                fix="record the detector grid's affine with the boxes (write_detections)")
        return lab
    if shape is None:
        raise InputError(f"case {case}: detections with an affine but no shape", fix="record shape [I, J, K]")
    a = np.asarray(affine, dtype=np.float64)
    if tuple(shape) == lab.shape and np.allclose(a, ras.affine, atol=1e-3):
        return lab
    from scipy import ndimage

    m = np.linalg.solve(np.asarray(ras.affine, dtype=np.float64), a)  # detection voxel -> reference voxel
    return ndimage.affine_transform(lab, m[:3, :3], offset=m[:3, 3], output_shape=tuple(int(v) for v in shape),
                                    order=0, mode="grid-constant", cval=0, prefilter=False)


def evaluate_detection_paths(
    detections: str | os.PathLike[str],
    ref: str | os.PathLike[str],
    task: Task | str,
    *,
    iou_threshold: float = 0.5,
    score_threshold: float | None = None,
    allow_missing: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score a detections file against reference label file(s); returns ``(rows, summary)``.

    ``ref`` is one label file (its case name, :func:`kidneyseg.io.case_name`, must be in the file)
    or a folder (cases matched by name).  A reference case the file lacks is an error unless
    ``allow_missing`` (then scored as no box found); a case of the file without a reference is
    always an error.  ``score_threshold`` ``None``: each case's recorded ``score_threshold``, else 0.5.
    """
    from kidneyseg.evaluation.files import _label_files, _names
    from kidneyseg.io import case_name, read
    from kidneyseg.io._common import check_exists

    dets = read_detections(detections)
    r = check_exists(ref)
    refs = _label_files(r) if r.is_dir() else {case_name(r): r}
    if not refs:
        raise InputError("no label files in the reference folder", path=r, fix="check the folder")
    extra = sorted(set(dets) - set(refs))
    if extra:
        raise InputError("detections of cases without a reference", path=detections, found=_names(extra),
                         expected=f"cases among {_names(sorted(refs))}",
                         fix="pass the reference folder holding them, or name the cases after the reference files")
    missing = sorted(set(refs) - set(dets))
    if missing and not allow_missing:
        raise InputError("references without detections", path=detections, found=_names(missing),
                         expected="every reference case in the detections file",
                         fix="add them (a case without boxes: \"boxes\": {}), or pass --allow-missing to score them "
                             "as no box found")
    rows: list[dict[str, Any]] = []
    for name in sorted(refs):
        d = dets.get(name, CaseDetections(boxes={}))
        rcase = read(refs[name], is_label=True)
        lab = _label_on_grid(rcase, d.shape, d.affine, name)
        thr = score_threshold if score_threshold is not None else (
            d.score_threshold if d.score_threshold is not None else 0.5)
        rows.extend(evaluate_detections(d.boxes, lab, task=task, slices=d.slices, slab=d.slab,
                                        kidney_boxes=d.kidney_boxes, iou_threshold=iou_threshold,
                                        score_threshold=thr, case=name))
    t = task if isinstance(task, Task) else get_task(task)
    summary = aggregate_detections(rows, iou_threshold=iou_threshold, score_threshold=score_threshold)
    summary["task"] = t.name
    summary["missing_detections"] = missing
    return rows, summary


def write_detection_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write detection rows with the columns of :data:`DETECTION_COLUMNS`, atomically."""
    from kidneyseg.evaluation.files import write_rows_csv

    return write_rows_csv(rows, path, DETECTION_COLUMNS)

