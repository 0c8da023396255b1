"""`kidneyseg report`: a self-contained HTML report of one segmentation, or of a predict output folder.

One case::

    kidneyseg report --image ct.nii.gz --seg pred.nii.gz [--ref truth.nii.gz] [--model DIR] -o report.html

A folder of predictions (one report per label file, plus ``index.html``)::

    kidneyseg report --batch PRED_DIR --images IMAGE_DIR [--refs REF_DIR] -o REPORT_DIR

``--viewer`` adds the interactive NiiVue viewer (three planes and 3D, window/level, overlays)
with the volumes embedded (downsampled so the report stays under 20 MB).  Beside ``NAME.nii.gz``
the files that ``kidneyseg predict`` writes are picked up when present: ``NAME_uncertainty.nii.gz``
(a second overlay in the viewer) and ``NAME_volumes.json`` (its ``qc`` flags, a column of the
structures table).  A follow-up comparison (``compare.json`` of ``kidneyseg compare``) is shown with
``--compare FILE``, or without it when a ``compare.json`` beside the label map names that label map
as its BEFORE or AFTER study (a comparison of other studies is never picked up).

Images and references are matched to predictions by case name (the file
name without its format suffix; an nnU-Net channel suffix ``_0000`` on the
image is ignored).
"""

from __future__ import annotations

import argparse
import html
import json
from pathlib import Path

from kidneyseg.errors import InputError, OutputError

NAME = "report"
HELP = "write an HTML report (overlays, 3D view, volumes, metrics) of a segmentation"
DESCRIPTION = __doc__

#: File suffixes a one-case report can be written as (it is HTML; there is no PDF writer).
REPORT_SUFFIXES = (".html", ".htm")


def check_report_path(out: Path) -> None:
    """Refuse a one-case report name whose suffix is not HTML (``-o r.pdf`` would get HTML bytes)."""
    if out.suffix.lower() not in REPORT_SUFFIXES:
        raise OutputError(
            "the report is an HTML page and cannot be written under this suffix",
            path=out,
            found=repr(out.suffix or "no suffix"),
            expected=" or ".join(REPORT_SUFFIXES),
            fix=f"name the report {out.stem or 'report'}.html (to get a PDF, print the page from a browser)",
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path, help="image (NIfTI, NRRD, DICOM folder, PNG)")
    parser.add_argument("--seg", type=Path, help="label map on the image grid (the prediction)")
    parser.add_argument("--ref", type=Path, help="reference label map: adds metrics and the agreement figure")
    parser.add_argument("--batch", type=Path, metavar="PRED_DIR", help="folder of predicted label maps")
    parser.add_argument("--images", type=Path, metavar="DIR", help="with --batch: folder of the images")
    parser.add_argument("--refs", type=Path, metavar="DIR", help="with --batch: folder of reference label maps")
    parser.add_argument("--model", type=Path, metavar="DIR", help="model folder: training curves (and its task)")
    parser.add_argument("--task", help="label convention (kits19, kits23, chaos-mr, openkidney-us, ...)")
    parser.add_argument("--modality", choices=("ct", "mr", "us"), help="modality when the file does not say")
    parser.add_argument("--spacing", type=float, nargs=2, metavar=("ROW_MM", "COL_MM"),
                        help="pixel spacing of 2D images when they have no sidecar (positive; ignored, with a "
                             "warning, for volumes and DICOM, whose header gives it)")
    parser.add_argument("--viewer", action="store_true",
                        help="embed the interactive NiiVue viewer (volumes downsampled; report up to 20 MB)")
    parser.add_argument("--uncertainty", type=Path, metavar="FILE",
                        help="uncertainty map (0..1, on the image grid) for the viewer (default: "
                             "SEG_uncertainty.nii.gz beside --seg, when present)")
    parser.add_argument("--compare", type=Path, metavar="COMPARE_JSON",
                        help="compare.json of `kidneyseg compare` to show as the follow-up section (default: "
                             "compare.json beside --seg when it names that label map as BEFORE or AFTER)")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="report .html (one case; HTML is the only format) or output folder (--batch)")


def _model_task(model: Path | None) -> str | None:
    if model is None:
        return None
    spec = model / "model.json"
    if not spec.is_file():
        raise InputError("model folder has no model.json", path=model, expected="a folder from `kidneyseg train`",
                         fix="pass the model folder itself")
    try:
        return json.loads(spec.read_text()).get("task")
    except ValueError as exc:
        raise InputError("model.json is not valid JSON", path=spec, found=str(exc)) from exc


def guess_task(case, seg, model: Path | None = None, task: str | None = None) -> str:
    """The task named, else the model's, else from modality and label values."""
    import numpy as np

    if task:
        return task
    t = _model_task(model)
    if t:
        return t
    top = int(np.max(seg)) if np.size(seg) else 0
    if case.modality == "us":
        return "openkidney-us" if top <= 1 else "openkidney-us-regions"
    if case.modality == "mr" and top >= 4:
        return "chaos-mr"
    return "kits23"


def sidecar(seg: Path, suffix: str) -> Path:
    """``NAME{suffix}`` beside the label map ``NAME.nii.gz`` (what ``kidneyseg predict`` writes next to it)."""
    from kidneyseg.io import stem_of

    return Path(seg).with_name(stem_of(Path(seg)) + suffix)


