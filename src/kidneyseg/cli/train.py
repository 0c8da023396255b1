"""`kidneyseg train`: train a named pipeline stage by stage into a model folder."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kidneyseg.training.distributed import DistContext

NAME = "train"
HELP = "train a pipeline (ct2d-unet-resnet, ct3d-cascade, ...) into a model folder"
DESCRIPTION = (
    "Train every stage of a named pipeline on a data set and write one model folder "
    "(model.json + one sub-folder per stage with weights.pt, log.csv, curves.png). "
    "Options of --recipe NAME (e.g. paper: the pipeline as its publication describes it), then of "
    "--config FILE.json (keys of kidneyseg.training.config.TrainConfig), are "
    "overridden by the flags given here. Interrupted runs continue with --resume. "
    "Started by torchrun (torchrun --nproc-per-node N -m kidneyseg train ...), the N processes train one "
    "model with DistributedDataParallel (gloo on CPU, nccl on GPUs); --batch-size is then the global batch "
    "and only rank 0 writes the output folder."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline", required=True, help="pipeline name (kidneyseg models lists them)")
    parser.add_argument("--data", required=True, action="append",
                        help="data set folder; repeat with --format for several data sets trained and "
                             "cross-validated together (split by patient); sets with different label sets "
                             "need the model's classes in --config (partial labels)")
    parser.add_argument("--format", required=True, dest="fmt", action="append",
                        help="data set layout (kits19, kits23, chaos-mr, slices, ...), once per --data")
    parser.add_argument("-o", "--output", required=True, help="model folder to write")
    parser.add_argument("--config", help="JSON file with training options")
    parser.add_argument("--recipe", metavar="NAME", help=_recipe_help())
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--lr-schedule", choices=["poly", "constant"],
                        help="learning-rate schedule (default poly: lr * (1 - epoch/epochs)^0.9)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--fold", type=int, help="validation fold (-1: train on all cases, no validation)")
    parser.add_argument("--folds", type=int, help="number of case-level folds (default 5)")
    parser.add_argument("--val-every", type=int, help="validate every N epochs")
    parser.add_argument("--threads", type=int, help="torch threads")
    parser.add_argument("--loss", help="loss name: dice-ce, bce-dice, weighted-ce-dice, dice")
    parser.add_argument("--init", choices=["default", "kaiming"])
    parser.add_argument("--augmentation", choices=["none", "light", "default", "rot90-elastic"])
    parser.add_argument("--patch-size", type=int, nargs="+", help="patch size for every stage (voxels)")
    parser.add_argument("--plan", metavar="FILE",
                        help="preprocessing plan to train with (what `kidneyseg data check --plan FILE` writes, "
                             "edited if you like) instead of the one derived from the data set")
    parser.add_argument("--max-cases", type=int, help="use at most N labelled cases")
    parser.add_argument("--ensemble-training", choices=["members-then-fusion", "end-to-end"])
    parser.add_argument("--encoder-weights", action="append", metavar="PATH",
                        help="local torchvision/timm state dict of the encoder; once per ensemble member "
                             "('none' to skip one); nothing is ever downloaded")
    parser.add_argument("--extra-train", nargs=2, action="append", metavar=("DATA", "FORMAT"),
                        help="another data set (e.g. phantoms) added to the training cases of every fold and never "
                             "validated on; repeat for more")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in the same -o folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _recipe_help() -> str:
    from kidneyseg.training.recipes import RECIPES

    names = "; ".join(f"{n} ({', '.join(sorted(by_pipe))})" for n, by_pipe in RECIPES.items())
    return ("training options of a named recipe, under --config and the flags given here (they win): "
            f"{names}. 'paper' follows each pipeline's publication (docs/CONTRACTS.md, 'Paper recipes')")


def run(args: argparse.Namespace) -> int:
    from kidneyseg.training.distributed import from_environment, shutdown

    dist = from_environment()  # the torchrun group, or this process alone
    if not dist.is_main:  # rank 0 logs; the others report only warnings and errors
        logging.getLogger().setLevel(logging.WARNING)
    try:
        return _train(args, dist)
    finally:
        shutdown(dist)


def _train(args: argparse.Namespace, dist: DistContext) -> int:
    from kidneyseg.errors import InputError
    from kidneyseg.preprocessing.plan import load_plan
    from kidneyseg.training.recipes import recipe_config
    from kidneyseg.training.run import train_pipeline

    if len(args.data) != len(args.fmt):
        raise InputError("--data and --format must come in pairs", found=f"{len(args.data)} --data, "
                         f"{len(args.fmt)} --format", expected="one --format per --data",
                         fix="repeat --data DIR --format F for each data set")
    more = [{"data": d, "format": f, "split": True} for d, f in zip(args.data[1:], args.fmt[1:])]
    weights = None
    if args.encoder_weights:
        weights = [None if w.lower() == "none" else w for w in args.encoder_weights]
        from kidneyseg.models.encoders import _check_path

        for w in weights:
            if w is not None:
                _check_path(w)
    cfg = recipe_config(
        args.recipe, args.pipeline, args.config,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_schedule=args.lr_schedule, seed=args.seed, fold=args.fold, folds=args.folds,
        val_every=args.val_every, threads=args.threads, loss=args.loss, init=args.init, augmentation=args.augmentation,
        patch_size=args.patch_size, max_cases=args.max_cases, ensemble_training=args.ensemble_training,
        encoder_weights=weights,
        plan=load_plan(args.plan).to_json() if args.plan else None,
        progress=False if args.no_progress or getattr(args, "quiet", False) else None,
    )
    if more or args.extra_train:
        from dataclasses import replace

        cfg = replace(cfg, extra_train=[*cfg.extra_train, *more,
                                        *[{"data": d, "format": f} for d, f in args.extra_train or []]]).check()
    if cfg.loss is not None:
        from kidneyseg.errors import unknown_name
        from kidneyseg.training.losses import loss_names

        if cfg.loss not in loss_names():
            raise unknown_name("loss", cfg.loss, loss_names())
    out = train_pipeline(args.pipeline, args.data[0], args.fmt[0], args.output, cfg, resume=args.resume, dist=dist)
    if dist.is_main:
        print(out)
    return 0
