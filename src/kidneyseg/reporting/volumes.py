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

Tumours and cysts are measured one connected component (full connectivity:
26 neighbours in 3D, 8 in 2D) at a time, never across fragments: each
component of at least :data:`MIN_LESION_ML` (2D: :data:`MIN_LESION_MM2`) is
listed with its volume, maximal diameter, centroid and, for tumours in
volumes, its RENAL nephrometry parts (:mod:`kidneyseg.reporting.renal`).
Smaller fragments are not counted; their voxels stay in the tumour and cyst
volumes.

Units: volumes in mL (mm^3 / 1000), diameters in mm, positions in RAS+ mm.  A
2D image (ultrasound or one CT slice) reports areas in mm^2 and does not
assign sides.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.labels import CYST, CYST_NAMES, KIDNEY, KIDNEY_NAMES, TUMOR, TUMOR_NAMES, values_named

#: Smallest tumour or cyst component counted, measured and listed, in mL (volumes).  Smaller fragments
#: (speckles of a prediction) still add to ``tumor_ml`` / ``cyst_ml`` but are neither counted nor measured;
#: ``tumor_fragments_below_floor`` / ``cyst_fragments_below_floor`` say how many there were.
#: 0.1 mL is a sphere of 5.8 mm diameter, below what a radiologist would call a lesion on CT.
MIN_LESION_ML = 0.1
#: The same floor for 2D images, in mm^2 (a disc of about 5.6 mm diameter).
MIN_LESION_MM2 = 25.0


def _values(labels: Mapping[Any, str] | None, names: tuple[str, ...], default: tuple[int, ...]) -> tuple[int, ...]:
    if labels is None:
        return default
    return values_named(labels, names)


def crop_affine(affine: np.ndarray, starts: Sequence[int]) -> np.ndarray:
    """The affine of a crop whose first voxel is ``starts`` (``[i, j, k]`` or ``[row, col]``) of the full grid."""
    shift = np.eye(4)
    shift[: len(starts), 3] = starts
    return np.asarray(affine, dtype=np.float64) @ shift


