"""`kidneyseg evaluate`: score predictions against references, per case and region; or a detector's boxes."""

from __future__ import annotations

import argparse

NAME = "evaluate"
HELP = "score predictions against reference label maps (Dice, surface Dice, HD95, ASSD, ...) or detector boxes"
DESCRIPTION = (
    "Score prediction label maps against references. --pred and --ref are two files or two folders "
    "(cases matched by file name). Writes one row per case and region (--out), a JSON summary "
    "(--summary) and figures (--plots); prints a Markdown summary table. "
    "With --detections FILE instead of --pred: recall and precision of a kidney detector's boxes "
    "(ct-detect-vnet) per axial slice and per kidney, FILE a JSON (kidneyseg.evaluation.detection."
    "write_detections) or CSV (case,slice,x1,y1,x2,y2,score) of boxes; see docs/evaluation.md."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``kidneyseg evaluate``."""
    from kidneyseg.labels import task_names

    parser.add_argument("--pred", help="prediction label map, or folder of them")
    parser.add_argument("--detections", metavar="FILE",
                        help="instead of --pred: a detector's kidney boxes (JSON or CSV, or a folder of "
                             "*_detections.json from predict --save-detections), scored per slice and per kidney")
    parser.add_argument("--ref", required=True, help="reference label map, or folder of them")
    parser.add_argument("--task", required=True, choices=task_names(), help="label convention and regions")
    parser.add_argument("--out", help="per case x region table (CSV); with --detections per case x level")
    parser.add_argument("--summary", help="summary per region (JSON); with --detections per level")
    parser.add_argument("--plots", help="folder for box plots and the confusion-matrix figure (PNG)")
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="score a reference without a prediction (or detections) as an empty prediction instead of failing",
    )
    parser.add_argument("--iou", type=float, default=0.5,
                        help="with --detections: smallest IoU of a matched box (default 0.5)")
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="with --detections: drop boxes scoring lower (default: the file's score_threshold, "
                             "else 0.5)")


def _check(args: argparse.Namespace) -> None:
    from kidneyseg.errors import KidneysegError

    if bool(args.pred) == bool(args.detections):
        raise KidneysegError("evaluate scores either label maps or detector boxes",
                             found="both --pred and --detections" if args.pred else "neither --pred nor --detections",
                             expected="exactly one of them",
                             fix="pass --pred PRED (label maps) or --detections FILE (boxes) with --ref")
    if args.detections and args.plots:
        raise KidneysegError("--plots draws segmentation metrics", found="--plots with --detections",
                             expected="--plots with --pred", fix="leave out --plots")
    if not 0.0 < args.iou <= 1.0:
        raise KidneysegError("--iou out of range", found=args.iou, expected="a value in (0, 1]", fix="pass e.g. --iou 0.5")


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the requested outputs, print the Markdown table; 0 on success."""
    from kidneyseg.io import check_output

    _check(args)
    outputs = [o for o in (args.out, args.summary) if o]
    for o in outputs:
        check_output(o, [args.pred or args.detections, args.ref])
    if args.detections:
        return _run_detections(args)
    from kidneyseg.evaluation import evaluate_paths, markdown_table, write_csv, write_summary

    result = evaluate_paths(args.pred, args.ref, args.task, allow_missing=args.allow_missing)
    if args.out:
        write_csv(result.rows, args.out)
    if args.summary:
        write_summary(result.summary, args.summary)
    if args.plots:
        from kidneyseg.evaluation.plots import write_plots

        write_plots(result.rows, result.summary, args.plots)
    print(markdown_table(result.summary))
    return 0


def _run_detections(args: argparse.Namespace) -> int:
    from kidneyseg.evaluation import write_summary
    from kidneyseg.evaluation.detection import detection_markdown_table, evaluate_detection_paths, write_detection_csv

    rows, summary = evaluate_detection_paths(args.detections, args.ref, args.task, iou_threshold=args.iou,
                                             score_threshold=args.score_threshold, allow_missing=args.allow_missing)
    if args.out:
        write_detection_csv(rows, args.out)
    if args.summary:
        write_summary(summary, args.summary)
    print(detection_markdown_table(summary))
    return 0
