"""Intensity windows and normalisation (array functions; images only, never labels).

All functions take an image array of any shape (``(I, J, K)`` volume or
``(rows, cols)`` image) and return float32 of the same shape.

* :func:`window` - clip to ``[low, high]`` (HU for CT) and scale to ``[0, 1]``
  (MONAI ``ScaleIntensityRange(a_min=low, a_max=high, b_min=0, b_max=1, clip=True)``).
  The detection cascade uses the abdominal window -60..300 HU (:data:`KIDNEY_WINDOW_HU`).
* :func:`zscore` - fixed clip and z-score with data-set statistics (nnU-Net's CT
  normalisation: clip to the foreground 0.5/99.5 percentiles, subtract the
  foreground mean, divide by its std).
* :func:`percentile_zscore` - per image: clip to its own percentiles, then
  z-score (MR and ultrasound, whose intensities have no absolute scale).
* :func:`normalize` - dispatch on a plan's ``intensity`` dict.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kidneyseg.errors import KidneysegError, unknown_name

KIDNEY_WINDOW_HU = (-60.0, 300.0)
INTENSITY_KINDS = ("window", "zscore", "percentile_zscore", "none")


def window(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip ``image`` to ``[low, high]`` and scale linearly to ``[0, 1]`` (float32)."""
    if not high > low:
        raise KidneysegError("intensity window is empty", found=(low, high), expected="low < high",
                             fix="give the window as LOW HIGH with LOW < HIGH (e.g. -60 300 HU)")
    out = np.clip(np.asarray(image, dtype=np.float32), low, high)
    out -= np.float32(low)
    out /= np.float32(high - low)
    return out


def zscore(image: np.ndarray, mean: float, std: float, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Clip to ``[low, high]`` (if given), subtract ``mean`` and divide by ``std`` (float32)."""
    if not std > 0:
        raise KidneysegError("z-score standard deviation is not positive", found=std, expected="> 0",
                             fix="recompute the fingerprint on images with foreground")
    out = np.asarray(image, dtype=np.float32).copy()
    if low is not None or high is not None:
        np.clip(out, low, high, out=out)
    out -= np.float32(mean)
    out /= np.float32(std)
    return out


def percentile_zscore(image: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5,
                      mask: np.ndarray | None = None) -> np.ndarray:
    """Per-image normalisation: clip to the image's percentiles, then zero mean, unit std.

    ``mask`` (same shape, bool) restricts the statistics to e.g. the body or the
    ultrasound fan; the whole image is transformed.
    """
    arr = np.asarray(image, dtype=np.float32)
    vals = arr[mask] if mask is not None and mask.any() else arr
    lo, hi = np.percentile(vals, [low_pct, high_pct])
    out = np.clip(arr, lo, hi)
    clipped = np.clip(vals, lo, hi)
    std = float(clipped.std())
    out = out - np.float32(clipped.mean())
    if std > 1e-8:
        out /= np.float32(std)
    return out.astype(np.float32, copy=False)


def normalize(image: np.ndarray, spec: dict[str, Any] | None) -> np.ndarray:
    """Apply a plan's ``intensity`` entry (see docs/CONTRACTS.md); ``None`` only casts to float32."""
    if spec is None:
        return np.asarray(image, dtype=np.float32)
    kind = spec.get("kind")
    try:
        if kind == "window":
            return window(image, float(spec["low"]), float(spec["high"]))
        if kind == "zscore":
            return zscore(image, float(spec["mean"]), float(spec["std"]), spec.get("low"), spec.get("high"))
        if kind == "percentile_zscore":
            return percentile_zscore(image, float(spec.get("low_pct", 0.5)), float(spec.get("high_pct", 99.5)))
        if kind == "none":
            return np.asarray(image, dtype=np.float32)
    except KeyError as exc:
        raise KidneysegError(f"intensity '{kind}' lacks a parameter", found=sorted(spec), expected=str(exc),
                             fix="see the plan schema in docs/CONTRACTS.md") from exc
    raise unknown_name("intensity normalisation", str(kind), INTENSITY_KINDS)
