"""Whole `kidneyseg predict` processes as a user runs them: wall time and peak RSS, median of N runs.

    python benchmarks/cli_speed.py [--runs 3] [--threads 2] [--data ../shared/data] [--us-batch 100]
                                   [--only ct mr us us-batch malformed help] [--json OUT]

Each row is a fresh child process (``kidneyseg ...``, model loading, reading and writing included), timed from
the outside; peak RSS is that of the child (``getrusage(RUSAGE_CHILDREN)`` of a fresh wrapper process).

* ``ct``: the CT default on the generated 512 x 512 x 200 CT of ``benchmarks/predict.py`` (``make_ct``, NIfTI
  int16, 0.8 x 0.8 x 2.5 mm), QC on (the default);
* ``mr``: the MR default on the CHAOS T2 volume ``chaos_t2/case_01_image.nii.gz`` (skipped if absent);
* ``us``: the US default on one generated 480 x 640 ultrasound PNG, with ``--spacing 0.3 0.3``;
* ``us-batch``: the US default on a folder of ``--us-batch`` generated PNGs in one process (model loaded
  once), ``--spacing 0.3 0.3``; the table gives ms per image (total wall / images);
* ``malformed``: ``predict`` on a truncated ``.nii.gz`` (the refusal, exit code 2);
* ``help``: ``kidneyseg --help``.

Each row first runs once untimed (``--no-warmup`` times it too): a first run with the default models builds
their ONNX exports into the user cache (``--runtime auto``, docs/prediction.md), once per machine; set
``KIDNEYSEG_CACHE`` to a fresh folder with ``--no-warmup`` to see that cost. The table also gives the runs
one by one and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
ROWS = ("ct", "mr", "us", "us-batch", "malformed", "help")


def _kidneyseg() -> list[str]:
    exe = Path(sys.executable).with_name("kidneyseg")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "kidneyseg.cli"]


def _measure(cmd: list[str], expect_rc: int = 0) -> dict[str, Any]:
    wrapper = [sys.executable, str(Path(__file__).resolve()), "--_measure", json.dumps([expect_rc, *cmd])]
    proc = subprocess.run(wrapper, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def _measure_child(spec: list[Any]) -> int:
    expect_rc, cmd = int(spec[0]), [str(c) for c in spec[1:]]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    if proc.returncode != expect_rc:
        print(f"exit code {proc.returncode}, expected {expect_rc}", proc.stdout[-2000:], proc.stderr[-3000:],
              file=sys.stderr)
        return 1
    print(json.dumps({"wall_s": wall, "peak_rss_gb": rss / 1024**2, "stderr_tail": proc.stderr[-300:]}))
    return 0


def _inputs(root: Path, data: Path, n_us: int) -> dict[str, Path | None]:
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT / "src"))
    from PIL import Image

    from kidneyseg.data.phantoms import find_shapes_root, generate
    from predict import write_ct

    ct, _ = write_ct(200, root / "ct")

    us_dir = root / "us"
    us_dir.mkdir()
    shapes = find_shapes_root()
    for i in range(max(1, n_us)):
        ph = generate("us", i, size=(480, 640), seed=7, shapes_root=shapes)
        Image.fromarray(np.clip(ph.image, 0, 255).astype(np.uint8)).save(us_dir / f"us_{i:03d}.png")
    one = root / "us_one"
    one.mkdir()
    shutil.copy(us_dir / "us_000.png", one / "us_000.png")
    bad = root / "bad" / "truncated.nii.gz"
    bad.parent.mkdir()
    bad.write_bytes(ct.read_bytes()[:400_000])  # a .nii.gz cut short: its gzip stream ends early
    mr = data / "chaos_t2" / "case_01_image.nii.gz"
    return {"ct": ct, "mr": mr if mr.is_file() else None, "us": one / "us_000.png", "us-batch": us_dir, "bad": bad}


def _commands(inp: dict[str, Path | None], out: Path, threads: int) -> dict[str, tuple[list[str], int] | None]:
    k = _kidneyseg()
    t = ["--threads", str(threads)]
    sp = ["--spacing", "0.3", "0.3"]
    return {
        "ct": (k + ["predict", str(inp["ct"]), "-o", str(out / "ct"), *t], 0),
        "mr": None if inp["mr"] is None else (k + ["predict", str(inp["mr"]), "-o", str(out / "mr"), "--modality", "mr",
                                                   *t], 0),
        "us": (k + ["predict", str(inp["us"]), "-o", str(out / "us"), "--modality", "us", *sp, *t], 0),
        "us-batch": (k + ["predict", str(inp["us-batch"]), "-o", str(out / "usb"), "--modality", "us", *sp, *t], 0),
        "malformed": (k + ["predict", str(inp["bad"]), "-o", str(out / "bad"), *t], 2),
        "help": (k + ["--help"], 0),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--us-batch", type=int, default=100, help="images in the ultrasound batch (default 100)")
    ap.add_argument("--only", nargs="+", choices=ROWS, default=list(ROWS))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="time the first run too (by default each row runs once untimed first)")
    ap.add_argument("--_measure", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._measure:
        return _measure_child(json.loads(args._measure))

    with tempfile.TemporaryDirectory(prefix="kidneyseg_cli_speed_") as tmp:
        root = Path(tmp)
        inp = _inputs(root / "in", args.data, args.us_batch if "us-batch" in args.only else 1)
        cmds = _commands(inp, root / "out", args.threads)
        runs: dict[str, list[dict[str, Any]]] = {r: [] for r in args.only if cmds.get(r) is not None}
        skipped = [r for r in args.only if cmds.get(r) is None]
        for row in runs if args.warmup else []:  # untimed: builds the ONNX exports into the cache, fills page caches
            cmd, rc = cmds[row]  # type: ignore[misc]
            shutil.rmtree(root / "out", ignore_errors=True)
            _measure(cmd, rc)
        loads = [os.getloadavg()]
        for i in range(args.runs):  # interleaved, so that a change of load hits every row alike
            for row in runs:
                cmd, rc = cmds[row]  # type: ignore[misc]
                shutil.rmtree(root / "out", ignore_errors=True)
                r = _measure(cmd, rc)
                runs[row].append(r)
                print(f"run {i + 1}/{args.runs} {row}: {r['wall_s']:.2f} s, {r['peak_rss_gb']:.2f} GB",
                      file=sys.stderr)
        loads.append(os.getloadavg())

    def fmt_load(x: tuple[float, float, float]) -> str:
        return " / ".join(f"{v:.2f}" for v in x)

    print(f"\nwhole processes, {args.threads} threads, median of {args.runs}; load average (1/5/15 min) before "
          f"{fmt_load(loads[0])}, after {fmt_load(loads[-1])}")
    print(f"{'row':<10} {'wall s':>8} {'peak RSS GB':>12} {'per image ms':>13}  runs (s)")
    for row, rr in runs.items():
        wall = statistics.median(r["wall_s"] for r in rr)
        rss = statistics.median(r["peak_rss_gb"] for r in rr)
        per = f"{1000 * wall / args.us_batch:.0f}" if row == "us-batch" else ("-" if row not in ("us",) else
                                                                               f"{1000 * wall:.0f}")
        each = ", ".join(f"{r['wall_s']:.2f}" for r in rr)
        print(f"{row:<10} {wall:>8.2f} {rss:>12.2f} {per:>13}  {each}")
    for row in skipped:
        print(f"{row:<10} skipped: {args.data / 'chaos_t2' / 'case_01_image.nii.gz'} not found")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "load": loads, "threads": args.threads}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