def world_points(idx: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """RAS+ mm of voxel indices ``idx`` ``(N, ndim)`` (``ndim`` 2 or 3; 2D indices lie at k = 0)."""
    idx = np.asarray(idx, dtype=np.float64)
    if idx.shape[1] == 2:
        idx = np.c_[idx, np.zeros(len(idx))]
    return idx @ affine[:3, :3].T + affine[:3, 3]


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


def _lesions(
    mask: np.ndarray,
    affine: np.ndarray,
    comp: np.ndarray,
    *,
    unit: float,
    scale: float,
    floor: float,
) -> tuple[list[dict[str, Any]], np.ndarray, list[int]]:
    """Components of ``mask`` at or above ``floor`` (mL or mm^2): records, their labels, and the region
    component of every fragment below the floor.

    Each record holds ``volume`` (mL or mm^2), ``max_diameter_mm``, ``centroid_ras_mm``,
    the region component it lies in (``_region``), its component value (``_value``) and box (``_box``).
    """
    from scipy import ndimage

    from kidneyseg.preprocessing.components import label_components

    lab, n = label_components(mask)
    boxes = ndimage.find_objects(lab) if n else []
    found: list[dict[str, Any]] = []
    below: list[int] = []
    for c in range(1, n + 1):
        box = boxes[c - 1]
        if box is None:  # pragma: no cover - labels are consecutive
            continue
        m = lab[box] == c
        size = float(m.sum()) * unit / scale
        starts = [b.start for b in box]
        idx = np.argwhere(m)
        first = tuple(int(v) + s for v, s in zip(idx[0], starts))
        if size < floor:
            below.append(int(comp[first]))
            continue
        aff = crop_affine(affine, starts)
        centroid = world_points(idx.mean(axis=0, keepdims=True), aff)[0]
        found.append({
            "volume": size,
            "max_diameter_mm": round(max_diameter_mm(m, aff), 2),
            "centroid_ras_mm": [round(float(v), 2) for v in centroid],
            "_region": int(comp[first]),
            "_value": c,
            "_box": box,
        })
    found.sort(key=lambda r: -r["volume"])
    return found, lab, below


def _public(rec: Mapping[str, Any], suffix: str, n: int, kidney_centroid: np.ndarray | None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": n, "volume" + suffix: round(float(rec["volume"]), 3),
                           "max_diameter_mm": rec["max_diameter_mm"], "centroid_ras_mm": rec["centroid_ras_mm"]}
    if kidney_centroid is not None:
        out["offset_from_kidney_mm"] = [round(float(a - b), 2) for a, b in zip(rec["centroid_ras_mm"],
                                                                                 kidney_centroid)]
    if "renal" in rec:
        out["renal"] = rec["renal"]
    if "qc" in rec:
        out["qc"] = rec["qc"]
    return out


def measure(
    label: np.ndarray,
    affine: np.ndarray,
    *,
    labels: Mapping[Any, str] | None = None,
    name: str = "case",
    min_lesion_ml: float = MIN_LESION_ML,
    min_lesion_mm2: float = MIN_LESION_MM2,
    renal: bool = True,
    uncertainty: Any = None,
    structures: list[tuple[str, tuple[int, ...], np.ndarray]] | None = None,
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
    min_lesion_ml, min_lesion_mm2:
        Size floor of a tumour or cyst component that is counted and measured
        (volumes in mL, 2D images in mm^2).
    renal:
        Add the RENAL nephrometry parts to every tumour of a volume.
    uncertainty:
        The prediction's :class:`~kidneyseg.inference.uncertainty.Uncertainty`: every kidney side (2D: the
        image's kidney region), tumour and cyst then gets ``qc`` (:func:`kidneyseg.reporting.qc.qc_record`:
        ``score`` 0..1, 1 = trustworthy, ``flag`` ``pass``/``review``) and the result a top-level ``qc``
        block (:func:`kidneyseg.reporting.qc.qc_block`).
    structures:
        A list to which ``(key, starts, mask)`` is appended for every structure given a ``qc``
        (``key`` e.g. ``kidneys.right``, ``kidneys.right.tumors.1``, ``image``; ``mask`` a bool crop of
        the input grid whose first voxel is ``starts``): what ``benchmarks/qc.py`` scores against
        the reference.

    Returns
    -------
    dict
        JSON-ready: for volumes ``{"kidneys": {"right": {...}, "left": {...}}, "total": {...}}``
        with ``kidney_ml`` (kidney + masses), ``parenchyma_ml`` (kidney label only),
        ``tumor_ml``, ``tumor_count`` (components of at least the floor),
        ``tumor_max_diameter_mm`` (the largest tumour's own maximal diameter),
        ``cyst_count``, ``cyst_ml``, the fragments below the floor, and per side the
        lists ``tumors`` and ``cysts`` (largest first: ``volume_ml``, ``max_diameter_mm``,
        ``centroid_ras_mm``, ``offset_from_kidney_mm``, tumours ``renal``) and the
        kidney's ``centroid_ras_mm``; for 2D images the same keys with ``_mm2`` areas
        under ``"image"``.  ``renal`` (:func:`renal_status`) says whether the tumours carry their RENAL
        parts, and why not (2D image, no tumour label, no tumour).
    """
    label = np.asarray(label)
    affine = np.asarray(affine, dtype=np.float64)
    box = _measure_box(label, uncertainty)
    if box is None:
        return _measure_grid(label, affine, labels=labels, name=name, min_lesion_ml=min_lesion_ml,
                             min_lesion_mm2=min_lesion_mm2, renal=renal, uncertainty=uncertainty,
                             structures=structures)
    # everything is measured in world space: on the box of the labels (and of the uncertainty), with the
    # box's affine, the numbers are those of the whole grid at a fraction of the cost
    starts = [int(b.start) for b in box]
    unc = uncertainty
    if unc is not None:
        from dataclasses import replace

        unc = replace(unc, box=tuple(slice(u.start - o, u.stop - o) for u, o in zip(unc.box, starts)),
                      shape=tuple(int(b.stop - b.start) for b in box))
    found: list[tuple[str, tuple[int, ...], np.ndarray]] | None = [] if structures is not None else None
    centre = (np.asarray(label.shape, dtype=float) - 1) / 2 - np.asarray(starts, dtype=float)
    out = _measure_grid(label[box], crop_affine(affine, starts), labels=labels, name=name,
                        min_lesion_ml=min_lesion_ml, min_lesion_mm2=min_lesion_mm2, renal=renal, uncertainty=unc,
                        structures=found, fov_centre=centre)
    if structures is not None and found is not None:
        structures.extend((k, tuple(int(a) + o for a, o in zip(st, starts)), m) for k, st, m in found)
    return out


def _measure_box(label: np.ndarray, uncertainty: Any) -> tuple[slice, ...] | None:
    """Bounding box (slices) of the labelled voxels of a volume, joined with the uncertainty's box, with a
    one-voxel margin; ``None`` for 2D images, empty label maps and boxes that are most of the grid."""
    from kidneyseg.preprocessing.geometry import nonzero_box

    box = nonzero_box(label, margin=1) if label.ndim == 3 else None
    if box is None:
        return None
    lo = [b[0] for b in box]
    hi = [b[1] for b in box]
    if uncertainty is not None and all(u.stop > u.start for u in uncertainty.box):
        lo = [min(v, int(u.start)) for v, u in zip(lo, uncertainty.box)]
        hi = [max(v, int(u.stop)) for v, u in zip(hi, uncertainty.box)]
    if np.prod([h - v for v, h in zip(lo, hi)]) > 0.5 * label.size:
        return None
    return tuple(slice(v, h) for v, h in zip(lo, hi))


def _measure_grid(
    label: np.ndarray,
    affine: np.ndarray,
    *,
    labels: Mapping[Any, str] | None = None,
    name: str = "case",
    min_lesion_ml: float = MIN_LESION_ML,
    min_lesion_mm2: float = MIN_LESION_MM2,
    renal: bool = True,
    uncertainty: Any = None,
    structures: list[tuple[str, tuple[int, ...], np.ndarray]] | None = None,
    fov_centre: np.ndarray | None = None,
) -> dict[str, Any]:
    """:func:`measure` on the grid given; ``fov_centre``: voxel index (of this grid) of the field of view's
    centre, the midline of a single kidney (default: this grid's centre)."""
    from kidneyseg.preprocessing.components import component_centroids, component_sizes, label_components, values_mask

    label = np.asarray(label)
    affine = np.asarray(affine, dtype=np.float64)
    ndim = label.ndim
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))[:ndim]
    unit = float(np.prod(spacing))  # mm^3 (3D) or mm^2 (2D)
    kid_v = _values(labels, KIDNEY_NAMES, (KIDNEY,))
    tum_v = _values(labels, TUMOR_NAMES, (TUMOR,))
    cyst_v = _values(labels, CYST_NAMES, (CYST,))
    kidney = values_mask(label, kid_v)
    tumor = values_mask(label, tum_v)
    cyst = values_mask(label, cyst_v)
    region = kidney | tumor | cyst
    scale = 1000.0 if ndim == 3 else 1.0
    suffix = "_ml" if ndim == 3 else "_mm2"
    floor = min_lesion_ml if ndim == 3 else min_lesion_mm2
    comp, n = label_components(region)
    tumours, tlab, t_below = _lesions(tumor, affine, comp, unit=unit, scale=scale, floor=floor)
    cysts, clab, c_below = _lesions(cyst, affine, comp, unit=unit, scale=scale, floor=floor)
    if renal and ndim == 3 and tumours:
        _add_renal(tumours, tlab, comp, kidney, cyst, affine)
    renal_block = renal_status(ndim=ndim, computed=renal, tumours=len(tumours), has_tumour_label=bool(tum_v),
                               floor=floor)
    right_v = _values(labels, ("kidney_right",), ())
    left_v = _values(labels, ("kidney_left",), ())
    lesion_v = tuple(tum_v) + tuple(cyst_v)
    qc_found: list[tuple[str, tuple[int, ...], np.ndarray]] = []

    def qc_of(mask: np.ndarray, starts: Sequence[int], values: Sequence[int], kind: str,
              size: float | None = None) -> dict[str, Any]:
        from kidneyseg.reporting.qc import qc_record, structure_scores

        return qc_record(structure_scores(uncertainty, mask, starts, values, volume_ml=size, kind=kind))

    if uncertainty is not None:
        for recs, lab_, vals in ((tumours, tlab, tum_v), (cysts, clab, cyst_v)):
            for rec in recs:
                box = rec["_box"]
                rec["qc"] = qc_of(lab_[box] == rec["_value"], [b.start for b in box], vals, "lesion")

    def stats(sel: np.ndarray, ids: Sequence[int] | None, side: str | None = None) -> dict[str, Any]:
        t = tumor & sel
        c = cyst & sel
        tum = [r for r in tumours if ids is None or r["_region"] in ids]
        cy = [r for r in cysts if ids is None or r["_region"] in ids]
        out = {
            "present": bool(sel.any()),
            "kidney" + suffix: round(float((region & sel).sum()) * unit / scale, 3),
            "parenchyma" + suffix: round(float((kidney & sel).sum()) * unit / scale, 3),
            "tumor" + suffix: round(float(t.sum()) * unit / scale, 3),
            "tumor_count": len(tum),
            "tumor_max_diameter_mm": max((r["max_diameter_mm"] for r in tum), default=0.0),
            "tumor_fragments_below_floor": sum(1 for r in t_below if ids is None or r in ids),
            "cyst_count": len(cy),
            "cyst" + suffix: round(float(c.sum()) * unit / scale, 3),
            "cyst_fragments_below_floor": sum(1 for r in c_below if ids is None or r in ids),
        }
        if ids is not None:
            centre = None
            if out["present"] and bool((region & sel).any()):  # a 2D image is "present" with no kidney in it
                centre = world_points(np.argwhere(region & sel).mean(axis=0, keepdims=True), affine)[0]
                out["centroid_ras_mm"] = [round(float(v), 2) for v in centre]
            out["tumors"] = [_public(r, suffix, k + 1, centre) for k, r in enumerate(tum)]
            out["cysts"] = [_public(r, suffix, k + 1, centre) for k, r in enumerate(cy)]
            # a structure to score: a side (2D: the image) whose kidney region holds voxels
            if uncertainty is not None and side is not None and bool((region & sel).any()):
                # a kidney is its kidney + masses; with sided labels only its own side's label counts as kidney
                vals = (tuple(right_v if side == "right" else left_v) + lesion_v if (right_v or left_v)
                        else tuple(kid_v) + lesion_v)
                crop = (region & sel)[uncertainty.box]
                out["qc"] = qc_of(crop, uncertainty.starts, vals, "kidney" if ndim == 3 else "region",
                                  out["kidney" + suffix])
                key = "image" if side == "image" else f"kidneys.{side}"
                qc_found.append((key, uncertainty.starts, crop))
                for word, recs, lab_ in (("tumors", tum, tlab), ("cysts", cy, clab)):
                    for k, r in enumerate(recs):  # ids as in _public: 1.. in list order
                        box = r["_box"]
                        qc_found.append((f"{key}.{word}.{k + 1}", tuple(b.start for b in box),
                                         lab_[box] == r["_value"]))
        return out

    def finish(out: dict[str, Any]) -> dict[str, Any]:
        out["renal"] = renal_block
        if uncertainty is not None:
            from kidneyseg.reporting.qc import qc_block

            out["qc"] = qc_block(uncertainty)
            if structures is not None:
                structures.extend(qc_found)
        return out

    out: dict[str, Any] = {
        "case": name,
        "units": {"volume": "mL", "diameter": "mm", "position": "RAS+ mm"} if ndim == 3
        else {"area": "mm2", "diameter": "mm"},
        "spacing_mm": [round(float(s), 5) for s in spacing],
        "lesion_floor": {"value": floor, "unit": "mL" if ndim == 3 else "mm2",
                         "rule": "tumour and cyst components (26-connected) of at least this size are counted "
                                 "and measured one by one; smaller fragments only add to the volumes"},
    }
    if ndim == 2:
        out["image"] = stats(np.ones(label.shape, bool), list(range(n + 1)), "image")
        out["image"].pop("centroid_ras_mm", None)
        for lst in (out["image"]["tumors"], out["image"]["cysts"]):
            for r in lst:
                r.pop("offset_from_kidney_mm", None)
        return finish(out)
    sizes = component_sizes(comp, n)
    xs = [float(affine[0, :3] @ centroid + affine[0, 3]) for centroid in component_centroids(comp, n)]
    if n >= 2:
        a, b = np.argsort(-sizes)[:2]
        midline = 0.5 * (xs[a] + xs[b])
    else:
        centre = (np.asarray(label.shape, dtype=float) - 1) / 2 if fov_centre is None else fov_centre
        midline = float(affine[0, :3] @ centre + affine[0, 3])
    is_right = [xs[c] > midline for c in range(n)]
    if right_v or left_v:  # the labelled side wins; a tie keeps the position rule
        n_right = np.bincount(comp[values_mask(label, right_v)], minlength=n + 1)[1:]
        n_left = np.bincount(comp[values_mask(label, left_v)], minlength=n + 1)[1:]
        is_right = [r > lft if r != lft else pos for r, lft, pos in zip(n_right, n_left, is_right)]
    right_ids = [c + 1 for c in range(n) if is_right[c]]
    left_ids = [c + 1 for c in range(n) if not is_right[c]]
    out["kidneys"] = {
        "right": stats(values_mask(comp, right_ids), right_ids, "right"),
        "left": stats(values_mask(comp, left_ids), left_ids, "left"),
    }
    out["total"] = stats(np.ones(label.shape, bool), None)
    out["side_rule"] = ("the label map's right/left kidney labels (majority of each component's voxels)"
                        if right_v or left_v else "RAS+ x of each kidney's centroid; larger x = patient right")
    return finish(out)


def renal_status(*, ndim: int, computed: bool, tumours: int, has_tumour_label: bool,
                 floor: float) -> dict[str, Any]:
    """The top-level ``renal`` block of ``volumes.json``: whether the tumours carry RENAL parts, and why not.

    ``available`` is true when every tumour component (at or above the floor) of a volume has its ``renal``
    entry; otherwise ``reason`` says why none has: a 2D image, a label map without a tumour label, no
    tumour found, or not asked for.  N is never available (see :data:`kidneyseg.reporting.renal.N_REASON`).
    """
    from kidneyseg.reporting.renal import N_REASON

    reason = None
    if not computed:
        reason = "not computed (measure(..., renal=False))"
    elif ndim != 3:
        reason = "RENAL needs a volume (CT or MR); this is a 2D image"
    elif not has_tumour_label:
        reason = "the label map has no tumour label (the model segments no tumours)"
    elif tumours == 0:
        reason = f"no tumour component of at least {floor:g} mL in the label map"
    out: dict[str, Any] = {"available": reason is None, "tumours": tumours}
    if reason is not None:
        out["reason"] = reason
    out["parts"] = "R, E, A, L per tumour (tumors[].renal); N not available"
    out["n_reason"] = N_REASON
    out["reference"] = "Kutikov and Uzzo 2009, J Urol 182:844"
    return out


def _add_renal(tumours: list[dict[str, Any]], tlab: np.ndarray, comp: np.ndarray, kidney: np.ndarray,
               cyst: np.ndarray, affine: np.ndarray) -> None:
    """Put ``renal`` (:func:`kidneyseg.reporting.renal.renal_parts`) into every tumour record, on its kidney's box."""
    from scipy import ndimage

    from kidneyseg.reporting.renal import renal_parts

    boxes = ndimage.find_objects(comp)
    for rec in tumours:
        box = boxes[rec["_region"] - 1]
        if box is None:  # pragma: no cover - a tumour always lies in its region component
            continue
        box = tuple(slice(max(b.start - 1, 0), min(b.stop + 1, s)) for b, s in zip(box, comp.shape))
        in_kidney = comp[box] == rec["_region"]
        rec["renal"] = renal_parts(
            tlab[box] == rec["_value"],
            kidney[box] & in_kidney,
            in_kidney,
            crop_affine(affine, [b.start for b in box]),
            max_diameter_mm=rec["max_diameter_mm"],
        )


def summary_line(m: Mapping[str, Any]) -> str:
    """One human-readable line for stdout from :func:`measure`'s result.

    Tumours: their volume, how many components of at least the floor, and the largest one's own maximal
    diameter; cysts: how many components of at least the floor and their volume.  With QC
    (:mod:`kidneyseg.reporting.qc`) a kidney flagged for review reads ``[review: QC 0.62]`` and the tumours
    and cysts flagged for review are counted, e.g. ``[1 tumour to review]``.  The widest tumour's RENAL
    notation follows its diameter: ``(max 24.0 mm, RENAL R1 E1 N? L3 a)``.
    """

    def part(title: str, s: Mapping[str, Any], unit: str, suffix: str) -> str:
        if not s["present"]:
            return f"{title}: none"
        txt = f"{title} {s['kidney' + suffix]:.1f} {unit}"
        if s["tumor_count"]:
            many = f"{s['tumor_count']} tumours, largest" if s["tumor_count"] > 1 else "max"
            widest = max(s.get("tumors") or [{}], key=lambda r: r.get("max_diameter_mm", 0.0))
            ren = (widest.get("renal") or {}).get("notation")
            txt += (f", tumour {s['tumor' + suffix]:.1f} {unit} ({many} {s['tumor_max_diameter_mm']:.1f} mm"
                    + (f", RENAL {ren}" if ren else "") + ")")
        if s["cyst_count"]:
            txt += f", {s['cyst_count']} cyst(s) {s['cyst' + suffix]:.1f} {unit}"
        q = s.get("qc") or {}
        if q.get("flag") == "review":
            txt += f" [review: QC {float(q['score']):.2f}]"
        for key, word in (("tumors", "tumour"), ("cysts", "cyst")):
            n = sum(1 for r in s.get(key) or [] if (r.get("qc") or {}).get("flag") == "review")
            if n:
                txt += f" [{n} {word}{'s' if n > 1 else ''} to review]"
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
