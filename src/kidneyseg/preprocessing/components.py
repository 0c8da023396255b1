"""Connected-component primitives: labelling, sizes, the largest components.

Shared by the stages that need them: the detection cascade (two largest kidney
components of the slice detections, largest component of each V-Net output) in
:mod:`kidneyseg.inference`, and the clean-up in :mod:`kidneyseg.postprocessing`.
They live in this low stage so that inference never imports post-processing.

Masks are indexed ``[i, j, k]`` (volumes) or ``[row, col]`` (2D images).
Connectivity is full (26 in 3D, 8 in 2D) unless ``connectivity="face"`` (6 in
3D, 4 in 2D) is asked for.  Components are found with ``cc3d`` when it is
installed, else with :func:`scipy.ndimage.label`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

CONNECTIVITIES = ("full", "face")

#: Largest value for which :func:`values_mask` builds a lookup table (larger values: ``np.isin``).
_LUT_MAX = 1 << 20


#: A second kidney component (of a volume) is kept only if it holds at least this share of the largest's voxels.
SECOND_KIDNEY_RATIO = 1.0 / 3.0

#: Up to this many values :func:`values_mask` compares (one ``==`` per value), beyond it looks the values up.
_COMPARE_MAX = 4


def values_mask(label: np.ndarray, values: Iterable[int]) -> np.ndarray:
    """Boolean mask of the voxels of an integer ``label`` array (label map, component labels) whose value is one
    of ``values``: ``np.isin(label, values)``, computed the fastest way for the case.  Up to
    :data:`_COMPARE_MAX` values: one vectorised comparison per value (about 10x faster than a lookup table on a
    uint8 label map: 2 against 20 ms for 300x250x110 voxels, 2 values); more values, when they are small
    non-negative integers (a uint8 label map always): a lookup table (``np.take``; about 10x faster than
    ``np.isin`` there); else ``np.isin``."""
    arr = np.asarray(label)
    vals = [int(v) for v in values]
    if len(vals) <= _COMPARE_MAX:
        out = np.zeros(arr.shape, dtype=bool)
        for v in vals:
            out |= arr == v
        return out
    if arr.dtype == np.uint8:
        hi = 255
    elif np.issubdtype(arr.dtype, np.integer) and arr.size and int(arr.min()) >= 0 and int(arr.max()) < _LUT_MAX:
        hi = int(arr.max())
    else:
        return np.isin(arr, vals)
    lut = np.zeros(hi + 1, dtype=bool)
    lut[[v for v in vals if 0 <= v <= hi]] = True
    return np.take(lut, arr)


def label_components(mask: np.ndarray, connectivity: str = "full") -> tuple[np.ndarray, int]:
    """Label the connected components of a boolean mask.

    ``connectivity``: ``"full"`` (voxels sharing a face, edge or corner: 26 in
    3D, 8 in 2D) or ``"face"`` (sharing a face: 6 in 3D, 4 in 2D; nnU-Net's
    choice, which does not join blobs that only touch diagonally across thick
    slices).  Returns ``(labels, n)``: an int32 array of the mask's shape with 0
    for background and ``1..n`` for the components.
    """
    if connectivity not in CONNECTIVITIES:
        from kidneyseg.errors import unknown_name

        raise unknown_name("connectivity", connectivity, CONNECTIVITIES)
    mask = np.asarray(mask, dtype=bool)
    full = connectivity == "full"
    if mask.ndim in (2, 3):
        try:
            import cc3d

            conn = (26 if full else 6) if mask.ndim == 3 else (8 if full else 4)
            # cc3d's stubs type connectivity as a Literal of the valid values; conn is one of them
            lab, n = cc3d.connected_components(mask, connectivity=conn, return_N=True)  # type: ignore[call-overload]
            return lab.astype(np.int32, copy=False), int(n)
        except ImportError:  # pragma: no cover - cc3d is an ml extra
            pass
    from scipy import ndimage

    structure = np.ones((3,) * mask.ndim, dtype=bool) if full else ndimage.generate_binary_structure(mask.ndim, 1)
    lab, n = ndimage.label(mask, structure=structure)
    return lab.astype(np.int32, copy=False), int(n)


def component_sizes(labels: np.ndarray, n: int) -> np.ndarray:
    """Voxel count of components ``1..n`` (index 0 of the result is component 1)."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    return np.bincount(labels.ravel(order="K"), minlength=n + 1)[1:].astype(np.int64)


