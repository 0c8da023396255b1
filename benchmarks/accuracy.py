"""Case-level cross-validated accuracy of the default models.

    python benchmarks/accuracy.py [--modality ct mr] [--work work/defaults] [--data ../shared/data]
                                  [--threads 2] [--train] [--tta] [--json OUT.json]

Each fold model in ``WORK/<modality>/fold_<k>`` (written by
``scripts/train_defaults.py``, split by ``kidneyseg.data.splits.make_splits``: 5
folds by patient, never by slice) predicts its own validation cases with
:class:`kidneyseg.inference.Predictor` (the same code path as ``kidneyseg
predict``: plan, network, undo to the input grid, post-processing); the label maps
are scored against the reference on the original grid with
:func:`kidneyseg.evaluation.evaluate_case` (Dice, HD95 in mm).  Prints one row per
fold and region and the mean over folds (the mean of the fold means) and over all
validation cases.  ``--train`` trains missing fold models first (the CT/MR recipes
of :mod:`kidneyseg.default_models`).  ``--tta`` scores with mirroring test-time
augmentation (``kidneyseg predict --tta``); a modality whose model refuses it
(MR: left/right labels) is skipped with the reason.

CT (KiTS19 slices) regions: kidney+masses {1, 2}, tumour {2}.  MR (CHAOS T2):
right kidney {2}, left kidney {3} and both kidneys {2, 3}; the CHAOS bar is the mean
of right and left.  HD95 of a 2D slice is in-plane.  Empty reference and empty
prediction: Dice 1 (the evaluation package's documented policy); cases where a
region is absent from the reference are listed as such.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

# regions scored per modality: name -> label values of the *model output* and reference
REGIONS: dict[str, dict[str, tuple[int, ...]]] = {
    "ct": {"kidney+masses": (1, 2), "tumour": (2,)},
    "mr": {"right kidney": (2,), "left kidney": (3,), "kidney (both)": (2, 3)},
}
# CT data sets scored by their label task: region -> (model output values, reference values)
SET_REGIONS: dict[str, dict[str, tuple[tuple[int, ...], tuple[int, ...]]]] = {
    "kits19": {"kidney+masses": ((1, 2), (1, 2)), "tumour": ((2,), (2,))},
    "curvas-ct": {"kidney": ((1, 2), (1,))},
}
SET_NAMES = {"kits19": "KiTS19 slices", "curvas-ct": "CURVAS slices"}


def _region_scores(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], values: tuple[int, ...],
                   ref_values: tuple[int, ...] | None = None) -> dict[str, float]:
    from kidneyseg.evaluation import dice, hd95, surface_distances

    p = np.isin(pred, values)
    r = np.isin(ref, values if ref_values is None else ref_values)
    d = float(dice(p, r))
    h = float(hd95(surface_distances(r, p, spacing))) if p.any() and r.any() else float("nan")
    return {"dice": d, "hd95": h, "ref_empty": not r.any(), "pred_empty": not p.any()}


def validation_cases(fold_dir: Path, data: Path, fmt: str) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """A fold model's training record, the names of its validation cases (its own data set's, then those of the
    extra data sets cross-validated with it, named ``extra<i>/<case>``) and name -> (case reference, task)."""
    from kidneyseg.data.adapters import load_dataset

    tr = json.loads((fold_dir / "model.json").read_text())["training"]
    ds = load_dataset(data, fmt)  # reference labels as published (no label_map)
    by_name: dict[str, Any] = {c.name: (c, ds.task) for c in ds.cases}
    extra_val = list(tr["data"].get("extra_val") or [])
    for i, extra in enumerate(tr["config"].get("extra_train") or []):
        if any(n.startswith(f"extra{i}/") for n in extra_val):
            xds = load_dataset(extra["data"], extra["format"], **extra.get("options", {}))
            by_name.update({f"extra{i}/{c.name}": (c, xds.task) for c in xds.cases})
    return tr, list(tr["data"]["val"]) + extra_val, by_name


def evaluate_fold(fold_dir: Path, data: Path, fmt: str, modality: str, threads: int,
                  tta: bool = False, min_confidence_2d: float | None = None) -> list[dict[str, Any]]:
    """Rows (fold, case, region, dice, hd95) of one fold model on its validation cases, post-processed as the
    shipped model is (``min_confidence_2d``: the recipe's 2D confidence floor, which fold folders do not
    carry; ``None``: the fold folder's own setting, normally off)."""
    from kidneyseg.inference import Predictor

    tr, names, by_name = validation_cases(fold_dir, data, fmt)
    pred = Predictor(fold_dir, threads=threads, tta=tta, min_confidence_2d=min_confidence_2d)
    rows = []
    for name in names:
        ref, task = by_name[name]
        case = ref.load()
        res = pred.predict_case(case)
        regions = (SET_REGIONS.get(task, {}) if modality == "ct"
                   else {g: (v, v) for g, v in REGIONS[modality].items()})
        for region, (values, ref_values) in regions.items():
            s = _region_scores(res.label, case.label, tuple(case.spacing), values, ref_values)
            rows.append({"fold": int(tr["data"]["fold"]), "case": name, "set": SET_NAMES.get(task, task),
                         "region": region, "warnings": len(res.warnings), **s})
    return rows


def evaluate_totalseg_example(model_dir: Path, data: Path, threads: int) -> dict[str, Any]:
    """The CT model on the real unenhanced TotalSegmentator example (``totalseg_example/example_ct.nii.gz``, 3 mm),
    predicted whole, as ``kidneyseg predict`` does, and scored against TotalSegmentator's labels
    (``example_seg.nii.gz``, model output, not expert truth) on the 30 slices they cover
    (``example_ct_sm.nii.gz``).  Right and left: the TotalSegmentator values 2 / 3 against the predicted kidney
    (with masses) on the patient's right / left of the body's centre.  Returns Dice (both, right, left),
    volumes (mL: predicted kidney region, its tumour part, TotalSegmentator's) and the Predictor's warnings."""
    import nibabel as nib

    from kidneyseg.evaluation import dice
    from kidneyseg.inference import Predictor
    from kidneyseg.io import read

    ex = data / "totalseg_example"
    full, sm, seg = (nib.load(str(ex / n)) for n in ("example_ct.nii.gz", "example_ct_sm.nii.gz", "example_seg.nii.gz"))
    case = read(ex / "example_ct.nii.gz", modality="ct")
    res = Predictor(model_dir, threads=threads).predict_case(case)
    # where the small file's slices lie in the full one: its header repeats the full file's origin, so the
    # slices are found by their voxels (slices 82-111: identical values)
    a, b = np.asarray(full.dataobj), np.asarray(sm.dataobj)
    err = [float(np.abs(a[..., k:k + b.shape[2]] - b).mean()) for k in range(a.shape[2] - b.shape[2] + 1)]
    k0 = int(np.argmin(err))
    sub = (slice(None), slice(None), slice(k0, k0 + b.shape[2]))
    pred = np.asarray(res.label)[sub]
    ref = np.asarray(seg.dataobj).astype(np.int16)
    # patient's right: RAS+ x above the body's centre (x grows towards the patient's right)
    ijk = np.indices(pred.shape).reshape(3, -1)
    x = (sm.affine[:3, :3] @ ijk + sm.affine[:3, 3:4])[0].reshape(pred.shape)
    body = b > -300
    mid = float(np.median(x[body])) if body.any() else float(np.median(x))
    kid = np.isin(pred, (1, 2))
    right, left = kid & (x >= mid), kid & (x < mid)
    ml = float(np.prod(sm.header.get_zooms()[:3])) / 1000.0
    return {"slices": [k0, k0 + b.shape[2] - 1], "dice_both": float(dice(kid, np.isin(ref, (2, 3)))),
            "dice_right": float(dice(right, ref == 2)), "dice_left": float(dice(left, ref == 3)),
            "ml_pred_right": round(float(right.sum()) * ml, 1), "ml_pred_left": round(float(left.sum()) * ml, 1),
            "ml_ref_right": round(float((ref == 2).sum()) * ml, 1), "ml_ref_left": round(float((ref == 3).sum()) * ml, 1),
            # of the predicted kidney region, what is labelled tumour (2), per side
            "ml_tumor_right": round(float((right & (pred == 2)).sum()) * ml, 1),
            "ml_tumor_left": round(float((left & (pred == 2)).sum()) * ml, 1),
            "warnings": list(res.warnings)}


def example_table(ex: dict[str, Any]) -> str:
    """Markdown table of :func:`evaluate_totalseg_example`'s result."""
    return ("| Dice both kidneys | Dice right | Dice left | right mL (pred / TotalSeg) | left mL (pred / TotalSeg) | "
            "post-processing warnings |\n|---|---|---|---|---|---|\n"
            f"| {ex['dice_both']:.3f} | {ex['dice_right']:.3f} | {ex['dice_left']:.3f} | "
            f"{ex['ml_pred_right']} / {ex['ml_ref_right']} | {ex['ml_pred_left']} / {ex['ml_ref_left']} | "
            f"{len(ex['warnings'])} |")


def _set_names(rows: list[dict[str, Any]]) -> list[str] | None:
    """The data sets the rows come from (``set``), in first-seen order, or ``None`` when they name none."""
    names = list(dict.fromkeys(r["set"] for r in rows if r.get("set") is not None))
    return names or None


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return float(np.mean(xs)) if xs else float("nan")


def table(rows: list[dict[str, Any]], modality: str) -> str:
    """Markdown table: per fold and region mean Dice / HD95, then the means; one table per data set when the
    rows come from several (``set``)."""
    sets = _set_names(rows)
    if sets:
        return "\n\n".join(f"**{name}**\n\n" + _table([r for r in rows if r.get("set") == name], modality)
                            for name in sets)
    return _table(rows, modality)


def _table(rows: list[dict[str, Any]], modality: str) -> str:
    folds = sorted({r["fold"] for r in rows})
    regions = list(dict.fromkeys(r["region"] for r in rows))
    head = "| fold | cases | " + " | ".join(f"{g} Dice | {g} HD95 mm" for g in regions) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(regions))]
    per_fold: dict[str, list[tuple[float, float]]] = {g: [] for g in regions}
    for f in folds:
        cells = []
        for g in regions:
            rr = [r for r in rows if r["fold"] == f and r["region"] == g]
            d, h = _mean([r["dice"] for r in rr]), _mean([r["hd95"] for r in rr])
            per_fold[g].append((d, h))
            cells.append(f"{d:.3f} | {h:.1f}")
        n = len({r["case"] for r in rows if r["fold"] == f})
        lines.append(f"| {f} | {n} | " + " | ".join(cells) + " |")
    cells = [f"**{_mean([d for d, _ in per_fold[g]]):.3f}** | {_mean([h for _, h in per_fold[g]]):.1f}" for g in regions]
    lines.append(f"| mean of folds | {len({r['case'] for r in rows})} | " + " | ".join(cells) + " |")
    cells = []
    for g in regions:
        rr = [r for r in rows if r["region"] == g]
        cells.append(f"{_mean([r['dice'] for r in rr]):.3f} | {_mean([r['hd95'] for r in rr]):.1f}")
    lines.append("| mean of cases | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]], modality: str) -> dict[str, Any]:
    """Mean over folds of the per-fold mean Dice and HD95 per region (the numbers quoted in the cards); per data
    set (``{set: {...}}``) when the rows name several."""
    sets = _set_names(rows)
    if sets:
        return {name: _summary([r for r in rows if r.get("set") == name]) for name in sets}
    return _summary(rows)


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"folds": len({r["fold"] for r in rows}), "cases": len({r["case"] for r in rows}),
                           "warnings": sum(int(r.get("warnings", 0)) for r in rows)}
    for g in dict.fromkeys(r["region"] for r in rows):
        per = [([r["dice"] for r in rows if r["fold"] == f and r["region"] == g],
                [r["hd95"] for r in rows if r["fold"] == f and r["region"] == g]) for f in sorted({r["fold"] for r in rows})]
        out[g] = {"dice": round(_mean([_mean(d) for d, _ in per]), 4), "hd95_mm": round(_mean([_mean(h) for _, h in per]), 2),
                  "dice_per_fold": [round(_mean(d), 4) for d, _ in per]}
    return out


