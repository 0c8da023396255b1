"""Cohort prediction throughput: cases per minute with 1 and 2 local Ray workers (``predict --engine ray``).

    python benchmarks/cohort.py [--n 12] [--size 128 128 64] [--workers 1 2] [--model NAME|DIR] [--keep DIR]

Generates ``--n`` CT phantoms (``kidneyseg data synth``, parametric shapes), predicts them with the
one-process engine (the reference) and then with ``--engine ray`` and each worker count (a fresh
local Ray each time, one thread per worker), and prints one table row per run: wall time of the whole
command (Ray start, workers loading the model, every case), cases per minute on that wall time, the
median seconds of one case inside a worker (from ``cohort_summary.csv``), and whether every label map
equals the one-process engine's voxel for voxel.  Each command runs in its own process, as a user
would run it.  Model: the embedded CT default unless ``--model``.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _kidneyseg(*args: str) -> float:
    """Run ``python -m kidneyseg -q ARGS``; returns its wall time (seconds); raises if it fails."""
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_DEDUP_LOGS="1")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kidneyseg", "-q", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"kidneyseg {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall


def _labels(out: Path) -> dict[str, np.ndarray]:
    import nibabel as nib

    return {p.name: np.asarray(nib.load(str(p)).dataobj) for p in sorted(out.glob("*.nii.gz"))}


def _median_case_seconds(out: Path) -> float:
    with open(out / "cohort_summary.csv", newline="") as f:
        return statistics.median(float(r["seconds"]) for r in csv.DictReader(f) if r["status"] == "ok")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=12, help="number of phantoms")
    parser.add_argument("--size", type=int, nargs=3, default=[128, 128, 64], metavar=("X", "Y", "Z"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts to time")
    parser.add_argument("--model", default=None, help="model folder or default name (default: the CT default)")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        phantoms = root / "phantoms"
        _kidneyseg("data", "synth", str(phantoms), "--modality", "ct", "--n", str(args.n), "--size",
                   *map(str, args.size), "--layout", "folder", "--shapes", "none", "--seed", "0")
        images = phantoms / "images"
        model = ["--model", args.model] if args.model else ["--modality", "ct"]
        rows = []
        wall = _kidneyseg("predict", str(images), "-o", str(root / "local"), *model, "--threads", "1")
        reference = _labels(root / "local")
        rows.append(("local (1 process)", "-", wall, args.n / wall * 60, None, "reference"))
        for w in args.workers:
            out = root / f"ray{w}"
            wall = _kidneyseg("predict", str(images), "-o", str(out), *model, "--threads", "1",
                              "--engine", "ray", "--workers", str(w))
            same = _labels(out)
            equal = sorted(same) == sorted(reference) and all(np.array_equal(same[k], reference[k]) for k in same)
            rows.append((f"ray, {w} worker{'s' if w > 1 else ''}", str(w), wall, args.n / wall * 60,
                         _median_case_seconds(out), "yes" if equal else "NO"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.n} CT phantoms {'x'.join(map(str, args.size))}, model {args.model or 'CT default'}, "
          f"1 thread per worker, {os.cpu_count()} CPUs, load average {load:.1f}")
    print("| engine | workers | wall s | cases/min | s/case (median, in worker) | labels equal to local |")
    print("|---|---|---|---|---|---|")
    for name, w, wall, rate, per_case, eq in rows:
        shown = "-" if per_case is None else f"{per_case:.2f}"
        print(f"| {name} | {w} | {wall:.1f} | {rate:.1f} | {shown} | {eq} |")
    return 0 if all(r[-1] != "NO" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
