"""Follow-up comparison of two studies of one patient: kidneys by side, tumours by kidney-centred position.

Each study is a label map with its affine (:class:`Study`), measured by
:func:`kidneyseg.reporting.volumes.measure`.  Kidneys are matched by side (the
label map's right/left labels where it has them, else the RAS x of each
kidney's centroid, as ``volumes.json`` decides).  Within a side, tumours are
matched by their centroid's offset from the kidney's (kidney + masses)
centroid in RAS mm: the assignment with the least total distance
(:func:`scipy.optimize.linear_sum_assignment`), a pair farther apart than the
tolerance being no match.  Tumours of the first study left over are
*vanished*, of the second *new*.

Units: volumes mL, diameters and positions mm, intervals days, growth per
year (365.25 days).  The JSON keys say what they hold
(``tumour_volume_change_ml``, ``kidney_volume_after_ml``...).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.case import Case
from kidneyseg.errors import InputError
from kidneyseg.labels import Task

#: Largest distance (mm) between two tumours' kidney-centred positions for them to be the same tumour.
MATCH_TOLERANCE_MM = 20.0
DAYS_PER_YEAR = 365.25
SIDES = ("right", "left")


@dataclass
class Study:
    """One study: the image (or None), its label map on the image grid, and what is known about it.

    ``label``: uint8 ``[i, j, k]`` on the grid of ``affine`` (voxel to RAS+ mm); ``labels``:
    ``{value: name}`` of the label map (None: KiTS 1 kidney, 2 tumour, 3 cyst).
    """

    label: np.ndarray
    affine: np.ndarray
    name: str
    image: Case | None = None
    labels: Mapping[int, str] | None = None
    date: _dt.date | None = None
    date_from: str | None = None
    source: str | None = None
    seg_source: str | None = None


def parse_date(text: str, *, what: str = "date") -> _dt.date:
    """``YYYY-MM-DD`` (or DICOM's ``YYYYMMDD``) as a date; :class:`InputError` otherwise."""
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return _dt.datetime.strptime(text.strip(), fmt).date()
        except ValueError:
            continue
    raise InputError(f"{what} is not a date", found=repr(text), expected="YYYY-MM-DD (e.g. 2024-03-31)",
                     fix="write the study date as YYYY-MM-DD")


def _pct(before: float, after: float) -> float | None:
    return None if before == 0 else round(100.0 * (after - before) / before, 2)


def _per_year(change: float, days: float | None) -> float | None:
    return None if not days else round(change / (days / DAYS_PER_YEAR), 3)


def doubling_time_days(before_ml: float, after_ml: float, days: float | None) -> float | None:
    """Volume doubling time (days) under exponential growth, ``days * ln 2 / ln(after / before)``.

    None without an interval, with an empty volume, or when the volume did not grow.
    """
    if not days or before_ml <= 0 or after_ml <= before_ml:
        return None
    return round(days * math.log(2.0) / math.log(after_ml / before_ml), 1)


def match_tumours(before: list[Mapping[str, Any]], after: list[Mapping[str, Any]],
                  tolerance_mm: float = MATCH_TOLERANCE_MM) -> list[tuple[int, int, float]]:
    """Pairs ``(index in before, index in after, distance mm)`` of tumours of one kidney.

    Positions are ``offset_from_kidney_mm`` (centroid minus the kidney's centroid, RAS mm); the pairs
    minimise the total distance and none is farther apart than ``tolerance_mm``.
    """
    from scipy.optimize import linear_sum_assignment

    if not before or not after:
        return []
    pb = np.array([t["offset_from_kidney_mm"] for t in before], dtype=np.float64)
    pa = np.array([t["offset_from_kidney_mm"] for t in after], dtype=np.float64)
    dist = np.linalg.norm(pb[:, None, :] - pa[None, :, :], axis=2)
    cost = np.where(dist <= tolerance_mm, dist, 1e9)
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c), round(float(dist[r, c]), 2)) for r, c in zip(rows, cols) if dist[r, c] <= tolerance_mm]


