"""`kidneyseg compare BEFORE AFTER -o OUT`: what changed between two studies of one patient.

BEFORE and AFTER are each one of:

- an image (NIfTI, NRRD, MHA, DICOM folder), segmented here with the modality's default model or
  ``--model``;
- an image whose label map is given: ``--seg BEFORE_SEG AFTER_SEG``;
- an output folder of ``kidneyseg predict`` (its label map and ``*_volumes.json``; the image named
  in ``source`` is shown when it can still be read).

Kidneys are matched by side, tumours by their position relative to their kidney's centre
(``--match-tolerance-mm``).  The interval and growth per year need the study dates: ``--dates``,
else each DICOM series' StudyDate.  Writes ``OUT/compare.json`` and ``OUT/compare.html`` (both
studies side by side) and prints one line per kidney and tumour.  docs/clinical.md gives the rules.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

NAME = "compare"
HELP = "compare two studies: kidney and tumour volume and diameter change, new and vanished tumours"
DESCRIPTION = __doc__

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("before", metavar="BEFORE", type=Path, help="earlier study: image, DICOM folder or "
                        "predict output folder")
    parser.add_argument("after", metavar="AFTER", type=Path, help="later study (same kinds)")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUT", help="output folder")
    parser.add_argument("--seg", nargs=2, type=Path, metavar=("BEFORE_SEG", "AFTER_SEG"),
                        help="label maps of the two images (on their grids); else they are segmented here")
    parser.add_argument("--model", default=None, metavar="NAME|DIR", help="model for segmenting the images "
                        "(default: the modality's embedded model)")
    parser.add_argument("--modality", choices=("ct", "mr", "us"), default=None,
                        help="modality of the images when the files do not say (chooses the default model)")
    parser.add_argument("--task", default=None, help="label convention of given label maps (kits23, kits19, "
                        "chaos-mr, totalseg-ct...; default kits23: 1 kidney, 2 tumour, 3 cyst)")
    parser.add_argument("--dates", nargs=2, metavar=("BEFORE_DATE", "AFTER_DATE"),
                        help="study dates YYYY-MM-DD (default: the DICOM StudyDate of each series)")
    parser.add_argument("--match-tolerance-mm", type=float, default=None, metavar="MM",
                        help="largest distance between a tumour's kidney-centred positions in the two studies "
                             "for them to be one tumour (default 20)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=False,
                        help="mirroring test-time augmentation when segmenting")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads for the network")


def _dicom_study_date(case: Any) -> Any:
    """The StudyDate of a case read from a DICOM series (header of its first file), or None."""
    files = case.meta.get("dicom_files") if case is not None else None
    if not files:
        return None
    try:
        import pydicom

        ds = pydicom.dcmread(files[0], stop_before_pixels=True, specific_tags=["StudyDate"])
        text = str(ds.get("StudyDate", "") or "")
    except Exception:  # noqa: BLE001 - a header we cannot read gives no date; the interval is then unknown
        return None
    if not text:
        return None
    from kidneyseg.reporting.compare import parse_date

    return parse_date(text, what=f"StudyDate of {files[0]}")


def _predict_folder(folder: Path) -> tuple[Path, Path] | None:
    """``(label map, volumes.json)`` of a predict output folder holding one case; None if it is not one."""
    from kidneyseg.errors import InputError
    from kidneyseg.reporting.export import FORMATS

    if not folder.is_dir():
        return None
    vols = sorted(p for p in folder.glob("*_volumes.json") if not p.name.startswith("."))
    if not vols:
        return None
    if len(vols) > 1:
        raise InputError("predict output folder holds several cases", path=folder,
                         found=", ".join(p.name for p in vols[:5]), expected="one NAME_volumes.json",
                         fix="pass the label map with --seg and the image instead")
    stem = vols[0].name[: -len("_volumes.json")]
    for suffix in FORMATS.values():
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}", vols[0]
    raise InputError("predict output folder has no label map for its volumes.json", path=folder,
                     found=vols[0].name, expected=f"{stem}.nii.gz (or .nrrd, .seg.nrrd)",
                     fix="pass the folder `kidneyseg predict` wrote, or the image with --seg")


def _task(name: str | None) -> Any:
    from kidneyseg.labels import get_task

    return get_task(name or "kits23")


def _load(path: Path, seg: Path | None, args: argparse.Namespace, predictor: Any) -> Any:
    """A :class:`~kidneyseg.reporting.compare.Study` from an image (+ label map) or a predict folder.

    ``predictor(image, path)``: the predictor for an image that has to be segmented (the image, read
    once, is also what the default model's modality is guessed from).
    """
    import json

    from kidneyseg import io
    from kidneyseg.errors import KidneysegError
    from kidneyseg.reporting.compare import Study

    task = _task(args.task)
    found = _predict_folder(path) if seg is None else None
    if found is not None:
        label_path, vol_path = found
        source = json.loads(vol_path.read_text()).get("source")
        image = None
        if source and Path(source).exists():
            try:
                image = io.read(source, modality=args.modality)
            except KidneysegError as exc:
                log.warning("%s: cannot read the image %s named in %s (%s): showing the label map alone",
                            path, source, vol_path.name, exc)
        lab = io.read_label(label_path, like=image) if image is not None else io.read(label_path, is_label=True)
        return Study(label=lab.require_label(), affine=(image or lab).affine,
                     name=vol_path.name[: -len("_volumes.json")], image=image, labels=task.labels,
                     date=_dicom_study_date(image), date_from="DICOM StudyDate" if image is not None else None,
                     source=source, seg_source=str(label_path))
    image = io.read(path, modality=args.modality)
    if seg is not None:
        label = io.read_label(seg, like=image).require_label()
        labels = task.labels
    else:
        result = predictor(image, path).predict_case(image)
        label, labels = result.label, result.labels
    date = _dicom_study_date(image)
    return Study(label=label, affine=image.affine, name=image.name, image=image, labels=labels, date=date,
                 date_from="DICOM StudyDate" if date is not None else None, source=str(path),
                 seg_source=str(seg) if seg is not None else "segmented by kidneyseg compare")


def run(args: argparse.Namespace) -> int:
    from kidneyseg.errors import InputError
    from kidneyseg.reporting.compare import (
        MATCH_TOLERANCE_MM,
        compare_studies,
        parse_date,
        summary_lines,
        write_comparison,
    )

    tol = MATCH_TOLERANCE_MM if args.match_tolerance_mm is None else float(args.match_tolerance_mm)
    if not tol > 0:
        raise InputError("--match-tolerance-mm must be positive", found=args.match_tolerance_mm,
                         expected="a distance in mm > 0", fix="e.g. --match-tolerance-mm 20")
    for p in [args.before, args.after] + list(args.seg or []):
        if not p.exists():
            raise InputError("input does not exist", path=p, fix="check the path")
    dates = [parse_date(d, what=f"--dates {w}") for d, w in zip(args.dates, ("BEFORE_DATE", "AFTER_DATE"))] \
        if args.dates else None
    cache: dict[str, Any] = {}

    def predictor(image: Any, path: Path) -> Any:  # loaded once, only when an image has to be segmented
        if "p" not in cache:
            from kidneyseg.cli.predict import guess_modality
            from kidneyseg.inference import Predictor, resolve_model

            chosen = args.modality
            if args.model is None and chosen is None:  # from the first image to segment, already read
                chosen = guess_modality([path], first=image)
            cache["p"] = Predictor(resolve_model(args.model, chosen), tta=args.tta, threads=args.threads)
        return cache["p"]

    segs = list(args.seg) if args.seg else [None, None]
    before = _load(args.before, segs[0], args, predictor)
    after = _load(args.after, segs[1], args, predictor)
    if dates is not None:
        before.date, after.date = dates
        before.date_from = after.date_from = "--dates"
    for s in (before, after):
        if s.label.ndim != 3:
            raise InputError("compare needs volumes", path=s.source, found=f"a {s.label.ndim}D label map",
                             expected="3D CT or MR studies", fix="compare volumes, not 2D images")
    result = compare_studies(before, after, tolerance_mm=tol)
    task = _task(args.task)
    if args.seg is None and cache:  # segmented here: the model's own labels name the colours
        from kidneyseg.labels import Task

        task = Task(name="model", labels=dict(cache["p"].labels), regions=())
    jp, hp = write_comparison(result, before, after, task, args.output)
    for line in summary_lines(result):
        print(line, file=sys.stdout)
    if result["interval_days"] is None:
        log.info("no study dates (pass --dates YYYY-MM-DD YYYY-MM-DD): no growth rates")
    log.info("wrote %s and %s", jp, hp)
    return 0
