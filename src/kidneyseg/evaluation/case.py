"""Scoring one case: every region of a task, every metric, plus the label confusion matrix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from kidneyseg.errors import GeometryError, InputError
from kidneyseg.evaluation.overlap import confusion, overlap_metrics
from kidneyseg.evaluation.surface import assd, hd95, sdd, surface_dice, surface_distances
from kidneyseg.labels import Task, get_task
from kidneyseg.preprocessing.geometry import box_slices, nonzero_box

__all__ = ["COLUMNS", "METRICS", "confusion_matrix", "evaluate_case", "evaluate_case_full"]

#: Columns of ``results.csv`` and keys of every row, in order.
COLUMNS = (
    "case",
    "region",
    "dice",
    "jaccard",
    "precision",
    "recall",
    "accuracy",
    "f1",
    "assd_mm",
    "sdd_mm",
    "hd95_mm",
    "surface_dice",
    "tp",
    "fp",
    "fn",
    "tn",
)

#: The real-valued metrics of a row (summarised by mean, std and median).
METRICS = ("dice", "jaccard", "precision", "recall", "accuracy", "f1", "assd_mm", "sdd_mm", "hd95_mm", "surface_dice")

#: Metrics that are NaN when a side is empty.
DISTANCE_METRICS = ("assd_mm", "sdd_mm", "hd95_mm")


def _task(task: Task | str) -> Task:
    return task if isinstance(task, Task) else get_task(task)


def _label_values(task: Task) -> list[int]:
    """Label values of the confusion matrix: the task's values (binary: 0 and 1)."""
    return sorted(task.labels)


def _check_values(counts: np.ndarray, task: Task, which: str) -> None:
    present = [int(v) for v in np.flatnonzero(counts)]
    unknown = [v for v in present if v not in task.labels]
    if unknown:
        raise InputError(
            f"{which} contains label values that task '{task.name}' does not define",
            found=f"values {unknown}",
            expected="values in " + ", ".join(f"{k} {v}" for k, v in sorted(task.labels.items())),
            fix="evaluate with the task that matches the label convention (e.g. --task binary), "
            "or relabel the file",
        )


def _as_labels(arr: np.ndarray, task: Task) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if task.name == "binary":
        return (arr != 0).astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer) and (not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr))):
        raise InputError(
            "label map holds non-integer values", found=str(arr.dtype), expected="integer labels"
        )
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise InputError(
            "label values out of range", found=f"{arr.min()}..{arr.max()}", expected="0..255"
        )
    return arr.astype(np.uint8, copy=False)


def confusion_matrix(
    pred: np.ndarray, ref: np.ndarray, task: Task | str, *, _box: tuple[slice, ...] | None = None
) -> tuple[list[int], np.ndarray]:
    """Multi-class confusion matrix of the label values of ``task``.

    Parameters
    ----------
    pred, ref:
        Label maps of the same shape (any number of axes).  For the ``binary``
        task every non-zero value counts as 1.

    Returns
    -------
    (labels, matrix)
        ``labels``: the label values in order; ``matrix[i, j]`` (int64, shape
        ``(L, L)``) counts voxels with reference ``labels[i]`` and prediction
        ``labels[j]``.
    """
    t = _task(task)
    p = _as_labels(pred, t)
    r = _as_labels(ref, t)
    return _confusion_matrix(p, r, t, _box)


def _confusion_matrix(p: np.ndarray, r: np.ndarray, t: Task, box) -> tuple[list[int], np.ndarray]:
    labels = _label_values(t)
    k = 256
    n_total = r.size
    if box is not None:
        p, r = p[box], r[box]
    joint = np.bincount((r.astype(np.uint16) * k + p).ravel(), minlength=k * k).reshape(k, k)
    joint[0, 0] += n_total - r.size
    _check_values(joint.sum(axis=1), t, "reference")
    _check_values(joint.sum(axis=0), t, "prediction")
    return labels, joint[np.ix_(labels, labels)].astype(np.int64)


def evaluate_case_full(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    task: Task | str,
    *,
    case: str = "case",
    tolerances: Mapping[str, float] | None = None,
) -> tuple[list[dict], tuple[list[int], np.ndarray]]:
    """:func:`evaluate_case` plus the multi-class confusion matrix of the case.

    Returns ``(rows, (labels, matrix))``; see :func:`evaluate_case` and
    :func:`confusion_matrix`.
    """
    t = _task(task)
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise GeometryError(
            f"case {case}: prediction and reference have different shapes",
            found=f"prediction {pred.shape}, reference {ref.shape}",
            expected="the prediction on the reference grid",
            fix="resample the prediction onto the reference grid (nearest neighbour)",
        )
    p = _as_labels(pred, t)
    r = _as_labels(ref, t)
    joint = nonzero_box((p != 0) | (r != 0))
    box = box_slices(joint) if joint is not None else None
    labels, matrix = _confusion_matrix(p, r, t, box)
    n_total = int(r.size)
    if box is not None:
        p, r = p[box], r[box]
    rows = []
    for region in t.regions:
        tol = region.tolerance_mm if tolerances is None else float(tolerances.get(region.name, region.tolerance_mm))
        rm = region.mask(r)
        pm = region.mask(p)
        c = confusion(pm, rm, n_total=n_total)
        row: dict = {"case": case, "region": region.name}
        row.update(overlap_metrics(c))
        sd = surface_distances(rm, pm, spacing)
        row["assd_mm"] = assd(sd)
        row["sdd_mm"] = sdd(sd)
        row["hd95_mm"] = hd95(sd)
        row["surface_dice"] = surface_dice(sd, tol)
        row.update(tp=c.tp, fp=c.fp, fn=c.fn, tn=c.tn)
        rows.append({k: row[k] for k in COLUMNS})
    return rows, (labels, matrix)


def evaluate_case(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    task: Task | str,
    *,
    case: str = "case",
    tolerances: Mapping[str, float] | None = None,
) -> list[dict]:
    """Score one prediction against its reference, one row per evaluation region.

    Parameters
    ----------
    pred, ref:
        Integer label maps on the same grid, 3D ``(I, J, K)`` in file voxel
        order or 2D ``(rows, cols)``.
    spacing:
        Voxel size in mm per array axis (from the reference header).
    task:
        Task name or :class:`kidneyseg.labels.Task`; its regions are scored in
        their declared order (kits23: kidney_and_masses, masses, tumor, cyst).
    case:
        Value of the ``case`` column.
    tolerances:
        Surface-Dice tolerance in mm per region name, overriding the task's
        (KiTS tolerances by default).

    Returns
    -------
    list[dict]
        One dict per region with the keys of :data:`COLUMNS` in order: overlap
        metrics (from the confusion counts), ``assd_mm``, ``sdd_mm``,
        ``hd95_mm`` (NaN when either side is empty), ``surface_dice`` and the
        counts ``tp, fp, fn, tn`` (ints).
    """
    rows, _ = evaluate_case_full(pred, ref, spacing, task, case=case, tolerances=tolerances)
    return rows
