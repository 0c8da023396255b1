"""Slice extraction for the slice-wise (2D) U-Net methods: volumes -> windowed axial slices -> .npz cache.

Each case is preprocessed with a 2D plan (reoriented to RAS, in-plane
resampling, intensity window), then its axial slices ``[:, :, k]`` are written
as one compressed ``.npz`` per slice (``image`` float16 ``(H, W)`` in [0, 1]
for a window, ``label`` uint8 ``(H, W)``), optionally only slices with kidney
plus ``margin`` slices on either side.  ``index.csv`` lists every slice with
its case, patient and z so splits can group by patient; ``plan.json`` is the
plan used.  :class:`kidneyseg.data.slices.SliceCache` reads the folder back.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.data.adapters import Dataset
from kidneyseg.errors import InputError
from kidneyseg.preprocessing.intensity import KIDNEY_WINDOW_HU
from kidneyseg.preprocessing.plan import Plan, apply_plan, save_plan


def slice_plan(modality: str = "ct", window: tuple[float, float] | None = KIDNEY_WINDOW_HU,
               spacing: tuple[float, float] | None = None, labels: dict[str, str] | None = None) -> Plan:
    """A 2D plan for slice extraction: RAS, optional in-plane spacing, window (CT) or percentile z-score."""
    intensity = ({"kind": "window", "low": float(window[0]), "high": float(window[1])} if window is not None
                 else {"kind": "percentile_zscore", "low_pct": 0.5, "high_pct": 99.5})
    return Plan.from_json({
        "modality": modality, "spatial_dims": 2, "orientation": "RAS",
        "target_spacing": list(spacing) if spacing else None, "patch_size": [512, 512],
        "intensity": intensity, "denoise": None, "labels": labels or {"0": "background"},
    })


def kidney_slices(label: np.ndarray, margin: int, kidney_values: tuple[int, ...] | None = None) -> list[int]:
    """Axial indices (axis 2) within ``margin`` slices of any slice holding a kidney label."""
    fg = label > 0 if kidney_values is None else np.isin(label, kidney_values)
    ks = np.flatnonzero(fg.any(axis=(0, 1)))
    if len(ks) == 0:
        return []
    keep = np.zeros(label.shape[2], bool)
    for k in ks:
        keep[max(0, k - margin): k + margin + 1] = True
    return [int(k) for k in np.flatnonzero(keep)]


def extract_slices(dataset: Dataset, out: str | os.PathLike[str], *, plan: Plan | Mapping[str, Any] | None = None,
                   only_kidney: bool = False, margin: int = 5, progress: bool = True) -> Path:
    """Write the axial slices of every labelled volume of ``dataset`` under ``out``; returns ``out``.

    Layout: ``out/CASE/zKKKK.npz`` (keys ``image`` float16, ``label`` uint8,
    ``spacing`` float32 (2,) mm), ``out/index.csv`` (file, case, patient, z,
    kidney_px, spacing_mm) and ``out/plan.json``.
    """
    from tqdm import tqdm

    if dataset.spatial_dims != 3:
        raise InputError("slice extraction needs volumes", path=dataset.root, found="2D images",
                         expected="a 3D data set (kits19/21/23, nnunet, chaos-mr, folder of NIfTI)",
                         fix="2D data sets are already slices; use them directly")
    from kidneyseg.labels import get_task

    task = get_task(dataset.task)
    task_labels = {str(k): v for k, v in task.labels.items()}
    plan = Plan.from_json(plan) if plan is not None else slice_plan(
        dataset.modality or "ct", KIDNEY_WINDOW_HU if dataset.modality in (None, "ct") else None, labels=task_labels)
    kidney_values = tuple(v for v, n in task.labels.items() if v != 0 and n not in ("liver", "spleen"))
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for ref in tqdm(dataset.cases, desc="slicing", disable=not progress):
        if ref.image_path is None or ref.label_path is None:
            continue
        case = apply_plan(ref.load(), plan)
        img, lab = case.require_image(), case.require_label()
        ks = kidney_slices(lab, margin, kidney_values) if only_kidney else list(range(case.shape[2]))
        sp = np.asarray(case.spacing[:2], np.float32)
        (root / ref.name).mkdir(exist_ok=True)
        for k in ks:
            rel = f"{ref.name}/z{k:04d}.npz"
            np.savez_compressed(root / rel, image=img[:, :, k].astype(np.float16), label=lab[:, :, k], spacing=sp)
            rows.append({"file": rel, "case": ref.name, "patient": ref.patient, "z": k,
                         "kidney_px": int(np.isin(lab[:, :, k], kidney_values).sum()),
                         "spacing_mm": f"{sp[0]:.4f}x{sp[1]:.4f}"})
    if not rows:
        raise InputError("no slices extracted", path=dataset.root, found="no labelled volume with kidney",
                         fix="check the data set (kidneyseg data check) or drop --only-kidney")
    with (root / "index.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    save_plan(plan, root / "plan.json")
    return root
