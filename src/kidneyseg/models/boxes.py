"""Kidney boxes from a 2D detector: which slices it runs on, its per-slice boxes, one 3D box per kidney.

Used by prediction (``kidneyseg.inference.cascades``, ``ct-detect-vnet``) and by training (the V-Net of
``ct-detect-vnet`` trained on the trained detector's boxes, ``stage_facts`` ``train_on: detector``), so both
find boxes the same way.  Boxes are ``(x1, y1, x2, y2)`` as in :mod:`kidneyseg.models.detection`; 3D boxes are
half-open voxel boxes ``((i0, i1), (j0, j1), (k0, k1))``.  Importing this module does not import torch.

Also the pure box arithmetic both the detector's validation in training
(:mod:`kidneyseg.training.detector_trainer`) and the detection evaluation (:mod:`kidneyseg.evaluation.detection`,
which re-exports all of it) count with, so training and evaluation score boxes by one rule: the IoU of 2D and 3D
boxes (:func:`box_iou`, :func:`box_iou_3d`), greedy one-to-one matching by score (:func:`match_boxes`, giving
:class:`DetectionCounts`), the reference kidneys of a label map and their per-slice and 3D boxes
(:func:`reference_kidneys`, :func:`reference_slice_boxes`, :func:`reference_kidney_boxes`), and the detections
file (:class:`CaseDetections`, :func:`write_detections`; ``kidneyseg predict --save-detections`` writes it,
``kidneyseg evaluate --detections`` reads it back with :func:`kidneyseg.evaluation.detection.read_detections`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.errors import InputError, KidneysegError
from kidneyseg.preprocessing.components import SECOND_KIDNEY_RATIO

#: The ``format`` value of a detections JSON file (:func:`write_detections`).
DETECTIONS_FORMAT = "kidneyseg-detections"

Box3D = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def detect_slices(
    detector: Any,
    volume: np.ndarray,
    *,
    batch_size: int = 4,
    score_threshold: float = 0.5,
    device: str = "cpu",
    slices: Sequence[int] | None = None,
) -> dict[int, np.ndarray]:
    """Run a 2D box detector on each axial slice of ``volume`` (or on the slice indices ``slices`` only).

    Parameters
    ----------
    detector:
        A torchvision-style detector in eval mode: a list of ``(C, H, W)``
        tensors in, a list of dicts with ``boxes`` ``(n, 4)`` ``(x1, y1, x2, y2)``
        (x = column = J, y = row = I) and ``scores`` out.
    volume:
        ``(C, I, J, K)`` windowed intensities in [0, 1].

    Returns
    -------
    dict
        slice index ``k`` -> ``(n, 5)`` float32 rows ``(x1, y1, x2, y2, score)``
        with score >= ``score_threshold``; slices with no box are absent.
    """
    from kidneyseg._optional import require

    torch = require("torch", "running the kidney detector")
    channels_last = str(device) == "cpu"
    if channels_last:
        # Faster R-CNN on the CPU: channels-last convolutions are about 1.8x faster (0.78 against 1.42 s per
        # 512x512 slice on 2 threads, docs/prediction.md); the boxes are the same up to float rounding. The
        # detector is given back in the default memory format (a loaded stage is the model it was saved as,
        # a detector in training goes on training as it was).
        detector.to(memory_format=torch.channels_last)
    out: dict[int, np.ndarray] = {}
    ks = list(range(volume.shape[-1])) if slices is None else [int(k) for k in slices]
    try:
        with torch.inference_mode():
            for start in range(0, len(ks), batch_size):
                chunk = ks[start : start + batch_size]
                ims = [torch.from_numpy(np.ascontiguousarray(volume[..., k], dtype=np.float32)).to(device)
                       for k in chunk]
                dets = detector(ims)
                for k, d in zip(chunk, dets):
                    scores = d["scores"].cpu().numpy()
                    keep = scores >= score_threshold
                    if keep.any():
                        boxes = d["boxes"].cpu().numpy()[keep]
                        out[k] = np.c_[boxes, scores[keep]].astype(np.float32)
    finally:
        if channels_last:
            detector.to(memory_format=torch.contiguous_format)
    return out


def detection_slices(n: int, spacing_mm: float, every_mm: float | None) -> tuple[list[int], int]:
    """Axial slices the detector runs on: one every ``every_mm`` (at least every slice), centred in the volume.

    Returns ``(slices, slab)``: the slice indices and the number of slices each one stands for (its boxes
    are painted over ``slab`` slices around it by :func:`boxes_to_3d`).  ``every_mm`` ``None`` or at most
    the slice spacing: every slice, slab 1.
    """
    step = 1 if not every_mm or every_mm <= spacing_mm else max(1, int(round(float(every_mm) / float(spacing_mm))))
    if step == 1 or n <= step:
        return list(range(n)), 1
    first = ((n - 1) % step) // 2
    return list(range(first, n, step)), step


def boxes_to_3d(
    detections: dict[int, np.ndarray], shape: Sequence[int], *, max_kidneys: int = 2, min_ratio: float = SECOND_KIDNEY_RATIO,
    slab: int = 1,
) -> list[tuple[tuple[int, int], tuple[int, int], tuple[int, int]]]:
    """3D box per kidney from per-slice 2D boxes.

    Every slice box is painted into an ``(I, J, K)`` occupancy volume (over the ``slab`` slices
    ``k - slab // 2 .. k - slab // 2 + slab - 1`` around its slice ``k`` when the detector ran on every
    ``slab``-th slice, :func:`detection_slices`); the
    (at most ``max_kidneys``) largest 26-connected components, a second one
    kept only if at least ``min_ratio`` of the first, give one box each.

    Returns
    -------
    list
        ``[((i0, i1), (j0, j1), (k0, k1)), ...]`` half-open voxel boxes, largest first.
    """
    from kidneyseg.preprocessing.components import component_sizes, keep_largest_components, label_components

    occ = np.zeros(tuple(int(s) for s in shape), dtype=bool)
    for k, boxes in detections.items():
        for x1, y1, x2, y2, *_ in boxes:
            i0, i1 = int(np.floor(y1)), int(np.ceil(y2))
            j0, j1 = int(np.floor(x1)), int(np.ceil(x2))
            k0 = max(0, int(k) - int(slab) // 2)
            occ[max(0, i0) : max(0, i1), max(0, j0) : max(0, j1), k0 : k0 + max(1, int(slab))] = True
    kept = keep_largest_components(occ, max_kidneys, min_ratio)
    lab, n = label_components(kept)
    sizes = component_sizes(lab, n)
    out = []
    from scipy import ndimage

    objs = ndimage.find_objects(lab)
    for idx in np.argsort(-sizes, kind="stable"):
        sl = objs[int(idx)]
        if sl is None:
            continue
        out.append(tuple((s.start, s.stop) for s in sl))
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------- counts
@dataclass(frozen=True)
class DetectionCounts:
    """Box counts: ``tp`` matched predictions, ``fp`` unmatched predictions, ``fn`` unmatched reference boxes."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: DetectionCounts) -> DetectionCounts:
        return DetectionCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def n_ref(self) -> int:
        """Number of reference boxes (``tp + fn``)."""
        return self.tp + self.fn

    @property
    def n_pred(self) -> int:
        """Number of predicted boxes (``tp + fp``)."""
        return self.tp + self.fp

    def _ratio(self, num: int, den: int) -> float:
        if self.n_ref == 0 and self.n_pred == 0:
            return 1.0
        return 0.0 if den == 0 else num / den

    @property
    def recall(self) -> float:
        """``tp / (tp + fn)``; 1.0 with no reference box and no prediction, 0.0 with predictions only."""
        return self._ratio(self.tp, self.n_ref)

    @property
    def precision(self) -> float:
        """``tp / (tp + fp)``; 1.0 with no reference box and no prediction, 0.0 with reference boxes only."""
        return self._ratio(self.tp, self.n_pred)

    @property
    def f1(self) -> float:
        """``2 tp / (2 tp + fp + fn)`` (harmonic mean of precision and recall), same empty policy."""
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)


