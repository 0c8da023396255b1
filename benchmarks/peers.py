"""kidneyseg against nnU-Net v2 on the same generated 512 x 512 x 200 CT, whole processes, same CPU budget.

Usage::

    pip install -e ".[peers]"                 # nnunetv2 (see docs/prediction.md, "Against nnU-Net")
    python benchmarks/peers.py                # kidneyseg CT default and nnU-Net's 3 mm plan, median of 3
    python benchmarks/peers.py --runs 1 --fullres   # also nnU-Net's 0.78 mm 3d_fullres plan (tens of minutes)

The CT is ``make_ct`` of ``benchmarks/predict.py`` (the phantom resized to
512 x 512 x depth, 0.8 x 0.8 x 2.5 mm), written once as NIfTI int16 into a
temporary folder.  Every run is a fresh child process timed from the outside
(wall clock around the child; peak RSS from ``getrusage(RUSAGE_CHILDREN)`` of a
fresh wrapper process, that is the largest resident set of the child or any
process it waited for):

* kidneyseg: ``kidneyseg predict CT.nii.gz -o OUT --threads 2`` (the embedded CT
  default model, trained weights);
* nnU-Net v2: its Python entry ``nnUNetPredictor`` in a child process, the way
  ``nnUNetv2_predict -device cpu --disable_tta`` runs, but through
  ``predict_from_files_sequential`` so that preprocessing, the sliding window
  and the export run in this one process (``nnUNetv2_predict`` with ``-npp 1
  -nps 1`` would start worker processes whose memory ``getrusage`` does not add
  up): no test-time mirroring, tile step 0.5 with Gaussian weighting (nnU-Net's
  defaults), ``torch.set_num_threads(threads)``.

nnU-Net's models are built here with **random weights** (compute is the same
as trained): a raw dataset (the same CT and its phantom label, KiTS labels
kidney / tumor / cyst, channel "CT") under ``nnUNet_raw``, nnU-Net's own
``DatasetFingerprintExtractor`` and ``ExperimentPlanner`` (the default
PlainConvUNet planner, 8 GB target) with ``overwrite_target_spacing`` 3 mm
isotropic ("3 mm plan") or 0.78125 mm isotropic ("0.78 mm plan", KiTS' in-plane
spacing, ``--fullres``), and a ``fold_0/checkpoint_final.pth`` with the
state dict of ``nnUNetTrainer.build_network_architecture`` (nnU-Net's He
initialisation) under ``nnUNet_results``.  Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import importlib.util
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

DATASET_ID = 501
DATASET = f"Dataset{DATASET_ID:03d}_KidneysegBench"
CASE = "bench"
TRAINER = "nnUNetTrainer"
# name -> target spacing (nnU-Net's axis order after its transpose; isotropic, so the order does not matter)
PLANS: dict[str, tuple[float, float, float]] = {
    "nnUNetPlans_3mm": (3.0, 3.0, 3.0),
    "nnUNetPlans_078mm": (0.78125, 0.78125, 0.78125),
}
PLAN_LABEL = {"nnUNetPlans_3mm": "3d_fullres, 3 mm", "nnUNetPlans_078mm": "3d_fullres, 0.78 mm (KiTS)"}
MISSING = ("nnunetv2 is not installed: install the optional extra with `pip install -e \".[peers]\"` "
           "(or `pip install nnunetv2`; see docs/prediction.md, \"Against nnU-Net\", for keeping torch as it is)")


# ---------------------------------------------------------------- timing
def measure(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd`` inside a fresh wrapper process; wall seconds and the children's peak RSS of that run only."""
    wrapper = [sys.executable, str(Path(__file__).resolve()), "--_measure", json.dumps(cmd)]
    proc = subprocess.run(wrapper, capture_output=True, text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def _measure_child(cmd: list[str]) -> int:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-3000:], file=sys.stderr)
        return proc.returncode
    print(json.dumps({"wall_s": wall, "peak_rss_gb": rss / 1024**2}))
    return 0


# ---------------------------------------------------------------- nnU-Net models (child process, env set)
def _nnunet_env(root: Path, threads: int) -> dict[str, str]:
    env = dict(os.environ)
    t = str(threads)
    env.update(nnUNet_raw=str(root / "nnUNet_raw"), nnUNet_preprocessed=str(root / "nnUNet_preprocessed"),
               nnUNet_results=str(root / "nnUNet_results"), nnUNet_def_n_proc=t, nnUNet_n_proc_DA="1",
               OMP_NUM_THREADS=t, MKL_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t)
    return env


