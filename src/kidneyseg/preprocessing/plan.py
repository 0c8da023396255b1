"""The preprocessing plan: derived from a data-set fingerprint, saved with the weights, replayed on every case.

The schema is in docs/CONTRACTS.md::

    {"modality": "ct", "spatial_dims": 2, "orientation": "RAS",
     "target_spacing": [0.8, 0.8], "patch_size": [256, 256],
     "intensity": {"kind": "window", "low": -60, "high": 300},
     "denoise": null, "labels": {"0": "background", "1": "kidney", "2": "tumor"}}

In code a plan is a frozen :class:`Plan` (``Plan.from_json`` validates the JSON
form and names the file it came from; ``Plan.to_json`` writes it back).  Optional
keys: ``"crop": "body"`` (crop to the body before resampling, recorded in
``history``) and ``"context_slices"`` (2.5D input).

:func:`apply_plan` reorients (3D), crops (optional), resamples (in-plane only
for a 2D plan on a volume), denoises and normalises; every grid change is in
``case.history`` so :func:`kidneyseg.preprocessing.geometry.undo` brings a
prediction back to the input grid.  :meth:`Plan.from_fingerprint` derives a
plan from the data set's :class:`~kidneyseg.data.fingerprint.Fingerprint` nnU-Net style (median spacing, patch from the median shape, CT z-score
with foreground statistics, per-image z-score for MR/US).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kidneyseg.case import Case
from kidneyseg.errors import InputError, KidneysegError
from kidneyseg.labels import get_task
from kidneyseg.preprocessing.denoise import denoise
from kidneyseg.preprocessing.geometry import reorient, reoriented_axes, resample
from kidneyseg.preprocessing.intensity import KIDNEY_WINDOW_HU, normalize

if TYPE_CHECKING:
    from kidneyseg.data.fingerprint import Fingerprint

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
#: Keys a plan may hold beyond :data:`PLAN_KEYS` (written only when set).
OPTIONAL_PLAN_KEYS = ("context_slices", "crop")

# 3D patch budget in voxels (about 160 x 160 x 80), as nnU-Net sizes patches to GPU memory.
PATCH_BUDGET_3D = 160 * 160 * 80


@dataclass(frozen=True)
class Plan:
    """How a stage sees its cases: the preprocessing replayed on every case, saved in each stage's ``model.json``.

    Attributes
    ----------
    modality:
        ``"ct"``, ``"mr"`` or ``"us"``.
    spatial_dims:
        2 (slice-wise network) or 3.
    orientation:
        Axis codes volumes are reoriented to (``"RAS"``, :data:`SLICE_ORIENTATION`), or ``None``.
    target_spacing:
        mm per axis of the network grid (``spatial_dims`` values; a 2D plan on a volume resamples axes 0
        and 1 of the reoriented volume), or ``None`` to keep the input spacing.
    patch_size:
        Network input size in voxels (``spatial_dims`` values).
    intensity:
        Normalisation (:func:`kidneyseg.preprocessing.intensity.normalize`): ``{"kind": "window", "low",
        "high"}`` (HU), ``"zscore"`` with ``mean``/``std``/``low``/``high``, ``"percentile_zscore"``...
    denoise:
        ``None`` or a :func:`kidneyseg.preprocessing.denoise.denoise` spec.
    labels:
        ``{"value": name}`` of the stage's output.
    context_slices:
        2D plans only: neighbours per side stacked as input channels (2.5D); 0 for none.
    crop:
        ``"body"`` crops to the body before resampling; ``None`` for no crop.
    """

    modality: str
    spatial_dims: int
    orientation: str | None
    target_spacing: tuple[float, ...] | None
    patch_size: tuple[int, ...]
    intensity: dict[str, Any] | None
    denoise: dict[str, Any] | None
    labels: dict[str, str]
    context_slices: int = 0
    crop: str | None = None

    # ------------------------------------------------------------------ JSON
    @classmethod
    def from_json(cls, data: Mapping[str, Any] | Plan, path: str | os.PathLike[str] | None = None) -> Plan:
        """Validate the JSON form of a plan (a ``model.json`` stage's ``"plan"``, ``data check --plan``'s file).

        Errors name ``path`` (the file the plan came from), the key and value found, and the fix.
        """
        if isinstance(data, Plan):
            return data
        where = f" in {path}" if path is not None else ""
        if not isinstance(data, Mapping):
            raise KidneysegError(f"plan{where} is not a JSON object", path=path, found=type(data).__name__,
                                 expected="a JSON object with " + ", ".join(PLAN_KEYS))
        missing = [k for k in PLAN_KEYS if k not in data]
        if missing:
            raise KidneysegError("plan lacks keys", path=path, found=", ".join(missing),
                                 expected=", ".join(PLAN_KEYS),
                                 fix="derive the plan with `kidneyseg data check --plan` or see docs/CONTRACTS.md")
        unknown = sorted(k for k in data if k not in PLAN_KEYS + OPTIONAL_PLAN_KEYS)
        if unknown:
            raise KidneysegError("plan holds unknown keys", path=path, found=", ".join(unknown),
                                 expected=", ".join(PLAN_KEYS + OPTIONAL_PLAN_KEYS),
                                 fix="remove or correct them (a typo is ignored nowhere)")
        dims = data["spatial_dims"]
        if dims not in (2, 3) or isinstance(dims, bool):
            raise KidneysegError("plan spatial_dims", path=path, found=dims, expected="2 or 3")
        if data["modality"] not in ("ct", "mr", "us"):
            raise KidneysegError("plan modality", path=path, found=data["modality"], expected="ct, mr or us")
        ts = data["target_spacing"]
        try:
            target = None if ts is None else tuple(float(s) for s in ts)
        except (TypeError, ValueError):
            target = ()
        if target is not None and (len(target) != dims or any(not (s > 0) for s in target)):
            raise KidneysegError("plan target_spacing", path=path, found=ts,
                                 expected=f"null or {dims} positive values in mm")
        ps = data["patch_size"]
        try:
            patch = tuple(int(p) for p in ps)
        except (TypeError, ValueError):
            patch = ()
        if len(patch) != dims or any(p < 1 for p in patch):
            raise KidneysegError("plan patch_size", path=path, found=ps, expected=f"{dims} sizes in voxels")
        ctx = data.get("context_slices", 0) or 0
        if ctx and (dims != 2 or not isinstance(ctx, int) or isinstance(ctx, bool) or ctx < 0):
            raise KidneysegError("plan context_slices", path=path, found=ctx,
                                 expected="a whole number >= 0, for 2D (slice-wise) plans only",
                                 fix="remove context_slices or set spatial_dims 2")
        crop = data.get("crop")
        if crop not in (None, "body"):
            raise KidneysegError("plan crop", path=path, found=crop, expected='null or "body"')
        for key in ("intensity", "denoise"):
            if data[key] is not None and not isinstance(data[key], Mapping):
                raise KidneysegError(f"plan {key}", path=path, found=data[key], expected="null or a JSON object")
        labels = data["labels"]
        if not isinstance(labels, Mapping) or not labels:
            raise KidneysegError("plan labels", path=path, found=labels, expected='{"0": "background", ...}')
        orientation = data["orientation"]
        return cls(
            modality=str(data["modality"]), spatial_dims=int(dims),
            orientation=None if orientation in (None, "") else str(orientation),
            target_spacing=target, patch_size=patch,
            intensity=None if data["intensity"] is None else json.loads(json.dumps(data["intensity"])),
            denoise=None if data["denoise"] is None else json.loads(json.dumps(data["denoise"])),
            labels={str(k): str(v) for k, v in labels.items()},
            context_slices=int(ctx), crop=crop,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON form (lists, not tuples); optional keys only where set, as model folders have always held."""
        out: dict[str, Any] = {
            "modality": self.modality, "spatial_dims": self.spatial_dims, "orientation": self.orientation,
            "target_spacing": None if self.target_spacing is None else list(self.target_spacing),
            "patch_size": list(self.patch_size),
            "intensity": None if self.intensity is None else dict(self.intensity),
            "denoise": None if self.denoise is None else dict(self.denoise),
            "labels": dict(self.labels),
        }
        if self.context_slices:
            out["context_slices"] = self.context_slices
        if self.crop is not None:
            out["crop"] = self.crop
        return out

    def updated(self, changes: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> Plan:
        """A new plan with the JSON keys ``changes`` replaced (validated like :meth:`from_json`)."""
        return Plan.from_json({**self.to_json(), **dict(changes)}, path=path)

    def preprocessing_key(self) -> str:
        """Identity of what :func:`apply_plan` does (equal keys: equal preprocessed cases; for caches)."""
        j = self.to_json()
        return json.dumps({k: j.get(k) for k in ("orientation", "target_spacing", "intensity", "denoise", "crop",
                                                 "spatial_dims")}, sort_keys=True)

    # ------------------------------------------------------------------ derivation
    @classmethod
    def from_fingerprint(cls, fingerprint: Fingerprint | Mapping[str, Any], spatial_dims: int,
                         modality: str | None = None) -> Plan:
        """Derive a plan nnU-Net style from a data set's :class:`~kidneyseg.data.fingerprint.Fingerprint`.

        * target spacing: median spacing per axis (RAS axis order for volumes); for
          3D with anisotropy above 3 the coarse axis takes the 10th percentile of its
          spacings (nnU-Net); a 2D plan on volumes keeps the in-plane axes 0 and 1.
        * patch size: median shape at the target spacing, rounded up to a multiple
          of 32 (2D, 64..512) or 16 (3D, 32..192, shrunk to ~2M voxels).
        * intensity: CT - z-score with the foreground mean/std clipped to the
          foreground 0.5/99.5 percentiles (fixed window -60..300 HU when the data set
          has no images); MR and US - per-image percentile z-score.
        """
        from kidneyseg.data.fingerprint import Fingerprint

        fp = fingerprint if isinstance(fingerprint, Fingerprint) else Fingerprint.from_json(fingerprint)
        return Plan.from_json(_derive(fp, spatial_dims, modality))


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


def validate_plan(plan: Mapping[str, Any] | Plan, path: str | os.PathLike[str] | None = None) -> Plan:
    """The :class:`Plan` of a plan's JSON form (raises :class:`KidneysegError` naming ``path``)."""
    return Plan.from_json(plan, path=path)


def apply_plan(case: Case, plan: Plan | Mapping[str, Any]) -> Case:
    """Preprocess ``case`` as ``plan`` says; returns a new case with float32 image.

    Steps: reorient to ``plan.orientation`` (3D cases only; a 2D CT/MR plan
    without one reorients volumes to :data:`SLICE_ORIENTATION`), optional body
    crop, resample to ``target_spacing`` (a 2D plan on a volume resamples axes
    0 and 1 of the reoriented volume and keeps axis 2, so axial slices are
    ``[:, :, k]``), denoise, normalise intensities.  The label follows every
    grid step with nearest neighbour and is never denoised or normalised.
    An image without a label and without a body crop is resampled on its stored axes before it is
    reoriented (the same voxels, grid and undo; recorded as ``resample`` then ``reorient``), which spares a
    full-size transposing copy of the input.
    ``case.meta["plan"]`` holds the plan applied (its JSON form).  A plan's JSON
    form (a dict) is accepted and validated.
    """
    plan = Plan.from_json(plan)
    out = case
    orientation = plan.orientation
    if case.ndim == 3 and not orientation and plan.spatial_dims == 2:
        # a slice-wise model from 2D images (folders written before SLICE_ORIENTATION): axial slices must lie
        # along axis 2 whatever the file's axis order (KiTS volumes are stored I, P, L)
        orientation = slice_orientation(plan.modality)
    if case.ndim == 3 and orientation and case.label is None and plan.crop is None and plan.target_spacing is not None:
        # an image alone: resample on the file's own axes, then reorient the (smaller) result. The same voxels
        # as reorienting first (corner-aligned linear resampling commutes with axis permutations and flips),
        # without a full-size transposing copy of the input (0.3-0.7 s on a 512x512x200 CT read from NIfTI).
        # Not with a label: nearest-neighbour ties do not commute with flips, so training keeps the order below.
        axes = reoriented_axes(case.affine, orientation)
        spacing_r = tuple(case.spacing[axes.index(j)] for j in range(3))
        target_r = _target_spacing(plan, spacing_r, 3, case)
        if not np.allclose(target_r, spacing_r, rtol=1e-3, atol=1e-4):
            out = resample(out, tuple(target_r[axes[i]] for i in range(3)), order=1)
        out = reorient(out, orientation)
    else:
        if case.ndim == 3 and orientation:
            out = reorient(out, orientation)
        else:
            out = out.copy()
        if plan.crop == "body":
            from kidneyseg.preprocessing.body import crop_to_body

            out = crop_to_body(out)
        if plan.target_spacing is not None:
            spacing = _target_spacing(plan, out.spacing, out.ndim, case)
            if not np.allclose(spacing, out.spacing, rtol=1e-3, atol=1e-4):
                out = resample(out, spacing, order=1)
    if out.image is not None:
        img = out.image
        if plan.denoise:
            img = denoise(img, plan.denoise)
        out.image = normalize(img, plan.intensity)
    out.meta["plan"] = plan.to_json()
    return out


def _target_spacing(plan: Plan, spacing: Sequence[float], ndim: int, case: Case) -> tuple[float, ...]:
    """The spacing ``plan`` resamples a case of ``ndim`` axes and ``spacing`` (mm, in the plan's orientation) to:
    a 2D plan on a volume keeps axis 2's spacing."""
    target = plan.target_spacing
    if target is None:
        raise KidneysegError("the plan has no target spacing", expected="a plan with target_spacing")
    if ndim == 3 and plan.spatial_dims == 2:
        return (float(target[0]), float(target[1]), float(spacing[2]))
    if ndim == len(target):
        return tuple(float(t) for t in target)
    raise InputError(
        "plan does not fit the case dimensionality",
        path=case.source,
        found=f"{ndim}D case",
        expected=f"a volume or an image for a {plan.spatial_dims}D plan with spacing {list(target)}",
        fix="use a 2D model for 2D images and a 3D or 2D model for volumes",
    )


def _median(values: list[list[float]]) -> list[float]:
    return [float(v) for v in np.median(np.asarray(values, dtype=float), axis=0)]


def _round_patch(size: float, multiple: int, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, multiple * math.ceil(size / multiple))))


