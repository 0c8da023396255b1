"""Denoising chosen by name (scikit-image / SciPy implementations).

The CT ensemble paper compares median, bilateral and non-local-means filtering
of the CT slices before segmentation; ultrasound gets speckle reduction.

=============== ==================================================================================
method          implementation
=============== ==================================================================================
``median``      :func:`scipy.ndimage.median_filter`, ``size`` voxels (in-plane only when
                ``slicewise``)
``bilateral``   :func:`skimage.restoration.denoise_bilateral` per 2D slice, ``sigma_color`` in
                image units (HU for CT; default: estimated noise x 2), ``sigma_spatial`` pixels
``nlmeans``     :func:`skimage.restoration.denoise_nl_means` (2D or 3D), ``h = h_factor x sigma``
                with sigma from :func:`skimage.restoration.estimate_sigma`
``speckle``     ultrasound speckle reduction: log compression (multiplicative speckle becomes
                additive), non-local means, exponent back (homomorphic filtering)
``gaussian``    :func:`scipy.ndimage.gaussian_filter`, ``sigma`` voxels
=============== ==================================================================================

All return float32 of the input shape; volumes are ``(I, J, K)`` with axial
slices ``[:, :, k]`` (RAS), images ``(rows, cols)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from kidneyseg.errors import KidneysegError, unknown_name

DENOISE_METHODS = ("median", "bilateral", "nlmeans", "speckle", "gaussian")


def _slicewise(image: np.ndarray, fn) -> np.ndarray:
    if image.ndim == 2:
        return fn(image)
    out = np.empty_like(image)
    for k in range(image.shape[2]):
        out[:, :, k] = fn(image[:, :, k])
    return out


def _noise_sigma(image: np.ndarray) -> float:
    from skimage.restoration import estimate_sigma

    sample = image if image.ndim == 2 else image[:, :, image.shape[2] // 2]
    return max(float(estimate_sigma(sample, channel_axis=None)), 1e-6)


def median(image: np.ndarray, size: int = 3, slicewise: bool = False) -> np.ndarray:
    """Median filter with a ``size``-voxel cube (square in-plane when ``slicewise``)."""
    from scipy import ndimage

    arr = np.asarray(image, dtype=np.float32)
    footprint = (size, size, 1) if (slicewise and arr.ndim == 3) else (size,) * arr.ndim
    return ndimage.median_filter(arr, size=footprint)


def bilateral(image: np.ndarray, sigma_color: float | None = None, sigma_spatial: float = 1.5,
              bins: int = 1024) -> np.ndarray:
    """Edge-preserving bilateral filter per 2D slice; ``sigma_color`` in image units, ``bins`` range-kernel bins."""
    from skimage.restoration import denoise_bilateral

    arr = np.asarray(image, dtype=np.float32)
    sc = float(sigma_color) if sigma_color is not None else 2.0 * _noise_sigma(arr)
    offset = float(arr.min())  # skimage bins intensities from 0: shift, filter, shift back
    shifted = arr - offset
    out = _slicewise(shifted, lambda s: denoise_bilateral(s, sigma_color=sc, sigma_spatial=sigma_spatial,
                                                          bins=bins, channel_axis=None))
    return (out + offset).astype(np.float32)


def nlmeans(image: np.ndarray, h_factor: float = 0.8, patch_size: int = 5, patch_distance: int = 6,
            slicewise: bool = True) -> np.ndarray:
    """Non-local means (fast mode); ``h = h_factor * estimated noise sigma``."""
    from skimage.restoration import denoise_nl_means

    arr = np.asarray(image, dtype=np.float32)
    sigma = _noise_sigma(arr)

    def f(a: np.ndarray) -> np.ndarray:
        return denoise_nl_means(a, h=h_factor * sigma, sigma=sigma, fast_mode=True, patch_size=patch_size,
                                patch_distance=patch_distance, channel_axis=None).astype(np.float32)

    return _slicewise(arr, f) if slicewise else f(arr)


def speckle(image: np.ndarray, h_factor: float = 1.0, patch_size: int = 5, patch_distance: int = 6) -> np.ndarray:
    """Homomorphic speckle reduction for B-mode ultrasound (values >= 0, e.g. 0..255)."""
    arr = np.asarray(image, dtype=np.float32)
    if arr.min() < 0:
        raise KidneysegError("speckle reduction needs non-negative B-mode intensities", found=float(arr.min()),
                             expected=">= 0", fix="apply it before intensity normalisation")
    logimg = np.log1p(arr)
    out = nlmeans(logimg, h_factor=h_factor, patch_size=patch_size, patch_distance=patch_distance)
    return np.expm1(out).astype(np.float32)


def gaussian(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Gaussian smoothing, ``sigma`` in voxels."""
    from scipy import ndimage

    return ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), sigma)


_FUNCS: dict[str, Callable[..., np.ndarray]] = {"median": median, "bilateral": bilateral, "nlmeans": nlmeans, "speckle": speckle, "gaussian": gaussian}


def denoise(image: np.ndarray, spec: dict[str, Any] | str | None) -> np.ndarray:
    """Apply a plan's ``denoise`` entry: ``{"method": NAME, **parameters}`` or just ``NAME``."""
    if spec is None:
        return np.asarray(image, dtype=np.float32)
    if isinstance(spec, str):
        spec = {"method": spec}
    params = dict(spec)
    method = str(params.pop("method", None))
    if method not in _FUNCS:
        raise unknown_name("denoising method", method, DENOISE_METHODS)
    try:
        return _FUNCS[method](image, **params)
    except TypeError as exc:
        raise KidneysegError(f"bad parameters for denoising method '{method}'", found=sorted(params),
                             expected=str(exc), fix="see kidneyseg.preprocessing.denoise") from exc
