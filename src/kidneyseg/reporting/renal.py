"""RENAL nephrometry parts of one tumour from a label map (Kutikov and Uzzo 2009).

Kutikov A, Uzzo RG. The R.E.N.A.L. nephrometry score: a comprehensive standardized
system for quantitating renal tumor size, location and depth. J Urol 2009;182:844-853.

One tumour is one connected component of the tumour label, never several
fragments together; its kidney is the connected component of kidney + masses
that holds it.  Every position is taken in patient space: the RAS+ mm
coordinates of the voxel centres given by the affine (nibabel's
:func:`~nibabel.orientations.aff2axcodes` names which array axis runs
craniocaudally), so an LPS, oblique or flipped grid gives the same answers.

==== ================================================== =====================================================
part definition (paper)                                    how it is measured here
==== ================================================== =====================================================
R    maximal diameter: ≤ 4 cm 1, > 4 and < 7 cm 2,       largest distance between two voxel centres of the
     ≥ 7 cm 3                                             tumour in mm (:func:`~kidneyseg.reporting.volumes.
                                                          max_diameter_mm`), reported in cm
E    exophytic: ≥ 50 % 1, < 50 % 2, entirely             share of the tumour's voxels outside the kidney's
     endophytic 3                                         outline; the outline is the **convex hull of the
                                                          kidney's parenchyma** (kidney label voxels of that
                                                          kidney), which restores the surface the tumour has
                                                          replaced; "entirely endophytic" is a share of at
                                                          most :data:`ENDOPHYTIC_MAX_SHARE`
N    nearness to the collecting system or sinus:          not available: the label maps have no collecting-
     ≥ 7 mm 1, > 4 and < 7 mm 2, ≤ 4 mm 3                 system (or sinus) label to measure the distance to
A    anterior (a), posterior (p), neither (x)             share of the tumour's voxels anterior (larger RAS y)
                                                          of the coronal plane through the parenchyma's
                                                          centroid: ≥ :data:`AP_SHARE` a, ≤ 1 - AP_SHARE p,
                                                          else x
L    location to the polar lines: entirely above the      polar lines: the craniocaudal levels where the
     upper or below the lower 1; crossing a polar line    renal sinus starts and ends, estimated (no sinus
     2; > 50 % between the lines, crossing the axial       label) per axial slice as the concavity of the
     renal midline or entirely between the lines 3        parenchyma (its 2D convex hull less kidney + masses
                                                          ≥ :data:`SINUS_MIN_SHARE` of the hull and
                                                          ≥ :data:`SINUS_MIN_MM2`), the longest run of such
                                                          slices; without one (a convex kidney), the lines at
                                                          1/3 and 2/3 of the kidney's craniocaudal extent.
                                                          The axial midline is halfway between the lines.
==== ================================================== =====================================================

The sum R + E + N + L (4 to 12) cannot be given without N: ``score_without_n``
(R + E + L, 3 to 9) is reported instead, with the notation ``R E N? L`` plus
the A descriptor.  The hilar suffix "h" needs the renal artery or vein and is
not given either.  docs/clinical.md states the same, with the known limits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kidneyseg.reporting.volumes import max_diameter_mm as max_diameter_mm_of
from kidneyseg.reporting.volumes import world_points

#: Share of the tumour volume outside the kidney's outline at or below which it counts as entirely endophytic
#: (E = 3): the hull of voxel centres lies up to half a voxel inside the kidney's true surface.
ENDOPHYTIC_MAX_SHARE = 0.01
#: Share of the tumour volume anterior (posterior) of the kidney's coronal plane for the descriptor a (p).
AP_SHARE = 2.0 / 3.0
#: An axial slice is at the renal sinus when its concavity is at least this share of the slice's hull area ...
SINUS_MIN_SHARE = 0.10
#: ... and at least this area (mm^2), so that digitisation steps of a convex outline do not count.
SINUS_MIN_MM2 = 25.0
#: Why N is not given.
N_REASON = ("N (nearness of the tumour to the collecting system or renal sinus: >= 7 mm 1, 4-7 mm 2, <= 4 mm 3) "
            "needs a collecting-system (or sinus) label; the label maps hold kidney, tumour and cyst only")


def radius_points(diameter_cm: float) -> int:
    """R points of a maximal diameter in cm: ≤ 4 cm 1, > 4 and < 7 cm 2, ≥ 7 cm 3."""
    if diameter_cm <= 4.0:
        return 1
    return 2 if diameter_cm < 7.0 else 3


def exophytic_points(share_outside: float) -> int:
    """E points of the tumour's share outside the kidney outline: ≥ 0.5 1, < 0.5 2, entirely endophytic 3."""
    if share_outside >= 0.5:
        return 1
    return 3 if share_outside <= ENDOPHYTIC_MAX_SHARE else 2


