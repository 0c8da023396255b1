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


def values_mask(label: np.ndarray, values: Iterable[int]) -> np.ndarray:
    """Boolean mask of the voxels of an integer ``label`` array (label map, component labels) whose value is one
    of ``values``: ``np.isin(label, values)``, by a lookup table when the values are small non-negative
    integers (a uint8 label map always): about 10x faster on a CT-sized box (0.011 against 0.155 s for
    300x250x110 voxels, 2 values)."""
    arr = np.asarray(label)
    vals = [int(v) for v in values]
    if arr.dtype == np.uint8:
        hi = 255
    elif np.issubdtype(arr.dtype, np.integer) and arr.size and int(arr.min()) >= 0 and int(arr.max()) < _LUT_MAX:
        hi = int(arr.max())
    else:
        return np.isin(arr, vals)
    lut = np.zeros(hi + 1, dtype=bool)
    lut[[v for v in vals if 0 <= v <= hi]] = True
    return lut[arr]


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


def keep_largest_components(mask: np.ndarray, max_components: int = 2, min_ratio: float = 1.0 / 3.0,
                            affine: np.ndarray | None = None, connectivity: str = "full",
                            score: np.ndarray | None = None) -> np.ndarray:
    """Keep at most ``max_components`` components of ``mask``.

    The largest is always kept (if any); each further one, in decreasing size,
    only when its voxel count is at least ``min_ratio`` times the largest.
    Equal sizes are ordered by world position when ``affine`` (voxel -> RAS
    mm) is given, else by array position.  ``connectivity``: see
    :func:`label_components`.  ``score`` (optional, the mask's shape): a
    per-voxel weight; components are then ranked, and compared with
    ``min_ratio``, by the sum of ``score`` over their voxels instead of their
    voxel count (equal sums: the larger component first).  Returns a boolean mask.
    """
    lab, n = label_components(mask, connectivity)
    if n == 0:
        return np.zeros(np.shape(mask), dtype=bool)
    sizes = component_sizes(lab, n)
    if score is not None:
        w = np.bincount(lab.ravel(), weights=np.asarray(score, dtype=float).ravel(), minlength=n + 1)[1:]
        sizes = w + sizes / (sizes.max() + 1.0) * 1e-6  # ties -> size
    order = _order(lab, sizes, affine)
    keep = [int(order[0]) + 1]
    for idx in order[1:max_components]:
        if sizes[idx] >= min_ratio * sizes[order[0]]:
            keep.append(int(idx) + 1)
    return values_mask(lab, keep)
