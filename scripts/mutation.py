"""Mutation check (``make mutation``): mutmut on the modules whose behaviour the tests name.

The modules and the tests that judge them are in ``[tool.mutmut]`` of ``pyproject.toml``
(metrics, geometry, post-processing, ensembling, the losses).  This script runs
``mutmut run`` (unless ``--report-only``), then prints one row per module (killed,
survived, timeouts, mutants no test reaches, kill rate) and writes every survivor with
its diff to ``--survivors`` (default ``mutants/survivors.md``), for triage into
``docs/mutation.md``: each survivor is either killed by a better test or listed there
with the reason it cannot or need not be killed.

Usage::

    python scripts/mutation.py                 # run (about 20-40 min on 2 cores), then report
    python scripts/mutation.py --report-only   # report the last run
    python scripts/mutation.py --only 'kidneyseg.evaluation.overlap*'   # one module
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = [sys.executable, "-m", "mutmut"]
#: mutmut's result words -> the columns of the table
STATUS_COLUMNS = {"killed": "killed", "survived": "survived", "timeout": "timeout", "suspicious": "suspicious",
                  "no tests": "no tests", "not checked": "not run", "skipped": "skipped",
                  "segfault": "killed", "caught by type check": "killed"}
_LINE = re.compile(r"^\s*(?P<name>[\w.]+)__mutmut_(?P<n>\d+): (?P<status>.+?)\s*$")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = "src" + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run(only: list[str], max_children: int) -> int:
    """``mutmut run`` in the repository root; returns its exit status."""
    cmd = [*MUTMUT, "run", "--max-children", str(max_children), *only]
    print("$", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, env=_env())


def results() -> list[tuple[str, str]]:
    """(mutant name, status) of every mutant of the last run."""
    out = subprocess.run([*MUTMUT, "results", "--all", "true"], cwd=ROOT, env=_env(), capture_output=True,
                         text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = _LINE.match(line)
        if m:
            rows.append((f"{m['name']}__mutmut_{m['n']}", m["status"]))
    return rows


def module_of(mutant: str) -> str:
    """``kidneyseg.evaluation.overlap.x_dice__mutmut_3`` -> ``kidneyseg.evaluation.overlap``."""
    head = mutant.split("__mutmut_")[0]
    return ".".join(p for p in head.split(".") if not p.startswith(("x_", "xǁ")))


def table(rows: list[tuple[str, str]]) -> str:
    """Markdown table: one row per module, then the total; kill rate = killed / (killed + survived + timeout)."""
    by_mod: dict[str, Counter[str]] = defaultdict(Counter)
    for name, status in rows:
        by_mod[module_of(name)][STATUS_COLUMNS.get(status, status)] += 1
    cols = ["killed", "survived", "timeout", "no tests", "not run"]
    lines = ["| module | mutants | " + " | ".join(cols) + " | kill rate |", "|---" * (len(cols) + 3) + "|"]
    total: Counter[str] = Counter()
    for mod in sorted(by_mod):
        total.update(by_mod[mod])
        lines.append(_row(mod, by_mod[mod], cols))
    lines.append(_row("**all**", total, cols))
    return "\n".join(lines)


def _row(label: str, c: Counter[str], cols: list[str]) -> str:
    judged = c["killed"] + c["survived"] + c["timeout"]
    rate = f"{100.0 * c['killed'] / judged:.1f} %" if judged else "-"
    return f"| {label} | {sum(c.values())} | " + " | ".join(str(c[k]) for k in cols) + f" | {rate} |"


def write_survivors(rows: list[tuple[str, str]], path: Path) -> int:
    """Every survivor with its diff (``mutmut show``), grouped by module; returns their number."""
    survivors = [n for n, s in rows if s in ("survived", "no tests", "timeout")]
    parts = [f"# Surviving mutants ({len(survivors)})\n"]
    for name in sorted(survivors, key=lambda n: (module_of(n), n)):
        diff = subprocess.run([*MUTMUT, "show", name], cwd=ROOT, env=_env(), capture_output=True, text=True).stdout
        changed = [ln for ln in diff.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
        status = dict(rows)[name]
        parts.append(f"## {name} ({status})\n\n```diff\n" + "\n".join(changed) + "\n```\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return len(survivors)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--report-only", action="store_true", help="do not run; report the last run in mutants/")
    ap.add_argument("--only", nargs="*", default=[], help="mutant name globs (default: every configured module)")
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--survivors", type=Path, default=ROOT / "mutants" / "survivors.md")
    args = ap.parse_args(argv)
    if not args.report_only:
        run(args.only, args.max_children)
    rows = results()
    if not rows:
        print("no mutmut results: run without --report-only first", file=sys.stderr)
        return 2
    print(table(rows))
    n = write_survivors(rows, args.survivors)
    print(f"\n{n} survivor(s) with their diffs: {args.survivors}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
