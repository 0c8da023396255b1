"""`kidneyseg models`: the model registry with parameter counts and FLOPs, and the pipelines."""

from __future__ import annotations

import argparse

NAME = "models"
HELP = "list registered networks (parameters, FLOPs of one forward pass) and pipelines"
DESCRIPTION = (
    "List the networks kidneyseg can build with their parameter count and the FLOPs of one "
    "forward pass (batch 1, default input size, torch.utils.flop_counter), and the named pipelines. "
    "Give names to list only those; a wrong name lists the valid ones."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="registry names (default: all)")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count (faster)")
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
    import torch

    from kidneyseg.models.registry import count_parameters, create_model, forward_flops

    header = f"{'name':26s} {'dims':>4s} {'default input':>14s} {'multiple':>8s} {'params (M)':>10s}"
    header += "" if args.no_flops else f" {'GFLOPs':>9s}"
    print(header + "  description")
    for info in infos:
        torch.manual_seed(0)
        with torch.no_grad():
            module = create_model(info.name, **default_arch_kwargs(info.name)).eval()
        params = count_parameters(module) / 1e6
        size = "x".join(str(s) for s in info.default_input_size)
        line = f"{info.name:26s} {info.spatial_dims:>3d}D {size:>14s} {info.size_multiple:>8d} {params:>10.2f}"
        if not args.no_flops:
            line += f" {forward_flops(info.name, module) / 1e9:>9.1f}"
        print(line + "  " + info.description, flush=True)
    return 0
