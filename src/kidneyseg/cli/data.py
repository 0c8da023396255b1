"""`kidneyseg data check|split|synth|slice`: inspect, split, generate and slice data sets."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

NAME = "data"
HELP = "data sets: check (fingerprint, plan), split (case-level folds), synth (phantoms), slice (2D cache)"

FORMATS = ("kits19", "kits21", "kits23", "nnunet", "openkidney-us", "chaos-mr", "slices", "folder")


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="data set folder (or a CSV list for --format folder)")
    p.add_argument("--format", "-f", required=True, choices=FORMATS, help="layout of the folder")
    p.add_argument("--sonographer", choices=("1", "2", "union", "intersection"), default=None,
                   help="openkidney-us: whose masks (default 1)")
    p.add_argument("--masks", choices=("capsule", "regions"), default=None, help="openkidney-us: mask kind")
    p.add_argument("--task", default=None, help="label task for nnunet / slices / folder (kidneyseg.labels)")
    p.add_argument("--modality", choices=("ct", "mr", "us"), default=None, help="folder/slices: modality")


def _options(args: argparse.Namespace) -> dict:
    opts: dict = {}
    if args.format == "openkidney-us":
        if args.sonographer:
            opts["sonographer"] = args.sonographer
        if args.masks:
            opts["masks"] = args.masks
    if args.task and args.format in ("nnunet", "slices", "folder"):
        opts["task"] = args.task
    if args.modality and args.format in ("slices", "folder"):
        opts["modality"] = args.modality
    return opts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("check", help="count cases, find unmatched files, label values, grids; write fingerprint")
    _add_dataset_args(p)
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--fingerprint", type=Path, default=None, help="write the fingerprint (+ derived plans) here")
    p.add_argument("--plan", type=Path, default=None, help="write the derived plan here")
    p.add_argument("--spatial-dims", type=int, choices=(2, 3), default=None, help="plan dims (default: data dims)")
    p.add_argument("--strict", action="store_true", help="exit 1 when problems were found")

    p = sub.add_parser("split", help="case-level cross-validation folds grouped by patient")
    _add_dataset_args(p)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", type=Path, required=True, help="splits JSON (nnU-Net splits_final format)")

    p = sub.add_parser("synth", help="generate synthetic phantoms in a data-set layout")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--modality", choices=("ct", "mr", "us"), default="ct")
    p.add_argument("--n", type=int, default=1, help="number of phantoms")
    p.add_argument("--size", type=int, nargs="+", default=None, metavar="N",
                   help="X Y Z voxels (CT/MR) or ROWS COLS (US); default 256 256 128 / 256 256 32 / 480 640 "
                   "(give OUT before --size or another option after it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", choices=("kits23", "nnunet", "chaos-mr", "openkidney-us", "slices", "folder"),
                   default=None, help="default: kits23 (CT), chaos-mr (MR), openkidney-us (US)")
    p.add_argument("--shapes", default=None,
                   help="folder with kits23_masks/ and kidneyus_masks/ for real shapes; 'none' for parametric "
                   "(default: ../shared/data when present)")

    p = sub.add_parser("slice", help="axial 2D slices of volumes, windowed, cached as compressed .npz")
    _add_dataset_args(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="cache folder")
    p.add_argument("--window", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="intensity window (default -60 300 HU for CT; per-image z-score otherwise)")
    p.add_argument("--spacing", type=float, nargs=2, default=None, metavar=("ROW", "COL"),
                   help="in-plane spacing in mm (default: keep)")
    p.add_argument("--only-kidney", action="store_true", help="keep only slices with kidney (plus --margin)")
    p.add_argument("--margin", type=int, default=5, help="slices kept on each side of the kidney")


def run(args: argparse.Namespace) -> int:
    return {"check": _check, "split": _split, "synth": _synth, "slice": _slice}[args.data_command](args)


def _check(args: argparse.Namespace) -> int:
    from kidneyseg.data.adapters import load_dataset
    from kidneyseg.data.fingerprint import Fingerprint, check_dataset, format_report
    from kidneyseg.preprocessing.plan import Plan, save_plan

    ds = load_dataset(args.dir, args.format, **_options(args))
    report = check_dataset(ds, progress=not args.json)
    dims = args.spatial_dims or report["spatial_dims"]
    plans: dict[str, dict[str, Any]] = {}
    fingerprint = Fingerprint.from_json(report)
    if report["spacings"]:
        # the one derivation `kidneyseg train` uses too (Plan.from_fingerprint on the same fingerprint)
        for d in ((2, 3) if report["spatial_dims"] == 3 else (2,)):
            plans[f"{d}d"] = Plan.from_fingerprint(fingerprint, d, report["modality"]).to_json()
    if args.fingerprint:
        from kidneyseg.io import atomic_path

        fp = {k: v for k, v in report.items()}
        fp["plans"] = plans
        with atomic_path(args.fingerprint) as tmp:
            tmp.write_text(json.dumps(fp, indent=1) + "\n")
    if args.plan:
        save_plan(plans.get(f"{dims}d") or Plan.from_fingerprint(fingerprint, dims), args.plan)
    if args.json:
        json.dump(dict(report, plans=plans), sys.stdout, indent=1)
        print()
    else:
        print(format_report(report))
        if f"{dims}d" in plans:
            print(f"plan ({dims}D): " + json.dumps(plans[f"{dims}d"]))
    return 1 if (args.strict and report["problems"]) else 0


def _split(args: argparse.Namespace) -> int:
    from kidneyseg.data.adapters import load_dataset
    from kidneyseg.data.splits import make_splits, save_splits

    ds = load_dataset(args.dir, args.format, **_options(args))
    splits = make_splits(ds, args.folds, args.seed)
    save_splits(splits, args.output)
    for i, f in enumerate(splits):
        print(f"fold {i}: {len(f['train'])} train, {len(f['val'])} val cases")
    print(f"wrote {args.output} ({len(ds.patients)} patients, {len(ds.cases)} cases)")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from kidneyseg.data.phantoms import find_shapes_root, write_phantom_set
    from kidneyseg.errors import InputError

    size = args.size
    if size is not None:
        want = 2 if args.modality == "us" else 3
        if len(size) != want:
            raise InputError("--size", found=" ".join(map(str, size)),
                             expected=f"{want} numbers for {args.modality}",
                             fix="e.g. --size 160 160 96 (CT/MR) or --size 480 640 (US)")
    shapes = None if args.shapes == "none" else (Path(args.shapes) if args.shapes else find_shapes_root())
    files = write_phantom_set(args.out, args.modality, args.n, size=size, seed=args.seed, layout=args.layout,
                              shapes_root=shapes)
    print(f"wrote {len(files)} files under {args.out} ({args.n} {args.modality} phantom(s), shapes: "
          f"{'real masks from ' + str(shapes) if shapes else 'parametric'})")
    return 0


def _slice(args: argparse.Namespace) -> int:
    from kidneyseg.data.adapters import load_dataset
    from kidneyseg.labels import get_task
    from kidneyseg.preprocessing.intensity import KIDNEY_WINDOW_HU
    from kidneyseg.preprocessing.slices import extract_slices, slice_plan

    ds = load_dataset(args.dir, args.format, **_options(args))
    modality = ds.modality or "ct"
    window = tuple(args.window) if args.window else (KIDNEY_WINDOW_HU if modality == "ct" else None)
    plan = slice_plan(modality, window, tuple(args.spacing) if args.spacing else None,
                      {str(k): v for k, v in get_task(ds.task).labels.items()})
    out = extract_slices(ds, args.output, plan=plan, only_kidney=args.only_kidney, margin=args.margin)
    with (out / "index.csv").open() as fh:
        n = sum(1 for _ in fh) - 1
    print(f"wrote {n} slices to {out}")
    return 0
