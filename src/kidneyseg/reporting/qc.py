"""Quality control per structure: a score (1 = trustworthy) and a pass/review flag.

Every structure of ``volumes.json`` (each kidney side, each tumour, each cyst; the whole image's
kidney region in 2D) gets ``"qc": {"score": float 0..1, "flag": "pass" | "review", ...}`` from the
prediction's :class:`~kidneyseg.inference.uncertainty.Uncertainty`; ``volumes.json`` holds the method
and threshold in its top-level ``qc`` block (:func:`qc_block`).

Candidate scores of a structure ``S`` (its voxels on the input grid), each 0..1 with 1 = trustworthy
(:func:`structure_scores`; ``p_S`` = the summed probability of the structure's label values,
``H`` = the normalised entropy map, ``pmax`` = the largest class probability):

``expected_dice``
    ``2 Σ_S p_S / (|S| + Σ_D p_S)`` with ``D`` = ``S`` dilated by :data:`DILATE_VOXELS` voxels: the Dice
    of the label against the network's own probabilities read as the chance that each voxel belongs to
    the structure (voxels ``S`` holds but doubts lower it, as does probability mass just outside ``S``).
``confident_share``
    1 - the share of ``S``'s voxels with ``pmax`` < :data:`CONFIDENT` (0.9).
``inside_certainty``
    1 - the mean of ``H`` over ``S``.
``boundary_certainty``
    1 - the mean of ``H`` over the boundary band of ``S`` (dilated by one voxel less eroded by one).
``volume_plausibility``
    kidneys in volumes only: 1 when the kidney + masses volume lies in
    :data:`KIDNEY_PLAUSIBLE_ML`, falling linearly to 0 at 0 mL and at twice the upper bound; 1 otherwise.

The score used (:data:`QC_METHOD`) and the threshold below which a structure is flagged for review
(:data:`QC_THRESHOLD`) were chosen by ``python benchmarks/qc.py`` on the cross-validated predictions
of the CT default's recipe and checked on the MR folds (docs/clinical.md, "Quality control").
A structure the network missed altogether is no structure here: QC cannot flag a missed kidney or
tumour, only doubt the ones it lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kidneyseg.errors import InputError

#: Voxels by which a structure is grown for the probability mass just outside it (``expected_dice``).
DILATE_VOXELS = 2
#: A voxel whose largest class probability is below this is "not confident" (``confident_share``).
CONFIDENT = 0.9
#: Kidney + masses volume (mL) taken as plausible for one adult kidney (``volume_plausibility``).
KIDNEY_PLAUSIBLE_ML = (60.0, 400.0)
#: The candidate scores, in the order the benchmark lists them.
CANDIDATES = ("expected_dice", "confident_share", "inside_certainty", "boundary_certainty", "volume_plausibility")
#: The score written as ``qc.score`` (chosen on the CT cross-validation by benchmarks/qc.py).
QC_METHOD = "expected_dice"
#: ``qc.flag`` is ``review`` when ``qc.score`` is below this (chosen on the CT cross-validation).
QC_THRESHOLD = 0.9
#: The accuracy bar the score was calibrated against: a structure with Dice below it should be reviewed.
DICE_BAR = 0.8


def structure_scores(
    unc: Any,
    mask: np.ndarray,
    starts: Sequence[int],
    values: Sequence[int],
    *,
    volume_ml: float | None = None,
    kind: str = "lesion",
) -> dict[str, float]:
    """Every candidate score (see the module docstring) of one structure.

    Parameters
    ----------
    unc:
        :class:`~kidneyseg.inference.uncertainty.Uncertainty` of the prediction.
    mask:
        bool array: the structure on a crop of the input grid (``[i, j, k]`` or ``[row, col]``).
    starts:
        First voxel of that crop on the input grid.
    values:
        Label values that make up the structure (their probabilities are summed to ``p_S``).
    volume_ml:
        The structure's volume (mL) for ``volume_plausibility`` (kidneys in volumes); ``None``: 1.
    kind:
        ``"kidney"`` (``volume_plausibility`` applies) or anything else.
    """
    from scipy import ndimage

    m = np.asarray(mask, dtype=bool)
    if m.ndim != len(unc.shape) or len(starts) != m.ndim:
        raise InputError("structure mask and uncertainty lie on grids of different dimensions",
                         found=f"mask {m.shape} at {tuple(starts)}", expected=f"{len(unc.shape)}D like {unc.shape}",
                         fix="pass a crop of the label map of this prediction")
    chans = [unc.label_values.index(int(v)) for v in values if int(v) in unc.label_values]
    if not chans:
        raise InputError("none of the structure's label values is a probability channel", found=list(values),
                         expected=unc.label_values, fix="pass the label values of the structure")
    # the structure's own box (input-grid indices), grown for the dilation, within the uncertainty box
    pts = np.argwhere(m) + np.asarray([int(v) for v in starts])
    if pts.size == 0:
        return {c: 0.0 for c in CANDIDATES}
    pad = DILATE_VOXELS + 1
    lo = np.maximum(pts.min(0) - pad, [ub.start for ub in unc.box])
    hi = np.minimum(pts.max(0) + 1 + pad, [ub.stop for ub in unc.box])
    if np.any(hi <= lo):
        return {c: 0.0 for c in CANDIDATES}
    sl = tuple(slice(int(a) - ub.start, int(b) - ub.start) for a, b, ub in zip(lo, hi, unc.box))
    # voxels outside the uncertainty box are dropped (the box holds every labelled voxel)
    inside = np.all((pts >= lo) & (pts < hi), axis=1)
    s = np.zeros(tuple(int(v) for v in hi - lo), dtype=bool)
    s[tuple((pts[inside] - lo).T)] = True
    n_s = int(s.sum())
    if n_s == 0:
        return {c: 0.0 for c in CANDIDATES}
    probs = unc.probabilities[(slice(None), *sl)]
    p_s = probs[chans].sum(axis=0)
    h = unc.entropy[sl]
    grown = ndimage.binary_dilation(s, iterations=DILATE_VOXELS)
    expected = 2.0 * float(p_s[s].sum()) / (n_s + float(p_s[grown].sum()))
    band = ndimage.binary_dilation(s) & ~ndimage.binary_erosion(s)
    pmax = probs.max(axis=0)
    out = {
        "expected_dice": expected,
        "confident_share": 1.0 - float((pmax[s] < CONFIDENT).mean()),
        "inside_certainty": 1.0 - float(h[s].mean()),
        "boundary_certainty": 1.0 - float(h[band].mean()) if band.any() else 1.0,
        "volume_plausibility": volume_plausibility(volume_ml) if kind == "kidney" and volume_ml is not None else 1.0,
    }
    return {k: float(np.clip(v, 0.0, 1.0)) for k, v in out.items()}


def volume_plausibility(volume_ml: float, plausible: tuple[float, float] = KIDNEY_PLAUSIBLE_ML) -> float:
    """1 inside ``plausible`` (mL), linear down to 0 at 0 mL and at twice the upper bound."""
    lo, hi = plausible
    v = float(volume_ml)
    if v < lo:
        return max(0.0, v / lo)
    if v > hi:
        return max(0.0, 1.0 - (v - hi) / hi)
    return 1.0


def qc_record(scores: Mapping[str, float], *, method: str = QC_METHOD, threshold: float = QC_THRESHOLD
              ) -> dict[str, Any]:
    """``{"score", "flag", "scores"}`` of one structure from its :func:`structure_scores`."""
    if method not in scores:
        raise InputError("unknown QC score", found=method, expected=", ".join(CANDIDATES),
                         fix="pick one of the candidate scores")
    score = float(scores[method])
    return {"score": round(score, 4), "flag": "pass" if score >= threshold else "review",
            "scores": {k: round(float(v), 4) for k, v in scores.items()}}


def qc_block(unc: Any, *, method: str = QC_METHOD, threshold: float = QC_THRESHOLD) -> dict[str, Any]:
    """The top-level ``qc`` block of ``volumes.json``: score, threshold, uncertainty source."""
    src = dict(getattr(unc, "sources", {}) or {})
    return {
        "method": method,
        "threshold": threshold,
        "flag_rule": f"review when score < {threshold}; pass otherwise",
        "score_definition": _DEFINITIONS[method],
        "calibration": ("benchmarks/qc.py: structures of the cross-validated predictions ranked against their "
                        f"true Dice (review wanted when Dice < {DICE_BAR}); see docs/clinical.md"),
        "uncertainty": src.get("method", "unknown"),
        "uncertainty_members": src.get("members"),
        "uncertainty_tta_passes": src.get("tta_passes"),
        "limits": "a structure the network missed is not listed, so QC cannot flag it",
    }


_DEFINITIONS = {
    "expected_dice": "2 sum_S p_S / (|S| + sum_D p_S): Dice of the label against the network's own probability of "
                     f"the structure; D = S dilated by {DILATE_VOXELS} voxels",
    "confident_share": f"share of the structure's voxels whose largest class probability is at least {CONFIDENT}",
    "inside_certainty": "1 - mean normalised entropy inside the structure",
    "boundary_certainty": "1 - mean normalised entropy on the structure's boundary band (1 voxel each side)",
    "volume_plausibility": f"kidney + masses volume within {KIDNEY_PLAUSIBLE_ML} mL (1), linear to 0 outside",
}


def review_items(m: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every structure of a ``volumes.json`` (:func:`kidneyseg.reporting.volumes.measure`) with its QC:
    ``[{"structure": "right kidney" | "right kidney, tumour 1" | ..., "score", "flag"}, ...]`` in reading
    order; structures without ``qc`` are left out.  For the HTML report and the viewer."""
    rows: list[dict[str, Any]] = []

    def add(title: str, rec: Mapping[str, Any]) -> None:
        q = rec.get("qc")
        if isinstance(q, Mapping) and "score" in q:
            rows.append({"structure": title, "score": float(q["score"]), "flag": str(q["flag"])})

    sides = [("image", "kidney region", m["image"])] if "image" in m else [
        (s, f"{s} kidney", m["kidneys"][s]) for s in ("right", "left") if s in m.get("kidneys", {})]
    for _, title, rec in sides:
        if not rec.get("present", True):
            continue
        add(title, rec)
        for key, word in (("tumors", "tumour"), ("cysts", "cyst")):
            for r in rec.get(key) or []:
                add(f"{title}, {word} {r.get('id')}", r)
    return rows


def html_table(m: Mapping[str, Any]) -> str:
    """A small HTML ``<table>`` of :func:`review_items` (empty string when there is no QC), escaped."""
    import html

    rows = review_items(m)
    if not rows:
        return ""
    q = m.get("qc") or {}
    body = "".join(
        f"<tr class=\"qc-{html.escape(r['flag'])}\"><td>{html.escape(r['structure'])}</td>"
        f"<td>{r['score']:.2f}</td><td>{'REVIEW' if r['flag'] == 'review' else 'pass'}</td></tr>"
        for r in rows)
    cap = html.escape(f"QC per structure ({q.get('method', '')}, review below {q.get('threshold', '')}; "
                      f"uncertainty: {q.get('uncertainty', '')})")
    return (f"<table class=\"qc\"><caption>{cap}</caption><tr><th>structure</th><th>QC score</th><th>flag</th></tr>"
            f"{body}</table>")
