"""Connected components, small-blob removal, hole filling and label consistency.

All functions take integer label maps (uint8) indexed ``[i, j, k]`` (volumes)
or ``[row, col]`` (2D images) and the voxel spacing in mm along the same axes,
so thresholds are physical: volumes in mL (mm^3 / 1000), or for 2D images the
pixel area in mm^2 / 1000 ("mL" of a 1 mm thick slab).

Connectivity is full (26 in 3D, 8 in 2D).  Components are found with ``cc3d``
when it is installed, else with :func:`scipy.ndimage.label`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from kidneyseg.labels import CYST, KIDNEY, TUMOR
from kidneyseg.preprocessing.components import (  # re-exported
    SECOND_KIDNEY_RATIO,
    component_sizes,
    keep_largest_components,
    label_components,
    values_mask,
)
from kidneyseg.preprocessing.geometry import box_slices, nonzero_box


def _unit_ml(spacing: Sequence[float], ndim: int) -> float:
    sp = [float(s) for s in spacing][:ndim]
    if len(sp) != ndim or any(s <= 0 for s in sp):
        from kidneyseg.errors import GeometryError

        raise GeometryError(
            "spacing does not match the label map",
            found=tuple(spacing),
            expected=f"{ndim} positive values in mm",
            fix="pass case.spacing of the grid the label map lies on",
        )
    return float(np.prod(sp)) / 1000.0


def area_floor_ml(min_volume_ml: float) -> float:
    """The 2D counterpart of a 3D small-blob floor: the area of the disc through the centre of a sphere of
    ``min_volume_ml`` (mL), in the unit 2D post-processing measures areas in (mm^2 / 1000, the "mL" of a 1 mm
    slab): the same blob diameter is the floor on a slice as in a volume.  0.5 mL (a 9.8 mm sphere) -> 76 mm^2,
    0.1 mL -> 26 mm^2.

    >>> round(area_floor_ml(0.5) * 1000, 1)
    76.2
    """
    diameter = (6.0 * float(min_volume_ml) * 1000.0 / math.pi) ** (1.0 / 3.0)  # mm
    return math.pi * diameter * diameter / 4.0 / 1000.0


def remove_small_components(mask: np.ndarray, spacing: Sequence[float], min_volume_ml: float) -> np.ndarray:
    """Drop components of ``mask`` smaller than ``min_volume_ml`` (mL; spacing in mm)."""
    mask = np.asarray(mask, dtype=bool)
    if min_volume_ml <= 0 or not mask.any():
        return mask.copy()
    unit = _unit_ml(spacing, mask.ndim)
    lab, n = label_components(mask)
    sizes = component_sizes(lab, n)
    keep = np.flatnonzero(sizes * unit >= min_volume_ml) + 1
    return values_mask(lab, keep)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes of a boolean mask.

    A hole is background not connected to the array border in the mask's own
    dimension (3D for volumes).  Cavities open to the outside in 3D, such as
    the renal sinus and pelvis, are not holes and stay background.

    Background connects across faces (6 in 3D, 4 in 2D), as in
    :func:`scipy.ndimage.binary_fill_holes`, whose answer this is: the background's
    components are labelled once (:func:`label_components`) and the ones that
    touch no border are the holes, instead of scipy's dilation from the border
    (0.3-0.6 s against tens of ms on a CT's kidney box).
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    lab, n = label_components(~mask, connectivity="face")
    if n == 0:
        return mask.copy()
    outside = np.zeros(n + 1, dtype=bool)
    for ax in range(lab.ndim):
        for edge in (0, -1):
            outside[np.unique(lab[(slice(None),) * ax + (edge,)])] = True
    outside[0] = True  # label 0 is the mask itself
    return mask | ~outside[lab]


def touching(mask: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """Components of ``mask`` that touch ``anchor`` (share a voxel or a face/edge/corner).

    Exact without a dilation: a component of ``mask`` touches ``anchor`` exactly when it lies in the same
    full-connectivity component of ``mask | anchor`` as an anchor voxel (a path out of it meets an anchor
    voxel first, since a neighbouring mask voxel would belong to the same mask component).
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    anchor = np.asarray(anchor, dtype=bool)
    lab, _n = label_components(mask | anchor)
    hit = np.unique(lab[anchor])
    hit = hit[hit != 0]
    return mask & values_mask(lab, hit)