def report_one(image: Path, seg: Path, out: Path, *, ref: Path | None = None, model: Path | None = None,
               task: str | None = None, modality: str | None = None, spacing=None, viewer: bool = False,
               uncertainty: Path | None = None, compare: Path | None = None) -> Path:
    """Read the files and write one HTML report; returns its path.

    ``compare``: a ``compare.json`` to show (default: :func:`find_comparison` beside the label map).

    ``uncertainty``: a float map on the image grid (default ``SEG_uncertainty.nii.gz`` when it exists);
    ``SEG_volumes.json`` beside the label map, when present, gives the QC flags.
    """
    import numpy as np

    from kidneyseg import io
    from kidneyseg.labels import get_task
    from kidneyseg.reporting.html import ReportInputs, write_report

    case = io.read(image, modality=modality, spacing=tuple(spacing) if spacing else None)
    if case.name in ("imaging", "image") and Path(image).parent.name:
        case.name = Path(image).parent.name  # KiTS layout: case_00001/imaging.nii.gz
    seg_case = io.read_label(seg, like=case)
    seg_arr = seg_case.require_label()
    ref_arr = io.read_label(ref, like=case).require_label() if ref is not None else None
    t = get_task(guess_task(case, seg_arr, model, task))
    unc_path = uncertainty if uncertainty is not None else sidecar(seg, "_uncertainty.nii.gz")
    unc = None
    if uncertainty is not None or unc_path.is_file():
        unc_case = io.read(unc_path)
        unc = np.asarray(unc_case.image if unc_case.image is not None else unc_case.label, dtype=np.float32)
        if unc.shape != case.shape:
            raise InputError("uncertainty map is not on the image grid", path=unc_path, found=f"shape {unc.shape}",
                             expected=f"shape {case.shape}", fix="pass the NAME_uncertainty.nii.gz of this prediction")
    saved = None
    vol_json = sidecar(seg, "_volumes.json")
    if vol_json.is_file():
        try:
            saved = json.loads(vol_json.read_text())
        except ValueError as exc:
            raise InputError("volumes.json is not valid JSON", path=vol_json, found=str(exc),
                             fix="write it again with kidneyseg predict, or move it away") from exc
    from kidneyseg.reporting.compare import read_comparison

    found = (compare, read_comparison(compare)) if compare is not None else find_comparison(seg)
    cmp_path, comparison = found if found is not None else (None, None)
    inp = ReportInputs(case=case, seg=seg_arr, task=t, ref=ref_arr, model_dir=model,
                       seg_source=str(seg), ref_source=str(ref) if ref else None, uncertainty=unc,
                       saved_volumes=saved, comparison=comparison,
                       comparison_source=str(cmp_path) if cmp_path is not None else None)
    return write_report(inp, out, viewer=viewer)


def find_comparison(seg: Path) -> tuple[Path, dict] | None:
    """``compare.json`` beside the label map, and its content, when it names that label map as its BEFORE or
    AFTER study (an unreadable file, or one naming other studies, is passed over; one naming this label map
    that is not a comparison of kidneyseg compare is an :class:`InputError`)."""
    from kidneyseg.reporting.compare import check_comparison
    from kidneyseg.reporting.html import comparison_role

    path = Path(seg).with_name("compare.json")
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not comparison_role(data, seg):
        return None
    return path, check_comparison(data, str(path))



def _files_by_case(folder: Path) -> dict[str, Path]:
    from kidneyseg.io import case_name, has_image_suffix

    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.name.endswith(".json"):
            continue
        if p.is_file() and has_image_suffix(p):
            out.setdefault(case_name(p), p)
    return out


def run(args: argparse.Namespace) -> int:
    import logging

    from kidneyseg.io._common import check_spacing_option

    log = logging.getLogger("kidneyseg.report")
    check_spacing_option(args.spacing)
    if args.batch is None:
        if args.image is None or args.seg is None:
            raise InputError("--image and --seg are needed (or --batch PRED_DIR --images DIR)",
                             fix="kidneyseg report --image ct.nii.gz --seg pred.nii.gz -o report.html")
        check_report_path(args.output)
        path = report_one(args.image, args.seg, args.output, ref=args.ref, model=args.model, task=args.task,
                          modality=args.modality, spacing=args.spacing, viewer=args.viewer,
                          uncertainty=args.uncertainty, compare=args.compare)
        log.info("wrote %s (%.2f MB)", path, path.stat().st_size / 1e6)
        return 0
    for what, p in (("--batch", args.batch), ("--images", args.images)):
        if p is None or not p.is_dir():
            raise InputError(f"{what} needs a folder", path=p, fix="--batch PRED_DIR --images IMAGE_DIR")
    preds = _files_by_case(args.batch)
    if not preds:
        raise InputError("no label files in the prediction folder", path=args.batch,
                         expected="files such as case_00001.nii.gz written by `kidneyseg predict`")
    images = _files_by_case(args.images)
    refs = _files_by_case(args.refs) if args.refs else {}
    missing = sorted(set(preds) - set(images))
    if missing:
        raise InputError("predictions without an image", path=args.images, found=", ".join(missing[:10]),
                         expected="an image with the same case name for every prediction",
                         fix="point --images at the folder the predictions were made from")
    out_dir: Path = args.output
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, seg in preds.items():
        out = out_dir / f"{name}.html"
        report_one(images[name], seg, out, ref=refs.get(name), model=args.model, task=args.task,
                   modality=args.modality, spacing=args.spacing, viewer=args.viewer)
        rows.append(f'<li><a href="{html.escape(out.name)}">{html.escape(name)}</a>'
                    f"{' (with reference)' if name in refs else ''}</li>")
        log.info("wrote %s", out)
    index = out_dir / "index.html"
    index.write_text("<!DOCTYPE html><html><head><meta charset='utf-8'><title>kidneyseg reports</title></head>"
                     f"<body><h1>kidneyseg reports ({len(rows)})</h1><ul>{''.join(rows)}</ul></body></html>",
                     encoding="utf-8")
    log.info("wrote %s with %d reports", index, len(rows))
    return 0
