"""`kidneyseg models`: the model registry with parameter counts, FLOPs and (``--time``) measured forward time,
and the pipelines."""

from __future__ import annotations

import argparse
from typing import Any

NAME = "models"
HELP = "list registered networks (parameters, FLOPs of one forward pass, --time: ms per forward) and pipelines"
DESCRIPTION = (
    "List the networks kidneyseg can build with their parameter count and the FLOPs of one "
    "forward pass (batch 1, default input size, torch.utils.flop_counter), and the named pipelines. "
    "With --time, also the measured milliseconds of one forward pass on this machine (CPU, batch 1, random "
    "weights: the median of --repeats passes after one warm-up pass; --threads sets torch's threads). "
    "Give names to list only those; a wrong name lists the valid ones."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="registry names (default: all)")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count (faster)")
    parser.add_argument("--time", action="store_true",
                        help="also measure the milliseconds of one forward pass (CPU, batch 1; median of --repeats "
                             "after a warm-up pass); off by default: large networks take seconds each")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="with --time: torch CPU threads (default: torch's own choice)")
    parser.add_argument("--repeats", type=int, default=5, metavar="N",
                        help="with --time: timed forward passes, the median is shown (default 5)")
    parser.add_argument("--input-size", type=int, nargs="+", default=None, metavar="N",
                        help="spatial input size for the FLOPs and --time, e.g. 512 512 (a whole CT slice); used "
                             "for the networks with that many dimensions, the others keep their default size")
    parser.add_argument("--pipelines", action="store_true", help="list the pipelines and their stages instead")
    parser.add_argument("--export-onnx", metavar="MODEL_DIR", default=None,
                        help="write <stage>/model.onnx for every segmentation stage of a model folder (an embedded "
                             "default's name works too: ct, mr, us), so that prediction runs on ONNX Runtime "
                             "without exporting into the user cache first (read-only installs, clusters)")


def default_arch_kwargs(name: str) -> dict:
    """Constructor arguments used for counting: ensembles get the members of their pipeline."""
    from kidneyseg.models.pipelines import PIPELINES

    for pipe in PIPELINES.values():
        for st in pipe.stages:
            if st.arch == name and name.startswith("ensemble-"):
                return dict(st.arch_kwargs)
    return {}


def run(args: argparse.Namespace) -> int:
    if args.export_onnx:
        from kidneyseg.inference import resolve_model
        from kidneyseg.models.onnx import export_model_folder

        folder = resolve_model(args.export_onnx, None)
        for path in export_model_folder(folder):
            print(f"wrote {path}")
        return 0
    from kidneyseg.models.pipelines import PIPELINES, get_pipeline
    from kidneyseg.models.registry import model_info, model_names

    if args.pipelines:
        names = args.names or list(PIPELINES)
        for n in names:
            p = get_pipeline(n)
            print(f"{p.name:22s} {p.inference:15s} {p.description}")
            for s in p.stages:
                opt = " (optional)" if s.optional else ""
                print(f"    {s.name:10s} {s.arch:24s} {s.spatial_dims}D target={s.target} loss={s.loss}{opt}")
        return 0
    names = args.names or model_names()
    infos = [model_info(n) for n in names]  # raises, listing valid names, before any heavy import
    _check_timing_options(args)
    import torch

    threads_before = torch.get_num_threads()
    if args.time and args.threads is not None:
        torch.set_num_threads(int(args.threads))
    try:
        _print_table(args, infos, torch)
    finally:
        torch.set_num_threads(threads_before)
    return 0


def _print_table(args: argparse.Namespace, infos: list[Any], torch: Any) -> None:
    from kidneyseg.models.registry import count_parameters, create_model, forward_flops, forward_ms

    size_arg = tuple(int(v) for v in args.input_size) if args.input_size else None
    header = f"{'name':26s} {'dims':>4s} {'input':>14s} {'multiple':>8s} {'params (M)':>10s}"
    header += "" if args.no_flops else f" {'GFLOPs':>9s}"
    header += f" {'ms/forward':>10s}" if args.time else ""
    print(header + "  description")
    for info in infos:
        torch.manual_seed(0)
        with torch.no_grad():
            module = create_model(info.name, **default_arch_kwargs(info.name)).eval()
        params = count_parameters(module) / 1e6
        shape = size_arg if size_arg is not None and len(size_arg) == info.spatial_dims else info.default_input_size
        size = "x".join(str(s) for s in shape)
        line = f"{info.name:26s} {info.spatial_dims:>3d}D {size:>14s} {info.size_multiple:>8d} {params:>10.2f}"
        if not args.no_flops:
            line += f" {forward_flops(info.name, module, input_size=tuple(shape)) / 1e9:>9.1f}"
        if args.time:
            line += f" {forward_ms(info.name, module, input_size=tuple(shape), repeats=args.repeats):>10.1f}"
        print(line + "  " + info.description, flush=True)
    if args.time:
        print(f"ms/forward: median of {args.repeats} forward passes after 1 warm-up, batch 1, CPU, "
              f"{torch.get_num_threads()} torch thread(s); measured now on this machine", flush=True)


def _check_timing_options(args: argparse.Namespace) -> None:
    from kidneyseg.errors import InputError

    if (args.threads is not None or args.repeats != 5) and not args.time:
        raise InputError("--threads and --repeats are options of --time", found="no --time",
                         fix="add --time, or drop --threads/--repeats")
    if args.threads is not None and args.threads < 1:
        raise InputError("threads must be at least 1", found=args.threads, fix="pass --threads 1 or more")
    if args.repeats < 1:
        raise InputError("--repeats must be at least 1", found=args.repeats, fix="pass --repeats 5")
    if args.input_size is not None and (len(args.input_size) not in (2, 3) or min(args.input_size) < 1):
        raise InputError("--input-size takes 2 (H W) or 3 (X Y Z) positive sizes", found=args.input_size,
                         fix="e.g. --input-size 512 512")
