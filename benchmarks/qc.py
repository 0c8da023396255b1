"""How well the per-structure QC score ranks structures by their true Dice, on cross-validated predictions.

    python benchmarks/qc.py [--ct-work work/ct_b] [--data ../shared/data] [--threads 1]
                            [--json work/qc_rows.json] [--from-json work/qc_rows.json]

Every structure the QC scores (:mod:`kidneyseg.reporting.qc`: each kidney side, each tumour, each cyst;
the kidney region of a 2D slice) is predicted by a model that never saw its case:

* **CT**: the five fold models of the CT default's recipe in ``CT_WORK/ct/fold_<k>`` (written by
  ``scripts/train_defaults.py``; the shipped CT default is ``fold_all`` of the same recipe) on their
  validation slices, as ``benchmarks/accuracy.py`` scores them: KiTS19 slices (the slice's kidney
  region against kidney + tumour, each tumour component against the reference tumour components it
  overlaps) and CURVAS slices (kidney region only: CURVAS has no tumour label).
* **MR**: the shipped MR default is the mean ensemble of its 5 fold networks (member ``k`` = ``fold_k``
  of ``make_splits(folds=5, seed=0)``); member ``k`` alone predicts the CHAOS cases of fold ``k``
  (right and left kidney against the reference labels 2 and 3). The deployed MR model averages 5
  members, so its uncertainty is smoother than one member's: the MR rows check how the score
  transfers, they do not calibrate the ensemble itself.

A structure "needs review" when its Dice is below 0.8 (:data:`kidneyseg.reporting.qc.DICE_BAR`).
Printed: for every candidate score the AUROC of "low score = needs review" (1 = perfect ranking,
0.5 = chance) on CT and MR; then for the chosen score (the best on CT) the threshold that maximises
Youden's J on CT, its sensitivity and specificity on CT, leave-one-fold-out on CT (threshold fitted
on four folds, applied to the fifth) and applied unchanged on MR. Never fitted on MR.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _full(shape: tuple[int, ...], starts: tuple[int, ...], crop: np.ndarray) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    out[tuple(slice(s, s + n) for s, n in zip(starts, crop.shape))] = crop
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    n = int(a.sum()) + int(b.sum())
    return 1.0 if n == 0 else 2.0 * float((a & b).sum()) / n


def structure_rows(result: Any, ref: np.ndarray | None, *, task: str, modality: str, fold: int, case: str
                   ) -> list[dict[str, Any]]:
    """One row per QC-scored structure of ``result`` (a Prediction with uncertainty) with its true Dice."""
    from kidneyseg.preprocessing.components import label_components
    from kidneyseg.reporting.volumes import measure

    found: list[tuple[str, tuple[int, ...], np.ndarray]] = []
    m = measure(result.label, result.case.affine, labels=result.labels, name=case, uncertainty=result.uncertainty,
                structures=found)
    shape = tuple(result.label.shape)
    if ref is None:
        raise ValueError(f"{case}: no reference label map")
    ref = np.asarray(ref)
    if ref.shape != shape:  # a 2D slice read as (rows, cols, 1)
        ref = ref.reshape(shape)
    ref_tumour, n_ref = label_components(np.isin(ref, (2,))) if task == "kits19" else (None, 0)
    rows = []
    for key, starts, crop in found:
        parts = key.split(".")
        rec: Any = m
        for p in parts:
            rec = rec[int(p) - 1] if p.isdigit() else rec[p]
        pred = _full(shape, starts, crop)
        if len(parts) <= 2:  # a kidney side or the slice's kidney region
            kind = "kidney"
            if modality == "mr":
                truth = ref == (2 if parts[1] == "right" else 3)
            elif task == "kits19":
                truth = np.isin(ref, (1, 2))
            elif task == "curvas-ct":
                truth = ref == 1
            else:
                continue
        else:
            kind = "tumour" if parts[-2] == "tumors" else "cyst"
            if kind != "tumour" or ref_tumour is None:
                continue  # no tumour (or cyst) reference in this data set
            hit = np.unique(ref_tumour[pred & (ref_tumour > 0)])
            truth = np.isin(ref_tumour, hit[hit > 0]) if n_ref else np.zeros(shape, bool)
        rows.append({"modality": modality, "fold": fold, "case": case, "set": task, "structure": key, "kind": kind,
                     "dice": round(_dice(pred, truth), 4), "scores": rec["qc"]["scores"]})
    # reference structures the prediction has no structure for: QC cannot flag them (counted, not scored)
    keys = {k for k, _, _ in found}
    refs: list[tuple[str, str, np.ndarray]] = []
    if modality == "mr":
        refs = [("kidneys.right", "kidney", ref == 2), ("kidneys.left", "kidney", ref == 3)]
    elif task in ("kits19", "curvas-ct"):
        refs = [("image", "kidney", np.isin(ref, (1, 2)) if task == "kits19" else ref == 1)]
    for key, kind, truth in refs:
        if truth.any() and key not in keys:
            rows.append({"modality": modality, "fold": fold, "case": case, "set": task, "structure": key,
                         "kind": kind, "missed": True})
    if ref_tumour is not None and n_ref:
        pred_t = np.isin(result.label, (2,))
        for c in range(1, n_ref + 1):
            if not (pred_t & (ref_tumour == c)).any():
                rows.append({"modality": modality, "fold": fold, "case": case, "set": task,
                             "structure": f"reference tumour {c}", "kind": "tumour", "missed": True})
    return rows


def ct_rows(work: Path, data: Path, threads: int) -> list[dict[str, Any]]:
    from accuracy import validation_cases
    from kidneyseg.default_models import RECIPES
    from kidneyseg.inference import Predictor

    rows: list[dict[str, Any]] = []
    folds = sorted(d for d in (work / "ct").glob("fold_[0-9]*") if (d / "model.json").is_file())
    if not folds:
        print(f"ct: no fold models in {work / 'ct'}; skipped", file=sys.stderr)
        return rows
    for fd in folds:
        tr, names, by_name = validation_cases(fd, data / str(RECIPES["ct"].data), str(RECIPES["ct"].fmt))
        pred = Predictor(fd, threads=threads)
        for name in names:
            ref, task = by_name[name]
            case = ref.load()
            res = pred.predict_case(case, uncertainty=True)
            rows += structure_rows(res, case.label, task=str(task), modality="ct", fold=int(tr["data"]["fold"]),
                                   case=name)
        print(f"ct fold {tr['data']['fold']}: {len(rows)} structures so far", file=sys.stderr)
    return rows


def mr_rows(data: Path, threads: int) -> list[dict[str, Any]]:
    from kidneyseg.data.adapters import load_dataset
    from kidneyseg.data.splits import make_splits
    from kidneyseg.default_models import RECIPES, default_model_dir
    from kidneyseg.inference import Predictor
    from kidneyseg.models.folder import load_model_folder

    r = RECIPES["mr"]
    root = data / str(r.data)
    if not root.is_dir():
        print(f"mr: data set {root} is missing; skipped", file=sys.stderr)
        return []
    model_dir = default_model_dir("mr")
    spec = json.loads((model_dir / "model.json").read_text())
    members = list(spec["training"]["data"]["members"])
    ds = load_dataset(root, str(r.fmt))
    splits = make_splits(ds, folds=int(spec["training"]["data"]["folds"]), seed=int(spec["training"]["config"]["seed"]))
    by_name = {c.name: c for c in ds.cases}
    rows: list[dict[str, Any]] = []
    for k, member in enumerate(members):
        fold = int(member.split("_")[1])
        model = load_model_folder(model_dir)
        stage = model.stages["main"]
        mspec = stage.spec["arch_kwargs"]["members"][k]
        stage.module = stage.module.members[k]  # the fold network alone (it never saw this fold's cases)
        stage.spec = {**stage.spec, "arch": mspec["arch"], "arch_kwargs": mspec.get("arch_kwargs", {})}
        pred = Predictor(model, threads=threads)
        for name in splits[fold]["val"]:
            case = by_name[name].load()
            res = pred.predict_case(case, uncertainty=True)
            rows += structure_rows(res, case.label, task="chaos-mr", modality="mr", fold=fold, case=name)
        print(f"mr fold {fold}: {len(rows)} structures so far", file=sys.stderr)
    return rows


def auroc(scores: np.ndarray, bad: np.ndarray) -> float:
    """P(score of a bad structure < score of a good one), ties 1/2 (Mann-Whitney); NaN without both kinds."""
    s, b = np.asarray(scores, float), np.asarray(bad, bool)
    pos, neg = s[b], s[~b]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    less = (pos[:, None] < neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(less / (len(pos) * len(neg)))


def youden_threshold(scores: np.ndarray, bad: np.ndarray) -> float:
    """The threshold ``t`` (review when score < t) maximising sensitivity + specificity - 1; ties: the lowest."""
    s, b = np.asarray(scores, float), np.asarray(bad, bool)
    cands = np.unique(np.r_[s, s + 1e-9])
    best, best_t = -2.0, float(cands[0])
    for t in cands:
        flag = s < t
        sens = flag[b].mean() if b.any() else 0.0
        spec = (~flag[~b]).mean() if (~b).any() else 0.0
        if sens + spec - 1 > best + 1e-12:
            best, best_t = sens + spec - 1, float(t)
    return best_t


def sens_spec(scores: np.ndarray, bad: np.ndarray, t: float) -> tuple[float, float]:
    s, b = np.asarray(scores, float), np.asarray(bad, bool)
    flag = s < t
    return (float(flag[b].mean()) if b.any() else float("nan"), float((~flag[~b]).mean()) if (~b).any() else float("nan"))


def report(rows: list[dict[str, Any]], bar: float) -> str:
    from kidneyseg.reporting.qc import CANDIDATES

    missed = [r for r in rows if r.get("missed")]
    rows = [r for r in rows if not r.get("missed")]
    def arr(rr: list[dict[str, Any]], c: str) -> tuple[np.ndarray, np.ndarray]:
        return np.array([r["scores"][c] for r in rr]), np.array([r["dice"] < bar for r in rr])

    groups = [("CT", "all", [r for r in rows if r["modality"] == "ct"]),
              ("CT", "kidney", [r for r in rows if r["modality"] == "ct" and r["kind"] == "kidney"]),
              ("CT", "tumour", [r for r in rows if r["modality"] == "ct" and r["kind"] == "tumour"]),
              ("MR", "kidney", [r for r in rows if r["modality"] == "mr"])]
    groups = [g for g in groups if g[2]]
    lines = [f"### AUROC of each candidate score for \"Dice < {bar}\" (low score = review)", "",
             "| set | structures | n | Dice < bar | mean Dice | " + " | ".join(CANDIDATES) + " |",
             "|---|---|---|---|---|" + "---|" * len(CANDIDATES)]
    for mod, kind, rr in groups:
        cells = [f"{auroc(*arr(rr, c)):.3f}" for c in CANDIDATES]
        nbad = sum(r["dice"] < bar for r in rr)
        lines.append(f"| {mod} | {kind} | {len(rr)} | {nbad} | {np.mean([r['dice'] for r in rr]):.3f} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Reference structures with no predicted structure (missed: QC cannot flag them): "
              + (", ".join(f"{mod} {kind} {sum(1 for r in missed if r['modality'] == mod.lower() and r['kind'] == kind)}"
                           for mod, kind in (("CT", "kidney"), ("CT", "tumour"), ("MR", "kidney"))))]
    ct = [r for r in rows if r["modality"] == "ct"]
    mr = [r for r in rows if r["modality"] == "mr"]
    if not ct:
        return "\n".join(lines)
    chosen = max(CANDIDATES, key=lambda c: np.nan_to_num(auroc(*arr(ct, c)), nan=-1.0))
    s, b = arr(ct, chosen)
    t = youden_threshold(s, b)
    se, sp = sens_spec(s, b, t)
    lines += ["", f"### Chosen on CT: `{chosen}` (highest CT AUROC), threshold {t:.4f} (Youden's J on CT)", "",
              "| check | structures | Dice < bar | AUROC | threshold | sensitivity (review when Dice < bar) | "
              "specificity (pass when Dice >= bar) |", "|---|---|---|---|---|---|---|",
              f"| CT, fitted on all folds | {len(ct)} | {int(b.sum())} | {auroc(s, b):.3f} | {t:.4f} | {se:.3f} | "
              f"{sp:.3f} |"]
    # leave one fold out on CT: the threshold from the other folds
    flags, bads = [], []
    ts = []
    for f in sorted({r["fold"] for r in ct}):
        tr_ = [r for r in ct if r["fold"] != f]
        te = [r for r in ct if r["fold"] == f]
        tf = youden_threshold(*arr(tr_, chosen))
        ts.append(tf)
        st, bt = arr(te, chosen)
        flags.append(st < tf)
        bads.append(bt)
    fl, bb = np.concatenate(flags), np.concatenate(bads)
    lines.append(f"| CT, leave one fold out | {len(ct)} | {int(bb.sum())} | | "
                 f"{min(ts):.3f}..{max(ts):.3f} | {fl[bb].mean():.3f} | {(~fl[~bb]).mean():.3f} |")
    from kidneyseg.reporting.qc import QC_METHOD, QC_THRESHOLD

    for name, rr in (("CT", ct), ("MR", mr)):
        if rr:
            sq, bq = arr(rr, QC_METHOD)
            se, sp = sens_spec(sq, bq, QC_THRESHOLD)
            lines.append(f"| {name}, shipped `{QC_METHOD}` < {QC_THRESHOLD} | {len(rr)} | {int(bq.sum())} | "
                         f"{auroc(sq, bq):.3f} | {QC_THRESHOLD} | {se:.3f} | {sp:.3f} |")
    if mr:
        sm, bm = arr(mr, chosen)
        se, sp = sens_spec(sm, bm, t)
        lines.append(f"| MR, CT threshold unchanged | {len(mr)} | {int(bm.sum())} | {auroc(sm, bm):.3f} | {t:.3f} | "
                     f"{se:.3f} | {sp:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct-work", type=Path, default=ROOT / "work" / "ct_b", help="folder holding ct/fold_<k>")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--modality", nargs="+", choices=("ct", "mr"), default=["ct", "mr"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="write every structure row here (derived from the data: "
                                                             "keep it out of git, e.g. under work/)")
    ap.add_argument("--from-json", type=Path, default=None, help="re-analyse rows written by --json (no prediction)")
    args = ap.parse_args(argv)
    from kidneyseg.reporting.qc import DICE_BAR

    t0 = time.time()
    if args.from_json:
        rows = json.loads(args.from_json.read_text())
    else:
        rows = []
        if "ct" in args.modality:
            rows += ct_rows(args.ct_work, args.data, args.threads)
        if "mr" in args.modality:
            rows += mr_rows(args.data, args.threads)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    print(f"QC calibration on {len(rows)} cross-validated structures ({time.time() - t0:.0f} s)\n")
    print(report(rows, DICE_BAR))
    return 0


if __name__ == "__main__":
    sys.exit(main())