def component_centroids(labels: np.ndarray, n: int) -> np.ndarray:
    """Mean voxel index ``(n, ndim)`` of components ``1..n`` (row 0 = component 1; NaN for an empty one)."""
    nz = np.nonzero(labels)
    lab = labels[nz]
    counts = np.bincount(lab, minlength=n + 1)[1 : n + 1].astype(np.float64)
    out = np.empty((n, labels.ndim), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        for a, idx in enumerate(nz):
            out[:, a] = np.bincount(lab, weights=idx, minlength=n + 1)[1 : n + 1] / counts
    return out


def _order(lab: np.ndarray, sizes: np.ndarray, affine: np.ndarray | None) -> np.ndarray:
    """Component indices (0-based) by decreasing size; ties broken by world (RAS) centroid
    when ``affine`` is given, so the choice does not depend on the array orientation."""
    if affine is None or len(sizes) < 2 or len(np.unique(sizes)) == len(sizes):
        return np.argsort(-sizes, kind="stable")  # no equal sizes: the world position would not decide anything
    cents = component_centroids(lab, len(sizes))
    cents = np.c_[cents, np.zeros((len(sizes), 3 - cents.shape[1]))]
    world = np.round(cents @ np.asarray(affine, float)[:3, :3].T + np.asarray(affine, float)[:3, 3], 3)
    return np.lexsort((-world[:, 2], -world[:, 1], -world[:, 0], -sizes))


def keep_largest_components(mask: np.ndarray, max_components: int = 2, min_ratio: float = SECOND_KIDNEY_RATIO,
                            affine: np.ndarray | None = None, connectivity: str = "full",
                            score: np.ndarray | None = None, same_level: bool = False) -> np.ndarray:
    """Keep at most ``max_components`` components of ``mask``.

    The largest is always kept (if any); each further one, in decreasing size,
    only when its voxel count is at least ``min_ratio`` times the largest.
    Equal sizes are ordered by world position when ``affine`` (voxel -> RAS
    mm) is given, else by array position.  ``connectivity``: see
    :func:`label_components`.  ``score`` (optional, the mask's shape): a
    per-voxel weight; components are then ranked, and compared with
    ``min_ratio``, by the sum of ``score`` over their voxels instead of their
    voxel count (equal sums: the larger component first).

    ``same_level`` (volumes with an ``affine``): the kept components must share
    craniocaudal levels (their extents along the array axis nearest to the
    body's superior axis overlap), as two kidneys do.  Each of the largest
    ``max_components + 2`` components is tried as the group's largest, with the
    smaller components at its level added in decreasing size (the ``min_ratio``
    rule against it); the group with the most components is kept, of those the
    one with the most voxels.  A false blob in the pelvis larger than one kidney
    then cannot push that kidney out, nor one larger than both kidneys together.
    Returns a boolean mask.
    """
    lab, n = label_components(mask, connectivity)
    if n == 0:
        return np.zeros(np.shape(mask), dtype=bool)
    sizes = component_sizes(lab, n)
    if score is not None:
        w = np.bincount(lab.ravel(), weights=np.asarray(score, dtype=float).ravel(), minlength=n + 1)[1:]
        sizes = w + sizes / (sizes.max() + 1.0) * 1e-6  # ties -> size
    order = _order(lab, sizes, affine)
    if same_level and affine is not None and lab.ndim == 3 and max_components > 1 and n > 1:
        return values_mask(lab, [int(i) + 1 for i in _same_level_group(lab, n, sizes, order, affine,
                                                                          max_components, min_ratio)])
    keep = [int(order[0]) + 1]
    for idx in order[1:max_components]:
        if sizes[idx] >= min_ratio * sizes[order[0]]:
            keep.append(int(idx) + 1)
    return values_mask(lab, keep)


def _same_level_group(lab: np.ndarray, n: int, sizes: np.ndarray, order: np.ndarray, affine: np.ndarray,
                      max_components: int, min_ratio: float) -> list[int]:
    """Component indices (0-based) of :func:`keep_largest_components`' ``same_level`` rule."""
    axis = int(np.argmax(np.abs(np.asarray(affine, dtype=float)[2, :3])))  # array axis nearest to RAS z
    nz = np.nonzero(lab)
    which, pos = lab[nz] - 1, nz[axis]
    lo = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full(n, -1, dtype=np.int64)
    np.minimum.at(lo, which, pos)
    np.maximum.at(hi, which, pos)
    ranked = [int(i) for i in order]
    best: list[int] = []
    best_key = (0, 0.0)  # (components, voxels) of the best group so far
    for k, a in enumerate(ranked[: max_components + 2]):
        group = [a]
        for c in ranked[k + 1:]:
            if len(group) == max_components or sizes[c] < min_ratio * sizes[a]:
                break
            if lo[c] <= hi[a] and lo[a] <= hi[c]:
                group.append(c)
        key = (len(group), float(sizes[group].sum()))
        if key > best_key:
            best, best_key = group, key
    return best
