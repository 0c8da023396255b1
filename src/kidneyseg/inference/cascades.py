"""The two CT cascades of docs/CONTRACTS.md, run on a loaded model folder.

``ct3d-cascade``
    coarse 3D U-Net (kidney vs background, low resolution) -> at most two
    kidney components -> per-kidney crop of the full-resolution RAS volume
    (``crop_margin_mm``) -> fine 3D U-Net on the crop at its plan spacing (or resampled to its patch size:
    stage fact ``resize_to_patch``) ->
    largest kidney component -> lesion 3D U-Net (input: crop image + fine
    kidney mask; output background/tumour/cyst), lesions kept inside the
    kidney -> each crop's labels undone onto the input grid and merged.
``ct-detect-vnet``
    Faster R-CNN on the windowed axial slices -> per-slice kidney boxes ->
    3D box per kidney (two largest components) -> crop + margin, resampled
    to the segmenter's ``patch_size`` -> V-Net -> largest component ->
    undone onto the input grid and merged.

Boxes move between grids through world (RAS mm) coordinates, so a box found
on a 4 mm grid or on in-plane resampled slices is exact on the full grid.
Both functions return ``(label on the input grid, probabilities or None)``;
probabilities ``(C, *input shape)`` are 1 for background outside the crops.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from kidneyseg.case import Case
from kidneyseg.preprocessing.geometry import Box, world_box_to_grid

if TYPE_CHECKING:
    from kidneyseg.models.boxes import CaseDetections
    from kidneyseg.models.folder import LoadedModel, LoadedStage

#: ``ct-detect-vnet``: the detector runs on one axial slice every this many mm (the stage's ``detect_every_mm``
#: overrides it; ``null`` there: every slice).  A kidney is 100-130 mm long, so 10 mm gives it ten or more
#: detections; each detected slice stands for the slab of slices around it.  On a 512x512x200 CT at 2.5 mm
#: this runs the Faster R-CNN on 50 slices instead of 200.
DETECT_EVERY_MM = 10.0

__all__ = ["DETECT_EVERY_MM", "Box", "StageRunner", "no_detection_warning", "run_cascade", "run_detect_segment", "world_box_to_grid"]


class StageRunner(Protocol):
    """What the cascades need from the predictor that runs them (:class:`~kidneyseg.inference.Predictor`)."""

    labels: dict[int, str]
    device: str

    def stage_probabilities(self, stage: LoadedStage, pre: Case, extra: list[np.ndarray] | None = None,
                            progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Probabilities ``(C_stage, *pre.shape)`` of one stage on its preprocessed case."""
        ...

    def to_label_channels(self, probs: np.ndarray, channel_to_label: Sequence[int]) -> np.ndarray:
        """Stage channels re-indexed to the model's sorted label values ``(C, ...)``."""
        ...


def _component_boxes(mask: np.ndarray, max_kidneys: int = 2) -> list[Box]:
    from scipy import ndimage

    from kidneyseg.preprocessing.components import component_sizes, keep_largest_components, label_components

    kept = keep_largest_components(mask, max_kidneys, 1.0 / 3.0)
    lab, n = label_components(kept)
    sizes = component_sizes(lab, n)
    objs = ndimage.find_objects(lab)
    return [tuple((s.start, s.stop) for s in objs[int(i)]) for i in np.argsort(-sizes, kind="stable")
            if objs[int(i)] is not None]


def _largest(mask: np.ndarray) -> np.ndarray:
    from kidneyseg.preprocessing.components import keep_largest_components

    return keep_largest_components(mask, 1) if mask.any() else mask


def _stage_fact(stage: LoadedStage, key: str, default: Any) -> Any:
    return (stage.spec.get("stage") or {}).get(key, default)


def _crop_plan(stage: LoadedStage, crop_case: Case) -> Any:
    """The plan a crop stage runs with: its own, or, when the stage was trained on crops resampled to its patch
    (``resize_to_patch``, the ``paper`` recipe of ``ct3d-cascade``), one whose spacing brings ``crop_case`` to
    exactly ``patch_size`` (as :func:`kidneyseg.preprocessing.geometry.resample_to_shape` in training)."""
    plan = stage.plan
    if not _stage_fact(stage, "resize_to_patch", False):
        return plan
    return plan.updated({"target_spacing": [n * s / p for n, s, p in zip(crop_case.shape, crop_case.spacing,
                                                                         plan.patch_size)]})


def _merge(out: np.ndarray, part: np.ndarray) -> None:
    np.maximum(out, part, out=out)


def _empty_probs(pred: StageRunner, shape: Sequence[int]) -> np.ndarray:
    p = np.zeros((len(pred.labels),) + tuple(shape), np.float32)
    p[sorted(pred.labels).index(0) if 0 in pred.labels else 0] = 1.0
    return p


def _paste_probs(acc: np.ndarray, part: np.ndarray, region: np.ndarray) -> None:
    """Inside ``region`` (bool, input grid) take the crop's probabilities."""
    acc[:, region] = part[:, region]