def _lesion(side: str, t: Mapping[str, Any], study: str) -> dict[str, Any]:
    return {"side": side, f"{study}_id": t["id"], "tumour_volume_ml": t["volume_ml"],
            "tumour_max_diameter_mm": t["max_diameter_mm"], "offset_from_kidney_mm": t["offset_from_kidney_mm"],
            "renal_notation": (t.get("renal") or {}).get("notation")}


def compare_measures(before: Mapping[str, Any], after: Mapping[str, Any], *, interval_days: float | None = None,
                     tolerance_mm: float = MATCH_TOLERANCE_MM) -> dict[str, Any]:
    """Compare two :func:`~kidneyseg.reporting.volumes.measure` results (volumes, not 2D images).

    Returns ``{"kidneys": {side: {...}}, "tumours": [...matched...], "new_tumours": [...],
    "vanished_tumours": [...]}``; with ``interval_days`` the growth per year and doubling times.
    """
    for what, m in (("BEFORE", before), ("AFTER", after)):
        if "kidneys" not in m:
            raise InputError(f"{what} is not a volume", path=m.get("source"), found="a 2D image",
                             expected="two 3D studies (CT or MR volumes)", fix="compare volumes only")
    kidneys: dict[str, Any] = {}
    matched: list[dict[str, Any]] = []
    new: list[dict[str, Any]] = []
    vanished: list[dict[str, Any]] = []
    for side in SIDES:
        b, a = before["kidneys"][side], after["kidneys"][side]
        k: dict[str, Any] = {"present_before": b["present"], "present_after": a["present"]}
        for key, title in (("kidney_ml", "kidney_volume"), ("parenchyma_ml", "parenchyma_volume"),
                           ("tumor_ml", "tumour_total_volume"), ("cyst_ml", "cyst_total_volume")):
            k[f"{title}_before_ml"] = b[key]
            k[f"{title}_after_ml"] = a[key]
            k[f"{title}_change_ml"] = round(a[key] - b[key], 3)
            k[f"{title}_change_percent"] = _pct(b[key], a[key])
        k["kidney_volume_growth_ml_per_year"] = _per_year(k["kidney_volume_change_ml"], interval_days)
        k["tumour_count_before"], k["tumour_count_after"] = b["tumor_count"], a["tumor_count"]
        kidneys[side] = k
        tb, ta = b.get("tumors", []), a.get("tumors", [])
        pairs = match_tumours(tb, ta, tolerance_mm) if b["present"] and a["present"] else []
        for i, j, d in pairs:
            vb, va = tb[i]["volume_ml"], ta[j]["volume_ml"]
            db, da = tb[i]["max_diameter_mm"], ta[j]["max_diameter_mm"]
            matched.append({
                "side": side, "before_id": tb[i]["id"], "after_id": ta[j]["id"], "match_distance_mm": d,
                "offset_from_kidney_before_mm": tb[i]["offset_from_kidney_mm"],
                "offset_from_kidney_after_mm": ta[j]["offset_from_kidney_mm"],
                "tumour_volume_before_ml": vb, "tumour_volume_after_ml": va,
                "tumour_volume_change_ml": round(va - vb, 3), "tumour_volume_change_percent": _pct(vb, va),
                "tumour_max_diameter_before_mm": db, "tumour_max_diameter_after_mm": da,
                "tumour_max_diameter_change_mm": round(da - db, 2),
                "tumour_volume_growth_ml_per_year": _per_year(va - vb, interval_days),
                "tumour_diameter_growth_mm_per_year": _per_year(da - db, interval_days),
                "tumour_volume_doubling_time_days": doubling_time_days(vb, va, interval_days),
                "renal_before": (tb[i].get("renal") or {}).get("notation"),
                "renal_after": (ta[j].get("renal") or {}).get("notation"),
            })
        used_b = {i for i, _, _ in pairs}
        used_a = {j for _, j, _ in pairs}
        vanished += [_lesion(side, t, "before") for n, t in enumerate(tb) if n not in used_b]
        new += [_lesion(side, t, "after") for n, t in enumerate(ta) if n not in used_a]
    return {"kidneys": kidneys, "tumours": matched, "new_tumours": new, "vanished_tumours": vanished,
            "match_rule": f"tumours of one side paired by their centroid's offset from the kidney's centroid "
                          f"(RAS mm), least total distance, at most {tolerance_mm:g} mm apart",
            "side_rule": before.get("side_rule")}


