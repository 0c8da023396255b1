"""One self-contained HTML report per case (pictures embedded as base64 PNG; opens offline).

Sections: case facts, legend, axial/coronal/sagittal overlay mosaics (or the
2D image), a 3D surface rendering from two viewpoints (volumes only), the
volumes table (:mod:`kidneyseg.reporting.volumes`), and with a reference the
metrics table (:func:`kidneyseg.evaluation.evaluate_case`) and the
reference / prediction / agreement figure; with a model folder its training
curves and, for ultrasound tasks, the summed confusion matrix.

The file is kept under :data:`MAX_REPORT_BYTES`: when the pictures make it
larger, they are drawn again with smaller tiles.

With ``viewer=True`` (``kidneyseg report --viewer``) the report also holds the interactive NiiVue
viewer of ``kidneyseg serve`` (``static/niivue/niivue.umd.js`` and ``static/kviewer.js`` inlined),
with the image, label map and (when given) uncertainty map embedded as base64 NIfTI, downsampled
(:func:`downsample_for_viewer`) so the file stays under :data:`MAX_VIEWER_REPORT_BYTES`.  Tiles
carry their slice position in mm and a scale bar; the facts name the grey window and the modality
(the file's, else the model's, else from the intensities); with a reference the volumes table
shows the reference's volumes beside the predicted ones; a QC column appears when the
measurements carry ``qc`` entries (from ``NAME_volumes.json`` beside the label map).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.case import Case
from kidneyseg.errors import GeometryError, OutputError
from kidneyseg.labels import Task
from kidneyseg.reporting import overlay

MAX_REPORT_BYTES = 10 * 1024 * 1024
#: Largest report with the embedded viewer (``--viewer``).
MAX_VIEWER_REPORT_BYTES = 20 * 1024 * 1024
#: Voxels of the image embedded for the viewer at first (halved while the report is too large).
VIEWER_VOXELS = 8_000_000
STATIC = Path(__file__).with_name("static")


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an RGB uint8 array ``(H, W, 3)`` as optimised PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for embedding."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str, cls: str = "fig", extra: str = "") -> str:
    return f'<img class="{cls}" alt="{html.escape(alt)}" {extra} src="{data_uri(png)}">'


@dataclass
class ReportInputs:
    """Everything one report shows.

    ``seg`` and ``ref`` are label maps on ``case``'s grid (``(I, J, K)`` or ``(rows, cols)``).
    """

    case: Case
    seg: np.ndarray
    task: Task
    ref: np.ndarray | None = None
    model_dir: Path | None = None
    seg_source: str | None = None
    ref_source: str | None = None
    title: str | None = None
    notes: list[str] = field(default_factory=list)
    uncertainty: np.ndarray | None = None  # float32 0..1 on the case's grid (``NAME_uncertainty.nii.gz``)
    saved_volumes: dict[str, Any] | None = None  # ``NAME_volumes.json`` of the prediction (its ``qc`` entries)
    comparison: dict[str, Any] | None = None  # a ``compare.json`` of ``kidneyseg compare`` with this study in it
    comparison_source: str | None = None


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#c9cfdb;font-size:13px}
main{padding:8px 24px 40px;max-width:1200px}
section{background:#fff;border-radius:8px;padding:12px 18px;margin:14px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{font-size:17px;margin:4px 0 10px} h3{font-size:14px;margin:10px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:4px 0}
th,td{border:1px solid #d9dde5;padding:3px 8px;text-align:right} th{background:#eef0f4} td:first-child,th:first-child{text-align:left}
.legend span{display:inline-block;margin-right:16px;font-size:13px}
.sw{display:inline-block;width:14px;height:14px;border-radius:3px;vertical-align:-2px;margin-right:5px;border:1px solid #0003}
.fig{max-width:100%;image-rendering:pixelated;display:block;margin:4px 0;background:#000}
.plot{max-width:100%;display:block;margin:4px 0}
.note{color:#5b6474;font-size:12px}
.facts td{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.kv{display:flex;gap:14px;align-items:flex-start}.kv aside{width:260px;flex:none;font-size:13px}
.kvbox{flex:1;min-width:0;height:560px;background:#000;border-radius:6px}.kvbox canvas{width:100%;height:100%;display:block}
.block{display:block;margin:6px 0}.block select,.block input[type=range],#kvcontrols input[type=range]{width:100%}
.row{display:flex;gap:6px;align-items:center;margin:4px 0}.row input[type=number]{width:64px}
.muted{color:#5b6474;font-size:12px}.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
#toggles label{display:block;margin:3px 0}
button{background:#2a6fdb;color:#fff;border:0;border-radius:5px;padding:4px 10px;font-size:12px;cursor:pointer}
tr.jump{cursor:pointer}tr.jump:hover td{background:#fff6cc}
.qc-review{color:#c62828;font-weight:bold}.qc-pass{color:#2e7d32}
"""


