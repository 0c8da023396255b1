"""Data-set check and fingerprint: what is in the folder, and the statistics a plan is derived from.

:func:`check_dataset` reads every case once (image and label separately, so a
grid mismatch is reported instead of raised) and returns a JSON-serialisable
report: number of cases and patients, problems (missing/unmatched files,
unreadable files, grid mismatches, label values outside the task), label values
per case, spacing and size histograms, and the fingerprint:

``spacings`` / ``shapes``
    per case, in RAS axis order for volumes (so axis 2 is the axial direction
    whatever the file's voxel order), ``[row, col]`` for 2D images.
``intensity_foreground``
    mean, std, median, 0.5/99.5 percentiles of image values inside the label
    (sampled, at most ``samples_per_case`` voxels per case).
``class_volumes_ml``
    mean / median / min / max volume (mL; mm^2/1000 for 2D) of each label value.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from kidneyseg.data.adapters import Dataset
from kidneyseg.errors import KidneysegError
from kidneyseg.labels import get_task


def _ras_order(affine: np.ndarray) -> list[int]:
    """For each RAS axis, the array axis that points along it."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    order = [0, 0, 0]
    for arr_ax, (world_ax, _) in enumerate(ornt):
        order[int(world_ax)] = arr_ax
    return order


def _fmt_tuple(v) -> str:
    return "x".join(f"{float(x):.4g}" for x in v)


