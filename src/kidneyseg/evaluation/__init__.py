"""Evaluation stage: overlap and surface metrics per case and region, summaries, tables, plots.

Public API (stable; see ``docs/evaluation.md``)::

    from kidneyseg.evaluation import evaluate_case, aggregate
    rows = evaluate_case(pred, ref, spacing=(3.0, 0.78, 0.78), task="kits23", case="case_00010")
    summary = aggregate(rows)

* :func:`evaluate_case` -- rows with the columns of :data:`COLUMNS`, one per region.
* :func:`confusion`, :func:`dice`, :func:`jaccard`, ... -- counts first, then ratios.
* :func:`surface_distances` -- DeepMind's surfel distances; :func:`surface_dice`,
  :func:`hd95`, :func:`assd`, :func:`sdd` from it.
* :func:`aggregate`, :func:`markdown_table` -- summaries over cases.
* :func:`evaluate_paths` -- files or folders matched by case name.
* :func:`evaluate_detections` -- a kidney detector's boxes (``ct-detect-vnet``) against a
  reference label map: recall and precision per axial slice and per kidney
  (:mod:`kidneyseg.evaluation.detection`).
"""

from kidneyseg.evaluation.aggregate import aggregate, markdown_table
from kidneyseg.evaluation.case import COLUMNS, METRICS, confusion_matrix, evaluate_case, evaluate_case_full
from kidneyseg.evaluation.detection import (
    CaseDetections,
    DetectionCounts,
    box_iou,
    box_iou_3d,
    evaluate_detections,
    match_boxes,
    read_detections,
    write_detections,
)
from kidneyseg.evaluation.files import EvaluationResult, evaluate_paths, match_cases, write_csv, write_summary
from kidneyseg.evaluation.overlap import (
    Confusion,
    accuracy,
    confusion,
    dice,
    f1,
    jaccard,
    overlap_metrics,
    precision,
    recall,
)
from kidneyseg.evaluation.surface import (
    SurfaceDistances,
    assd,
    hd95,
    neighbour_code_table,
    robust_hausdorff,
    sdd,
    surface_dice,
    surface_distances,
)

__all__ = [
    "COLUMNS",
    "METRICS",
    "CaseDetections",
    "Confusion",
    "DetectionCounts",
    "EvaluationResult",
    "SurfaceDistances",
    "accuracy",
    "aggregate",
    "assd",
    "box_iou",
    "box_iou_3d",
    "confusion",
    "confusion_matrix",
    "dice",
    "evaluate_case",
    "evaluate_case_full",
    "evaluate_detections",
    "evaluate_paths",
    "f1",
    "hd95",
    "jaccard",
    "markdown_table",
    "match_boxes",
    "match_cases",
    "neighbour_code_table",
    "overlap_metrics",
    "precision",
    "read_detections",
    "recall",
    "robust_hausdorff",
    "sdd",
    "surface_dice",
    "surface_distances",
    "write_csv",
    "write_detections",
    "write_summary",
]
