"""Training throughput of every pipeline at its default input size, on CPU.

For each stage of each pipeline: build the network with the pipeline's arguments,
then time ``--iterations`` optimiser steps (forward, loss, backward, Adam) on random
inputs of the stage's default patch size with ``--batch-size`` samples, after one
warm-up step.  Prints samples/s and the seconds an epoch of ``--epoch-samples``
samples would take.  Data loading and augmentation are not included.

    OMP_NUM_THREADS=2 python benchmarks/train.py --threads 2
    python benchmarks/train.py --pipelines ct2d-unet-resnet unet3d --iterations 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def stage_input_size(stage) -> list[int]:  # type: ignore[no-untyped-def]
    from kidneyseg.models.registry import model_info

    return list(stage.plan.patch_size or model_info(stage.arch).default_input_size)


def bench_stage(pipe_name: str, stage, batch: int, iterations: int) -> dict:  # type: ignore[no-untyped-def]
    from kidneyseg.models.detection import detection_target
    from kidneyseg.models.registry import create_model
    from kidneyseg.training.losses import create_loss

    torch.manual_seed(0)
    classes = 2 if stage.role == "detector" else 3
    module = create_model(stage.arch, in_channels=stage.in_channels, out_channels=classes, **stage.arch_kwargs).train()
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    size = stage_input_size(stage)
    x = torch.rand(batch, stage.in_channels, *size)
    if stage.role == "detector":
        h, w = size
        boxes = np.array([[w * 0.2, h * 0.3, w * 0.4, h * 0.6], [w * 0.6, h * 0.3, w * 0.8, h * 0.6]], np.float32)
        targets = [detection_target(boxes) for _ in range(batch)]

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            sum(module(list(x), targets).values()).backward()
            opt.step()
    else:
        loss = create_loss(stage.loss if stage.loss != "weighted-ce-dice" else "dice-ce")
        y = torch.randint(0, classes, (batch, 1, *size))

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            if hasattr(module, "member_logits"):  # ensembles: members trained with their own losses
                out = torch.stack([loss(z, y) for z in module.member_logits(x)]).sum()
            else:
                out = loss(module(x), y)
            out.backward()
            opt.step()

    step()  # warm-up
    t = time.perf_counter()
    for _ in range(iterations):
        step()
    dt = (time.perf_counter() - t) / iterations
    return {"pipeline": pipe_name, "stage": stage.name, "arch": stage.arch, "size": "x".join(map(str, size)),
            "s_per_step": dt, "samples_per_s": batch / dt}


def main() -> None:
    from kidneyseg.models.pipelines import PIPELINES, get_pipeline

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipelines", nargs="*", default=list(PIPELINES))
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--epoch-samples", type=int, default=100, help="samples per epoch for the s/epoch column")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# CPU training throughput, torch {torch.__version__}, {args.threads} threads, batch {args.batch_size}, "
          f"{args.iterations} timed steps after 1 warm-up, epoch = {args.epoch_samples} samples")
    print(f"| {'pipeline':20s} | {'stage':9s} | {'arch':23s} | {'input':11s} | {'s/step':>7s} | {'samples/s':>9s} | {'s/epoch':>8s} |")
    print(f"|{'-' * 22}|{'-' * 11}|{'-' * 25}|{'-' * 13}|{'-' * 9}|{'-' * 11}|{'-' * 10}|")
    for name in args.pipelines:
        for stage in get_pipeline(name).stages:
            r = bench_stage(name, stage, args.batch_size, args.iterations)
            print(f"| {r['pipeline']:20s} | {r['stage']:9s} | {r['arch']:23s} | {r['size']:11s} | {r['s_per_step']:7.2f} | "
                  f"{r['samples_per_s']:9.2f} | {args.epoch_samples / r['samples_per_s']:8.0f} |", flush=True)


if __name__ == "__main__":
    main()