def check_dataset(dataset: Dataset, *, samples_per_case: int = 20000, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Read every case of ``dataset`` and return the check report with its fingerprint (see module doc)."""
    from tqdm import tqdm

    from kidneyseg.data.adapters import _read_any, map_labels

    rng = np.random.default_rng(seed)
    task = get_task(dataset.task)
    problems = list(dataset.problems)
    per_case: list[dict[str, Any]] = []
    samples: list[np.ndarray] = []
    volumes: dict[int, list[float]] = {}
    for ref in tqdm(dataset.cases, desc="checking cases", disable=not progress or len(dataset.cases) < 5):
        entry: dict[str, Any] = {"name": ref.name, "patient": ref.patient}
        img = lab = None
        try:
            if ref.image_path is not None:
                img = _read_any(ref.image_path, is_label=False, spacing=ref.spacing)
            if ref.label_path is not None:
                lspacing = ref.spacing
                if lspacing is None and img is not None and img.ndim == 2:
                    lspacing = img.spacing  # 2D labels lie on their image's pixel grid
                lab = ref.load(image=False) if "label_reader" in ref.extra else _read_any(
                    ref.label_path, is_label=True, spacing=lspacing)
                lab.label = map_labels(lab.label, ref.label_map)  # type: ignore[arg-type]
        except KidneysegError as exc:
            problems.append(f"{ref.name}: {exc}")
            entry["error"] = str(exc)
            per_case.append(entry)
            continue
        base = img if img is not None else lab
        if base is None:
            continue
        ndim = base.ndim
        order = _ras_order(base.affine) if ndim == 3 else [0, 1]
        entry["shape"] = [int(base.shape[a]) for a in order]
        entry["spacing"] = [round(float(base.spacing[a]), 4) for a in order]
        entry["file_shape"] = list(base.shape)
        entry["file_spacing"] = [round(float(s), 4) for s in base.spacing]
        if ndim == 3:
            entry["orientation"] = "".join(base.orientation)
        if img is not None and lab is not None:
            if img.shape != lab.shape or not np.allclose(img.affine, lab.affine, atol=1e-3):
                problems.append(
                    f"{ref.name}: label grid differs from image (label shape {lab.shape}, spacing "
                    f"{_fmt_tuple(lab.spacing)}; image shape {img.shape}, spacing {_fmt_tuple(img.spacing)})")
                entry["grid_mismatch"] = True
                lab = None
        if lab is not None and lab.label is not None:
            counts = np.bincount(lab.label.ravel(), minlength=1)
            values = [int(v) for v in np.flatnonzero(counts)]
            entry["label_values"] = values
            extra = [v for v in values if v not in task.labels]
            if extra and task.name != "binary":
                problems.append(f"{ref.name}: label values {extra} not in task {task.name} {sorted(task.labels)}")
            vox_ml = float(np.prod(lab.spacing)) / 1000.0
            entry["volumes_ml"] = {str(v): round(float(counts[v]) * vox_ml, 4) for v in values if v != 0}
            for v in values:
                if v != 0:
                    volumes.setdefault(v, []).append(float(counts[v]) * vox_ml)
            if img is not None and img.image is not None:
                fg = img.image[lab.label > 0]
                if fg.size:
                    take = min(samples_per_case, fg.size)
                    samples.append(rng.choice(fg, take, replace=False) if take < fg.size else fg)
        if img is not None and img.image is not None:
            entry["intensity_range"] = [round(float(img.image.min()), 3), round(float(img.image.max()), 3)]
        per_case.append(entry)
    ok = [e for e in per_case if "shape" in e]
    fg_stats: dict[str, float] = {}
    if samples:
        allv = np.concatenate(samples).astype(np.float64)
        p = np.percentile(allv, [0.5, 50, 99.5])
        fg_stats = {"mean": float(allv.mean()), "std": float(allv.std()), "median": float(p[1]),
                    "p00_5": float(p[0]), "p99_5": float(p[2]), "min": float(allv.min()), "max": float(allv.max()),
                    "n_samples": int(allv.size)}
    report: dict[str, Any] = {
        "format_version": 1,
        "root": str(dataset.root),
        "format": dataset.format,
        "task": dataset.task,
        "modality": dataset.modality,
        "spatial_dims": dataset.spatial_dims,
        "n_cases": len(dataset.cases),
        "n_patients": len(dataset.patients),
        "n_images": sum(1 for c in dataset.cases if c.image_path is not None),
        "n_labels": sum(1 for c in dataset.cases if c.label_path is not None),
        "labels": {str(k): v for k, v in task.labels.items()},
        "label_values_found": sorted({v for e in ok for v in e.get("label_values", [])}),
        "spacing_histogram": dict(Counter(_fmt_tuple(e["file_spacing"]) for e in ok).most_common()),
        "size_histogram": dict(Counter(_fmt_tuple(e["file_shape"]) for e in ok).most_common()),
        "spacings": [e["spacing"] for e in ok],
        "shapes": [e["shape"] for e in ok],
        "intensity_foreground": fg_stats,
        "class_volumes_ml": {
            str(v): {"n": len(vs), "mean": round(float(np.mean(vs)), 4), "median": round(float(np.median(vs)), 4),
                     "min": round(float(np.min(vs)), 4), "max": round(float(np.max(vs)), 4)}
            for v, vs in sorted(volumes.items())
        },
        "problems": problems,
        "per_case": per_case,
    }
    return report


def format_report(report: dict[str, Any], max_cases: int = 40) -> str:
    """Human-readable summary of :func:`check_dataset`'s report."""
    lines = [
        f"{report['root']}  (format {report['format']}, task {report['task']}, modality {report['modality']})",
        f"cases: {report['n_cases']} from {report['n_patients']} patients/volumes "
        f"({report['n_images']} images, {report['n_labels']} labels)",
        f"label values found: {report['label_values_found']}  (task: "
        + ", ".join(f"{k} {v}" for k, v in report["labels"].items()) + ")",
        "spacing (mm, file axis order):",
    ]
    lines += [f"  {k:>24}  {v} case(s)" for k, v in list(report["spacing_histogram"].items())[:12]]
    lines.append("size (voxels, file axis order):")
    lines += [f"  {k:>24}  {v} case(s)" for k, v in list(report["size_histogram"].items())[:12]]
    fg = report.get("intensity_foreground") or {}
    if fg:
        lines.append(f"foreground intensity: mean {fg['mean']:.1f}, std {fg['std']:.1f}, "
                     f"0.5-99.5% {fg['p00_5']:.1f}..{fg['p99_5']:.1f}")
    for v, s in report["class_volumes_ml"].items():
        name = report["labels"].get(v, f"label {v}")
        unit = "mL" if report["spatial_dims"] == 3 else "cm^2/10"
        lines.append(f"label {v} ({name}): in {s['n']} case(s), median {s['median']:.3g} {unit}")
    lines.append("per case (label values):")
    for e in report["per_case"][:max_cases]:
        lines.append(f"  {e['name']:<28} {e.get('label_values', '-')}  {'x'.join(map(str, e.get('file_shape', [])))}")
    if len(report["per_case"]) > max_cases:
        lines.append(f"  ... {len(report['per_case']) - max_cases} more (use --json)")
    probs = report["problems"]
    lines.append(f"problems: {len(probs)}" + ("" if probs else " (none)"))
    lines += [f"  - {p}" for p in probs[:50]]
    if len(probs) > 50:
        lines.append(f"  ... {len(probs) - 50} more (use --json)")
    return "\n".join(lines)