# ---------------------------------------------------------------- IoU and matching
def as_boxes(boxes: Any, width: int, what: str) -> np.ndarray:
    """``boxes`` as a float64 ``(n, width)`` array (``width`` 4: ``x1, y1, x2, y2``; 5: and a score); empty -> ``(0, width)``.

    Any other shape raises :class:`~kidneyseg.errors.InputError` naming ``what``.
    """
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, width))
    if arr.ndim != 2 or arr.shape[1] != width:
        raise InputError(f"{what} have the wrong shape", found=f"shape {arr.shape}",
                         expected=f"(n, {width}) rows (x1, y1, x2, y2{', score' if width == 5 else ''})")
    return arr


def box_iou(a: Any, b: Any) -> np.ndarray:
    """Pairwise IoU of 2D boxes ``(n, 4)`` and ``(m, 4)`` ``(x1, y1, x2, y2)`` -> ``(n, m)`` float64.

    Areas are ``(x2 - x1) * (y2 - y1)`` (``x2``, ``y2`` one past the last pixel); an empty
    box (zero area) has IoU 0 with everything.

    >>> float(box_iou([[0, 0, 4, 4]], [[2, 0, 6, 4]])[0, 0])  # 8 shared pixels of 24
    0.3333333333333333
    """
    a = as_boxes(a, 4, "boxes")
    b = as_boxes(b, 4, "boxes")
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0.0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0.0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _boxes_3d(boxes: Iterable[Sequence[Sequence[float]]]) -> np.ndarray:
    arr = np.asarray([[v for lohi in box for v in lohi] for box in boxes], dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 6))
    if arr.ndim != 2 or arr.shape[1] != 6:
        raise InputError("3D boxes have the wrong shape", found=f"shape {arr.shape}",
                         expected="((i0, i1), (j0, j1), (k0, k1)) per box")
    return arr


