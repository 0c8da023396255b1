"""Turn preprocessed cases into training samples for each kind of stage.

All functions take cases already passed through ``apply_plan`` (RAS volumes
``[i, j, k]`` or 2D images ``[row, col]``, float32 image, uint8 label with the
task's values) and return lists of sample dicts (see :mod:`.trainer`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from kidneyseg.case import Case
from kidneyseg.training.targets import kidney_values, to_channels


def slice_samples(case: Case, mapping: dict[int, int], *, max_background: int, seed: int,
                  context: int = 0, max_slices: int | None = None) -> list[dict[str, Any]]:
    """2D samples: the image itself, or axial slices ``[:, :, k]`` of a volume.

    Of a volume, every slice with foreground is kept (at most ``max_slices`` of them,
    evenly spaced, when given) plus at most ``max_background`` background-only
    slices chosen with ``seed``.  With
    ``context`` > 0 each sample's image holds ``2 * context + 1`` channels: the
    slice and its neighbours (:func:`kidneyseg.preprocessing.plan.slice_context`);
    the label is the middle slice's.
    """
    from kidneyseg.preprocessing.plan import slice_context

    lab = to_channels(case.require_label(), mapping)
    img = slice_context(case.require_image(), context)  # (2n+1, I, J[, K])
    if case.ndim == 2:
        return [{"image": img, "label": lab[None], "name": case.name}]
    fg = np.nonzero(lab.any(axis=(0, 1)))[0]
    bg = np.setdiff1d(np.arange(lab.shape[2]), fg)
    if max_slices is not None and len(fg) > max_slices:
        fg = fg[np.unique(np.round(np.linspace(0, len(fg) - 1, max_slices)).astype(int))]
    rng = np.random.default_rng(seed)
    keep_bg: list[int] = ([int(k) for k in rng.choice(bg, size=min(len(bg), max_background), replace=False)]
                          if len(bg) else [])
    ks = sorted([int(k) for k in fg] + [int(k) for k in keep_bg])
    return [{"image": np.ascontiguousarray(img[:, :, :, k]), "label": np.ascontiguousarray(lab[None, :, :, k]),
             "name": f"{case.name}_z{k:03d}"} for k in ks]


def volume_sample(case: Case, mapping: dict[int, int]) -> dict[str, Any]:
    """One 3D sample: the whole (resampled) volume; patches are cut by the augmentation."""
    return {"image": case.require_image().astype(np.float32)[None],
            "label": to_channels(case.require_label(), mapping)[None],
            "name": case.name}


def kidney_boxes(label: np.ndarray, task: str, spacing: Sequence[float], margin_mm: float,
                 max_kidneys: int = 2, min_voxels: int = 50) -> list[tuple[tuple[int, int], ...]]:
    """Per-kidney crop boxes ``((lo, hi), ...)`` (voxels, ``hi`` exclusive) with a margin in mm.

    Kidneys are the ``max_kidneys`` largest 26-connected components of the
    kidney region (kidney + masses) with at least ``min_voxels`` voxels.
    """
    from scipy import ndimage

    fg = np.isin(label, kidney_values(task))
    comps, n = ndimage.label(fg, structure=np.ones((3,) * label.ndim, bool))
    if n == 0:
        return []
    sizes = np.bincount(comps.ravel())[1:]
    order = [int(i) + 1 for i in np.argsort(-sizes, kind="stable") if sizes[i] >= min_voxels][:max_kidneys]
    objs = ndimage.find_objects(comps)
    boxes = []
    for cid in sorted(order, key=lambda c: objs[c - 1][0].start):
        sl = objs[cid - 1]
        box = []
        for ax, s in enumerate(sl):
            m = int(math.ceil(margin_mm / float(spacing[ax])))
            box.append((max(0, s.start - m), min(label.shape[ax], s.stop + m)))
        boxes.append(tuple(box))
    return boxes


def crop_samples(case: Case, task: str, mapping: dict[int, int], margin_mm: float, *, with_mask: bool = False,
                 resize_to: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """3D samples of the per-kidney crops of ``case``.

    ``with_mask`` adds ``"mask"``: the ground-truth kidney region of the crop
    (the lesion stage's second input channel).  ``resize_to`` resamples each
    crop to a fixed size (V-Net segmenter: image linear, label/mask nearest).
    """
    from kidneyseg.preprocessing.geometry import crop, resample_to_shape

    out = []
    for n, box in enumerate(kidney_boxes(case.require_label(), task, case.spacing, margin_mm)):
        part = crop(case, box)
        if resize_to is not None:
            # the same resampling prediction applies to the crop (geometry.resample, through the plan)
            part = resample_to_shape(part, resize_to, order=1)
        img = part.require_image().astype(np.float32)
        lab = part.require_label()
        s: dict[str, Any] = {"name": f"{case.name}_kidney{n}", "box": box}
        mask = np.isin(lab, kidney_values(task)).astype(np.uint8)
        ch = to_channels(lab, mapping)
        s["image"] = img[None]
        s["label"] = ch[None]
        if with_mask:
            s["mask"] = mask[None]
        out.append(s)
    return out


def detector_crop_samples(case: Case, det_case: Case, detector: Any, task: str, mapping: dict[int, int],
                          margin_mm: float, resize_to: Sequence[int], *, score_threshold: float = 0.5,
                          every_mm: float | None = None, batch_size: int = 4) -> list[dict[str, Any]]:
    """3D samples of ``case`` cut where the trained ``detector`` finds the kidneys (``ct-detect-vnet``, the paper's
    V-Net training crops), found as prediction finds them (:mod:`kidneyseg.models.boxes`).

    ``det_case``: the same case preprocessed with the detector's plan (windowed axial slices); ``case``: with
    the segmenter's.  Each 3D detector box goes through world mm to ``case``'s grid, grows by ``margin_mm``,
    and is cropped and resampled to ``resize_to`` with its ground-truth labels.  A labelled kidney that no
    detector box overlaps gets its ground-truth crop (:func:`crop_samples`), so every kidney is learned even
    while the detector misses it.  Samples are named ``<case>_det<n>`` and ``<case>_kidney<n>``.
    """
    from kidneyseg.models.boxes import boxes_to_3d, detect_slices, detection_slices
    from kidneyseg.preprocessing.geometry import crop, resample_to_shape, world_box_to_grid

    was_training = bool(getattr(detector, "training", False))
    detector.eval()
    ks, slab = detection_slices(int(det_case.shape[-1]), float(det_case.spacing[2]), every_mm)
    found = detect_slices(detector, np.asarray(det_case.require_image(), np.float32)[None],
                          score_threshold=score_threshold, batch_size=batch_size, slices=ks)
    if was_training:
        detector.train()
    boxes = [world_box_to_grid(b, det_case.affine, case, margin_mm)
             for b in boxes_to_3d(found, det_case.shape, slab=slab)]
    boxes = [b for b in boxes if all(hi > lo for lo, hi in b)]
    out = []
    for n, box in enumerate(boxes):
        part = resample_to_shape(crop(case, box), resize_to, order=1)
        out.append({"name": f"{case.name}_det{n}", "box": box, "image": part.require_image().astype(np.float32)[None],
                    "label": to_channels(part.require_label(), mapping)[None]})
    for s in crop_samples(case, task, mapping, margin_mm, resize_to=resize_to):
        if not any(_overlap(s["box"], b) for b in boxes):
            out.append(s)
    return out


def _overlap(a: Sequence[tuple[int, int]], b: Sequence[tuple[int, int]]) -> bool:
    return all(min(x[1], y[1]) > max(x[0], y[0]) for x, y in zip(a, b))


def detector_samples(case: Case, task: str, *, max_background: int, seed: int) -> list[dict[str, Any]]:
    """2D detector samples: axial slices (or the image) with one box per kidney per slice."""
    from kidneyseg.models.detection import boxes_from_slice, boxes_from_volume

    img = case.require_image().astype(np.float32)
    label = case.require_label()
    kv = kidney_values(task)
    if case.ndim == 2:
        return [{"image": img[None], "boxes": boxes_from_slice(label, kv), "name": case.name}]
    per_slice = boxes_from_volume(label, kv, axis=2)
    bg = [k for k in range(img.shape[2]) if k not in per_slice]
    rng = np.random.default_rng(seed)
    keep_bg = [int(k) for k in rng.choice(bg, size=min(len(bg), max_background), replace=False)] if bg else []
    out = []
    for k in sorted(list(per_slice) + keep_bg):
        out.append({"image": np.ascontiguousarray(img[None, :, :, k]),
                    "boxes": per_slice.get(k, np.zeros((0, 4), np.float32)), "name": f"{case.name}_z{k:03d}"})
    return out


def patch_for_crops(samples: list[dict[str, Any]], multiple: int = 16, lo: int = 32, hi: int = 128,
                    budget: int = 128 * 128 * 64) -> list[int]:
    """Patch size covering the median crop, rounded up to ``multiple``, each axis in ``[lo, hi]``, within ``budget`` voxels."""
    shapes = np.asarray([s["image"].shape[1:] for s in samples], dtype=float)
    med = np.median(shapes, axis=0) if len(shapes) else np.full(3, 64.0)
    patch = [int(min(hi, max(lo, multiple * math.ceil(m / multiple)))) for m in med]
    while math.prod(patch) > budget:
        ax = int(np.argmax(patch))
        patch[ax] = max(lo, patch[ax] - multiple)
    return patch