def run_cascade(pred: StageRunner, model: LoadedModel, case: Case, need_probs: bool,
                timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray | None]:
    """``ct3d-cascade`` on ``case``; see the module docstring."""
    from kidneyseg.preprocessing.geometry import crop, reorient, resample_array, undo, undo_argmax
    from kidneyseg.preprocessing.plan import apply_plan

    coarse, fine = model.stages["coarse"], model.stages["fine"]
    lesion = model.stages.get("lesion")
    values = np.asarray(sorted(pred.labels), dtype=np.uint8)
    out = np.zeros(case.shape, np.uint8)
    acc = _empty_probs(pred, case.shape) if need_probs else None

    t = time.perf_counter()
    c_pre = apply_plan(case, coarse.plan)
    c_probs = pred.stage_probabilities(coarse, c_pre)
    bg = [c for c, v in enumerate(coarse.channel_to_label) if int(v) == 0]
    c_mask = np.argmax(c_probs, axis=0)
    c_mask = ~np.isin(c_mask, bg)
    boxes = _component_boxes(c_mask, 2)
    timings["coarse"] = time.perf_counter() - t

    ras = reorient(case, fine.plan.orientation or "RAS")
    margin = float(_stage_fact(fine, "crop_margin_mm", 10.0))
    timings["fine"] = 0.0
    timings["lesion"] = 0.0
    for box in boxes:
        t = time.perf_counter()
        fbox = world_box_to_grid(box, c_pre.affine, ras, margin)
        crop_case = crop(ras, fbox)
        f_pre = apply_plan(crop_case, _crop_plan(fine, crop_case))
        f_probs = pred.to_label_channels(pred.stage_probabilities(fine, f_pre), fine.channel_to_label)
        f_lab = values[np.argmax(f_probs, axis=0)]
        kidney = _largest(f_lab != 0)
        f_lab[~kidney] = 0
        timings["fine"] += time.perf_counter() - t
        if lesion is not None and kidney.any():
            t = time.perf_counter()
            l_pre = apply_plan(crop_case, _crop_plan(lesion, crop_case))
            k_on_l = kidney if l_pre.shape == f_pre.shape else resample_array(
                kidney.astype(np.uint8), l_pre.shape, order=0, is_label=True).astype(bool)
            l_probs = pred.to_label_channels(
                pred.stage_probabilities(lesion, l_pre, extra=[k_on_l.astype(np.float32)]), lesion.channel_to_label)
            l_lab = values[np.argmax(l_probs, axis=0)]
            l_lab[~k_on_l] = 0
            if l_pre.shape == f_pre.shape:
                f_lab = np.where(l_lab != 0, l_lab, f_lab)
                # inside the kidney: the lesion stage's classes, its background read as kidney
                vals = list(values)
                kid_values = [int(v) for v in fine.channel_to_label if int(v) != 0]
                if kid_values and 0 in vals:
                    moved = l_probs.copy()
                    moved[vals.index(kid_values[0])] += moved[vals.index(0)]
                    moved[vals.index(0)] = 0.0
                    f_probs = np.where(k_on_l[None], moved, f_probs)
            else:
                back_l = undo(l_pre, l_lab, is_label=True)
                back_f = undo(f_pre, f_lab, is_label=True)
                back = np.where((back_l != 0) & (back_f != 0), back_l, back_f)
                _merge(out, back)
                timings["lesion"] += time.perf_counter() - t
                continue
            timings["lesion"] += time.perf_counter() - t
        t = time.perf_counter()
        # as the single-model path: the probabilities (outside the kept kidney: background) come back to the
        # input grid linearly and the label is their argmax there, so boundaries do not depend on the pipeline
        f_probs = f_probs.copy()
        f_probs[:, f_lab == 0] = 0.0
        f_probs[0, f_lab == 0] = 1.0  # values are sorted, background (0) first
        _merge(out, undo_argmax(f_pre, f_probs, values))
        if need_probs and acc is not None:
            region = undo(crop_case, np.ones(crop_case.shape, bool), is_label=True)
            part = undo(f_pre, f_probs, is_label=False, channel_axis=True)
            _paste_probs(acc, part, region)
        timings["undo"] = timings.get("undo", 0.0) + time.perf_counter() - t
    if need_probs and acc is not None:
        acc /= np.clip(acc.sum(axis=0, keepdims=True), 1e-6, None)
    return out, acc


def no_detection_warning(threshold: float, n_slices: int, best_score: float | None, stage_dir: Any) -> str:
    """The warning of a ``ct-detect-vnet`` run whose detector kept no kidney box: its label map is empty.

    ``threshold``: the detector stage's ``score_threshold``; ``n_slices``: axial slices searched;
    ``best_score``: the highest box score found below it (``None``: the detector proposed no box at all);
    ``stage_dir``: the detector stage folder, whose ``model.json`` holds the threshold.
    """
    best = "it proposed no box at all" if best_score is None else f"the highest score was {best_score:.2f}"
    return (f"the kidney detector found no box with a score of at least {threshold:g} on any of the {n_slices} "
            f"axial slices ({best}), so no kidney was segmented and the label map is empty. Fix: lower "
            f"\"score_threshold\" under \"stage\" in {Path(stage_dir) / 'model.json'}, or check that the scan is an "
            "abdominal CT in HU with the kidneys in the field of view")