def evaluate_us(model_dir: Path, out: Path, threads: int, n: int = 8, seed: int = 1000) -> dict[str, Any]:
    """Dice/HD95 of the ultrasound model on ``n`` freshly generated phantoms (a seed not used in training)."""
    from kidneyseg.case import Case
    from kidneyseg.data.phantoms import find_shapes_root, generate
    from kidneyseg.inference import Predictor

    spec = json.loads((model_dir / "model.json").read_text())
    size = spec["training"]["config"].get("patch_size") or [128, 128]
    pred = Predictor(model_dir, threads=threads)
    rows = []
    for i in range(n):
        ph = generate("us", i, size=tuple(size), seed=seed, shapes_root=find_shapes_root())
        # the training PNGs carry no spacing sidecar, so training saw 1 mm pixels: score on the same grid
        case = Case(image=ph.image, affine=np.eye(4), name=ph.name, modality="us")
        res = pred.predict_case(case)
        s = _region_scores(res.label, (ph.label > 0).astype(np.uint8), (1.0, 1.0), (1,))
        rows.append({"fold": 0, "case": ph.name, "region": "kidney", **s})
    REGIONS.setdefault("us", {"kidney": (1,)})
    note = (f"Dice and HD95 on {n} generated phantoms (seed {seed}, not used in training). "
            "NOT a measurement on real ultrasound: the model never saw a real image.")
    return {"rows": rows, "table": table(rows, "us"), "summary": summary(rows, "us"), "note": note}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modality", nargs="+", choices=list(REGIONS), default=list(REGIONS))
    ap.add_argument("--work", type=Path, default=ROOT / "work" / "defaults")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train", action="store_true", help="train missing fold models first")
    ap.add_argument("--tta", action="store_true", help="mirroring test-time augmentation, as `kidneyseg predict --tta`")
    ap.add_argument("--no-confidence-floor", action="store_true",
                    help="score the fold networks without the recipe's 2D confidence floor "
                         "(RECIPES[modality].postprocess['min_mean_confidence_2d'])")
    ap.add_argument("--json", type=Path, default=None, help="also write every per-case row here")
    ap.add_argument("--example-model", type=Path, default=None,
                    help="CT model scored on the unenhanced TotalSegmentator example (default: the embedded CT default)")
    args = ap.parse_args(argv)

    from kidneyseg.default_models import RECIPES
    from kidneyseg.errors import InputError

    all_rows: dict[str, list[dict[str, Any]]] = {}
    for mod in args.modality:
        r = RECIPES[mod]
        data = args.data / str(r.data)
        if not data.is_dir():
            print(f"{mod}: data set {data} is missing; skipped", file=sys.stderr)
            continue
        if args.train:
            import train_defaults

            train_defaults.main(["--modality", mod, "--data", str(args.data), "--work", str(args.work),
                                 "--threads", str(args.threads), "--no-pack"])
        # cross-validation folds only (fold_all, a model trained on every case, has no held-out case)
        fold_dirs = sorted(d for d in (args.work / mod).glob("fold_[0-9]*") if (d / "model.json").is_file())
        if not fold_dirs:
            print(f"{mod}: no trained fold in {args.work / mod} (run with --train)", file=sys.stderr)
            continue
        t0 = time.time()
        floor = None if args.no_confidence_floor else r.postprocess.get("min_mean_confidence_2d")
        rows: list[dict[str, Any]] = []
        try:
            for fd in fold_dirs:
                rows += evaluate_fold(fd, data, str(r.fmt), mod, args.threads, tta=args.tta,
                                      min_confidence_2d=floor)
        except InputError as e:
            print(f"{mod}: skipped: {e}", file=sys.stderr)
            continue
        cfg = json.loads((fold_dirs[0] / "model.json").read_text())["training"]["config"]
        print(f"\n## {mod}: {r.data}, {len(fold_dirs)} of {r.folds} folds, epochs {cfg['epochs']}, "
              f"{'mirroring TTA, ' if args.tta else ''}"
              f"{f'2D confidence floor {floor}, ' if floor is not None else ''}"
              f"evaluated in {time.time() - t0:.0f} s\n")
        print(table(rows, mod))
        all_rows[mod] = rows
        if mod == "ct" and (args.data / "totalseg_example").is_dir():
            model = args.example_model or _default_dir("ct")
            ex = evaluate_totalseg_example(model, args.data, args.threads)
            print(f"\n## ct: unenhanced TotalSegmentator example (model {model}), against TotalSegmentator's labels "
                  "on the 30 slices they cover\n")
            print(example_table(ex))
            for w in ex["warnings"]:
                print(f"warning: {w}")
            all_rows["ct_totalseg_example"] = [ex]
    if args.json:
        args.json.write_text(json.dumps(all_rows, indent=1))
    return 0


def _default_dir(modality: str) -> Path:
    from kidneyseg.default_models import default_model_dir

    return default_model_dir(modality)


if __name__ == "__main__":
    sys.exit(main())