def _derive(fp: Fingerprint, spatial_dims: int, modality: str | None) -> dict[str, Any]:
    """The JSON form of :meth:`Plan.from_fingerprint` (see there)."""
    if spatial_dims not in (2, 3):
        raise KidneysegError("spatial_dims", found=spatial_dims, expected="2 or 3")
    modality = modality or fp.modality or "ct"
    spacings: list[list[float]] = [list(s) for s in fp.spacings]
    shapes: list[list[float]] = [[float(n) for n in s] for s in fp.shapes]
    data_dims = fp.spatial_dims
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
    fg = fp.intensity_foreground
    intensity: dict[str, Any]
    if modality == "ct":
        if fg.get("std"):
            intensity = {"kind": "zscore", "mean": round(float(fg["mean"]), 3), "std": round(float(fg["std"]), 3),
                         "low": round(float(fg["p00_5"]), 3), "high": round(float(fg["p99_5"]), 3)}
        else:
            intensity = {"kind": "window", "low": KIDNEY_WINDOW_HU[0], "high": KIDNEY_WINDOW_HU[1]}
    else:
        intensity = {"kind": "percentile_zscore", "low_pct": 0.5, "high_pct": 99.5}
    labels = fp.labels or {str(k): v for k, v in get_task(fp.task or "binary").labels.items()}
    return {
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


def plan_from_fingerprint(fingerprint: Fingerprint | Mapping[str, Any], spatial_dims: int,
                          modality: str | None = None) -> Plan:
    """:meth:`Plan.from_fingerprint` (the one derivation; ``data check --plan`` and ``train`` call it)."""
    return Plan.from_fingerprint(fingerprint, spatial_dims, modality)


def save_plan(plan: Plan | Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a plan's JSON form, indented (atomically)."""
    from kidneyseg.io import atomic_path

    plan = Plan.from_json(plan)
    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.write_text(json.dumps(plan.to_json(), indent=2) + "\n")
    return p


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read and validate a plan JSON file (a ``model.json`` stage with a ``plan`` key works too)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError("cannot read plan JSON", path=p, found=str(exc), fix="pass a plan .json file") from exc
    if isinstance(data, dict) and isinstance(data.get("plan"), dict):
        data = data["plan"]
    return Plan.from_json(data, path=p)
