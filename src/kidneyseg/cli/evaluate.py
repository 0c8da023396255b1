"""`kidneyseg evaluate`: score predictions against references, per case and region."""

from __future__ import annotations

import argparse

NAME = "evaluate"
HELP = "score predictions against reference label maps (Dice, surface Dice, HD95, ASSD, ...)"
DESCRIPTION = (
    "Score prediction label maps against references. --pred and --ref are two files or two folders "
    "(cases matched by file name). Writes one row per case and region (--out), a JSON summary "
    "(--summary) and figures (--plots); prints a Markdown summary table."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``kidneyseg evaluate``."""
    from kidneyseg.labels import task_names

    parser.add_argument("--pred", required=True, help="prediction label map, or folder of them")
    parser.add_argument("--ref", required=True, help="reference label map, or folder of them")
    parser.add_argument("--task", required=True, choices=task_names(), help="label convention and regions")
    parser.add_argument("--out", help="per case x region table (CSV)")
    parser.add_argument("--summary", help="summary per region (JSON)")
    parser.add_argument("--plots", help="folder for box plots and the confusion-matrix figure (PNG)")
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="score a reference without a prediction as an empty prediction instead of failing",
    )


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the requested outputs, print the Markdown table; 0 on success."""
    from kidneyseg.evaluation import evaluate_paths, markdown_table, write_csv, write_summary
    from kidneyseg.io import check_output

    outputs = [o for o in (args.out, args.summary) if o]
    for o in outputs:
        check_output(o, [args.pred, args.ref])
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