def _legend(colours: dict[int, tuple[int, int, int]], names: dict[int, str], *, values: bool = True) -> str:
    items = []
    for v, c in sorted(colours.items()):
        suffix = f" ({v})" if values else ""
        items.append(
            f'<span><i class="sw" style="background:rgb{tuple(int(x) for x in c)}"></i>'
            f"{html.escape(names.get(v, f'label {v}'))}{suffix}</span>"
        )
    return '<div class="legend">' + "".join(items) + "</div>"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(x: Any) -> str:
        if isinstance(x, float):
            if not np.isfinite(x):
                return "–"
            return f"{x:.3f}" if abs(x) < 1000 else f"{x:,.0f}"
        return html.escape(str(x))

    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{cell(x)}</td>" for x in r) + "</tr>")
    return "".join(out) + "</table>"


def volumes_section(inp: ReportInputs) -> tuple[str, dict[str, Any]]:
    """The volumes table (HTML) and the measurements it shows (``volumes.measure``)."""
    from kidneyseg.reporting.volumes import measure

    m = measure(inp.seg, inp.case.affine, labels=inp.task.labels, name=inp.case.name)
    if "image" in m:
        s = m["image"]
        rows = [["kidney (all labels)", s["kidney_mm2"]], ["parenchyma", s["parenchyma_mm2"]],
                ["tumour", s["tumor_mm2"]], ["tumour count", s["tumor_count"]],
                ["tumour max diameter (mm)", s["tumor_max_diameter_mm"]],
                ["cyst", s["cyst_mm2"]], ["cyst count", s["cyst_count"]]]
        body = _table(["measure (areas in mm²)", "image"], rows)
        return body + '<p class="note">2D image: areas in mm², no left/right.</p>', m
    k = m["kidneys"]
    keys = [("kidney + masses (mL)", "kidney_ml"), ("parenchyma (mL)", "parenchyma_ml"),
            ("tumour (mL)", "tumor_ml"), ("tumour count", "tumor_count"),
            ("tumour max diameter (mm)", "tumor_max_diameter_mm"), ("cyst (mL)", "cyst_ml"),
            ("cyst count", "cyst_count")]
    if inp.ref is None:
        rows = [[title, k["right"][key], k["left"][key], m["total"][key]] for title, key in keys]
        body = _table(["measure", "right kidney", "left kidney", "total"], rows)
    else:
        r = measure(inp.ref, inp.case.affine, labels=inp.task.labels, name=inp.case.name)
        rows = [[title, k["right"][key], r["kidneys"]["right"][key], k["left"][key], r["kidneys"]["left"][key],
                 m["total"][key], r["total"][key]] for title, key in keys]
        body = _table(["measure", "right: predicted", "right: reference", "left: predicted", "left: reference",
                       "total: predicted", "total: reference"], rows)
    body += structures_table(m, inp.saved_volumes) + qc_summary(m, inp.saved_volumes)
    note = html.escape(m.get("side_rule", ""))
    floor = m.get("lesion_floor", {})
    body += (f'<p class="note">Sides in patient space: {note}. Tumours and cysts are counted and measured one '
             f"connected component at a time; components under {floor.get('value', '?')} "
             f"{html.escape(str(floor.get('unit', '')))} are not counted (their voxels stay in the volumes).</p>")
    return body + renal_table(m), m


def _qc_of(saved: dict[str, Any] | None, side: str, kind: str | None, n: int | None) -> dict[str, Any] | None:
    """The ``qc`` entry of one structure in a saved ``volumes.json`` (kind None: the kidney itself)."""
    if not saved:
        return None
    k = saved.get("kidneys", {}).get(side) or {}
    if kind is None:
        return k.get("qc") if isinstance(k.get("qc"), dict) else None
    for rec in k.get(kind) or []:
        if rec.get("id") == n and isinstance(rec.get("qc"), dict):
            return rec["qc"]
    return None


