"""Summaries over cases: mean, std, median per region and metric; summed confusion; tables."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from kidneyseg.evaluation.case import DISTANCE_METRICS, METRICS

__all__ = ["aggregate", "markdown_table"]

COUNTS = ("tp", "fp", "fn", "tn")


def _stats(values: list[float]) -> dict[str, float | int | None]:
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    n_nan = int(arr.size - finite.size)
    if finite.size == 0:
        return {"mean": None, "std": None, "median": None, "n": 0, "n_nan": n_nan}
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "median": float(np.median(finite)),
        "n": int(finite.size),
        "n_nan": n_nan,
    }


def aggregate(
    rows: Iterable[dict],
    confusion: tuple[Sequence[int], np.ndarray] | None = None,
    *,
    task: object | None = None,
) -> dict:
    """Summarise per-case rows (as returned by :func:`evaluate_case`).

    Parameters
    ----------
    rows:
        Rows with the keys of :data:`kidneyseg.evaluation.COLUMNS`.
    confusion:
        ``(labels, matrix)`` multi-class confusion matrix summed over cases
        (see :func:`kidneyseg.evaluation.confusion_matrix`), or None.
    task:
        Task name (or Task), recorded in the summary.

    Returns
    -------
    dict
        JSON-serialisable::

            {"task": ..., "n_cases": N,
             "regions": {REGION: {"n_cases": N,
                                  "metrics": {METRIC: {"mean", "std", "median", "n", "n_nan"}},
                                  "nan_distances": K,       # cases whose distances are NaN
                                  "ref_empty": E,           # cases whose reference region is empty
                                  "metrics_ref_present": {METRIC: {...}},  # the N - E other cases
                                  "confusion": {"tp", "fp", "fn", "tn"}}},   # summed
             "confusion_matrix": {"labels": [...], "matrix": [[...]]} | None}

        ``std`` is the population standard deviation (ddof 0); NaN values are
        left out of mean/std/median and counted in ``n_nan``.  ``metrics``
        averages every case, with the empty-mask policy (a case without a cyst
        whose prediction has none either scores Dice 1); ``metrics_ref_present``
        averages only the cases whose reference holds the region, as papers
        report lesion Dice (their statistics are ``null`` when no case does).
    """
    rows = list(rows)
    regions: dict[str, list[dict]] = {}
    for row in rows:
        regions.setdefault(str(row["region"]), []).append(row)
    out_regions: dict[str, dict] = {}
    for name, rrows in regions.items():
        metrics = {m: _stats([float(r[m]) for r in rrows]) for m in METRICS}
        nan_dist = sum(1 for r in rrows if any(not math.isfinite(float(r[m])) for m in DISTANCE_METRICS))
        present = [r for r in rrows if int(r["tp"]) + int(r["fn"]) > 0]
        out_regions[name] = {
            "n_cases": len(rrows),
            "metrics": metrics,
            "nan_distances": nan_dist,
            "ref_empty": len(rrows) - len(present),
            "metrics_ref_present": {m: _stats([float(r[m]) for r in present]) for m in METRICS},
            "confusion": {c: int(sum(int(r[c]) for r in rrows)) for c in COUNTS},
        }
    cm = None
    if confusion is not None:
        labels, matrix = confusion
        cm = {"labels": [int(v) for v in labels], "matrix": np.asarray(matrix, dtype=np.int64).tolist()}
    task_name = getattr(task, "name", task)
    return {
        "task": task_name,
        "n_cases": len({str(r["case"]) for r in rows}),
        "regions": out_regions,
        "confusion_matrix": cm,
    }


def _fmt(stats: dict) -> str:
    if stats["mean"] is None:
        return "n/a"
    return f"{stats['mean']:.4f} ± {stats['std']:.4f}"


def markdown_table(summary: dict, metrics: Sequence[str] = METRICS) -> str:
    """Markdown table of ``mean ± std`` per region (rows) and metric (columns).

    The last columns count the cases whose distances are NaN (a side empty) and
    the cases whose reference region is empty (many KiTS cases have no cyst).
    """
    head = ["region", *metrics, "nan_distances", "ref_empty"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name, reg in summary["regions"].items():
        cells = [name, *(_fmt(reg["metrics"][m]) for m in metrics), str(reg["nan_distances"]),
                 str(reg.get("ref_empty", "n/a"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