def run_detect_segment(pred: StageRunner, model: LoadedModel, case: Case, need_probs: bool,
                       timings: dict[str, float], warnings: list[str] | None = None,
                       detections: list[CaseDetections] | None = None,
                       ) -> tuple[np.ndarray, np.ndarray | None]:
    """``ct-detect-vnet`` on ``case``; see the module docstring.

    When the detector keeps no box (none reaches its ``score_threshold``) the label map is empty and
    :func:`no_detection_warning` is appended to ``warnings``.  ``detections``: a list that gets the
    :class:`~kidneyseg.models.boxes.CaseDetections` of this run appended (the detector's grid, the slices it
    searched and their slab, every box it proposed with its score, the stage's ``score_threshold`` and the 3D
    kidney boxes that were cropped), what ``kidneyseg predict --save-detections`` writes.
    """
    from kidneyseg.inference.engines import boxes_to_3d, detect_slices, detection_slices
    from kidneyseg.preprocessing.geometry import crop, reorient, undo, undo_argmax
    from kidneyseg.preprocessing.plan import apply_plan

    det, seg = model.stages["detector"], model.stages["segmenter"]
    values = np.asarray(sorted(pred.labels), dtype=np.uint8)
    out = np.zeros(case.shape, np.uint8)
    acc = _empty_probs(pred, case.shape) if need_probs else None

    t = time.perf_counter()
    d_pre = apply_plan(case, det.plan)
    threshold = float(_stage_fact(det, "score_threshold", 0.5))
    # every box the detector proposes, then those reaching the threshold: the best score below it tells the user
    # one slice every detect_every_mm (a kidney spans 100 mm or more): each stands for its slab of slices
    every = _stage_fact(det, "detect_every_mm", DETECT_EVERY_MM)
    ks, slab = detection_slices(int(d_pre.shape[-1]), float(d_pre.spacing[2]), None if every is None else float(every))
    found = detect_slices(det.module, np.asarray(d_pre.image, np.float32)[None], score_threshold=0.0,
                          batch_size=int(_stage_fact(det, "batch_size", 4)), device=pred.device, slices=ks)
    dets = {k: b[b[:, 4] >= threshold] for k, b in found.items() if (b[:, 4] >= threshold).any()}
    boxes = boxes_to_3d(dets, d_pre.shape, slab=slab)
    timings["detector"] = time.perf_counter() - t
    if detections is not None:
        from kidneyseg.models.boxes import CaseDetections

        detections.append(CaseDetections(
            boxes={int(k): np.asarray(b, np.float32) for k, b in sorted(found.items())},
            shape=tuple(int(v) for v in d_pre.shape),  # type: ignore[arg-type]
            affine=np.asarray(d_pre.affine, np.float64), slices=[int(k) for k in ks], slab=int(slab),
            score_threshold=threshold, kidney_boxes=[tuple((int(lo), int(hi)) for lo, hi in b)  # type: ignore[misc]
                                                     for b in boxes]))
    if not boxes and warnings is not None:
        best = max((float(b[:, 4].max()) for b in found.values()), default=None)
        warnings.append(no_detection_warning(threshold, len(ks), best, det.dir))

    ras = reorient(case, seg.plan.orientation or "RAS")
    margin = float(_stage_fact(seg, "crop_margin_mm", 10.0))
    patch = list(seg.plan.patch_size)
    timings["segmenter"] = 0.0
    for box in boxes:
        t = time.perf_counter()
        cbox = world_box_to_grid(box, d_pre.affine, ras, margin)
        crop_case = crop(ras, cbox)
        plan = seg.plan
        if _stage_fact(seg, "resize_to_patch", True):
            plan = plan.updated({"target_spacing": [n * s / p for n, s, p in zip(crop_case.shape, crop_case.spacing,
                                                                                 patch)]})
        s_pre = apply_plan(crop_case, plan)
        s_probs = pred.to_label_channels(pred.stage_probabilities(seg, s_pre), seg.channel_to_label)
        s_lab = values[np.argmax(s_probs, axis=0)]
        s_lab[~_largest(s_lab != 0)] = 0
        # as the single-model path: probabilities (background outside the kept component) back linearly, then argmax
        s_probs = s_probs.copy()
        s_probs[:, s_lab == 0] = 0.0
        s_probs[0, s_lab == 0] = 1.0  # values are sorted, background (0) first
        _merge(out, undo_argmax(s_pre, s_probs, values))
        if need_probs and acc is not None:
            region = undo(crop_case, np.ones(crop_case.shape, bool), is_label=True)
            _paste_probs(acc, undo(s_pre, s_probs, is_label=False, channel_axis=True), region)
        timings["segmenter"] += time.perf_counter() - t
    if need_probs and acc is not None:
        acc /= np.clip(acc.sum(axis=0, keepdims=True), 1e-6, None)
    return out, acc