def drop_hesitant_components(label: np.ndarray, region_probability: np.ndarray, min_mean: float,
                             kidney_labels: Iterable[int] = (KIDNEY,),
                             lesion_labels: Iterable[int] = (TUMOR, CYST)) -> np.ndarray:
    """Remove the components of the kidney region (kidney + lesion labels, full connectivity) whose mean
    region probability is below ``min_mean``.

    ``label``: uint8 label map (``[row, col]`` or ``[i, j, k]``); ``region_probability``: the network's
    probability of the kidney region (kidney + lesion classes summed, 0..1) on the same grid.  Removed voxels
    become background.  Meant for 2D images, where no 3D context (the two largest components at one level)
    tells a false blob from a kidney: on CT slices a false kidney on the enhanced spleen is found with a
    hesitant mean probability (about 0.75-0.9) while true kidney cross-sections average above 0.9
    (docs/experiments.md, 2026-12-06).  Returns a new uint8 array.
    """
    lab = np.asarray(label)
    prob = np.asarray(region_probability, dtype=np.float32)
    if prob.shape != lab.shape:
        from kidneyseg.errors import GeometryError

        raise GeometryError("region probability does not match the label map", found=prob.shape,
                            expected=lab.shape, fix="pass the probabilities on the label map's grid")
    out = lab.astype(np.uint8, copy=True)
    region = values_mask(out, tuple(int(v) for v in kidney_labels) + tuple(int(v) for v in lesion_labels))
    if not region.any():
        return out
    cl, n = label_components(region)
    sizes = component_sizes(cl, n)
    sums = np.bincount(cl.ravel(), weights=prob.ravel(), minlength=n + 1)[1:]
    hesitant = [i + 1 for i in range(n) if sums[i] < float(min_mean) * sizes[i]]
    if hesitant:
        out[values_mask(cl, hesitant)] = 0
    return out


def postprocess_label(
    label: np.ndarray,
    spacing: Sequence[float],
    *,
    kidney_labels: Iterable[int] = (KIDNEY,),
    lesion_labels: Iterable[int] = (TUMOR, CYST),
    max_kidneys: int = 2,
    second_kidney_ratio: float | None = None,
    min_volume_ml: float = 0.1,
    fill: bool = True,
    affine: np.ndarray | None = None,
    lesions_need_kidney: bool | None = None,
    probabilities: Mapping[int, np.ndarray] | None = None,
    confident: float = 0.9,
) -> np.ndarray:
    """Clean a predicted label map (uint8, ``[i, j, k]`` or ``[row, col]``).

    Steps, on the *kidney region* = kidney labels + lesion labels:

    1. blobs smaller than ``min_volume_ml`` (mL, from ``spacing`` in mm) are removed;
    2. at most ``max_kidneys`` components are kept, a further one only if its
       volume is at least ``second_kidney_ratio`` of the largest (by default
       1/3 for 3D volumes, 0 for 2D images: one slice cuts the two kidneys at
       different levels: of the 93 KiTS19 and CURVAS reference slices that
       show two kidney cross-sections of at least 1 cm^2, the smaller is under a
       third of the larger on 26, down to 0.03); in volumes (with ``affine``) the
       kept components must share craniocaudal levels, as two kidneys do
       (``keep_largest_components(same_level=True)``): on an unenhanced CT a
       100 mL false "tumour" in the pelvis outranked one kidney;
    3. enclosed holes are filled with the kidney label (``fill``);
    4. lesion voxels (tumour, cyst) are kept only in components that touch
       kidney and hold at least ``min_volume_ml``; dropped lesion voxels become
       background (or kidney, when step 3 finds them enclosed by kidney).
       ``lesions_need_kidney`` switches this rule; by default it applies to 3D
       volumes only: a single 2D slice can cut through a tumour away from its
       kidney (KiTS slices with tumour and no kidney), so in 2D a lesion blob is
       kept when its kidney-region component survives steps 1-2.

    Labels other than kidney and lesion labels (e.g. liver in CHAOS) are left
    untouched.  Where several kidney labels exist (MR: right 2, left 3) each
    names one organ: step 2 is replaced by keeping each label's largest
    *face-connected* component (6-connectivity in 3D, 4 in 2D, as nnU-Net).
    On 7.7 mm slices a false-positive blob on the spleen often touches the
    kidney only along an edge across slices, and two false blobs larger than
    the true right kidney must not push it out of a "two largest" rule.
    With ``probabilities`` (label value -> probability map of the label map's
    shape, 0..1) a side label keeps the component with the most *confident*
    voxels (probability >= ``confident``) rather than the most voxels: on a
    CHAOS case with a giant cyst the network painted a wide, hesitant left-kidney
    rim on the cyst that outgrew the true, confidently found left kidney.

    ``affine`` (voxel -> RAS mm) makes tie-breaking between equal-sized
    components independent of the array orientation.

    Returns a new uint8 array of the same shape.
    """
    lab = np.asarray(label)
    full = lab.astype(np.uint8, copy=True)
    # work inside the bounding box of the foreground (+1 voxel so holes and borders behave the same)
    box = nonzero_box(lab, margin=1)
    if box is None:
        return full
    sub = box_slices(box)
    if affine is not None:
        shift = np.eye(4)
        shift[: lab.ndim, 3] = [lo for lo, _ in box]
        affine = np.asarray(affine, float) @ shift
    if lesions_need_kidney is None:
        lesions_need_kidney = lab.ndim == 3
    if second_kidney_ratio is None:
        second_kidney_ratio = SECOND_KIDNEY_RATIO if lab.ndim == 3 else 0.0
    probs = None
    if probabilities is not None:
        probs = {}
        for v, pv in probabilities.items():
            pv = np.asarray(pv)
            if pv.shape != lab.shape:
                from kidneyseg.errors import GeometryError

                raise GeometryError(f"probability map of label {v} does not match the label map", found=pv.shape,
                                    expected=lab.shape, fix="pass the probabilities on the label map's grid")
            probs[int(v)] = pv[sub]
    full[sub] = _postprocess_box(full[sub], spacing, kidney_labels, lesion_labels, max_kidneys,
                                 second_kidney_ratio, min_volume_ml, fill, affine, lesions_need_kidney,
                                 probs, confident)
    return full