def structures_table(m: dict[str, Any], saved: dict[str, Any] | None = None) -> str:
    """One row per kidney, tumour and cyst (volume, diameter, centre in RAS mm; ``data-mm`` for the viewer).

    A QC column (``flag (score)``) is added when ``m`` or ``saved`` (the prediction's ``volumes.json``)
    has ``qc`` entries; the table works without them.
    """
    rows: list[tuple[str, Any, Any, list[float], dict[str, Any] | None, dict[str, Any] | None]] = []
    for side in ("right", "left"):
        k = m.get("kidneys", {}).get(side) or {}
        if k.get("centroid_ras_mm"):
            rows.append((f"{side} kidney", k.get("kidney_ml"), None, k["centroid_ras_mm"],
                         k.get("qc") or _qc_of(saved, side, None, None), None))
        for kind, title in (("tumors", "tumour"), ("cysts", "cyst")):
            for rec in k.get(kind) or []:
                rows.append((f"{side} {title} {rec['id']}", rec.get("volume_ml"), rec.get("max_diameter_mm"),
                             rec["centroid_ras_mm"], rec.get("qc") or _qc_of(saved, side, kind, rec["id"]),
                             rec.get("renal") if kind == "tumors" else None))
    if not rows:
        return ""
    has_qc = any(r[4] for r in rows)
    has_renal = any(r[5] for r in rows)
    head = (["structure", "volume (mL)", "max diameter (mm)", "centre RAS (mm)"] + (["QC"] if has_qc else [])
            + (["RENAL"] if has_renal else []))
    out = ['<h3>Structures</h3><table id="structuresTable"><tr>'
           + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for name, ml, diam, mm, qc, ren in rows:
        cells = [html.escape(name), "–" if ml is None else f"{ml:.2f}", "–" if diam is None else f"{diam:.1f}",
                 ", ".join(f"{v:.0f}" for v in mm)]
        tds = "".join(f"<td>{c}</td>" for c in cells)
        if has_qc:
            if qc:
                flag = html.escape(str(qc.get("flag", "?")))
                tds += f'<td class="qc-{flag}">{flag} ({float(qc.get("score", float("nan"))):.2f})</td>'
            else:
                tds += "<td>–</td>"
        if has_renal:
            tds += f'<td class="renal">{html.escape(renal_text(ren))}</td>' if ren else "<td>–</td>"
        coords = ",".join(f"{float(v):.2f}" for v in mm)
        out.append(f'<tr data-mm="{coords}">{tds}</tr>')
    note = ('<p class="note">Click a row to show the structure in the viewer above.</p>')
    if has_renal:
        note += ('<p class="note">RENAL: the notation (R E N? L and the A descriptor) and R + E + L; N is not '
                 "available (no collecting-system label); the parts are in the RENAL table below.</p>")
    if has_qc:
        note += ('<p class="note">QC: the prediction\'s own score (0..1, 1 = trustworthy) and flag; "review" '
                 "asks for a closer look. QC cannot flag a structure the model missed.</p>")
    return "".join(out) + "</table>" + note


def renal_text(ren: dict[str, Any]) -> str:
    """``R1 E1 N? L3 a (R+E+L 5)`` of one tumour's ``renal`` entry."""
    score = ren.get("score_without_n")
    return f"{ren.get('notation', '?')} (R+E+L {'–' if score is None else score})"


def qc_summary(m: dict[str, Any], saved: dict[str, Any] | None = None) -> str:
    """One line: how many structures pass and how many to review, with the rule (empty without QC)."""
    src = m if isinstance(m.get("qc"), dict) else (saved or {})  # the measures that carry the QC block
    block = src.get("qc")
    if not isinstance(block, dict):
        return ""
    flags: list[str] = []
    for side in ("right", "left"):
        k = (src.get("kidneys") or {}).get(side) or {}
        for rec in [k] + list(k.get("tumors") or []) + list(k.get("cysts") or []):
            if isinstance(rec.get("qc"), dict):
                flags.append(str(rec["qc"].get("flag")))
    review = flags.count("review")
    return (f'<p class="note" id="qcSummary">QC: <span class="qc-pass">{flags.count("pass")} pass</span>, '
            f'<span class="qc-review">{review} to review</span> '
            f"({html.escape(str(block.get('flag_rule', '')))}; score {html.escape(str(block.get('method', '')))})."
            "</p>")


def renal_table(m: dict[str, Any]) -> str:
    """The RENAL nephrometry table (HTML), one row per tumour of :func:`~kidneyseg.reporting.volumes.measure`;
    without tumours, why there is none (``m["renal"]["reason"]``)."""
    rows = []
    for side in ("right", "left"):
        for t in m.get("kidneys", {}).get(side, {}).get("tumors", []):
            ren = t.get("renal")
            if not ren:
                continue
            e, loc = ren["E"], ren["L"]
            share = "–" if e["exophytic_share"] is None else f"{100 * e['exophytic_share']:.0f} %"
            e_txt = (f"{share} outside → {e['points']}" if e["points"] is not None
                     else "not available: too little parenchyma for an outline")
            l_txt = (str(loc["points"]) if loc.get("points") is not None
                     else f"not available: {loc.get('polar_lines_from', '')}")
            rows.append([f"{side} {t['id']}", t["volume_ml"], t["max_diameter_mm"],
                         f"{ren['R']['max_diameter_cm']:.1f} cm → {ren['R']['points']}", e_txt,
                         "not available: no collecting-system label", ren["A"]["descriptor"], l_txt,
                         "–" if ren["score_without_n"] is None else ren["score_without_n"], ren["notation"]])
    if not rows:
        status = m.get("renal") or {}
        if status.get("reason") and "kidneys" in m:
            return ('<h3>RENAL nephrometry per tumour</h3><p class="note" id="renalStatus">RENAL nephrometry: not '
                    f"available: {html.escape(str(status['reason']))}.</p>")
        return ""
    lines = sorted({str(t["renal"]["L"].get("polar_lines_from", "")) for side in ("right", "left")
                    for t in m["kidneys"][side].get("tumors", []) if t.get("renal")})
    return ("<h3>RENAL nephrometry per tumour</h3>"
            + _table(["tumour", "volume (mL)", "max diameter (mm)", "R", "E", "N", "A", "L", "R+E+L",
                      "notation"], rows).replace("<table>", '<table id="renalTable">', 1)
            + '<p class="note">Kutikov and Uzzo 2009. R: maximal diameter (≤ 4 cm 1, 4–7 cm 2, ≥ 7 cm 3). '
              "E: share of the tumour outside the convex hull of the kidney parenchyma (≥ 50 % 1, &lt; 50 % 2, "
              "entirely endophytic 3). N: not available (needs a collecting-system label). A: anterior (a), "
              "posterior (p) or neither (x) of the kidney's coronal plane. L: polar lines from "
              + html.escape("; ".join(lines))
              + " (entirely above/below 1, crossing one 2, &gt; 50 % between or across the axial midline 3). "
                "See docs/clinical.md.</p>")


def comparison_role(comparison: dict[str, Any], seg: str | os.PathLike[str] | None) -> str | None:
    """``"before"`` or ``"after"`` when the comparison names ``seg`` (same file) as that study's label map."""
    if seg is None:
        return None
    try:
        me = Path(seg).resolve()
    except OSError:
        return None
    for role in ("before", "after"):
        other = (comparison.get(role) or {}).get("segmentation")
        if not other:
            continue
        try:
            if Path(str(other)).resolve() == me:
                return role
        except OSError:
            continue
    return None


def followup_section(inp: ReportInputs) -> str:
    """The follow-up comparison (``compare.json`` of ``kidneyseg compare``): interval, kidneys, matched tumours
    (volume change, growth per year, doubling time, RENAL before and after), new and vanished tumours."""
    from kidneyseg.reporting.compare import comparison_parts

    c = inp.comparison or {}
    role = comparison_role(c, inp.seg_source)
    b, a = c.get("before") or {}, c.get("after") or {}

    def who(s: dict[str, Any]) -> str:
        return f"{s.get('name', '?')} ({s.get('study_date') or 'date unknown'})"

    iv = c.get("interval_days")
    head = (f'<p id="followupStudies">Before: {html.escape(who(b))}; after: {html.escape(who(a))}; interval '
            f"{'unknown (no dates: no growth per year)' if iv is None else f'{iv:.0f} days'}."
            + (f" This report's label map is the <b>{role}</b> study." if role else "")
            + "</p>")
    parts = "".join(f"<h3>{html.escape(t)}</h3>{p}" for t, p in comparison_parts(c))
    src = (f'<p class="note">From {html.escape(inp.comparison_source)} (kidneyseg compare); tumours matched '
           "within a side by their offset from the kidney's centre. See docs/clinical.md.</p>"
           if inp.comparison_source else "")
    return f'<section id="followup"><h2>Follow-up comparison</h2>{head}{parts}{src}</section>'


def metrics_section(inp: ReportInputs) -> tuple[str, list[dict[str, Any]]]:
    """The metrics table (HTML) of ``seg`` against ``ref`` per evaluation region."""
    from kidneyseg.evaluation import evaluate_case

    if inp.ref is None:
        return "", []
    rows = evaluate_case(inp.seg, inp.ref, inp.case.spacing, inp.task.name)
    if not rows:
        return "<p>No metrics.</p>", []
    preferred = ["dice", "jaccard", "precision", "recall", "surface_dice", "assd_mm", "hd95_mm", "sdd_mm"]
    keys = [k for k in preferred if k in rows[0]]
    body = _table(["region"] + keys, [[r.get("region", "")] + [r.get(k, "") for k in keys] for r in rows])
    return body, rows


def report_modality(inp: ReportInputs) -> tuple[str | None, str]:
    """(modality, where it came from): the file's, else the model's ``model.json``, else the intensities."""
    if inp.case.modality:
        return str(inp.case.modality), "from the file"
    if inp.model_dir is not None and (Path(inp.model_dir) / "model.json").is_file():
        try:
            mod = json.loads((Path(inp.model_dir) / "model.json").read_text()).get("modality")
        except (OSError, ValueError):
            mod = None
        if mod:
            return str(mod), "from the model"
    guessed = overlay.shown_modality(inp.case)
    if guessed == "ct":
        return "ct", "from the intensities: air in HU"
    if guessed == "us":
        return "us", "from the image: 2D"
    return None, "unknown"


def _facts(inp: ReportInputs, window: tuple[float, float] | None = None) -> str:
    c = inp.case
    from kidneyseg import __version__

    modality, source = report_modality(inp)

    facts = [
        ("case", c.name),
        ("image", str(c.source) if c.source else "–"),
        ("segmentation", inp.seg_source or "–"),
        ("reference", inp.ref_source or "none"),
        ("model", str(inp.model_dir) if inp.model_dir else "none"),
        ("task", f"{inp.task.name}: {inp.task.description}"),
        ("modality", f"{modality} ({source})" if modality else "unknown"),
        ("grid", f"{' × '.join(str(s) for s in c.shape)} voxels, spacing "
                 f"{' × '.join(f'{s:.3g}' for s in c.spacing)} mm, orientation {''.join(c.orientation)}"
         if c.ndim == 3 else f"{c.shape[0]} × {c.shape[1]} pixels, spacing "
                              f"{c.spacing[0]:.3g} × {c.spacing[1]:.3g} mm"),
        ("written", _dt.datetime.now().strftime("%Y-%m-%d %H:%M") + f" by kidneyseg {__version__}"),
    ]
    if window is not None:
        facts.insert(7, ("grey window of the tiles", overlay.window_text(window, modality)))
    return '<table class="facts">' + "".join(
        f"<tr><th>{html.escape(a)}</th><td>{html.escape(str(b))}</td></tr>" for a, b in facts
    ) + "</table>"


def _model_section(inp: ReportInputs) -> str:
    from kidneyseg.reporting import curves

    if inp.model_dir is None:
        return ""
    parts = ["<section><h2>Model</h2>"]
    spec_path = Path(inp.model_dir) / "model.json"
    if spec_path.is_file():
        try:
            spec = json.loads(spec_path.read_text())
            parts.append(f"<p>pipeline <b>{html.escape(str(spec.get('pipeline', '?')))}</b>, task "
                         f"{html.escape(str(spec.get('task', '?')))}, stages "
                         f"{html.escape(', '.join(map(str, spec.get('stages', []))))}</p>")
        except (OSError, ValueError):
            parts.append('<p class="note">model.json could not be read.</p>')
    logs = curves.find_training_logs(inp.model_dir)
    png = curves.curves_png(logs) if logs else None
    if png:
        parts.append("<h3>Training curves</h3>" + _img(png, "training curves", "plot"))
        parts.append('<p class="note">from ' + html.escape(", ".join(str(p) for p in logs)) + "</p>")
    else:
        parts.append('<p class="note">No training log (CSV with an epoch/step column) in the model folder.</p>')
    if inp.task.name.startswith("openkidney-us") or inp.case.modality == "us":
        names = [inp.task.label_name(v) for v in sorted(inp.task.labels)]
        m = curves.find_confusion(inp.model_dir)
        if m is not None:
            parts.append("<h3>Summed confusion matrix (validation, from the model folder)</h3>"
                         + _img(curves.confusion_png(m, names, title="summed confusion matrix"), "confusion", "plot"))
        elif inp.ref is not None:
            from kidneyseg.evaluation import confusion_matrix

            values, m = confusion_matrix(inp.seg, inp.ref, inp.task)
            names = [inp.task.label_name(v) for v in values]
            parts.append("<h3>Confusion matrix of this image (pixels)</h3>"
                         + _img(curves.confusion_png(m, names, title="this image"), "confusion", "plot"))
    parts.append("</section>")
    return "".join(parts)


def _check_grid(inp: ReportInputs) -> None:
    for what, arr in (("segmentation", inp.seg), ("reference", inp.ref)):
        if arr is not None and tuple(np.shape(arr)) != inp.case.shape:
            raise GeometryError(
                f"{what} is not on the image grid",
                path=inp.seg_source if what == "segmentation" else inp.ref_source,
                found=f"shape {tuple(np.shape(arr))}",
                expected=f"shape {inp.case.shape} (the grid of {inp.case.source})",
                fix="pass the label map written for this image",
            )


def build_report(inp: ReportInputs, *, tile_px: int = 220, viewer: bool = False,
                 viewer_voxels: int = VIEWER_VOXELS) -> str:
    """The report as one HTML string (pictures embedded).

    ``viewer``: add the NiiVue viewer with the volumes embedded (3D cases), the image downsampled to
    at most ``viewer_voxels`` voxels (:func:`downsample_for_viewer`).
    """
    _check_grid(inp)
    case, task = inp.case, inp.task
    seg = np.asarray(inp.seg)
    present = sorted(set(overlay.labels_present(seg)) | set(overlay.labels_present(inp.ref)))
    colours = overlay.colour_table(task, present)
    names = {v: task.label_name(v) for v in colours}
    title = inp.title or f"kidneyseg report: {case.name}"
    body: list[str] = []
    mos = None
    if case.ndim == 3:
        focus = seg != 0 if inp.ref is None else (seg != 0) | (np.asarray(inp.ref) != 0)
        mos = overlay.volume_mosaics(case, seg, task, focus=focus, tile_px=tile_px)
        window = mos["axial"].window or (0.0, 1.0)  # volume_mosaics always sets it
    else:
        window = overlay.display_window(case.require_image(), overlay.shown_modality(case))
    body.append(f"<section><h2>Case</h2>{_facts(inp, window)}</section>")
    if viewer and case.ndim == 3:
        body.append(viewer_section(inp, colours, names, window, max_voxels=viewer_voxels))
    body.append(f"<section><h2>Segmentation</h2>{_legend(colours, names)}")
    if mos is not None:
        body.append('<p class="note">Radiological convention: the patient\'s right (R) is on the left of axial '
                    "and coronal images; anterior (A) at the top of axial images; superior (S) at the top of "
                    "coronal and sagittal images. Slices are spread through the labelled region; tile captions "
                    "give the index along the RAS axis and the slice position on that axis (RAS mm: x to the "
                    "patient's right, y anterior, z superior); the white bar at the bottom left is to scale. "
                    f"Grey window {html.escape(overlay.window_text(window, report_modality(inp)[0]))}.</p>")
        for plane in overlay.PLANES:
            body.append(f"<h3>{plane}</h3>" + _img(png_bytes(mos[plane].rgb), f"{plane} mosaic",
                                                   extra=f'data-plane="{plane}"'))
    else:
        m = overlay.image_mosaic(case, seg, task, tile_px=max(tile_px, 300))
        body.append('<p class="note">2D image shown as stored (rows top to bottom).</p>')
        body.append(_img(png_bytes(m.rgb), "image overlay", extra='data-plane="image"'))
    body.append("</section>")
    if case.ndim == 3:
        from kidneyseg.reporting.render3d import render_surfaces_png

        png3 = render_surfaces_png(case, seg, task, dpi=90 if tile_px >= 200 else 70)
        body.append("<section><h2>3D surfaces</h2>")
        body.append(_img(png3, "3D surface rendering", "plot") if png3 else "<p>Nothing labelled.</p>")
        body.append('<p class="note">Marching cubes in patient mm; kidneys translucent so masses inside show.</p>'
                    "</section>")
    vol_html, _ = volumes_section(inp)
    body.append(f"<section><h2>Volumes</h2>{vol_html}</section>")
    if inp.comparison:
        body.append(followup_section(inp))
    if inp.ref is not None:
        met_html, _ = metrics_section(inp)
        body.append(f"<section><h2>Metrics against the reference</h2>{met_html}"
                    '<p class="note">Overlap in voxels; surface distances in mm (image spacing).</p></section>')
        agree = overlay.agreement_mosaic(case, seg, np.asarray(inp.ref), task, tile_px=tile_px)
        body.append("<section><h2>Reference, prediction and agreement</h2>"
                    + _legend(overlay.AGREEMENT_COLOURS, overlay.AGREEMENT_NAMES, values=False)
                    + _img(png_bytes(agree.rgb), "agreement figure", extra='data-plane="agreement"')
                    + '<p class="note">Each row: reference, prediction, agreement map on the slices with the most '
                      "disagreement.</p></section>")
    body.append(_model_section(inp))
    for n in inp.notes:
        body.append(f'<p class="note">{html.escape(n)}</p>')
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>Research use only; not a medical device.</p></header>"
        "<main>" + "".join(body) + "</main>" + (_viewer_script() if viewer and case.ndim == 3 else "")
        + "</body></html>"
    )


