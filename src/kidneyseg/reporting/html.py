"""One self-contained HTML report per case (pictures embedded as base64 PNG; opens offline).

Sections: case facts, legend, axial/coronal/sagittal overlay mosaics (or the
2D image), a 3D surface rendering from two viewpoints (volumes only), the
volumes table (:mod:`kidneyseg.reporting.volumes`), and with a reference the
metrics table (:func:`kidneyseg.evaluation.evaluate_case`) and the
reference / prediction / agreement figure; with a model folder its training
curves and, for ultrasound tasks, the summed confusion matrix.

The file is kept under :data:`MAX_REPORT_BYTES`: when the pictures make it
larger, they are drawn again with smaller tiles.
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
    rows = [[title, k["right"][key], k["left"][key], m["total"][key]] for title, key in keys]
    body = _table(["measure", "right kidney", "left kidney", "total"], rows)
    note = html.escape(m.get("side_rule", ""))
    floor = m.get("lesion_floor", {})
    body += (f'<p class="note">Sides in patient space: {note}. Tumours and cysts are counted and measured one '
             f"connected component at a time; components under {floor.get('value', '?')} "
             f"{html.escape(str(floor.get('unit', '')))} are not counted (their voxels stay in the volumes).</p>")
    return body + renal_table(m), m


def renal_table(m: dict[str, Any]) -> str:
    """The RENAL nephrometry table (HTML), one row per tumour of :func:`~kidneyseg.reporting.volumes.measure`."""
    rows = []
    for side in ("right", "left"):
        for t in m.get("kidneys", {}).get(side, {}).get("tumors", []):
            ren = t.get("renal")
            if not ren:
                continue
            e, loc = ren["E"], ren["L"]
            share = "–" if e["exophytic_share"] is None else f"{100 * e['exophytic_share']:.0f} %"
            rows.append([f"{side} {t['id']}", t["volume_ml"], t["max_diameter_mm"],
                         f"{ren['R']['max_diameter_cm']:.1f} cm → {ren['R']['points']}",
                         f"{share} outside → {e['points'] if e['points'] is not None else '–'}",
                         "n/a", ren["A"]["descriptor"],
                         f"{loc.get('points') if loc.get('points') is not None else '–'}",
                         "–" if ren["score_without_n"] is None else ren["score_without_n"], ren["notation"]])
    if not rows:
        return ""
    lines = sorted({str(t["renal"]["L"].get("polar_lines_from", "")) for side in ("right", "left")
                    for t in m["kidneys"][side].get("tumors", []) if t.get("renal")})
    return ("<h3>RENAL nephrometry per tumour</h3>"
            + _table(["tumour", "volume (mL)", "max diameter (mm)", "R", "E", "N", "A", "L", "R+E+L",
                      "notation"], rows)
            + '<p class="note">Kutikov and Uzzo 2009. R: maximal diameter (≤ 4 cm 1, 4–7 cm 2, ≥ 7 cm 3). '
              "E: share of the tumour outside the convex hull of the kidney parenchyma (≥ 50 % 1, &lt; 50 % 2, "
              "entirely endophytic 3). N: not available (needs a collecting-system label). A: anterior (a), "
              "posterior (p) or neither (x) of the kidney's coronal plane. L: polar lines from "
              + html.escape("; ".join(lines))
              + " (entirely above/below 1, crossing one 2, &gt; 50 % between or across the axial midline 3). "
                "See docs/clinical.md.</p>")


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


def _facts(inp: ReportInputs) -> str:
    c = inp.case
    from kidneyseg import __version__

    facts = [
        ("case", c.name),
        ("image", str(c.source) if c.source else "–"),
        ("segmentation", inp.seg_source or "–"),
        ("reference", inp.ref_source or "none"),
        ("model", str(inp.model_dir) if inp.model_dir else "none"),
        ("task", f"{inp.task.name}: {inp.task.description}"),
        ("modality", c.modality or "unknown"),
        ("grid", f"{' × '.join(str(s) for s in c.shape)} voxels, spacing "
                 f"{' × '.join(f'{s:.3g}' for s in c.spacing)} mm, orientation {''.join(c.orientation)}"
         if c.ndim == 3 else f"{c.shape[0]} × {c.shape[1]} pixels, spacing "
                              f"{c.spacing[0]:.3g} × {c.spacing[1]:.3g} mm"),
        ("written", _dt.datetime.now().strftime("%Y-%m-%d %H:%M") + f" by kidneyseg {__version__}"),
    ]
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


def build_report(inp: ReportInputs, *, tile_px: int = 220) -> str:
    """The report as one HTML string (pictures embedded)."""
    _check_grid(inp)
    case, task = inp.case, inp.task
    seg = np.asarray(inp.seg)
    present = sorted(set(overlay.labels_present(seg)) | set(overlay.labels_present(inp.ref)))
    colours = overlay.colour_table(task, present)
    names = {v: task.label_name(v) for v in colours}
    title = inp.title or f"kidneyseg report: {case.name}"
    body: list[str] = []
    body.append(f"<section><h2>Case</h2>{_facts(inp)}</section>")
    body.append(f"<section><h2>Segmentation</h2>{_legend(colours, names)}")
    if case.ndim == 3:
        focus = seg != 0 if inp.ref is None else (seg != 0) | (np.asarray(inp.ref) != 0)
        mos = overlay.volume_mosaics(case, seg, task, focus=focus, tile_px=tile_px)
        body.append('<p class="note">Radiological convention: the patient\'s right (R) is on the left of axial '
                    "and coronal images; anterior (A) at the top of axial images; superior (S) at the top of "
                    "coronal and sagittal images. Slices are spread through the labelled region; tile captions "
                    "give the index along the RAS axis.</p>")
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
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>Research use only; not a medical device.</p></header>"
        "<main>" + "".join(body) + "</main></body></html>"
    )


def write_report(inp: ReportInputs, out: str | Path) -> Path:
    """Build the report and write it atomically to ``out``; smaller pictures if over 10 MB."""
    from kidneyseg.io._common import atomic_path, check_output

    srcs: list[str | os.PathLike[str]] = [p for p in (inp.case.source, inp.seg_source, inp.ref_source) if p]
    path = check_output(out, srcs)
    text = ""
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
