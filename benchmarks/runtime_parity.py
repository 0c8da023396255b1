"""ONNX Runtime against torch: the shipped default models' Dice on the real data in ../shared, per runtime.

    python benchmarks/runtime_parity.py [--modality ct mr us] [--data ../shared/data] [--threads 2] [--json OUT]

``kidneyseg predict`` runs the default models on ONNX Runtime (``--runtime auto``); this benchmark checks that
the runtime does not change accuracy.  Each embedded default model predicts every case twice, through
:class:`kidneyseg.inference.Predictor` (plan, network, undo to the input grid, post-processing, as
``kidneyseg predict``), once with ``runtime="torch"`` and once with ``runtime="onnx"``, and each label map is
scored against the reference with the regions of ``benchmarks/accuracy.py``:

* CT: the 71 KiTS19 and 85 CURVAS slices and the unenhanced TotalSegmentator example (the shipped model
  was trained on these slices: the Dice values are *in-sample* and not the model's accuracy, which
  ``benchmarks/accuracy.py`` measures by cross-validation; only the difference between runtimes counts);
* MR: the 15 CHAOS T2 volumes (in-sample likewise);
* US: 8 generated phantoms (``accuracy.evaluate_us``'s seed, not used in training).

Prints per modality and region the mean Dice with each runtime, their difference, the largest per-case
difference and the share of voxels where the two label maps differ.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

RUNTIMES = ("torch", "onnx")


def _cases(modality: str, data: Path) -> list[tuple[str, Any, dict[str, tuple[tuple[int, ...], tuple[int, ...]]]]]:
    """(name, Case with label, regions: name -> (predicted values, reference values)) per case."""
    from accuracy import REGIONS, SET_REGIONS
    from kidneyseg.case import Case
    from kidneyseg.data.adapters import load_dataset
    from kidneyseg.data.phantoms import find_shapes_root, generate

    out: list[tuple[str, Any, dict[str, tuple[tuple[int, ...], tuple[int, ...]]]]] = []
    if modality == "ct":
        sets = [("kits19_slices", {}), ("kits19_slices_more", {}),
                ("curvas_slices", {"task": "curvas-ct", "spacing_mm": 0.8})]
        for folder, opts in sets:
            if not (data / folder).is_dir():
                raise SystemExit(f"{data / folder}: not found; pass --data with the shared data folder")
            ds = load_dataset(data / folder, "slices", **opts)
            for c in ds.cases:
                out.append((f"{folder}/{c.name}", c.load(), SET_REGIONS[ds.task]))
    elif modality == "mr":
        ds = load_dataset(data / "chaos_t2", "chaos-mr")
        regions = {g: (v, v) for g, v in REGIONS["mr"].items()}
        out += [(c.name, c.load(), regions) for c in ds.cases]
    else:
        from kidneyseg.default_models import default_model_dir

        spec = json.loads((default_model_dir("us") / "model.json").read_text())
        size = tuple(spec["training"]["config"].get("patch_size") or [128, 128])
        for i in range(8):
            ph = generate("us", i, size=size, seed=1000, shapes_root=find_shapes_root())
            case = Case(image=ph.image, affine=np.eye(4), name=ph.name, modality="us",
                        label=(ph.label > 0).astype(np.uint8))
            out.append((ph.name, case, {"kidney": ((1,), (1,))}))
    return out


def run_modality(modality: str, data: Path, threads: int) -> dict[str, Any]:
    from accuracy import _region_scores
    from kidneyseg.default_models import default_model_dir
    from kidneyseg.inference import Predictor

    model = default_model_dir(modality)
    cases = _cases(modality, data)
    preds = {rt: Predictor(model, threads=threads, runtime=rt) for rt in RUNTIMES}
    rows: list[dict[str, Any]] = []
    seconds = dict.fromkeys(RUNTIMES, 0.0)
    for name, case, regions in cases:
        labels = {}
        for rt in RUNTIMES:
            t = time.perf_counter()
            labels[rt] = np.asarray(preds[rt].predict_case(case).label)
            seconds[rt] += time.perf_counter() - t
        differ = float(np.mean(labels["torch"] != labels["onnx"]))
        for region, (values, ref_values) in regions.items():
            row: dict[str, Any] = {"case": name, "region": region, "voxels_differ": differ}
            for rt in RUNTIMES:
                s = _region_scores(labels[rt], np.asarray(case.label), tuple(case.spacing), values, ref_values)
                row[f"dice_{rt}"] = s["dice"]
            rows.append(row)
    if modality == "ct" and (data / "totalseg_example").is_dir():
        from accuracy import evaluate_totalseg_example

        # evaluate_totalseg_example builds its own Predictor, whose runtime comes from $KIDNEYSEG_RUNTIME
        old = os.environ.get("KIDNEYSEG_RUNTIME")
        row = {"case": "totalseg_example", "region": "unenhanced example, both kidneys", "voxels_differ": float("nan")}
        try:
            for rt in RUNTIMES:
                os.environ["KIDNEYSEG_RUNTIME"] = rt
                row[f"dice_{rt}"] = evaluate_totalseg_example(model, data, threads)["dice_both"]
        finally:
            os.environ.pop("KIDNEYSEG_RUNTIME", None)
            if old is not None:
                os.environ["KIDNEYSEG_RUNTIME"] = old
        rows.append(row)
    return {"rows": rows, "seconds": seconds, "cases": len(cases)}


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| modality | region | cases | Dice torch | Dice ONNX | ONNX - torch | largest per-case |d| | "
             "voxels differing |", "|---|---|---|---|---|---|---|---|"]
    for modality, res in results.items():
        regions = list(dict.fromkeys(r["region"] for r in res["rows"]))
        for g in regions:
            rr = [r for r in res["rows"] if r["region"] == g]
            t = float(np.mean([r["dice_torch"] for r in rr]))
            o = float(np.mean([r["dice_onnx"] for r in rr]))
            worst = max(abs(r["dice_onnx"] - r["dice_torch"]) for r in rr)
            vd = [r["voxels_differ"] for r in rr if not np.isnan(r["voxels_differ"])]
            vds = f"{np.mean(vd) * 100:.4f} %" if vd else "-"
            lines.append(f"| {modality} | {g} | {len(rr)} | {t:.4f} | {o:.4f} | {o - t:+.4f} | {worst:.4f} | {vds} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modality", nargs="+", choices=["ct", "mr", "us"], default=["ct", "mr", "us"])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write every per-case row here")
    args = ap.parse_args(argv)
    results = {}
    for m in args.modality:
        t = time.perf_counter()
        results[m] = run_modality(m, args.data, args.threads)
        s = results[m]["seconds"]
        print(f"{m}: {results[m]['cases']} cases in {time.perf_counter() - t:.0f} s "
              f"(torch {s['torch']:.1f} s, ONNX {s['onnx']:.1f} s)", file=sys.stderr)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
