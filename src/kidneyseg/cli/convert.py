"""`kidneyseg convert IN OUT`: any supported format to any other, geometry preserved."""

from __future__ import annotations

import argparse
import logging

NAME = "convert"
HELP = "convert an image or label map between NIfTI, NRRD, .seg.nrrd, MHA, DICOM (in) and PNG (2D)"
DESCRIPTION = (
    "Convert an image or label map (or a DICOM series folder) to another format, keeping the "
    "voxel-to-world mapping. The output format follows the suffix of OUT: .nii.gz/.nii, .nrrd, "
    ".seg.nrrd (3D Slicer segmentation), .mha/.mhd, .png/.bmp/.tif (2D only)."
)

log = logging.getLogger("kidneyseg.convert")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN", help="image or label file, or a folder of DICOM slices")
    parser.add_argument("output", metavar="OUT", help="output file; its suffix picks the format")
    parser.add_argument("--label", action="store_true", help="IN is a label map (written as uint8 labels)")
    parser.add_argument(
        "--like",
        metavar="REF",
        default=None,
        help="reference image: IN (a label map) must lie on REF's grid and is written with REF's header",
    )
    parser.add_argument("--task", default=None, help="label names for .seg.nrrd segments (default kits23)")
    parser.add_argument(
        "--spacing", nargs=2, type=float, metavar=("ROW", "COL"), default=None,
        help="pixel spacing (mm) of a 2D input (positive; ignored, with a warning, for volumes and DICOM)",
    )
    parser.add_argument("--series", default=None, metavar="UID", help="DICOM SeriesInstanceUID to read from a folder")


def run(args: argparse.Namespace) -> int:
    from kidneyseg import io
    from kidneyseg.io._common import check_output, format_of
    from kidneyseg.labels import get_task

    if args.task is not None:
        get_task(args.task)
    inputs = [args.input] + ([args.like] if args.like else [])
    check_output(args.output, inputs)  # refuse OUT == IN before any work
    out_fmt = format_of(args.output)
    if out_fmt not in io.WRITE_FORMATS:
        from kidneyseg.errors import OutputError

        raise OutputError(
            "cannot write this format",
            path=args.output,
            found=out_fmt,
            expected="one of " + ", ".join(io.WRITE_FORMATS),
            fix="use a .nii.gz, .nrrd, .seg.nrrd, .mha or .png output name (DICOM-SEG: kidneyseg predict)",
        )
    in_fmt = format_of(args.input)
    is_label = args.label or bool(args.like) or in_fmt == "seg.nrrd" or out_fmt == "seg.nrrd"
    spacing = tuple(args.spacing) if args.spacing else None
    if args.like:
        grid = io.read(args.like, spacing=spacing, series_uid=args.series)
        case = io.read_label(args.input, like=grid, spacing=spacing)
        like = grid
    else:
        case = io.read(args.input, is_label=is_label, spacing=spacing, series_uid=args.series)
        like = case
    array = case.require_label() if is_label else case.require_image()
    out = io.write(array, args.output, like, is_label=is_label, task=args.task)
    log.info("wrote %s (%s, shape %s, spacing %s mm)", out, "label map" if is_label else "image",
             "x".join(str(s) for s in case.shape), "x".join(f"{s:g}" for s in case.spacing))
    return 0
