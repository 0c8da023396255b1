"""Run the benchmarks one after another and print each one's table.

    python benchmarks/run_all.py            # speed benchmarks (minutes on 2 cores)
    python benchmarks/run_all.py --all      # also the 98-mask I/O sweep and cross-validation (hours)

Each benchmark is also a command of its own (see its docstring); this script only
sequences them and stops nothing when one fails: it reports which failed at the end.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

QUICK = [
    ["phantoms.py"],
    ["evaluate.py"],
    ["predict.py", "--threads", "2"],
    ["cli_speed.py", "--threads", "2"],
    ["train.py", "--threads", "2", "--iterations", "1"],
]
LONG = [
    ["io_roundtrip.py"],
    ["runtime_parity.py", "--threads", "2"],
    ["peers.py", "--threads", "2"],  # needs the `peers` extra (nnunetv2); says so and fails without it
    ["accuracy.py", "--threads", "2"],
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="also run the long benchmarks")
    args = parser.parse_args()
    failed = []
    for cmd in QUICK + (LONG if args.all else []):
        print(f"\n=== benchmarks/{' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(HERE / cmd[0]), *cmd[1:]])
        print(f"=== {cmd[0]}: exit {rc}, {time.perf_counter() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(cmd[0])
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