def _postprocess_box(out: np.ndarray, spacing: Sequence[float], kidney_labels: Iterable[int],
                     lesion_labels: Iterable[int], max_kidneys: int, second_kidney_ratio: float,
                     min_volume_ml: float, fill: bool, affine: np.ndarray | None,
                     lesions_need_kidney: bool = True, probs: dict[int, np.ndarray] | None = None,
                     confident: float = 0.9) -> np.ndarray:
    out = np.array(out, dtype=np.uint8, copy=True)
    kidney_labels = tuple(int(v) for v in kidney_labels)
    lesion_labels = tuple(int(v) for v in lesion_labels if int(v) not in kidney_labels)
    kidney = values_mask(out, kidney_labels)
    lesion = values_mask(out, lesion_labels)
    region = kidney | lesion
    if not region.any():
        return out
    region_clean = remove_small_components(region, spacing, min_volume_ml)
    if len(kidney_labels) == 1:
        region_clean = keep_largest_components(region_clean, max_kidneys, second_kidney_ratio, affine,
                                               same_level=True)
    out[region & ~region_clean] = 0
    if len(kidney_labels) > 1:
        # one label per organ (MR: right 2, left 3): its largest face-connected component only, so a blob
        # that touches the kidney diagonally across a thick slice (spleen, liver) is not kept with it
        for v in kidney_labels:
            m = out == v
            if m.any():
                score = (probs[v] >= confident) if probs is not None and v in probs else None
                out[m & ~keep_largest_components(m, 1, 1.0, affine, connectivity="face", score=score)] = 0
    kidney = values_mask(out, kidney_labels)
    lesion = values_mask(out, lesion_labels)
    if lesion.any() and lesions_need_kidney:
        lesion_keep = touching(lesion, kidney) if kidney.any() else np.zeros_like(lesion)
        lesion_keep = remove_small_components(lesion_keep, spacing, min_volume_ml)
        # dropped lesion blobs become background; enclosed ones are refilled below
        out[lesion & ~lesion_keep] = 0
    if fill:
        if len(kidney_labels) == 1:
            holes = fill_holes(values_mask(out, kidney_labels + lesion_labels)) & (out == 0)
            out[holes] = kidney_labels[0]
        else:
            for v in kidney_labels:
                holes = fill_holes(out == v) & (out == 0)
                out[holes] = v
    return out