def compare_studies(before: Study, after: Study, *, tolerance_mm: float = MATCH_TOLERANCE_MM) -> dict[str, Any]:
    """Measure both studies and compare them (:func:`compare_measures`), with their dates and sources."""
    from kidneyseg.reporting.volumes import measure

    mb = measure(before.label, before.affine, labels=before.labels, name=before.name)
    ma = measure(after.label, after.affine, labels=after.labels, name=after.name)
    days = None
    if before.date is not None and after.date is not None:
        days = float((after.date - before.date).days)
        if days < 0:
            raise InputError("the AFTER study is dated before the BEFORE study", path=after.source,
                             found=f"{before.date.isoformat()} then {after.date.isoformat()}",
                             expected="BEFORE first, AFTER second", fix="swap the two studies (and their dates)")
    out = compare_measures(mb, ma, interval_days=days, tolerance_mm=tolerance_mm)
    out = {
        "before": _study_facts(before), "after": _study_facts(after),
        "interval_days": days,
        "interval_years": None if days is None else round(days / DAYS_PER_YEAR, 4),
        "units": {"volume": "mL", "diameter": "mm", "position": "RAS+ mm", "interval": "days",
                  "growth": "per year of 365.25 days"},
        **out,
        "measures": {"before": mb, "after": ma},
    }
    return out


def _study_facts(s: Study) -> dict[str, Any]:
    return {"name": s.name, "image": s.source, "segmentation": s.seg_source,
            "study_date": None if s.date is None else s.date.isoformat(), "study_date_from": s.date_from}


# --------------------------------------------------------------------------------------------- HTML

def _fmt(x: Any, unit: str = "") -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:+.1f}{unit}" if unit.startswith("Δ") else f"{x:.1f}{unit}"
    return str(x)


def _study_pictures(s: Study, task: Task, tile_px: int) -> str:
    from kidneyseg.reporting import overlay
    from kidneyseg.reporting.html import _img, png_bytes

    case = s.image
    if case is None or case.image is None or case.ndim != 3:
        case = Case(image=np.zeros(s.label.shape, np.float32), affine=s.affine, name=s.name)
    parts = []
    if not np.any(s.label):
        return '<p class="note">Nothing labelled.</p>'
    mos = overlay.volume_mosaics(case, s.label, task, n_slices={"axial": 4, "coronal": 2, "sagittal": 2},
                                 tile_px=tile_px)
    for plane in ("axial", "coronal"):
        parts.append(f"<h3>{plane}</h3>" + _img(png_bytes(mos[plane].rgb), f"{s.name} {plane}",
                                               extra=f'data-plane="{plane}"'))
    if s.image is None:
        parts.append('<p class="note">No image: the label map is drawn on black.</p>')
    return "".join(parts)


#: The keys every ``compare.json`` of ``kidneyseg compare`` holds: what the report and the viewer show.
COMPARISON_KEYS = ("kidneys", "tumours", "new_tumours", "vanished_tumours")


def read_comparison(path: str | os.PathLike[str], *, what: str = "the comparison", shown: str | None = None,
                    fix: str = "pass the compare.json of kidneyseg compare BEFORE AFTER -o OUT") -> dict[str, Any]:
    """A ``compare.json`` of ``kidneyseg compare`` (a dict holding :data:`COMPARISON_KEYS`), read and checked.

    Raises :class:`InputError` naming ``shown`` (default: the path; the viewer names only the file) when
    the file cannot be read, is not JSON or is not such a comparison; ``what`` and ``fix`` word the message
    for the caller (the report's ``--compare``, the viewer's inbox).
    """
    where = str(path) if shown is None else shown
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {what}", path=where, found=f"{type(exc).__name__}: {exc}",
                         expected="the compare.json that kidneyseg compare writes", fix=fix) from exc
    return check_comparison(data, where, fix=fix)


