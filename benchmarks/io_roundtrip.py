"""Round trips of the real KiTS23 masks through the writers and the geometry operations.

For every mask in ``<shared data>/kits23_masks`` (orientation IPL, 0.5-5 mm):

1. write as ``.nii.gz`` and as ``.nrrd`` and read back: voxels and affine identical?
2. ``reorient`` to RAS and ``undo``: identical voxels?
3. ``resample`` to 1.5 mm isotropic and ``undo`` (back to the original grid):
   Dice of kidney+masses {1, 2, 3} with the original, for ``label_mode``
   ``nearest`` and ``linear``.

Prints one row per case, then the lowest Dice per mode and the failures.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/io_roundtrip.py [--limit N] [--modes nearest linear]

The data is read from ``$KIDNEYSEG_SHARED_DATA`` or ``../shared/data``; nothing
derived from it is kept (temporary files are removed).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    inter = np.count_nonzero(a & b)
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if total == 0 else 2.0 * inter / total


def main(argv: list[str] | None = None) -> int:
    from kidneyseg import io
    from kidneyseg.preprocessing.geometry import reorient, resample, undo

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("KIDNEYSEG_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--limit", type=int, default=None, help="only the first N masks")
    parser.add_argument("--modes", nargs="+", default=["nearest", "linear"], choices=["nearest", "linear"])
    parser.add_argument("--spacing", type=float, default=1.5, help="isotropic target spacing (mm)")
    args = parser.parse_args(argv)

    folder = Path(args.data) / "kits23_masks"
    masks = sorted(folder.glob("*.nii.gz"))[: args.limit]
    if not masks:
        print(f"no masks in {folder}", file=sys.stderr)
        return 1
    head = f"{'case':<12} {'shape':<14} {'spacing (mm)':<20} {'orient':<6} {'nii':<4} {'nrrd':<4} {'reor':<4}"
    head += "".join(f" {'dice ' + m:>12}" for m in args.modes) + f" {'s':>6}"
    print(head)
    rows = []
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in masks:
            t0 = time.perf_counter()
            case = io.read(path, is_label=True)
            lab = case.label
            ok = {}
            for suffix in (".nii.gz", ".nrrd"):
                out = Path(tmp) / f"rt{suffix}"
                io.write(lab, out, case, is_label=True)
                back = io.read(out, is_label=True)
                ok[suffix] = bool(np.array_equal(back.label, lab) and np.array_equal(back.affine, case.affine))
                out.unlink()
            ras = reorient(case, "RAS")
            ok["reorient"] = bool(np.array_equal(undo(ras, ras.label), lab))
            fg = lab > 0
            dices = {}
            for mode in args.modes:
                res = resample(case, args.spacing, label_mode=mode)
                back = undo(res, res.label)
                dices[mode] = dice(back > 0, fg)
            dt = time.perf_counter() - t0
            rows.append((path.name, dices))
            if not all(ok.values()):
                failures.append((path.name, ok))
            sp = "x".join(f"{s:.3g}" for s in case.spacing)
            line = f"{path.name.split('.')[0]:<12} {'x'.join(map(str, case.shape)):<14} {sp:<20} {''.join(case.orientation):<6}"
            line += "".join(f" {'ok' if ok[k] else 'FAIL':<4}" for k in (".nii.gz", ".nrrd", "reorient"))
            line += "".join(f" {dices[m]:>12.4f}" for m in args.modes) + f" {dt:>6.1f}"
            print(line, flush=True)
    print()
    print(f"{len(rows)} masks; identical after .nii.gz/.nrrd/reorient round trips: {len(rows) - len(failures)}")
    for mode in args.modes:
        worst = min(rows, key=lambda r: r[1][mode])
        values = np.array([r[1][mode] for r in rows])
        print(
            f"resample {args.spacing} mm and back, label_mode={mode}: Dice kidney+masses "
            f"min {worst[1][mode]:.4f} ({worst[0]}), mean {values.mean():.4f}, cases < 0.97: {int((values < 0.97).sum())}"
        )
    for name, ok in failures:
        print(f"FAILED round trip: {name} {ok}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
