"""Time and memory of scoring one full-size KiTS23 case with every metric.

The reference is the KiTS23 mask with 611 slices (512 x 512 x 611, 0.5 x 0.92 x 0.92 mm),
found by reading the headers in ``<shared data>/kits23_masks``.  The prediction is a perturbed
copy: shifted by one voxel along each axis, tumour eroded by one voxel, a 1-voxel dilation of
the kidney on one side.  :func:`kidneyseg.evaluation.evaluate_case_full` then scores the three
KiTS regions (Dice, Jaccard, precision, recall, accuracy, F1, ASSD, SDD, HD95, surface Dice,
counts) and the 4 x 4 label confusion matrix.

Prints the wall time of reading, of perturbing and of each scoring repeat, the peak resident
memory of the process (``resource.getrusage``) and the peak of numpy/Python allocations during
one scoring call (``tracemalloc``, measured in a separate, untimed call).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/evaluate.py [--repeat 2] [--slices 611]

The data is read from ``$KIDNEYSEG_SHARED_DATA`` or ``../shared/data``; nothing is written.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def find_case(folder: Path, slices: int) -> Path:
    """The first mask in ``folder`` whose shape has ``slices`` along some axis."""
    import nibabel as nib

    for path in sorted(folder.glob("*.nii.gz")):
        if slices in nib.load(str(path)).header.get_data_shape():
            return path
    raise SystemExit(f"no mask with {slices} slices in {folder}")


def perturb(ref: np.ndarray) -> np.ndarray:
    """A prediction made from ``ref``: shifted, tumour eroded, kidney dilated on one side."""
    from scipy import ndimage

    pred = np.roll(ref, (1, 1, -1), axis=(0, 1, 2))
    tumour = pred == 2
    box = ndimage.find_objects(tumour.astype(np.uint8))[0]
    pred[box][tumour[box] & ~ndimage.binary_erosion(tumour[box])] = 1
    kidney = pred > 0
    kbox = ndimage.find_objects(kidney.astype(np.uint8))[0]
    half = (kbox[2].stop - kbox[2].start) // 2
    grown = ndimage.maximum_filter(kidney[kbox][:, :, :half], size=3)
    region = pred[kbox]
    region[:, :, :half][grown & (region[:, :, :half] == 0)] = 1
    return pred


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=611, help="number of slices of the case to use")
    parser.add_argument("--repeat", type=int, default=2, help="timed scoring calls")
    args = parser.parse_args(argv)

    data = Path(os.environ.get("KIDNEYSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
    folder = data / "kits23_masks"
    if not folder.is_dir():
        print(f"real data folder {folder} is absent (set KIDNEYSEG_SHARED_DATA)", file=sys.stderr)
        return 1

    from kidneyseg.evaluation import aggregate, evaluate_case_full, markdown_table
    from kidneyseg.io import read

    path = find_case(folder, args.slices)
    t0 = time.perf_counter()
    ref_case = read(path, is_label=True)
    t_read = time.perf_counter() - t0
    ref = ref_case.label
    t0, c0 = time.perf_counter(), time.process_time()
    pred = perturb(ref)
    t_perturb, c_perturb = time.perf_counter() - t0, time.process_time() - c0
    print(f"case {path.name}: shape {ref.shape}, spacing {tuple(round(s, 4) for s in ref_case.spacing)} mm, "
          f"threads OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, cores {os.cpu_count()}")
    print(f"read {t_read:.2f} s, perturb {t_perturb:.2f} s wall ({c_perturb:.2f} s CPU)")

    times, cpu = [], []
    rows: list[dict] = []
    cm = None
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        rows, cm = evaluate_case_full(pred, ref, ref_case.spacing, "kits23", case=path.name)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    from kidneyseg.labels import get_task

    n_regions = len(get_task("kits23").regions)
    print(f"scoring ({n_regions} regions, all metrics, confusion matrix), wall: " + ", ".join(f"{t:.2f} s" for t in times)
          + f"; best {min(times):.2f} s; CPU time: " + ", ".join(f"{t:.2f} s" for t in cpu))

    tracemalloc.start()
    evaluate_case_full(pred, ref, ref_case.spacing, "kits23", case=path.name)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(f"peak allocations during one scoring call (tracemalloc): {peak / 2**20:.0f} MiB")
    print(f"peak resident memory of the process (getrusage, includes both label maps): {rss:.0f} MiB")
    print()
    print(markdown_table(aggregate(rows, cm, task="kits23")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
