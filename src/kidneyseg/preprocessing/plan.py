"""The preprocessing plan: derived from a data-set fingerprint, saved with the weights, replayed on every case.

The schema is in docs/CONTRACTS.md::

    {"modality": "ct", "spatial_dims": 2, "orientation": "RAS",
     "target_spacing": [0.8, 0.8], "patch_size": [256, 256],
     "intensity": {"kind": "window", "low": -60, "high": 300},
     "denoise": null, "labels": {"0": "background", "1": "kidney", "2": "tumor"}}

Optional keys understood here: ``"crop": "body"`` (crop to the body before
resampling, recorded in ``history``).

:func:`apply_plan` reorients (3D), crops (optional), resamples (in-plane only
for a 2D plan on a volume), denoises and normalises; every grid change is in
``case.history`` so :func:`kidneyseg.preprocessing.geometry.undo` brings a
prediction back to the input grid.  :func:`plan_from_fingerprint` derives a
plan nnU-Net style (median spacing, patch from the median shape, CT z-score
with foreground statistics, per-image z-score for MR/US).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.case import Case
from kidneyseg.errors import InputError, KidneysegError
from kidneyseg.labels import get_task
from kidneyseg.preprocessing.denoise import denoise
from kidneyseg.preprocessing.geometry import reorient, resample
from kidneyseg.preprocessing.intensity import KIDNEY_WINDOW_HU, normalize

#: Orientation of axial slices in radiological display order (rows anterior -> posterior, columns the
#: patient's right -> left, slices inferior -> superior): how KiTS19 slices and the project's own slice
#: phantoms are stored.  A slice-wise (2D) model trained on such images reorients volumes to it, so the
#: slices it sees at inference are oriented as the images it learned from.
SLICE_ORIENTATION = "PLS"


def slice_orientation(modality: str) -> str | None:
    """Orientation of a slice-wise plan learned from 2D images of ``modality``:
    :data:`SLICE_ORIENTATION` for axial CT and MR slices, ``None`` for ultrasound (no axial anatomy)."""
    return SLICE_ORIENTATION if modality in ("ct", "mr") else None

PLAN_KEYS = ("modality", "spatial_dims", "orientation", "target_spacing", "patch_size", "intensity", "denoise",
             "labels")

# 3D patch budget in voxels (about 160 x 160 x 80), as nnU-Net sizes patches to GPU memory.
PATCH_BUDGET_3D = 160 * 160 * 80


def validate_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """Check a plan against the schema; returns it unchanged or raises :class:`KidneysegError`."""
    if not isinstance(plan, dict):
        raise KidneysegError("plan is not a dict", found=type(plan).__name__, expected="a JSON object")
    missing = [k for k in PLAN_KEYS if k not in plan]
    if missing:
        raise KidneysegError("plan lacks keys", found=", ".join(missing), expected=", ".join(PLAN_KEYS),
                             fix="derive the plan with plan_from_fingerprint or see docs/CONTRACTS.md")
    if plan["spatial_dims"] not in (2, 3):
        raise KidneysegError("plan spatial_dims", found=plan["spatial_dims"], expected="2 or 3")
    if plan["modality"] not in ("ct", "mr", "us"):
        raise KidneysegError("plan modality", found=plan["modality"], expected="ct, mr or us")
    ts = plan["target_spacing"]
    if ts is not None and (len(ts) != plan["spatial_dims"] or any(not (float(s) > 0) for s in ts)):
        raise KidneysegError("plan target_spacing", found=ts,
                             expected=f"null or {plan['spatial_dims']} positive values in mm")
    if len(plan["patch_size"]) != plan["spatial_dims"]:
        raise KidneysegError("plan patch_size", found=plan["patch_size"], expected=f"{plan['spatial_dims']} sizes")
    ctx = plan.get("context_slices", 0)
    if ctx and (plan["spatial_dims"] != 2 or not isinstance(ctx, int) or isinstance(ctx, bool) or ctx < 0):
        raise KidneysegError("plan context_slices", found=ctx,
                             expected="a whole number >= 0, for 2D (slice-wise) plans only",
                             fix="remove context_slices or set spatial_dims 2")
    return plan


def slice_context(image: np.ndarray, context: int) -> np.ndarray:
    """Stack each axial slice with its ``context`` neighbours on either side as channels (2.5D input).

    ``image`` is ``(I, J, K)`` (axial slices ``[:, :, k]``); returns
    ``(2 * context + 1, I, J, K)`` float32 where channel ``c`` of slice ``k`` is
    slice ``k + c - context``, clamped at the first and last slice (the edge
    slice repeats).  ``context == 0`` gives ``image[None]``.  A 2D image
    ``(H, W)`` has no neighbours: it is repeated, ``(2 * context + 1, H, W)``.
    """
    img = np.asarray(image, dtype=np.float32)
    n = int(context)
    if img.ndim == 2:
        return np.repeat(img[None], 2 * n + 1, axis=0)
    k = img.shape[-1]
    idx = np.arange(k)
    return np.stack([img[..., np.clip(idx + d, 0, k - 1)] for d in range(-n, n + 1)])


def apply_plan(case: Case, plan: dict[str, Any]) -> Case:
    """Preprocess ``case`` as ``plan`` says; returns a new case with float32 image.

    Steps: reorient to ``plan["orientation"]`` (3D cases only; a 2D CT/MR plan
    without one reorients volumes to :data:`SLICE_ORIENTATION`), optional body
    crop, resample to ``target_spacing`` (a 2D plan on a volume resamples axes
    0 and 1 of the reoriented volume and keeps axis 2, so axial slices are
    ``[:, :, k]``), denoise, normalise intensities.  The label follows every
    grid step with nearest neighbour and is never denoised or normalised.
    ``case.meta["plan"]`` holds the plan applied.
    """
    validate_plan(plan)
    out = case
    orientation = plan.get("orientation")
    if case.ndim == 3 and not orientation and plan["spatial_dims"] == 2:
        # a slice-wise model from 2D images (folders written before SLICE_ORIENTATION): axial slices must lie
        # along axis 2 whatever the file's axis order (KiTS volumes are stored I, P, L)
        orientation = slice_orientation(plan["modality"])
    if case.ndim == 3 and orientation:
        out = reorient(out, orientation)
    else:
        out = out.copy()
    if plan.get("crop") == "body":
        from kidneyseg.preprocessing.body import crop_to_body

        out = crop_to_body(out)
    target = plan.get("target_spacing")
    if target is not None:
        target = [float(t) for t in target]
        if out.ndim == 3 and plan["spatial_dims"] == 2:
            spacing = (target[0], target[1], out.spacing[2])
        elif out.ndim == len(target):
            spacing = tuple(target)
        else:
            raise InputError(
                "plan does not fit the case dimensionality",
                path=case.source,
                found=f"{out.ndim}D case",
                expected=f"a volume or an image for a {plan['spatial_dims']}D plan with spacing {target}",
                fix="use a 2D model for 2D images and a 3D or 2D model for volumes",
            )
        if not np.allclose(spacing, out.spacing, rtol=1e-3, atol=1e-4):
            out = resample(out, spacing, order=1)
    if out.image is not None:
        img = out.image
        if plan.get("denoise"):
            img = denoise(img, plan["denoise"])
        out.image = normalize(img, plan.get("intensity"))
    out.meta["plan"] = plan
    return out


def _median(values: list[list[float]]) -> list[float]:
    return [float(v) for v in np.median(np.asarray(values, dtype=float), axis=0)]


def _round_patch(size: float, multiple: int, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, multiple * math.ceil(size / multiple))))


def plan_from_fingerprint(fingerprint: dict[str, Any], spatial_dims: int, modality: str | None = None) -> dict[str, Any]:
    """Derive a plan nnU-Net style from a fingerprint (:func:`kidneyseg.data.fingerprint.compute_fingerprint`).

    * target spacing: median spacing per axis (RAS axis order for volumes); for
      3D with anisotropy above 3 the coarse axis takes the 10th percentile of its
      spacings (nnU-Net); a 2D plan on volumes keeps the in-plane axes 0 and 1.
    * patch size: median shape at the target spacing, rounded up to a multiple
      of 32 (2D, 64..512) or 16 (3D, 32..192, shrunk to ~2M voxels).
    * intensity: CT - z-score with the foreground mean/std clipped to the
      foreground 0.5/99.5 percentiles (fixed window -60..300 HU when the data set
      has no images); MR and US - per-image percentile z-score.
    """
    if spatial_dims not in (2, 3):
        raise KidneysegError("spatial_dims", found=spatial_dims, expected="2 or 3")
    modality = modality or fingerprint.get("modality") or "ct"
    spacings = fingerprint.get("spacings") or []
    shapes = fingerprint.get("shapes") or []
    data_dims = int(fingerprint.get("spatial_dims", len(spacings[0]) if spacings else spatial_dims))
    if spatial_dims == 3 and data_dims == 2:
        raise KidneysegError("a 3D plan needs volumes", found="a data set of 2D images", expected="spatial_dims 2",
                             fix="use --spatial-dims 2 for this data set")
    if spacings:
        target = _median(spacings)
        if spatial_dims == 3 and max(target) / min(target) > 3:
            ax = int(np.argmax(target))
            target[ax] = float(np.percentile(np.asarray(spacings)[:, ax], 10))
        med_shape = _median(shapes)
    else:
        target, med_shape = [1.0] * data_dims, [256.0] * data_dims
    if data_dims == 3 and spatial_dims == 2:
        scaled = [med_shape[a] * _median(spacings)[a] / target[a] for a in (0, 1)] if spacings else med_shape[:2]
        target = target[:2]
    else:
        scaled = [s * sp / t for s, sp, t in zip(med_shape, _median(spacings) if spacings else target, target)]
    if spatial_dims == 2:
        patch = [_round_patch(s, 32, 64, 512) for s in scaled[:2]]
    else:
        patch = [_round_patch(s, 16, 32, 192) for s in scaled]
        while math.prod(patch) > PATCH_BUDGET_3D:
            ax = int(np.argmax(patch))
            patch[ax] = max(32, patch[ax] - 16)
    fg = fingerprint.get("intensity_foreground") or {}
    if modality == "ct":
        if fg.get("std"):
            intensity = {"kind": "zscore", "mean": round(float(fg["mean"]), 3), "std": round(float(fg["std"]), 3),
                         "low": round(float(fg["p00_5"]), 3), "high": round(float(fg["p99_5"]), 3)}
        else:
            intensity = {"kind": "window", "low": KIDNEY_WINDOW_HU[0], "high": KIDNEY_WINDOW_HU[1]}
    else:
        intensity = {"kind": "percentile_zscore", "low_pct": 0.5, "high_pct": 99.5}
    labels = fingerprint.get("labels")
    if not labels:
        labels = {str(k): v for k, v in get_task(fingerprint.get("task", "binary")).labels.items()}
    plan = {
        "modality": modality,
        "spatial_dims": spatial_dims,
        # 3D data: RAS; axial 2D images (CT, MR): radiological display order, which volumes are reoriented to
        "orientation": "RAS" if data_dims == 3 else slice_orientation(modality),
        "target_spacing": [round(float(t), 4) for t in target],
        "patch_size": patch,
        "intensity": intensity,
        "denoise": None,
        "labels": {str(k): v for k, v in labels.items()},
    }
    return validate_plan(plan)


def save_plan(plan: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a plan as indented JSON (atomically)."""
    from kidneyseg.io import atomic_path

    validate_plan(plan)
    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.write_text(json.dumps(plan, indent=2) + "\n")
    return p


def load_plan(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a plan JSON file (a ``model.json`` stage with a ``plan`` key works too)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError("cannot read plan JSON", path=p, found=str(exc), fix="pass a plan .json file") from exc
    if "plan" in data and isinstance(data["plan"], dict):
        data = data["plan"]
    return validate_plan(data)