def _build_nnunet(root: Path, image: Path, label: Path, plans: list[str], threads: int) -> int:
    """Raw dataset, fingerprint, nnU-Net's planner per plan, random-weight checkpoint; plan facts as JSON."""
    import torch
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window
    from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    torch.set_num_threads(threads)
    raw = root / "nnUNet_raw" / DATASET
    (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw / "labelsTr").mkdir(parents=True, exist_ok=True)
    shutil.copy(image, raw / "imagesTr" / f"{CASE}_0000.nii.gz")
    shutil.copy(label, raw / "labelsTr" / f"{CASE}.nii.gz")
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "kidney": 1, "tumor": 2, "cyst": 3},
                    "numTraining": 1, "file_ending": ".nii.gz", "name": DATASET,
                    "description": "kidneyseg benchmark CT (benchmarks/predict.py make_ct), random weights"}
    (raw / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    DatasetFingerprintExtractor(DATASET_ID, num_processes=1, verbose=False).run()
    facts = {}
    for name in plans:
        planner = ExperimentPlanner(DATASET_ID, plans_name=name, overwrite_target_spacing=list(PLANS[name]))
        plan = planner.plan_experiment()
        pm = PlansManager(plan)
        cm = pm.get_configuration("3d_fullres")
        out = root / "nnUNet_results" / DATASET / f"{TRAINER}__{name}__3d_fullres"
        (out / "fold_0").mkdir(parents=True, exist_ok=True)
        (out / "plans.json").write_text(json.dumps(plan, indent=2))
        (out / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
        n_out = pm.get_label_manager(dataset_json).num_segmentation_heads
        net = nnUNetTrainer.build_network_architecture(pm, cm, 1, n_out, enable_deep_supervision=False)
        torch.save({"network_weights": net.state_dict(), "trainer_name": TRAINER,
                    "init_args": {"plans": plan, "configuration": "3d_fullres", "fold": 0,
                                  "dataset_json": dataset_json},
                    "inference_allowed_mirroring_axes": (0, 1, 2), "current_epoch": 0,
                    "note": "random weights (kidneyseg benchmarks/peers.py)"}, out / "fold_0" / "checkpoint_final.pth")
        fp = json.loads((root / "nnUNet_preprocessed" / DATASET / "dataset_fingerprint.json").read_text())
        tf = plan["transpose_forward"]
        shape = compute_new_shape(np.asarray(fp["shapes_after_crop"][0])[tf], np.asarray(fp["spacings"][0])[tf],
                                  cm.spacing)
        padded = [max(int(s), p) for s, p in zip(shape, cm.patch_size)]
        steps = compute_steps_for_sliding_window(padded, cm.patch_size, 0.5)
        a = cm.network_arch_init_kwargs
        facts[name] = {"model_dir": str(out), "spacing": [float(s) for s in cm.spacing],
                       "patch_size": [int(p) for p in cm.patch_size], "resampled_shape": [int(s) for s in shape],
                       "tiles": int(np.prod([len(s) for s in steps])), "steps_per_axis": [len(s) for s in steps],
                       "network": cm.network_arch_class_name.rsplit(".", 1)[-1], "n_stages": a["n_stages"],
                       "features_per_stage": list(a["features_per_stage"]), "strides": a["strides"],
                       "params_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 1)}
    print(json.dumps(facts))
    return 0


def _predict_nnunet(model_dir: str, image: str, out_dir: str, threads: int) -> int:
    """What a user runs: nnUNetPredictor on CPU, no TTA, fold 0, one process (sequential)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    torch.set_num_threads(threads)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_dir, use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files_sequential([[image]], [str(Path(out_dir) / CASE)], save_probabilities=False,
                                            overwrite=True)
    return 0


# ---------------------------------------------------------------- main
def _kidneyseg_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("kidneyseg")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "kidneyseg.cli"]


def _check_output(path: Path, shape: tuple[int, ...]) -> None:
    import nibabel as nib

    if not path.exists():
        raise RuntimeError(f"no output at {path}")
    got = nib.load(path).shape[:3]
    if tuple(got) != tuple(shape):
        raise RuntimeError(f"{path}: shape {got}, input {shape}")


def _find_output(folder: Path) -> Path:
    found = sorted(p for p in folder.rglob("*.nii.gz") if not p.name.endswith(("_uncertainty.nii.gz",)))
    if not found:
        raise RuntimeError(f"no NIfTI written under {folder}")
    return found[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs per tool; the table gives medians (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="torch / OpenMP threads for both tools (default 2)")
    ap.add_argument("--depth", type=int, default=200, help="axial slices of the generated CT (default 200)")
    ap.add_argument("--fullres", action="store_true",
                    help="also nnU-Net's 0.78 mm 3d_fullres plan (tens of minutes per run on 2 cores)")
    ap.add_argument("--no-kidneyseg", action="store_true", help="nnU-Net only (ratios then left out)")
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=None, help="also write every run and the plan facts here")
    ap.add_argument("--_measure", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_build", nargs=4, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_predict", nargs=4, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._measure:
        return _measure_child(json.loads(args._measure))
    if args._build:
        root, image, label, plans = args._build
        return _build_nnunet(Path(root), Path(image), Path(label), plans.split(","), args.threads)
    if args._predict:
        model_dir, image, out_dir, threads = args._predict
        return _predict_nnunet(model_dir, image, out_dir, int(threads))

    if importlib.util.find_spec("nnunetv2") is None:
        print(MISSING, file=sys.stderr)
        return 2
    plans = ["nnUNetPlans_3mm"] + (["nnUNetPlans_078mm"] if args.fullres else [])
    tmp = None
    if args.keep is None:
        tmp = tempfile.TemporaryDirectory(prefix="kidneyseg_peers_")
        root = Path(tmp.name)
    else:
        root = args.keep.resolve()
        root.mkdir(parents=True, exist_ok=True)
    try:
        return _run(args, plans, root)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _load() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def _run(args: argparse.Namespace, plans: list[str], root: Path) -> int:
    env = _nnunet_env(root, args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from predict import write_ct

    t = time.perf_counter()
    image, label = write_ct(args.depth, root / "ct")
    shape = (512, 512, args.depth)
    print(f"CT written ({time.perf_counter() - t:.1f} s): {image}", file=sys.stderr)
    t = time.perf_counter()
    me = str(Path(__file__).resolve())
    proc = subprocess.run([sys.executable, me, "--threads", str(args.threads), "--_build", str(root), str(image),
                           str(label), ",".join(plans)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(f"building nnU-Net's models failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}", file=sys.stderr)
        return 1
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"nnU-Net fingerprint, plans and random-weight checkpoints: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    for name in plans:
        print(f"  {name}: {json.dumps(facts[name])}", file=sys.stderr)

    tools: list[tuple[str, str, list[str], Path]] = []
    if not args.no_kidneyseg:
        out = root / "out_kidneyseg"
        tools.append(("kidneyseg", "CT default", _kidneyseg_cmd() + ["predict", str(image), "-o", str(out),
                                                                      "--threads", str(args.threads)], out))
    for name in plans:
        out = root / f"out_{name}"
        tools.append(("nnU-Net v2", PLAN_LABEL[name], [sys.executable, me, "--_predict", facts[name]["model_dir"],
                                                       str(image), str(out), str(args.threads)], out))
    runs: dict[str, list[dict[str, Any]]] = {f"{a} | {b}": [] for a, b, _, _ in tools}
    loads = [_load()]
    for i in range(args.runs):  # interleaved, so that a change of load hits every tool alike
        for tool, plan, cmd, out in tools:
            shutil.rmtree(out, ignore_errors=True)
            r = measure(cmd, env)
            _check_output(_find_output(out), shape)
            r["load"] = _load()
            runs[f"{tool} | {plan}"].append(r)
            print(f"run {i + 1}/{args.runs} {tool} ({plan}): {r['wall_s']:.1f} s, {r['peak_rss_gb']:.2f} GB, "
                  f"load {r['load']}", file=sys.stderr)
    loads.append(_load())

    med = {k: (statistics.median(r["wall_s"] for r in v), statistics.median(r["peak_rss_gb"] for r in v))
           for k, v in runs.items()}
    ref = med.get("kidneyseg | CT default", (None, None))[0]
    print(f"\nCT {shape[0]}x{shape[1]}x{shape[2]} at 0.8 x 0.8 x 2.5 mm (NIfTI int16), CPU, {args.threads} threads, "
          f"whole process, median of {args.runs}; load average (1/5/15 min) before {loads[0]}, after {loads[-1]}")
    print(f"{'tool':<12} {'plan':<28} {'wall s':>8} {'peak RSS GB':>12} {'ratio':>7}  runs (s)")
    for tool, plan, _, _ in tools:
        k = f"{tool} | {plan}"
        wall, rss = med[k]
        ratio = f"{wall / ref:.1f}x" if ref else "-"
        each = ", ".join(f"{r['wall_s']:.1f}" for r in runs[k])
        print(f"{tool:<12} {plan:<28} {wall:>8.1f} {rss:>12.2f} {ratio:>7}  {each}")
    for name in plans:
        f = facts[name]
        print(f"{PLAN_LABEL[name]}: {f['network']} {f['n_stages']} stages {f['features_per_stage']}, "
              f"{f['params_m']} M parameters, patch {f['patch_size']}, resampled image {f['resampled_shape']}, "
              f"{f['tiles']} tiles ({'x'.join(map(str, f['steps_per_axis']))}, step 0.5), no mirroring")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "plans": facts, "load": loads, "threads": args.threads,
                                         "shape": shape}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