def downsample_for_viewer(image: np.ndarray, label: np.ndarray | None, affine: np.ndarray, *,
                          max_voxels: int = VIEWER_VOXELS, others: tuple[np.ndarray | None, ...] = ()
                          ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, tuple[int, ...], list[np.ndarray | None]]:
    """Shrink a volume ``[i, j, k]`` by whole factors per axis until it has at most ``max_voxels`` voxels.

    The axis whose voxels are finest in mm (spacing x factor) grows its factor first, so voxels get
    closer to cubes.  The image and ``others`` (intensity-like maps, e.g. uncertainty) are block means;
    the label map is a block majority vote (a label is never averaged; ties go to the larger
    foreground value, before background).  Edges that do not fill a block are cut off.

    Returns ``(image, label, affine, factors, others)``; the new affine maps the block centres to mm.
    """
    a = np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    shape = np.asarray(image.shape[:3])
    f = np.ones(3, dtype=int)
    while int(np.prod(shape // f)) > max_voxels and (shape // f > 1).any():
        cand = [ax for ax in range(3) if shape[ax] // (f[ax] + 1) >= 1]
        ax = min(cand, key=lambda i: (spacing[i] * f[i], -shape[i] // f[i]))
        f[ax] += 1
    n = shape // f
    crop = tuple(slice(0, int(n[ax] * f[ax])) for ax in range(3))
    blocks = (int(n[0]), int(f[0]), int(n[1]), int(f[1]), int(n[2]), int(f[2]))

    def mean(x: np.ndarray) -> np.ndarray:
        if (f == 1).all():
            return np.asarray(x, dtype=np.float32)
        return np.asarray(x[crop], dtype=np.float32).reshape(blocks).mean(axis=(1, 3, 5), dtype=np.float32)

    img = mean(image)
    lab = None
    if label is not None:
        lc = np.asarray(label)[crop]
        if (f == 1).all():
            lab = lc.astype(np.uint8)
        else:
            lb = lc.reshape(blocks)
            values = [int(v) for v in overlay.labels_present(lc.astype(np.uint8)) if v != 0][::-1] + [0]
            best = np.zeros(tuple(n), np.uint8)
            top = np.full(tuple(n), -1, np.int32)
            for v in values:
                c = (lb == v).sum(axis=(1, 3, 5), dtype=np.int32)
                better = c > top
                best[better], top[better] = v, c[better]
            lab = best
    new = a.copy()
    new[:3, :3] = a[:3, :3] * f[None, :]
    new[:3, 3] = a[:3, :3] @ ((f - 1) / 2.0) + a[:3, 3]
    return img, lab, new, tuple(int(x) for x in f), [None if o is None else mean(o) for o in others]


def _nifti_b64(arr: np.ndarray, affine: np.ndarray) -> str:
    import gzip

    import nibabel as nib

    img = nib.Nifti1Image(arr, affine)
    img.header.set_xyzt_units("mm")
    return base64.b64encode(gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)).decode("ascii")


def viewer_section(inp: ReportInputs, colours: dict[int, tuple[int, int, int]], names: dict[int, str],
                   window: tuple[float, float], *, max_voxels: int = VIEWER_VOXELS) -> str:
    """The report's NiiVue viewer: controls, canvas and the embedded volumes (base64 NIfTI, gzip)."""
    from kidneyseg.reporting.server import compact_image

    case = inp.case
    img, lab, aff, factors, (unc,) = downsample_for_viewer(case.require_image(), np.asarray(inp.seg), case.affine,
                                                           max_voxels=max_voxels, others=(inp.uncertainty,))
    original = np.asarray(case.image)
    if original.dtype.kind in "iu" or np.array_equal(original.ravel()[:: max(1, original.size // 100_000)],
                                                     np.round(original.ravel()[:: max(1, original.size // 100_000)])):
        img = compact_image(np.round(img))  # CT in HU: int16 halves the size; a block mean keeps ±0.5 HU
    modality, _ = report_modality(inp)
    labels = {str(v): {"name": names.get(v, f"label {v}"), "color": [int(x) for x in colours[v]]}
              for v in sorted(colours) if v != 0}
    cfg = {"labels": labels, "window": {"modality": modality, "auto_low": window[0], "auto_high": window[1]},
           "has_uncertainty": unc is not None}
    blobs = [("kv-image", _nifti_b64(img, aff)), ("kv-label", _nifti_b64(np.asarray(lab, np.uint8), aff))]
    if unc is not None:
        blobs.append(("kv-uncertainty", _nifti_b64(np.clip(unc, 0, 1).astype(np.float32), aff)))
    shrink = " × ".join(str(x) for x in factors)
    cfg_json = json.dumps(cfg).replace("<", "\\u003c")  # no "</script>" inside the script element
    data = "".join(f'<script type="text/plain" id="{k}">{v}</script>' for k, v in blobs)
    return ("<section><h2>Viewer</h2>"
            f'<p class="note">NiiVue (BSD-2-Clause, embedded): three planes and a 3D render; the image '
            f"{' × '.join(str(s) for s in img.shape)} voxels (the input {' × '.join(str(s) for s in case.shape)} "
            f"averaged in blocks of {shrink}; the label map by majority in the same blocks). "
            "The tiles below show the full resolution.</p>"
            '<div class="kv"><aside><div id="kvcontrols"></div></aside>'
            '<div class="kvbox" id="viewbox"><canvas id="view"></canvas></div></div>'
            f'<script type="application/json" id="kv-config">{cfg_json}</script>'
            + data + "</section>")


def _viewer_script() -> str:
    """NiiVue, kviewer.js and the start-up code, inlined (the report makes no request)."""
    niivue = (STATIC / "niivue" / "niivue.umd.js").read_text(encoding="utf-8")
    kviewer = (STATIC / "kviewer.js").read_text(encoding="utf-8")
    for name, text in (("niivue.umd.js", niivue), ("kviewer.js", kviewer)):
        if "</script" in text.lower():
            raise OutputError("a script to inline holds '</script'", path=name, expected="no '</script'",
                              fix="refresh the bundle with scripts/fetch_niivue.py")
    start = """
(async function () {
  const cfg = JSON.parse(document.getElementById("kv-config").textContent);
  const buf = (id, name) => { const e = document.getElementById(id);
    return e ? {url: name, name: name, buffer: kidneyViewerBuffer(e.textContent.trim())} : null; };
  const v = new KidneyViewer(document.getElementById("view"), cfg.labels, cfg.window);
  await v.open(buf("kv-image", "image.nii.gz"), buf("kv-label", "label.nii.gz"), buf("kv-uncertainty", "uncertainty.nii.gz"));
  kidneyViewerControls(document.getElementById("kvcontrols"), v, cfg.has_uncertainty);
  v._emitWindow();
  const t = document.getElementById("structuresTable");
  if (t) kidneyViewerLinkTable(t, v);
  window.kidneyViewer = v;
  document.getElementById("viewbox").dataset.ready = "label";
})().catch((e) => { console.error("viewer: " + e); });
"""
    return (f"<script>{niivue}</script><script>{kviewer}</script><script>{start}</script>")


def write_report(inp: ReportInputs, out: str | Path, *, viewer: bool = False) -> Path:
    """Build the report and write it atomically to ``out``; smaller pictures if over 10 MB.

    ``viewer``: with the embedded NiiVue viewer; the limit is then :data:`MAX_VIEWER_REPORT_BYTES`
    and the embedded image is halved in voxels until the report fits.
    """
    from kidneyseg.io._common import atomic_path, check_output

    srcs: list[str | os.PathLike[str]] = [p for p in (inp.case.source, inp.seg_source, inp.ref_source) if p]
    path = check_output(out, srcs)
    text = ""
    if viewer and inp.case.ndim == 3:
        voxels = VIEWER_VOXELS
        while True:
            text = build_report(inp, viewer=True, viewer_voxels=voxels)
            if len(text.encode("utf-8")) <= MAX_VIEWER_REPORT_BYTES:
                break
            if voxels < 100_000:
                raise OutputError("report with the viewer is larger than 20 MB even with a small image", path=path,
                                  found=f"{len(text.encode()) / 1e6:.1f} MB", expected="<= 20 MB",
                                  fix="write the report without --viewer")
            voxels //= 2
    else:
        for tile_px in (220, 160, 110):
            text = build_report(inp, tile_px=tile_px)
            if len(text.encode("utf-8")) <= MAX_REPORT_BYTES:
                break
        else:
            raise OutputError("report is larger than 10 MB even with small pictures", path=path,
                              found=f"{len(text.encode()) / 1e6:.1f} MB", expected="<= 10 MB")
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
