"""`kidneyseg predict INPUT... -o OUT`: segment kidneys (tumours, cysts) with a model folder.

``--model`` may be repeated: the models then form an ensemble (probabilities
averaged on each input's grid).  INPUT may be image files (NIfTI, NRRD, MHA, PNG/JPEG...), DICOM series
folders, or folders of cases (each supported file or DICOM sub-folder is one
case).  Each case gets a label map on its own grid, ``NAME_volumes.json``
(with ``--save-detections``, a ``ct-detect-vnet`` model's kidney boxes in ``NAME_detections.json``)
and one line on stdout; in a batch a case that fails is reported on stderr
and the others still run (exit code 1 if any failed, with a summary line).
A single input that cannot be used (unreadable, malformed, refused) is a usage
error like in ``info`` and ``convert``: one line on stderr, exit code 2, read
before any model is loaded.
"""

from __future__ import annotations

import argparse
import logging
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kidneyseg.io import CASE_FILE_SUFFIXES, DICOM_SUFFIX, image_suffix

NAME = "predict"
HELP = "segment kidney, tumour and cyst in images with a trained model folder"
DESCRIPTION = __doc__

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, DICOM folders or folders of cases")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    parser.add_argument("--model", action="append", default=None, metavar="NAME|DIR",
                        help="model folder (or embedded default name); repeat it to ensemble several models "
                             "(their probabilities averaged on the input grid; same labels needed); default: the "
                             "modality's embedded model")
    parser.add_argument("--modality", choices=("ct", "mr", "us"), default=None,
                        help="modality of the inputs (chooses the embedded default model); default: the DICOM "
                             "Modality, else CT (with a warning) when the intensities look like HU")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=False,
                        help="mirroring test-time augmentation (slower, default off)")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write NAME_probabilities.npz (float16, channel per label, input grid)")
    parser.add_argument("--save-uncertainty", action="store_true",
                        help="also write NAME_uncertainty.nii.gz (float32, 0..1 normalised entropy of the mean "
                             "probabilities over ensemble members and TTA passes; one network alone: of its softmax)")
    parser.add_argument("--save-detections", action="store_true",
                        help="ct-detect-vnet models: also write NAME_detections.json, the kidney detector's boxes "
                             "(its grid, the slices searched, every box with its score, the 3D kidney boxes cropped), "
                             "which `kidneyseg evaluate --detections` scores against reference labels")
    parser.add_argument("--no-qc", action="store_true",
                        help="skip the per-structure QC score and pass/review flag in NAME_volumes.json (saves the "
                             "probability undo and uncertainty of models that do not need them otherwise)")
    parser.add_argument("--output-format", choices=("nifti", "nrrd", "seg.nrrd", "dicom-seg", "png"), default=None,
                        help="label map format (dicom-seg needs a DICOM series input); default: png for 2D "
                             "image files (PNG, JPEG, BMP, TIFF), else nifti")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads for the network")
    parser.add_argument("--runtime", choices=("auto", "onnx", "torch"), default=None,
                        help="network runtime: auto (ONNX Runtime for segmentation networks on the CPU, exported "
                             "once per model into the user cache, $KIDNEYSEG_CACHE; the rest on torch), onnx "
                             "(required) or torch; default: $KIDNEYSEG_RUNTIME, else auto")
    parser.add_argument("--spacing", type=float, nargs=2, default=None, metavar=("ROW", "COL"),
                        help="pixel spacing in mm of 2D inputs (else a sidecar JSON, else 1 mm with a warning); "
                             "positive; ignored, with a warning, for volumes and DICOM, whose header gives it")
    parser.add_argument("--no-postprocess", action="store_true", help="skip component and hole clean-up")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: this process, case after case (default); ray: one Ray task per case on "
                             "workers that load the model once, finished cases skipped on a rerun, "
                             "OUT/cohort_summary.csv; inputs may also be quoted globs and CSV manifests "
                             "(needs kidneyseg[distributed]; docs/scale.md)")
    parser.add_argument("--address", default=None, metavar="ADDR",
                        help="--engine ray: the Ray cluster to join (HOST:6379, ray://HOST:10001, auto); "
                             "default: a local Ray on the cores this process is given")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="--engine ray: workers (each loads the model once and uses --threads cores); "
                             "default: the cluster's CPUs / --threads")