def check_comparison(data: Any, where: str, *, fix: str = "pass the compare.json of kidneyseg compare BEFORE "
                     "AFTER -o OUT") -> dict[str, Any]:
    """``data`` (the parsed ``compare.json`` named ``where``) if it is a dict holding :data:`COMPARISON_KEYS`,
    else :class:`InputError`."""
    missing = [k for k in COMPARISON_KEYS if k not in data] if isinstance(data, dict) else list(COMPARISON_KEYS)
    if missing:
        raise InputError("not a comparison of kidneyseg compare", path=where,
                         found=f"no {', '.join(missing)}" if isinstance(data, dict) else type(data).__name__,
                         expected="compare.json with " + ", ".join(COMPARISON_KEYS), fix=fix)
    return data


def comparison_parts(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(heading, HTML) of the comparison's tables: kidneys, matched tumours (volume and diameter change,
    growth per year, doubling time, RENAL before and after), new and vanished tumours.

    Shared by ``compare.html`` and the follow-up section of ``kidneyseg report``.
    """
    from kidneyseg.reporting.html import _table

    parts: list[tuple[str, str]] = []
    rows: list[list[Any]] = []
    for side, k in result["kidneys"].items():
        rows.append([f"{side} kidney", k["kidney_volume_before_ml"], k["kidney_volume_after_ml"],
                     k["kidney_volume_change_ml"], _fmt(k["kidney_volume_change_percent"], " %"),
                     k["tumour_total_volume_before_ml"], k["tumour_total_volume_after_ml"],
                     f"{k['tumour_count_before']} → {k['tumour_count_after']}"])
    parts.append(("Kidneys", _table(
        ["kidney", "volume before (mL)", "after (mL)", "change (mL)", "change", "tumours before (mL)",
         "after (mL)", "tumour count"], rows)))
    rows = []
    for t in result["tumours"]:
        renal = f"{t.get('renal_before') or '–'} → {t.get('renal_after') or '–'}"
        rows.append([f"{t['side']} {t['before_id']} → {t['after_id']}", t["tumour_volume_before_ml"],
                     t["tumour_volume_after_ml"], t["tumour_volume_change_ml"],
                     _fmt(t["tumour_volume_change_percent"], " %"), t["tumour_max_diameter_before_mm"],
                     t["tumour_max_diameter_after_mm"], t["tumour_max_diameter_change_mm"],
                     _fmt(t["tumour_volume_growth_ml_per_year"]), _fmt(t["tumour_diameter_growth_mm_per_year"]),
                     _fmt(t["tumour_volume_doubling_time_days"]), t["match_distance_mm"], renal])
    parts.append(("Tumours matched", (_table(
        ["tumour", "volume before (mL)", "after (mL)", "change (mL)", "change", "max diameter before (mm)",
         "after (mm)", "change (mm)", "mL / year", "mm / year", "doubling time (days)", "match distance (mm)",
         "RENAL before → after"], rows) if rows else "<p>None.</p>")
        + f'<p class="note">{html.escape(str(result.get("match_rule", "")))}.</p>'))
    for key, title, idk in (("new_tumours", "New tumours (after only)", "after_id"),
                            ("vanished_tumours", "Vanished tumours (before only)", "before_id")):
        rows = [[f"{t['side']} {t[idk]}", t["tumour_volume_ml"], t["tumour_max_diameter_mm"],
                 ", ".join(f"{v:.1f}" for v in t["offset_from_kidney_mm"])] for t in result[key]]
        parts.append((title, _table(["tumour", "volume (mL)", "max diameter (mm)",
                                     "offset from kidney centre (RAS mm)"], rows) if rows else "<p>None.</p>"))
    return parts


def build_compare_html(result: Mapping[str, Any], before: Study, after: Study, task: Task, *,
                       tile_px: int = 200) -> str:
    """The comparison page: the two studies side by side, kidney and tumour tables, new and vanished lesions."""
    from kidneyseg.reporting import overlay
    from kidneyseg.reporting.html import CSS, _legend

    present = sorted(set(overlay.labels_present(before.label)) | set(overlay.labels_present(after.label)))
    colours = overlay.colour_table(task, present)
    names = {v: task.label_name(v) for v in colours}
    body = []
    cols = []
    for title, s, facts in (("Before", before, result["before"]), ("After", after, result["after"])):
        cols.append(f'<div style="flex:1;min-width:300px"><h2>{title}: {html.escape(s.name)}</h2>'
                    f'<p class="note">{html.escape(str(facts["image"] or facts["segmentation"] or ""))}, study date '
                    f'{html.escape(str(facts["study_date"] or "unknown"))}</p>{_study_pictures(s, task, tile_px)}</div>')
    interval = result["interval_days"]
    body.append("<section><h2>Studies</h2>" + _legend(colours, names)
                + f"<p>Interval: {'unknown (no dates)' if interval is None else f'{interval:.0f} days'}</p>"
                + '<div class="grid">' + "".join(cols) + "</div>"
                + '<p class="note">Radiological convention: the patient\'s right on the left of the images.</p>'
                  "</section>")
    for heading, part in comparison_parts(result):
        body.append(f"<section><h2>{heading}</h2>{part}</section>")
    title = f"kidneyseg comparison: {before.name} → {after.name}"
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{html.escape(title)}</h1><p>Research use only; not a medical device.</p></header>"
            "<main>" + "".join(body) + "</main></body></html>")


def write_comparison(result: Mapping[str, Any], before: Study, after: Study, task: Task,
                     out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``OUT/compare.json`` and ``OUT/compare.html`` (atomically); returns both paths."""
    from kidneyseg.io._common import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jp, hp = out / "compare.json", out / "compare.html"
    with atomic_path(jp) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    text = build_compare_html(result, before, after, task)
    with atomic_path(hp) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return jp, hp


