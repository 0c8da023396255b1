"""Prediction speed and memory per pipeline on a generated 512 x 512 x 200 CT (0.8 x 0.8 x 2.5 mm).

Usage::

    python benchmarks/predict.py                 # all pipelines, 2 threads, table on stdout
    python benchmarks/predict.py --threads 2 --depth 200 --pipelines ct3d-cascade us-triple-ensemble

Each pipeline runs in its own subprocess (so peak RSS is per pipeline) with a
model folder of the default architectures (``kidneyseg.models.pipelines``)
and **random weights**: networks cost the same trained or not.  Random
networks cannot place the per-kidney crops, so for the two cascades the crop
boxes come from the phantom's true kidneys (patched in this script only);
every network still runs at full size on those crops, and the detector still
runs on every axial slice.  ``default-ct`` is the embedded CT default model
(trained weights, ``kidneyseg predict`` without ``--model``) on the same CT.  Wall time covers ``Predictor.predict_case`` from
the case in memory to the label map on the input grid (preprocessing,
networks, undo, post-processing); model loading is reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CT_SHAPE = (512, 512, 200)
CT_SPACING = (0.8, 0.8, 2.5)
WINDOW = {"kind": "window", "low": -60, "high": 300}
KITS = {"0": "background", "1": "kidney", "2": "tumor", "3": "cyst"}
PIPELINES = ("ct3d-cascade", "ct-detect-vnet", "ct2d-unet-resnet", "us-triple-ensemble", "default-ct")


def _plan(dims: int, spacing, patch, intensity=None, modality="ct", labels=None):  # type: ignore[no-untyped-def]
    return {"modality": modality, "spatial_dims": dims, "orientation": "RAS" if modality != "us" else None,
            "target_spacing": None if spacing is None else list(spacing), "patch_size": list(patch),
            "intensity": intensity or dict(WINDOW), "denoise": None, "labels": labels or dict(KITS)}


def build_model(name: str, d: Path) -> Path:
    """A model folder of pipeline ``name`` with the default architectures and random weights."""
    from kidneyseg.models.folder import save_model_folder, save_stage
    from kidneyseg.models.pipelines import get_pipeline
    from kidneyseg.models.registry import create_model

    p = get_pipeline(name)
    labels = {"0": "background", "1": "kidney"} if name.startswith("us") else dict(KITS)
    plans = {
        ("ct3d-cascade", "coarse"): (_plan(3, [4.0, 4.0, 4.0], [64, 64, 64]), [0, 1], 1),
        ("ct3d-cascade", "fine"): (_plan(3, [1.6, 1.6, 2.5], [64, 64, 64]), [0, 1], 1),
        ("ct3d-cascade", "lesion"): (_plan(3, [1.6, 1.6, 2.5], [64, 64, 64]), [0, 2, 3], 2),
        ("ct-detect-vnet", "detector"): (_plan(2, None, [512, 512]), [0, 1], 1),
        ("ct-detect-vnet", "segmenter"): (_plan(3, None, [64, 64, 64]), [0, 1, 2], 1),
        ("ct2d-unet-resnet", "main"): (_plan(2, [0.8, 0.8], [256, 256]), [0, 1, 2, 3], 1),
        ("us-triple-ensemble", "main"): (_plan(2, None, [256, 256], {"kind": "percentile_zscore", "low_pct": 0.5,
                                                                     "high_pct": 99.5}, "us", labels), [0, 1], 1),
    }
    for st in p.stages:
        plan, c2l, cin = plans[(name, st.name)]
        module = create_model(st.arch, in_channels=cin, out_channels=len(c2l), **st.arch_kwargs)
        save_stage(d / st.name, module, {"arch": st.arch, "arch_kwargs": st.arch_kwargs, "in_channels": cin,
                                         "out_channels": len(c2l), "channel_to_label": c2l, "plan": plan,
                                         "stage": dict(st.facts)})
    save_model_folder(d, {"pipeline": name, "task": "openkidney-us" if name.startswith("us") else "kits23",
                          "modality": "us" if name.startswith("us") else "ct", "labels": labels,
                          "stages": [s.name for s in p.stages], "training": {"note": "random weights (benchmark)"}})
    return d


def make_ct(depth: int):  # type: ignore[no-untyped-def]
    """Phantom CT resized to 512 x 512 x depth with 0.8 x 0.8 x 2.5 mm voxels (RAS), and its label."""
    from scipy import ndimage

    from kidneyseg.case import Case
    from kidneyseg.data.phantoms import ct_phantom

    ph = ct_phantom(size=(256, 256, max(16, depth // 2)), seed=0)
    f = [n / s for n, s in zip((512, 512, depth), ph.image.shape)]
    img = ndimage.zoom(ph.image.astype(np.float32), f, order=1)
    lab = ndimage.zoom(ph.label, f, order=0)
    affine = np.diag(list(CT_SPACING) + [1.0])
    affine[:3, 3] = -np.asarray(img.shape) * np.asarray(CT_SPACING) / 2
    return Case(img, affine, name="bench_ct", modality="ct"), lab


def write_ct(depth: int, folder: Path) -> tuple[Path, Path]:
    """:func:`make_ct` written into ``folder`` as NIfTI: ``bench_ct.nii.gz`` (int16 HU) and ``bench_ct_label.nii.gz``
    (uint8); the CT of benchmarks/peers.py and benchmarks/cli_speed.py."""
    import nibabel as nib

    case, label = make_ct(depth)
    folder.mkdir(parents=True, exist_ok=True)
    img_path, lab_path = folder / "bench_ct.nii.gz", folder / "bench_ct_label.nii.gz"
    img = nib.Nifti1Image(np.clip(np.round(case.image), -32768, 32767).astype(np.int16), case.affine)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, img_path)
    nib.save(nib.Nifti1Image(np.asarray(label, np.uint8), case.affine), lab_path)
    return img_path, lab_path


def _truth_boxes(truth: np.ndarray, truth_affine: np.ndarray, grid_affine: np.ndarray, grid_shape):  # type: ignore[no-untyped-def]
    """Kidney boxes of the phantom truth mapped onto another grid of the same field of view."""
    from kidneyseg.case import Case
    from kidneyseg.preprocessing.geometry import world_box_to_grid

    boxes = _REAL_COMPONENT_BOXES(truth > 0, 2)
    dst = Case(np.zeros(grid_shape, np.uint8), grid_affine)
    return [world_box_to_grid(b, truth_affine, dst, 0.0) for b in boxes]


_REAL_COMPONENT_BOXES = None


def run_one(name: str, threads: int, depth: int, us_images: int) -> dict:
    import torch

    global _REAL_COMPONENT_BOXES
    from kidneyseg.inference import cascades as _c

    _REAL_COMPONENT_BOXES = _c._component_boxes

    from kidneyseg.case import Case
    from kidneyseg.inference import Predictor, cascades, engines

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        if name == "default-ct":
            from kidneyseg.default_models import default_model_dir

            d = default_model_dir("ct")
        else:
            d = build_model(name, Path(tmp) / name)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        pred = Predictor(d, threads=threads)
        load_s = time.perf_counter() - t
    row = {"pipeline": name, "threads": threads, "load_s": round(load_s, 2), "build_s": round(build_s, 2)}
    if name == "us-triple-ensemble":
        rng = np.random.default_rng(0)
        img = (rng.random((512, 512)) * 255).astype(np.float32)
        case = Case(img, np.diag([0.3, 0.3, 1.0, 1.0]), name="us", modality="us")
        pred.predict_case(case)  # warm-up
        t = time.perf_counter()
        for _ in range(us_images):
            pred.predict_case(case)
        row["ms_per_image"] = round(1000 * (time.perf_counter() - t) / us_images, 1)
        row["wall_s"] = round((time.perf_counter() - t), 2)
        row["images"] = us_images
    else:
        case, truth = make_ct(depth)
        n_crops = []
        if name == "ct3d-cascade":
            real = cascades._component_boxes

            def oracle(mask, max_kidneys=2):  # type: ignore[no-untyped-def]
                real(mask, max_kidneys)  # the real work is still done
                boxes = _truth_boxes(truth, case.affine, _grid["coarse"].affine, mask.shape)
                n_crops.append(len(boxes))
                return boxes

            _grid: dict = {}
            real_apply = cascades.__dict__.get("apply_plan")
            from kidneyseg.preprocessing import plan as plan_mod

            orig_apply = plan_mod.apply_plan

            def apply_and_keep(c, p):  # type: ignore[no-untyped-def]
                out = orig_apply(c, p)
                if list(getattr(p, "target_spacing", None) or []) == [4.0, 4.0, 4.0]:
                    _grid["coarse"] = out
                return out

            plan_mod.apply_plan = apply_and_keep
            cascades._component_boxes = oracle
            del real_apply
        elif name == "ct-detect-vnet":
            real_b = engines.boxes_to_3d

            def oracle3d(dets, shape, **kw):  # type: ignore[no-untyped-def]
                real_b(dets, shape, **kw)
                boxes = _truth_boxes(truth, case.affine, case.affine, shape)
                n_crops.append(len(boxes))
                return boxes

            engines.boxes_to_3d = oracle3d
        t = time.perf_counter()
        result = pred.predict_case(case)
        row["wall_s"] = round(time.perf_counter() - t, 2)
        row["timings_s"] = {k: round(v, 2) for k, v in result.timings.items()}
        row["crops"] = n_crops[0] if n_crops else None
        row["shape"] = list(case.shape)
    row["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=PIPELINES)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--depth", type=int, default=CT_SHAPE[2], help="number of axial slices (default 200)")
    ap.add_argument("--us-images", type=int, default=5)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.threads, args.depth, args.us_images)))
        return 0
    rows = []
    for name in args.pipelines:
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        cmd = [sys.executable, __file__, "--one", name, "--threads", str(args.threads), "--depth", str(args.depth),
               "--us-images", str(args.us_images)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(f"\nCT {CT_SHAPE[0]}x{CT_SHAPE[1]}x{args.depth} at {CT_SPACING} mm, threads={args.threads}, CPU, random weights (default-ct: the embedded trained model)")
    print(f"{'pipeline':<22} {'wall s':>8} {'peak RSS GB':>12} {'ms/image':>9} {'crops':>6}  stage seconds")
    for r in rows:
        stages = ", ".join(f"{k} {v}" for k, v in (r.get("timings_s") or {}).items())
        print(f"{r['pipeline']:<22} {r['wall_s']:>8} {r['peak_rss_gb']:>12} {r.get('ms_per_image', '')!s:>9} "
              f"{r.get('crops', '')!s:>6}  {stages}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