def _is_dicom_file(p: Path) -> bool:
    if image_suffix(p) == DICOM_SUFFIX:
        return True
    try:
        with open(p, "rb") as f:
            head = f.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def _is_image_file(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and image_suffix(p) in CASE_FILE_SUFFIXES


def is_dicom_folder(p: Path) -> bool:
    """A folder whose plain files include DICOM files (a series, possibly several)."""
    files = [f for f in sorted(p.iterdir()) if f.is_file() and not f.name.startswith(".")]
    return any(_is_dicom_file(f) for f in files[:20])


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Cases from the command line: files, DICOM folders, and the cases inside plain folders."""
    from kidneyseg.errors import InputError

    cases: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if not p.exists():
            cases.append(p)  # reported as a failed case by the reader
        elif p.is_dir() and not is_dicom_folder(p):
            found = [c for c in sorted(p.iterdir()) if _is_image_file(c) or (c.is_dir() and is_dicom_folder(c))]
            if not found:
                raise InputError("folder holds no images and no DICOM series", path=p,
                                 expected="image files (" + ", ".join(CASE_FILE_SUFFIXES) + ") or DICOM folders",
                                 fix="pass image files or a folder of them")
            cases.extend(found)
        else:
            cases.append(p)
    return cases


#: 0.5th intensity percentile below which a volume is taken for CT in HU (air is about -1000 HU).
def guess_modality(cases: list[Path], spacing: tuple[float, float] | None = None, first: Any = None) -> str:
    """Modality for the default model when neither ``--model`` nor ``--modality`` is given.

    From the first readable case: the DICOM Modality (CT/MR/US) when there is one;
    else a 2D image is taken for ultrasound and a volume whose 0.5th intensity
    percentile is below ``default_models.HU_AIR_THRESHOLD`` (air in HU) for CT, each with a
    warning.  Other volumes (e.g. MR in NIfTI) raise :class:`InputError` asking for
    ``--modality``.  When no case can be read, CT is assumed (the cases then fail
    one by one with their own errors).  ``first``: the case of ``cases[0]`` when it
    has been read already (it is not read again).
    """
    from kidneyseg import io
    from kidneyseg.default_models import guess_default_modality
    from kidneyseg.errors import InputError, KidneysegError

    for n, path in enumerate(cases):
        if n == 0 and first is not None:
            case = first
        else:
            try:
                case = io.read(path, spacing=spacing)
            except (KidneysegError, OSError):
                continue
        g = guess_default_modality(case)
        if g.source == "dicom":
            log.info("modality %s from the DICOM header of %s", g.modality, path)
            return str(g.modality)
        if g.source == "2d":
            log.warning("%s: 2D image without a modality: using the ultrasound default model "
                        "(pass --modality ct|mr|us to choose)", path)
            return "us"
        if g.modality == "ct":
            log.warning("%s: no modality given; intensities look like CT in HU (0.5th percentile %.0f): "
                        "using the CT default model (pass --modality to choose)", path, g.low)
            return "ct"
        raise InputError("cannot tell the modality of the input for the default model", path=path,
                         found=f"no DICOM Modality, intensities {g.low:.0f}..{g.high:.0f} (no air at about -1000 HU)",
                         expected="a DICOM series, a CT in HU, or --modality",
                         fix="pass --modality ct|mr|us (or --model DIR)")
    log.warning("no input could be read to tell its modality: using the CT default model")
    return "ct"


def run(args: argparse.Namespace) -> int:
    if getattr(args, "save_detections", False) and (args.engine == "ray" or args.address or args.workers):
        from kidneyseg.errors import InputError

        raise InputError("--save-detections is an option of the local engine", found=f"--engine {args.engine}",
                         expected="--engine local", fix="drop --save-detections, or predict with --engine local")
    if args.engine == "ray" or args.address or args.workers:  # the cohort on Ray: its own module, Ray imported there
        from kidneyseg.cli._predict_ray import run_ray

        return run_ray(args)
    from tqdm import tqdm

    from kidneyseg.data.slices import read_image
    from kidneyseg.errors import KidneysegError
    from kidneyseg.inference import Predictor, resolve_model
    from kidneyseg.io import IMAGE_2D_SUFFIXES, case_name
    from kidneyseg.io._common import check_spacing_option
    from kidneyseg.reporting.export import save_prediction

    check_spacing_option(args.spacing)
    cases = expand_inputs(args.inputs)
    single = len(cases) == 1
    # One input: read it before anything else, so that an unreadable one is a usage error (one line, exit 2)
    # with no modality guess and no model loaded; it is not read again below.
    if single and args.output_format == "dicom-seg" and cases[0].is_dir():
        _check_dicom_seg_sources(cases[0])
    # a PNG of the `slices` layout takes the spacing of its folder's index.csv (after --spacing and a sidecar JSON)
    first = read_image(cases[0], spacing=tuple(args.spacing) if args.spacing else None) if single else None
    chosen = args.modality
    if args.model is None and chosen is None:
        chosen = guess_modality(cases, tuple(args.spacing) if args.spacing else None, first=first)
    # --model repeated: an ensemble of the folders (Predictor averages their probabilities)
    model_dirs = [resolve_model(m, chosen) for m in args.model] if args.model else [resolve_model(None, chosen)]
    predictor = Predictor(model_dirs if len(model_dirs) > 1 else model_dirs[0], tta=args.tta, threads=args.threads,
                          runtime=args.runtime,
                          postprocess=not args.no_postprocess)
    modality = args.modality or predictor.modality or None
    if args.save_detections:
        _check_detections_model(predictor)
    out = Path(args.output)
    failed: list[tuple[Path, str]] = []
    names: dict[str, int] = {}
    jobs: list[tuple[Path, str, str]] = []  # (input, label map format, output stem), in input order
    for path in cases:
        base = case_name(path)  # nnU-Net's case_00000_0000.nii.gz -> case_00000.nii.gz, as evaluate pairs it
        names[base] = names.get(base, 0) + 1
        jobs.append((path, args.output_format or ("png" if image_suffix(path) in IMAGE_2D_SUFFIXES else "nifti"),
                     base if names[base] == 1 else f"{base}_{names[base]}"))
    spacing = tuple(args.spacing) if args.spacing else None

    def read(job: tuple[Path, str, str]) -> Any:
        path, fmt, _ = job
        if single:
            return _take(first, modality)
        if fmt == "dicom-seg" and path.is_dir():
            _check_dicom_seg_sources(path)  # refuse before reading pixels or running the network
        return read_image(path, spacing=spacing, modality=modality)

    def save(job: tuple[Path, str, str], result: Any) -> str:
        _, fmt, stem = job
        written = save_prediction(result, out, fmt=fmt, save_probabilities=args.save_probabilities, name=stem,
                                  save_uncertainty=args.save_uncertainty, qc=not args.no_qc)
        if args.save_detections:
            _save_detections(result, out, stem)
        return str(written["line"])

    def failure(path: Path, exc: Exception) -> None:
        if isinstance(exc, KidneysegError):
            if single:  # one input: a usage error, one line and exit 2 (kidneyseg.cli.main prints it)
                raise exc
            failed.append((path, str(exc)))
            tqdm.write(f"kidneyseg predict: {path}: error: {exc}", file=sys.stderr)
            return
        if getattr(args, "debug", False):  # one bad case must not stop the batch, unless asked to
            raise exc
        failed.append((path, f"{type(exc).__name__}: {exc}"))
        tqdm.write(f"kidneyseg predict: {path}: unexpected error: {type(exc).__name__}: {exc} "
                   "(rerun with --debug for the traceback)", file=sys.stderr)

    def finish(pending: tuple[tuple[Path, str, str], Future[str]] | None) -> None:
        if pending is None:
            return
        job, fut = pending
        try:
            tqdm.write(fut.result(), file=sys.stdout)
        except Exception as exc:  # noqa: BLE001 - failure() re-raises what must stop the batch
            failure(job[0], exc)

    # A batch is a pipeline: the next input is read and the last prediction written on two threads while the
    # network runs (reading, writing and measuring are mostly numpy, zlib and PIL, which release the GIL).
    # Outputs, lines and errors stay in input order; at most one input ahead and one output behind are held.
    bar = tqdm(jobs, desc="predict", unit="case", file=sys.stderr, disable=len(cases) < 2)
    with ThreadPoolExecutor(1, thread_name_prefix="kidneyseg-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="kidneyseg-write") as writer:
        ahead: Future[Any] = reader.submit(read, jobs[0])
        pending: tuple[tuple[Path, str, str], Future[str]] | None = None
        for i, job in enumerate(bar):
            this = ahead
            if i + 1 < len(jobs):
                ahead = reader.submit(read, jobs[i + 1])
            try:
                case = this.result()
                result = predictor.predict_case(case, probabilities=args.save_probabilities,
                                                uncertainty="map" if args.save_uncertainty else
                                                ("structures" if not args.no_qc else False))
            except Exception as exc:  # noqa: BLE001 - failure() re-raises what must stop the batch
                finish(pending)
                pending = None
                failure(job[0], exc)
                continue
            finish(pending)
            pending = (job, writer.submit(save, job, result))
        finish(pending)
    if failed:
        if single:
            return 1  # its error is the line above
        print(f"kidneyseg predict: {len(failed)} of {len(cases)} case(s) failed: "
              + ", ".join(str(p) for p, _ in failed), file=sys.stderr)
        return 1
    return 0


def _check_detections_model(predictor: Any) -> None:
    """``--save-detections``: refuse, before any case runs, a model (or ensemble) without exactly one detector."""
    from kidneyseg.errors import InputError
    from kidneyseg.inference.predictor import _inference_mode

    found = [m for m in predictor.models if _inference_mode(m) == "detect-segment"]
    if len(found) != 1:
        raise InputError("--save-detections needs one ct-detect-vnet model (a kidney detector)",
                         path=predictor.models[0].dir,
                         found=f"pipeline {predictor.pipeline}" + (" (several detectors)" if found else ""),
                         expected="one model whose pipeline is ct-detect-vnet (stages detector and segmenter)",
                         fix="drop --save-detections, or pass one ct-detect-vnet --model")


def _save_detections(result: Any, out: Path, stem: str) -> Path:
    """``OUT/NAME_detections.json``: the detector's boxes of one case (:func:`kidneyseg.models.boxes.write_detections`,
    the case named as the label map), which ``kidneyseg evaluate --detections`` reads back."""
    from kidneyseg.models.boxes import write_detections

    path = write_detections(out / f"{stem}_detections.json", {stem: result.detections[0]})
    log.info("wrote %s", path)
    return path


def _check_dicom_seg_sources(path: Path) -> None:
    """Refuse a DICOM folder that a DICOM-SEG cannot reference, from the headers (no pixels read)."""
    from kidneyseg.io.dicomseg import check_sources, read_sources

    files = [f for f in sorted(path.iterdir()) if f.is_file() and _is_dicom_file(f)]
    check_sources(read_sources(files), path, one_series=False)


def _take(case: Any, modality: str | None) -> Any:
    """The case read before the model was loaded, with the modality chosen since (as :func:`io.read` sets it)."""
    if modality is not None:
        case.modality = modality
    return case