def _spacing(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))


def _inside_hull(points: np.ndarray, hull_points: np.ndarray, tol: float) -> np.ndarray | None:
    """Which ``points`` ``(N, d)`` lie within ``tol`` of the convex hull of ``hull_points``; None if it is flat.

    Every point is held to the hull's facets (``n . x + b <= tol``), a bounded number of points at a time.
    """
    from scipy.spatial import ConvexHull, QhullError

    try:
        hull = ConvexHull(hull_points)
    except (QhullError, ValueError):
        return None
    eq = hull.equations  # unit outward normals n and offsets b: inside where n.x + b <= 0
    inside = np.empty(len(points), dtype=bool)
    step = max(1, 4_000_000 // max(len(eq), 1))  # bounded memory: step x facets floats at a time
    for s in range(0, len(points), step):
        inside[s : s + step] = np.all(points[s : s + step] @ eq[:, :-1].T + eq[:, -1] <= tol, axis=1)
    return inside


#: Tumours with more voxels than this are sampled on a regular sub-lattice for the exophytic share.
MAX_SHARE_POINTS = 20_000


def exophytic_share(tumour: np.ndarray, parenchyma: np.ndarray, affine: np.ndarray) -> float | None:
    """Share (0..1) of the tumour's voxels outside the convex hull of the kidney parenchyma.

    ``tumour`` and ``parenchyma``: boolean ``[i, j, k]`` masks on one grid whose affine
    (voxel to RAS+ mm) is ``affine``.  The hull is built from the parenchyma's boundary
    voxel centres in mm; a tumour voxel centre within half the smallest spacing of it
    counts as inside (tumours of more than :data:`MAX_SHARE_POINTS` voxels are sampled on
    a regular sub-lattice).  None when the parenchyma has too few voxels for a 3D hull.
    """
    from scipy import ndimage

    par = np.asarray(parenchyma, dtype=bool)
    border = par & ~ndimage.binary_erosion(par)
    tum = np.argwhere(np.asarray(tumour, dtype=bool))
    if len(tum) == 0 or border.sum() < 4:
        return None
    if len(tum) > MAX_SHARE_POINTS:  # a regular sub-lattice keeps the share (a volume fraction) unbiased
        stride = int(np.ceil((len(tum) / MAX_SHARE_POINTS) ** (1 / 3)))
        tum = tum[np.all(tum % stride == 0, axis=1)]
    inside = _inside_hull(world_points(tum, affine), world_points(np.argwhere(border), affine),
                          0.5 * float(_spacing(affine).min()))
    if inside is None:
        return None
    return float(1.0 - inside.mean())


def craniocaudal_axis(affine: np.ndarray) -> tuple[int, int]:
    """The array axis that runs craniocaudally and its sign (+1 when the index grows towards superior)."""
    import nibabel as nib

    codes = nib.aff2axcodes(np.asarray(affine, dtype=np.float64))
    axis = next(n for n, c in enumerate(codes) if c in ("S", "I"))
    return axis, 1 if codes[axis] == "S" else -1


def sinus_levels(parenchyma: np.ndarray, region: np.ndarray, affine: np.ndarray) -> tuple[int, int] | None:
    """First and last slice index (along :func:`craniocaudal_axis`) of the estimated renal sinus, or None.

    Per slice across the craniocaudal axis: the 2D convex hull of the parenchyma's pixels
    less the kidney + masses (``region``); a slice is at the sinus when that concavity is
    at least :data:`SINUS_MIN_SHARE` of the hull and :data:`SINUS_MIN_MM2`.  The longest run
    of consecutive sinus slices is returned (array indices, low to high).
    """
    from scipy import ndimage

    axis, _ = craniocaudal_axis(affine)
    sp = _spacing(affine)
    pixel_mm2 = float(np.prod([sp[a] for a in range(3) if a != axis]))
    par = np.moveaxis(np.asarray(parenchyma, dtype=bool), axis, 0)
    reg = np.moveaxis(np.asarray(region, dtype=bool), axis, 0)
    is_sinus = np.zeros(par.shape[0], dtype=bool)
    for s in range(par.shape[0]):
        pts = np.argwhere(par[s])
        if len(pts) < 3:
            continue
        lo, hi = pts.min(axis=0), pts.max(axis=0) + 1
        grid = np.argwhere(np.ones(tuple(hi - lo), dtype=bool)) + lo
        inside = _inside_hull(grid.astype(np.float64), pts.astype(np.float64), 1e-6)
        if inside is None:
            continue
        hull_n = int(inside.sum())
        concave = int((inside & ~reg[s][grid[:, 0], grid[:, 1]]).sum())
        is_sinus[s] = concave >= SINUS_MIN_SHARE * hull_n and concave * pixel_mm2 >= SINUS_MIN_MM2
    runs, n = ndimage.label(is_sinus)
    if n == 0:
        return None
    longest = int(np.argmax(np.bincount(runs)[1:])) + 1
    where = np.flatnonzero(runs == longest)
    return int(where[0]), int(where[-1])


def _s_mm(index: float, axis: int, centre_idx: np.ndarray, affine: np.ndarray) -> float:
    """RAS z (mm, superior positive) of slice ``index`` along ``axis``, at the kidney's centre in the other axes."""
    p = np.asarray(centre_idx, dtype=np.float64).copy()
    p[axis] = index
    return float(world_points(p[None], affine)[0, 2])


def location_part(tumour: np.ndarray, parenchyma: np.ndarray, region: np.ndarray,
                  affine: np.ndarray) -> dict[str, Any]:
    """L: the tumour's place relative to the polar lines (see the module table), with the lines used."""
    axis, sign = craniocaudal_axis(affine)
    tum_s = np.argwhere(np.asarray(tumour, dtype=bool))[:, axis].astype(np.float64) * sign
    levels = sinus_levels(parenchyma, region, affine)
    reg_idx = np.argwhere(np.asarray(region, dtype=bool))
    if levels is not None:
        lines = sorted((float(levels[0] * sign), float(levels[1] * sign)))
        source = "renal sinus estimate: the parenchyma's concavity per axial slice (no sinus label)"
    else:
        k = reg_idx[:, axis].astype(np.float64) * sign
        lo, hi = float(k.min()), float(k.max())
        lines = [lo + (hi - lo) / 3.0, lo + 2.0 * (hi - lo) / 3.0]
        source = "thirds of the kidney's craniocaudal extent (no sinus label and no concavity found)"
    lower, upper = float(lines[0]), float(lines[1])
    mid = 0.5 * (lower + upper)
    between = float(np.mean((tum_s >= lower) & (tum_s <= upper)))
    crosses_mid = bool(tum_s.min() <= mid <= tum_s.max())
    if tum_s.min() > upper or tum_s.max() < lower:
        points = 1
    elif between > 0.5 or crosses_mid:
        points = 3
    else:
        points = 2
    centre = reg_idx.mean(axis=0)
    s_lines = sorted(_s_mm(v * sign, axis, centre, affine) for v in (lower, upper))
    return {
        "points": points,
        "share_between_polar_lines": round(between, 3),
        "crosses_axial_midline": crosses_mid,
        "polar_lines_s_mm": [round(v, 2) for v in s_lines],
        "polar_lines_from": source,
        "position": ("above the upper polar line" if tum_s.min() > upper else "below the lower polar line"
                     if tum_s.max() < lower else "between or across the polar lines"),
    }


def anterior_part(tumour: np.ndarray, parenchyma: np.ndarray, affine: np.ndarray) -> dict[str, Any]:
    """A: 'a' (anterior), 'p' (posterior) or 'x' (neither) from the share anterior of the kidney's coronal plane."""
    y_t = world_points(np.argwhere(np.asarray(tumour, dtype=bool)), affine)[:, 1]
    y_k = float(world_points(np.argwhere(np.asarray(parenchyma, dtype=bool)), affine)[:, 1].mean())
    share = float(np.mean(y_t > y_k))
    descriptor = "a" if share >= AP_SHARE else "p" if share <= 1.0 - AP_SHARE else "x"
    return {"descriptor": descriptor, "anterior_share": round(share, 3),
            "rule": f"share of the tumour anterior (RAS y) of the coronal plane through the parenchyma's centroid: "
                    f">= {AP_SHARE:.2f} a, <= {1 - AP_SHARE:.2f} p, else x"}


def renal_parts(
    tumour: np.ndarray,
    parenchyma: np.ndarray,
    region: np.ndarray,
    affine: np.ndarray,
    *,
    max_diameter_mm: float | None = None,
) -> dict[str, Any]:
    """RENAL nephrometry parts of one tumour in its kidney (JSON-ready).

    Parameters
    ----------
    tumour:
        Boolean ``[i, j, k]`` mask of one tumour component.
    parenchyma:
        Boolean mask of the kidney label voxels of the kidney that holds it.
    region:
        Boolean mask of that kidney's kidney + masses (tumours and cysts).
    affine:
        4x4 voxel-to-RAS+ (mm) matrix of the three masks' grid (a crop is fine).
    max_diameter_mm:
        The tumour's maximal diameter when already measured (else measured here).

    Returns
    -------
    dict
        ``R`` (``max_diameter_cm``, ``points``), ``E`` (``exophytic_share``, ``points``; None where
        the parenchyma is too small for an outline), ``N`` (not available, with the reason),
        ``A`` (``descriptor`` a/p/x), ``L`` (``points``, the polar lines in RAS z mm),
        ``score_without_n`` (R + E + L) and ``notation``.
    """

    tumour = np.asarray(tumour, dtype=bool)
    parenchyma = np.asarray(parenchyma, dtype=bool)
    affine = np.asarray(affine, dtype=np.float64)
    d_mm = float(max_diameter_mm) if max_diameter_mm is not None else max_diameter_mm_of(tumour, affine)
    r = {"max_diameter_cm": round(d_mm / 10.0, 2), "points": radius_points(d_mm / 10.0)}
    share = exophytic_share(tumour, parenchyma, affine) if parenchyma.any() else None
    e: dict[str, Any] = {"exophytic_share": None if share is None else round(share, 3),
                         "points": None if share is None else exophytic_points(share),
                         "outline": "convex hull of the kidney's parenchyma"}
    n: dict[str, Any] = {"points": None, "available": False, "reason": N_REASON}
    if not parenchyma.any():
        a: dict[str, Any] = {"descriptor": "x", "anterior_share": None, "rule": "no parenchyma: not assigned"}
        loc: dict[str, Any] = {"points": None, "polar_lines_from": "no parenchyma in this kidney"}
    else:
        a = anterior_part(tumour, parenchyma, affine)
        loc = location_part(tumour, parenchyma, region, affine)
    parts = [r["points"], e["points"], loc["points"]]
    total = None if any(p is None for p in parts) else int(sum(parts))
    shown = ["?" if p is None else str(p) for p in parts]
    return {
        "R": r, "E": e, "N": n, "A": a, "L": loc,
        "score_without_n": total,
        "notation": f"R{shown[0]} E{shown[1]} N? L{shown[2]} {a['descriptor']}",
        "reference": "Kutikov and Uzzo 2009, J Urol 182:844",
    }