def box_iou_3d(a: Iterable[Sequence[Sequence[float]]], b: Iterable[Sequence[Sequence[float]]]) -> np.ndarray:
    """Pairwise IoU of 3D boxes ``((i0, i1), (j0, j1), (k0, k1))`` (half-open, voxels) -> ``(n, m)`` float64.

    >>> float(box_iou_3d([((0, 2), (0, 2), (0, 2))], [((1, 3), (0, 2), (0, 2))])[0, 0])  # 4 of 12 voxels
    0.3333333333333333
    """
    x = _boxes_3d(a).reshape(-1, 3, 2)
    y = _boxes_3d(b).reshape(-1, 3, 2)
    lo = np.maximum(x[:, None, :, 0], y[None, :, :, 0])
    hi = np.minimum(x[:, None, :, 1], y[None, :, :, 1])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=2)
    vol_x = np.prod(np.clip(x[:, :, 1] - x[:, :, 0], 0.0, None), axis=1)
    vol_y = np.prod(np.clip(y[:, :, 1] - y[:, :, 0], 0.0, None), axis=1)
    union = vol_x[:, None] + vol_y[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_boxes(
    iou: np.ndarray, scores: Sequence[float] | np.ndarray | None = None, *, iou_threshold: float = 0.5
) -> tuple[DetectionCounts, list[tuple[int, int, float]]]:
    """Greedy one-to-one matching of predictions to reference boxes (PASCAL VOC / COCO rule).

    Each prediction, in order of decreasing score, takes the still unmatched reference box with the
    highest IoU if that IoU is at least ``iou_threshold``: a prediction matches at most one reference
    box and a reference box at most one prediction, so one box spanning two kidneys counts once.

    Parameters
    ----------
    iou:
        ``(n_pred, n_ref)`` IoU matrix (:func:`box_iou` or :func:`box_iou_3d`).
    scores:
        ``(n_pred,)`` prediction scores; predictions are matched in decreasing score
        (ties: in the given order).  ``None``: in the given order.
    iou_threshold:
        Smallest IoU of a match.

    Returns
    -------
    (DetectionCounts, matches)
        ``matches``: ``(prediction index, reference index, IoU)`` of each true positive.

    >>> match_boxes(box_iou([[0, 0, 20, 10]], [[0, 0, 10, 10], [10, 0, 20, 10]]))[0]  # IoU 0.5 with both
    DetectionCounts(tp=1, fp=0, fn=1)
    """
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise KidneysegError("IoU threshold out of range", found=iou_threshold, expected="a value in (0, 1]",
                             fix="pass e.g. 0.5 (--iou 0.5)")
    m = np.asarray(iou, dtype=np.float64)
    if m.ndim != 2:
        raise InputError("IoU matrix is not 2D", found=f"shape {m.shape}", expected="(n_pred, n_ref)")
    n_pred, n_ref = m.shape
    order = range(n_pred) if scores is None else np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    free = np.ones(n_ref, dtype=bool)
    matches: list[tuple[int, int, float]] = []
    for p in order:
        if not free.any():
            break
        cand = np.where(free, m[int(p)], -1.0)
        r = int(np.argmax(cand))
        if cand[r] >= iou_threshold:
            free[r] = False
            matches.append((int(p), r, float(cand[r])))
    tp = len(matches)
    return DetectionCounts(tp=tp, fp=n_pred - tp, fn=n_ref - tp), matches


# ---------------------------------------------------------------- reference boxes
def reference_kidneys(
    label: np.ndarray, kidney_values: Sequence[int] | None = None, *, max_kidneys: int = 2, min_voxels: int = 100
) -> np.ndarray:
    """The reference kidneys of a label map: int32 map, 0 outside, kidney ``n`` (1-based) largest first.

    Kidneys are the ``max_kidneys`` largest 26-connected components of the kidney region
    (``np.isin(label, kidney_values)``; ``None``: every non-zero value) with at least
    ``min_voxels`` voxels, as :func:`kidneyseg.models.detection.boxes_from_volume` picks them.
    """
    from scipy import ndimage

    lab = np.asarray(label)
    if lab.ndim != 3:
        raise InputError("detection evaluation needs a 3D label map", found=f"shape {lab.shape}",
                         expected="(I, J, K) with K axial")
    fg = lab != 0 if kidney_values is None else np.isin(lab, list(kidney_values))
    comps, n = ndimage.label(fg, structure=np.ones((3, 3, 3), bool))
    out = np.zeros(lab.shape, np.int32)
    if n == 0:
        return out
    sizes = np.bincount(comps.ravel())[1:]
    order = [int(i) + 1 for i in np.argsort(-sizes, kind="stable") if sizes[i] >= min_voxels][: int(max_kidneys)]
    for rank, cid in enumerate(order, start=1):
        out[comps == cid] = rank
    return out


def kidney_slice_boxes(kidneys: np.ndarray) -> dict[int, np.ndarray]:
    """Per-slice boxes of a kidney map (:func:`reference_kidneys`): slice ``k`` -> ``(n, 4)`` float64, one per kidney."""
    from scipy import ndimage

    out: dict[int, list[list[float]]] = {}
    for kid, box in enumerate(ndimage.find_objects(kidneys), start=1):
        if box is None:
            continue
        mask = kidneys[box] == kid  # the kidney's 3D box: every slice of it holds some of the kidney
        i0, j0, k0 = (s.start for s in box)
        for dk in range(mask.shape[2]):
            rows = np.flatnonzero(mask[:, :, dk].any(axis=1))
            cols = np.flatnonzero(mask[:, :, dk].any(axis=0))
            out.setdefault(k0 + dk, []).append([j0 + cols[0], i0 + rows[0], j0 + cols[-1] + 1, i0 + rows[-1] + 1])
    return {k: np.asarray(sorted(v), dtype=np.float64) for k, v in sorted(out.items())}


def kidney_3d_boxes(kidneys: np.ndarray) -> list[Box3D]:
    """3D bounding box of each kidney of a kidney map (:func:`reference_kidneys`), kidney 1 first."""
    from scipy import ndimage

    out: list[Box3D] = []
    for sl in ndimage.find_objects(kidneys):
        if sl is not None:
            out.append(((sl[0].start, sl[0].stop), (sl[1].start, sl[1].stop), (sl[2].start, sl[2].stop)))
    return out


def reference_slice_boxes(
    label: np.ndarray, kidney_values: Sequence[int] | None = None, *, max_kidneys: int = 2, min_voxels: int = 100
) -> dict[int, np.ndarray]:
    """Reference boxes per axial slice: slice ``k`` -> ``(n, 4)`` float64 ``(x1, y1, x2, y2)``, one per kidney.

    The box of a kidney (:func:`reference_kidneys`) on slice ``k`` bounds its pixels there (x =
    column = J, y = row = I, ``x2``/``y2`` exclusive); slices without kidney are absent.
    """
    return kidney_slice_boxes(reference_kidneys(label, kidney_values, max_kidneys=max_kidneys, min_voxels=min_voxels))


def reference_kidney_boxes(
    label: np.ndarray, kidney_values: Sequence[int] | None = None, *, max_kidneys: int = 2, min_voxels: int = 100
) -> list[Box3D]:
    """3D bounding box ``((i0, i1), (j0, j1), (k0, k1))`` of each reference kidney, largest kidney first."""
    return kidney_3d_boxes(reference_kidneys(label, kidney_values, max_kidneys=max_kidneys, min_voxels=min_voxels))


# ---------------------------------------------------------------- the detections file
@dataclass
class CaseDetections:
    """A detector's boxes of one case and the grid they lie on.

    Attributes
    ----------
    boxes:
        Slice ``k`` -> ``(n, 5)`` float rows ``(x1, y1, x2, y2, score)``.
    shape, affine:
        The detector's grid (``(I, J, K)``, 4x4 voxel -> RAS mm), e.g. of
        ``apply_plan(case, detector.plan)``; ``None``: the reference reoriented to RAS.
    slices:
        Slices the detector searched (``None``: every slice).
    slab:
        Slices each searched slice stands for (:func:`detection_slices`).
    score_threshold:
        The detector stage's threshold, if recorded (the evaluation's default).
    kidney_boxes:
        Predicted 3D kidney boxes on the same grid, if recorded.
    """

    boxes: dict[int, np.ndarray]
    shape: tuple[int, int, int] | None = None
    affine: np.ndarray | None = None
    slices: list[int] | None = None
    slab: int = 1
    score_threshold: float | None = None
    kidney_boxes: list[Box3D] | None = None


def detections_document(cases: Mapping[str, CaseDetections]) -> dict[str, Any]:
    """The JSON document of :func:`write_detections` (``{"format", "version", "cases": {NAME: ...}}``)."""
    doc: dict[str, Any] = {"format": DETECTIONS_FORMAT, "version": 1, "cases": {}}
    for name, d in cases.items():
        entry: dict[str, Any] = {
            "shape": None if d.shape is None else [int(v) for v in d.shape],
            "affine": None if d.affine is None else np.asarray(d.affine, dtype=np.float64).tolist(),
            "slices": None if d.slices is None else [int(k) for k in d.slices],
            "slab": int(d.slab),
            "score_threshold": None if d.score_threshold is None else float(d.score_threshold),
            "boxes": {str(int(k)): np.asarray(b, dtype=np.float64).reshape(-1, np.shape(b)[-1] if np.size(b) else 5)
                      .tolist() for k, b in sorted(d.boxes.items())},
        }
        if d.kidney_boxes is not None:
            entry["kidney_boxes"] = [[[int(v) for v in lohi] for lohi in box] for box in d.kidney_boxes]
        doc["cases"][str(name)] = entry
    return doc


def write_detections(path: str | os.PathLike[str], cases: Mapping[str, CaseDetections]) -> Path:
    """Write detections of several cases as JSON (the format
    :func:`kidneyseg.evaluation.detection.read_detections` reads), atomically."""
    from kidneyseg.io import atomic_path, check_output

    out = check_output(path)
    doc = detections_document(cases)
    with atomic_path(out) as tmp, open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1, allow_nan=False)
        fh.write("\n")
    return out
