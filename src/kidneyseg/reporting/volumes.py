"""Per-case kidney, tumour and cyst measurements for ``volumes.json`` and one stdout line.

Left and right are decided in patient space from the affine, never from the
array order: the affine maps voxels to RAS+ mm, where the x axis increases
towards the patient's **right** (NIfTI/nibabel convention; DICOM's LPS x axis
increases towards the left).  Each kidney (a connected component of kidney
+ tumour + cyst) is placed by the RAS x of its centroid: with two or more
kidneys the midline is halfway between the two largest, with one kidney it is
the x of the centre of the field of view.  Label maps that name the sides
(``kidney_right``/``kidney_left``, any spelling, e.g. the MR default's 2 and 3)
keep them: a component goes to the side whose label holds most of its voxels,
so the report never contradicts the label map.

Units: volumes in mL (mm^3 / 1000), diameters in mm.  A 2D image (ultrasound
or one CT slice) reports areas in mm^2 and does not assign sides.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.labels import CYST, CYST_NAMES, KIDNEY, KIDNEY_NAMES, TUMOR, TUMOR_NAMES, values_named


def _values(labels: Mapping[Any, str] | None, names: tuple[str, ...], default: tuple[int, ...]) -> tuple[int, ...]:
    if labels is None:
        return default
    return values_named(labels, names)


def max_diameter_mm(mask: np.ndarray, affine: np.ndarray) -> float:
    """Largest distance (mm) between two voxel centres of ``mask`` in world space.

    Uses the boundary voxels and their convex hull, so it is cheap for large
    objects.  Returns 0.0 for an empty mask and for a single voxel.
    """
    from scipy import ndimage
    from scipy.spatial.distance import pdist

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return 0.0
    border = mask & ~ndimage.binary_erosion(mask)
    idx = np.argwhere(border).astype(np.float64)
    if len(idx) > 64:
        # the convex hull's vertices are invariant under the (invertible) affine map,
        # so the hull is taken in index space and only its vertices are mapped.
        try:
            from scipy.spatial import ConvexHull

            idx = idx[ConvexHull(idx).vertices]
        except Exception:  # noqa: BLE001 - flat point sets (one slice thick): keep all points
            pass
    if mask.ndim == 2:
        idx = np.c_[idx, np.zeros(len(idx))]
    pts = idx @ affine[:3, :3].T + affine[:3, 3]
    if len(pts) < 2:
        return 0.0
    return float(pdist(pts).max())


def measure(
    label: np.ndarray,
    affine: np.ndarray,
    *,
    labels: Mapping[Any, str] | None = None,
    name: str = "case",
) -> dict[str, Any]:
    """Measure kidneys, tumours and cysts of a label map.

    Parameters
    ----------
    label:
        uint8 label map on the input grid, ``[i, j, k]`` (volume) or ``[row, col]``.
    affine:
        4x4 voxel-to-RAS+ matrix (mm) of that grid.
    labels:
        ``{value: name}`` of the model (``kidney``, ``tumor``, ``cyst``,
        ``kidney_right``/``kidney_left``...; spelling is free: ``"right kidney"``
        is ``kidney_right``); default KiTS values 1/2/3.

    Returns
    -------
    dict
        JSON-ready: for volumes ``{"kidneys": {"right": {...}, "left": {...}}, "total": {...}}``
        with ``kidney_ml`` (kidney + masses), ``parenchyma_ml`` (kidney label only),
        ``tumor_ml``, ``tumor_count``, ``tumor_max_diameter_mm``, ``cyst_count``,
        ``cyst_ml``; for 2D images the same keys with ``_mm2`` areas under ``"image"``.
    """
    from kidneyseg.postprocessing import component_sizes, label_components

    label = np.asarray(label)
    affine = np.asarray(affine, dtype=np.float64)
    ndim = label.ndim
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))[:ndim]
    unit = float(np.prod(spacing))  # mm^3 (3D) or mm^2 (2D)
    kid_v = _values(labels, KIDNEY_NAMES, (KIDNEY,))
    tum_v = _values(labels, TUMOR_NAMES, (TUMOR,))
    cyst_v = _values(labels, CYST_NAMES, (CYST,))
    kidney = np.isin(label, kid_v)
    tumor = np.isin(label, tum_v)
    cyst = np.isin(label, cyst_v)
    region = kidney | tumor | cyst
    scale = 1000.0 if ndim == 3 else 1.0
    suffix = "_ml" if ndim == 3 else "_mm2"

    def stats(sel: np.ndarray) -> dict[str, Any]:
        t = tumor & sel
        c = cyst & sel
        tn = label_components(t)[1]
        cn = label_components(c)[1]
        return {
            "present": bool(sel.any()),
            "kidney" + suffix: round(float((region & sel).sum()) * unit / scale, 3),
            "parenchyma" + suffix: round(float((kidney & sel).sum()) * unit / scale, 3),
            "tumor" + suffix: round(float(t.sum()) * unit / scale, 3),
            "tumor_count": int(tn),
            "tumor_max_diameter_mm": round(max_diameter_mm(t, affine), 2),
            "cyst_count": int(cn),
            "cyst" + suffix: round(float(c.sum()) * unit / scale, 3),
        }

    out: dict[str, Any] = {
        "case": name,
        "units": {"volume": "mL", "diameter": "mm"} if ndim == 3 else {"area": "mm2", "diameter": "mm"},
        "spacing_mm": [round(float(s), 5) for s in spacing],
    }
    if ndim == 2:
        out["image"] = stats(np.ones(label.shape, bool))
        return out
    comp, n = label_components(region)
    sizes = component_sizes(comp, n)
    xs = []
    for c in range(1, n + 1):
        centroid = np.argwhere(comp == c).mean(axis=0)
        xs.append(float(affine[0, :3] @ centroid + affine[0, 3]))
    if n >= 2:
        a, b = np.argsort(-sizes)[:2]
        midline = 0.5 * (xs[a] + xs[b])
    else:
        centre = (np.asarray(label.shape, dtype=float) - 1) / 2
        midline = float(affine[0, :3] @ centre + affine[0, 3])
    right_v = _values(labels, ("kidney_right",), ())
    left_v = _values(labels, ("kidney_left",), ())
    is_right = [xs[c] > midline for c in range(n)]
    if right_v or left_v:  # the labelled side wins; a tie keeps the position rule
        n_right = np.bincount(comp[np.isin(label, right_v)], minlength=n + 1)[1:]
        n_left = np.bincount(comp[np.isin(label, left_v)], minlength=n + 1)[1:]
        is_right = [r > lft if r != lft else pos for r, lft, pos in zip(n_right, n_left, is_right)]
    right_ids = [c + 1 for c in range(n) if is_right[c]]
    left_ids = [c + 1 for c in range(n) if not is_right[c]]
    out["kidneys"] = {
        "right": stats(np.isin(comp, right_ids)),
        "left": stats(np.isin(comp, left_ids)),
    }
    out["total"] = stats(np.ones(label.shape, bool))
    out["side_rule"] = ("the label map's right/left kidney labels (majority of each component's voxels)"
                        if right_v or left_v else "RAS+ x of each kidney's centroid; larger x = patient right")
    return out


def summary_line(m: Mapping[str, Any]) -> str:
    """One human-readable line for stdout from :func:`measure`'s result."""

    def part(title: str, s: Mapping[str, Any], unit: str, suffix: str) -> str:
        if not s["present"]:
            return f"{title}: none"
        txt = f"{title} {s['kidney' + suffix]:.1f} {unit}"
        if s["tumor_count"]:
            txt += f", tumour {s['tumor' + suffix]:.1f} {unit} (max {s['tumor_max_diameter_mm']:.1f} mm)"
        if s["cyst_count"]:
            txt += f", {s['cyst_count']} cyst(s) {s['cyst' + suffix]:.1f} {unit}"
        return txt

    if "image" in m:
        return f"{m['case']}: " + part("kidney", m["image"], "mm2", "_mm2")
    k = m["kidneys"]
    return f"{m['case']}: " + part("right kidney", k["right"], "mL", "_ml") + "; " + part(
        "left kidney", k["left"], "mL", "_ml"
    )


def write_volumes_json(m: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write :func:`measure`'s result as indented JSON (atomically)."""
    from kidneyseg.io._common import atomic_path

    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.write_text(json.dumps(m, indent=2) + "\n")
    return p