def summary_lines(result: Mapping[str, Any]) -> list[str]:
    """Human-readable lines for stdout: one per kidney, matched tumour, new and vanished tumour."""
    lines = []
    iv = result.get("interval_days")
    for side, k in result["kidneys"].items():
        if not (k["present_before"] or k["present_after"]):
            continue
        lines.append(f"{side} kidney {k['kidney_volume_before_ml']:.1f} -> {k['kidney_volume_after_ml']:.1f} mL "
                     f"({k['kidney_volume_change_ml']:+.1f} mL)")
    for t in result["tumours"]:
        rate = "" if iv is None or t["tumour_volume_growth_ml_per_year"] is None else \
            f", {t['tumour_volume_growth_ml_per_year']:+.2f} mL/year"
        lines.append(f"{t['side']} tumour {t['before_id']}->{t['after_id']}: {t['tumour_volume_before_ml']:.2f} -> "
                     f"{t['tumour_volume_after_ml']:.2f} mL ({t['tumour_volume_change_ml']:+.2f} mL), max "
                     f"{t['tumour_max_diameter_before_mm']:.1f} -> {t['tumour_max_diameter_after_mm']:.1f} mm{rate}")
    for t in result["new_tumours"]:
        lines.append(f"new {t['side']} tumour {t['after_id']}: {t['tumour_volume_ml']:.2f} mL, "
                     f"max {t['tumour_max_diameter_mm']:.1f} mm")
    for t in result["vanished_tumours"]:
        lines.append(f"vanished {t['side']} tumour {t['before_id']}: was {t['tumour_volume_ml']:.2f} mL")
    return lines
