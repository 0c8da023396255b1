"""Evaluating files and folders: match cases by name, read, check grids, score, write tables."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.errors import GeometryError, InputError
from kidneyseg.evaluation.aggregate import aggregate
from kidneyseg.evaluation.case import COLUMNS, evaluate_case_full
from kidneyseg.labels import Task, get_task

__all__ = ["EvaluationResult", "evaluate_paths", "match_cases", "write_csv", "write_summary"]

log = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    """Rows of every case and region, the summed confusion matrix and the summary."""

    rows: list[dict] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    confusion: np.ndarray | None = None
    summary: dict = field(default_factory=dict)
    missing_predictions: list[str] = field(default_factory=list)


def _label_files(folder: Path) -> dict[str, Path]:
    """Label files of ``folder`` by case name (:func:`kidneyseg.io.case_name`: a ``_0000`` channel suffix is dropped)."""
    from kidneyseg.io import case_name, has_image_suffix

    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and has_image_suffix(p):
            stem = case_name(p)
            if stem in found:
                raise InputError(
                    "two files in one folder have the same case name",
                    path=folder,
                    found=f"{found[stem].name} and {p.name}",
                    expected="one file per case name",
                    fix="remove or rename one of them",
                )
            found[stem] = p
    return found


def _names(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" ... ({len(names)} in all)" if len(names) > limit else "")


def match_cases(
    pred: str | os.PathLike[str], ref: str | os.PathLike[str], *, allow_missing: bool = False
) -> list[tuple[str, Path | None, Path]]:
    """Pair prediction and reference files by case name (file stem without nnU-Net's ``_0000`` suffix).

    Parameters
    ----------
    pred, ref:
        Two files (one case, named after the reference) or two folders.
    allow_missing:
        Allow references without a prediction (returned with ``None``, scored
        as an empty prediction).  A prediction without a reference is always
        an error.

    Returns
    -------
    list of ``(case, prediction path or None, reference path)``, sorted by case.
    """
    from kidneyseg.io import case_name
    from kidneyseg.io._common import check_exists

    p, r = check_exists(pred), check_exists(ref)
    if p.is_dir() != r.is_dir():
        raise InputError(
            "--pred and --ref must both be files or both be folders",
            found=f"pred {'folder' if p.is_dir() else 'file'} {p}, ref {'folder' if r.is_dir() else 'file'} {r}",
            expected="two files or two folders",
            fix="pass a prediction folder with a reference folder, or one file with one file",
        )
    if not r.is_dir():
        return [(case_name(r), p, r)]
    pf, rf = _label_files(p), _label_files(r)
    if not rf:
        raise InputError("no label files in the reference folder", path=r, fix="check the folder")
    extra = sorted(set(pf) - set(rf))
    if extra:
        raise InputError(
            "predictions without a reference",
            path=p,
            found=_names(extra),
            expected=f"a file of the same name in {r}",
            fix="remove those predictions or add their references",
        )
    missing = sorted(set(rf) - set(pf))
    if missing and not allow_missing:
        raise InputError(
            "references without a prediction",
            path=r,
            found=_names(missing),
            expected=f"a file of the same name in {p}",
            fix="add the missing predictions, or pass --allow-missing to score them as empty predictions",
        )
    return [(name, pf.get(name), rf[name]) for name in sorted(rf)]


def _slicer_crop(case: Any) -> bool:
    """True for a 3D Slicer ``.seg.nrrd`` volume (its grid may be its image's cropped to the segments' extent)."""
    return bool(case.meta.get("format") == "seg.nrrd" and case.ndim == 3)


def _grid_text(case: Any) -> str:
    sp = tuple(round(float(v), 4) for v in case.spacing)
    origin = tuple(round(float(v), 3) for v in case.affine[:3, 3])
    axes = np.round(np.asarray(case.affine, dtype=np.float64)[:3, :3] / np.asarray(case.spacing), 3).T.tolist()
    return f"shape {case.shape}, spacing {sp}, origin {origin}, axes {axes}"


def _on_one_grid(pcase: Any, rcase: Any, ppath: Path, rpath: Path) -> tuple[Any, Any]:
    """A prediction and a 3D Slicer ``.seg.nrrd`` reference (possibly cropped to its extent) on one grid.

    Slicer saves a segmentation cropped to the segments' extent, its origin moved to the first
    voxel of the extent: its grid is the image's shifted by whole voxels.  The reference is placed
    on the prediction's grid (:func:`kidneyseg.io.itk.voxel_offset` through the two affines, exact
    for integer offsets); when the prediction is a ``.seg.nrrd`` too (both may be cropped), both
    are placed on the smallest box holding the two.  Refused with a
    :class:`~kidneyseg.errors.GeometryError` naming both files when the grids are not whole-voxel
    shifts of each other (another spacing or orientation, a fractional shift) or when labelled
    reference voxels fall outside the prediction's grid.  Returns ``(prediction, reference)``.
    """
    from dataclasses import replace

    from kidneyseg.io import drop_singleton_axis
    from kidneyseg.io.itk import paste, voxel_offset

    pcase = drop_singleton_axis(pcase, rcase)
    if pcase.ndim != 3:
        return pcase, rcase  # 2D prediction of a 3D reference: the caller reports the grids
    off = voxel_offset(rcase, pcase)
    if off is None:
        raise GeometryError(
            "reference segmentation is not on the prediction's voxel grid",
            path=rpath,
            found=_grid_text(rcase),
            expected=f"the grid of the prediction {ppath} ({_grid_text(pcase)}), or that grid cropped "
            "or shifted by whole voxels (3D Slicer's crop to extent)",
            fix="resample one onto the other's grid (nearest neighbour), or save the segmentation in 3D Slicer "
            "with the prediction's image as its reference geometry",
        )
    both_slicer = pcase.meta.get("format") == "seg.nrrd"
    if both_slicer:  # neither grid need be the image's: the box holding both
        lo = np.minimum(off, 0)
        hi = np.maximum(np.asarray(off) + np.asarray(rcase.shape), np.asarray(pcase.shape))
        shape = tuple(int(v) for v in hi - lo)
        affine = np.asarray(pcase.affine, dtype=np.float64).copy()
        affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
        plab, _ = paste(pcase.require_label(), tuple(int(v) for v in -lo), shape)
        pcase = replace(pcase, label=plab, affine=affine,
                        meta={**pcase.meta, "placed": {"offset": [int(v) for v in -lo], "shape": list(pcase.shape)}})
        off = tuple(int(o - v) for o, v in zip(off, lo))
    rlab, outside = paste(rcase.require_label(), off, pcase.shape)
    if outside:
        raise GeometryError(
            "reference segmentation reaches outside the prediction's grid",
            path=rpath,
            found=f"{outside} labelled reference voxels outside (reference at voxel offset {off} of "
            f"the prediction's grid, shape {rcase.shape})",
            expected=f"reference segments inside the grid of the prediction {ppath} (shape {pcase.shape})",
            fix="pair the reference with the prediction of the same image, or write the prediction on the "
            "whole image grid (kidneyseg predict does)",
        )
    placed = {"offset": list(off), "shape": list(rcase.shape)}
    rcase = replace(rcase, label=rlab, affine=np.asarray(pcase.affine, dtype=np.float64).copy(),
                    meta={**rcase.meta, "placed": placed})
    log.info("%s: 3D Slicer segmentation placed at voxel offset %s of the prediction's grid (%s)",
             rpath, off, ppath)
    return pcase, rcase


def _fmt(v: float, *, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}g}"


def evaluate_paths(
    pred: str | os.PathLike[str],
    ref: str | os.PathLike[str],
    task: Task | str,
    *,
    allow_missing: bool = False,
) -> EvaluationResult:
    """Score prediction file(s) against reference file(s).

    Each label map is read with :func:`kidneyseg.io.read` (``is_label=True``);
    the prediction must lie on the reference grid (same shape, affine within
    1e-3 mm); spacing is the reference's.  A ``(rows, cols, 1)`` prediction of a 2D reference
    is compared in 2D (the toolkit writes 2D label maps that way as NIfTI) and a 3D Slicer
    ``.seg.nrrd`` prediction cropped to its extent is placed on the reference grid
    (:func:`kidneyseg.io.fit_to_grid`).  A ``.seg.nrrd`` *reference* cropped to its extent is
    placed on the prediction's grid instead (:func:`_on_one_grid`; both on the box that holds
    them when both are ``.seg.nrrd``).  See :func:`match_cases` for pairing.
    """
    from kidneyseg.io import IMAGE_2D_SUFFIXES, fit_to_grid, image_suffix, read, same_grid

    t = task if isinstance(task, Task) else get_task(task)
    pairs = match_cases(pred, ref, allow_missing=allow_missing)
    res = EvaluationResult()
    total: np.ndarray | None = None
    for name, ppath, rpath in pairs:
        rcase = read(rpath, is_label=True)
        rarr = rcase.require_label()
        if ppath is None:
            log.warning("case %s: no prediction, scored as an empty prediction", name)
            res.missing_predictions.append(name)
            parr = np.zeros_like(rarr)
        else:
            rsp = rcase.spacing
            flat = rcase.ndim == 2 and image_suffix(ppath) in IMAGE_2D_SUFFIXES  # 2D files carry no spacing
            pcase = read(ppath, is_label=True, spacing=(rsp[0], rsp[1]) if flat else None)
            if _slicer_crop(rcase) and not same_grid(pcase, rcase):
                pcase, rcase = _on_one_grid(pcase, rcase, ppath, rpath)
                rarr = rcase.require_label()
            pcase = fit_to_grid(pcase, rcase)
            if not same_grid(pcase, rcase):
                raise GeometryError(
                    "prediction is not on the reference grid",
                    path=ppath,
                    found=f"shape {pcase.shape}, spacing {tuple(round(s, 4) for s in pcase.spacing)}, "
                    f"origin {tuple(round(float(v), 3) for v in pcase.affine[:3, 3])}",
                    expected=f"shape {rcase.shape}, spacing {tuple(round(s, 4) for s in rcase.spacing)}, "
                    f"origin {tuple(round(float(v), 3) for v in rcase.affine[:3, 3])} (the grid of {rpath})",
                    fix="resample the prediction onto the reference grid (nearest neighbour), "
                    "e.g. write it with kidneyseg.io.write(array, path, like=reference_case)",
                )
            parr = pcase.require_label()
        rows, (labels, matrix) = evaluate_case_full(parr, rarr, rcase.spacing, t, case=name)
        res.rows.extend(rows)
        res.labels = labels
        total = matrix.copy() if total is None else total + matrix
        for row in rows:
            log.info(
                "%s %s: dice %s, surface dice %s, hd95 %s mm",
                name,
                row["region"],
                _fmt(row["dice"]),
                _fmt(row["surface_dice"]),
                _fmt(row["hd95_mm"]),
            )
    res.confusion = total
    res.summary = aggregate(res.rows, (res.labels, total) if total is not None else None, task=t)
    res.summary["missing_predictions"] = res.missing_predictions
    if res.summary["confusion_matrix"] is not None:
        res.summary["confusion_matrix"]["names"] = [t.label_name(v) for v in res.labels]
    return res


def _cell(v: object) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return str(v)


def write_csv(rows: list[dict], path: str | os.PathLike[str]) -> Path:
    """Write rows to ``path`` with the columns of :data:`COLUMNS` (NaN written as ``nan``), atomically."""
    return write_rows_csv(rows, path, COLUMNS)


def write_rows_csv(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike[str], columns: Sequence[str]) -> Path:
    """Write ``rows`` to ``path`` with ``columns`` in that order (floats as ``repr``, NaN as ``nan``), atomically;
    the one CSV writer of the evaluation tables."""
    from kidneyseg.io import atomic_path, check_output

    out = check_output(path)
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(list(columns))
        for row in rows:
            w.writerow([_cell(row[c]) for c in columns])
    return out


def write_summary(summary: dict, path: str | os.PathLike[str]) -> Path:
    """Write the summary as JSON (NaN-free: undefined statistics are ``null``), atomically."""
    from kidneyseg.io import atomic_path, check_output

    out = check_output(path)
    with atomic_path(out) as tmp, open(tmp, "w") as fh:
        json.dump(summary, fh, indent=2, allow_nan=False)
        fh.write("\n")
    return out
