"""Inference engines on plain ``torch.nn.Module`` networks (no model folder needed).

All engines return softmax **probabilities** as float32 numpy arrays with the
class channel first.  Networks return logits ``(N, C, *spatial)`` (for the
``ensemble-mean`` network, log-probabilities, whose softmax is the mean
probability).

Axis conventions
----------------
* volumes: ``image`` is ``(C_in, I, J, K)`` in the case's RAS voxel order;
  probabilities are ``(C_out, I, J, K)``.
* slice-wise 2D on a volume: axial slices are ``[:, :, :, k]``, fed to the
  2D network as ``(C_in, I, J)`` images (rows = I, columns = J).
* 2D images: ``(C_in, rows, cols)`` -> ``(C_out, rows, cols)``.

Test-time augmentation (``tta=True``) mirrors the input along every
combination of the spatial axes (8 passes in 3D, 4 in 2D), un-mirrors the
outputs and averages the probabilities (nnU-Net's mirroring).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# the detector's boxes live in kidneyseg.models.boxes (training finds them the same way); re-exported here
from kidneyseg.models.boxes import boxes_to_3d as boxes_to_3d
from kidneyseg.models.boxes import detect_slices as detect_slices
from kidneyseg.models.boxes import detection_slices as detection_slices


def _torch():
    from kidneyseg._optional import require

    return require("torch", "running a network")


def mirror_axes_combinations(spatial_dims: int, axes: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """Flip combinations for TTA: ``[(), (2,), (3,), (2, 3), ...]`` over tensor axes ``2..``.

    ``axes`` restricts mirroring to some spatial axes (0-based spatial indices).
    """
    spatial = list(range(spatial_dims)) if axes is None else [int(a) for a in axes]
    tensor_axes = [a + 2 for a in spatial]
    combos: list[tuple[int, ...]] = []
    for r in range(len(tensor_axes) + 1):
        combos.extend(itertools.combinations(tensor_axes, r))
    return combos


def min_size_forward(module: Callable[[Any], Any], min_size: int | None) -> Callable[[Any], Any]:
    """``module`` made to accept inputs smaller than ``min_size`` along a spatial axis.

    A network has a smallest input it can run on (the registry's ``min_size``: InceptionV3's
    stride-2 convolutions leave nothing to convolve under it); a 2D image resampled to the plan
    spacing can be smaller.  Such an input ``(N, C, *spatial)`` is zero-padded at the high end of
    each short axis (as the registry pads to its size multiple) and the logits are cropped back, so
    the output keeps the input's spatial shape.  Inputs at least ``min_size`` go through unchanged.
    """
    if not min_size or int(min_size) <= 1:
        return module
    torch = _torch()
    need_min = int(min_size)

    def forward(x: Any) -> Any:
        size = [int(n) for n in x.shape[2:]]
        need = [max(0, need_min - n) for n in size]
        if not any(need):
            return module(x)
        pad: list[int] = []
        for n in reversed(need):  # F.pad wants the last axis first
            pad += [0, n]
        out = module(torch.nn.functional.pad(x, pad))
        return out[(slice(None), slice(None), *(slice(0, n) for n in size))]

    return forward


def predict_with_tta(
    forward: Callable[[Any], Any], x: Any, *, tta: bool, spatial_dims: int, mirror_axes: Sequence[int] | None = None
) -> Any:
    """Softmax probabilities of ``forward(x)``, averaged over mirrored copies when ``tta``.

    ``x`` is a tensor ``(N, C, *spatial)``; returns ``(N, C_out, *spatial)``.
    """
    torch = _torch()
    combos = mirror_axes_combinations(spatial_dims, mirror_axes) if tta else [()]
    acc: Any = None
    for flip in combos:
        xi = torch.flip(x, flip) if flip else x
        p = torch.softmax(forward(xi).float(), dim=1)
        if flip:
            p = torch.flip(p, flip)
        acc = p if acc is None else acc + p
    return acc / len(combos)


def _on_numpy(module: Any) -> bool:
    """Whether ``module`` runs on numpy arrays (an ONNX Runtime network): no torch needed."""
    return bool(getattr(module, "runs_on_numpy", False))


def _min_size_numpy(module: Callable[[Any], Any], min_size: int | None) -> Callable[[np.ndarray], np.ndarray]:
    """:func:`min_size_forward` for a network on numpy arrays (zero padding at the high end, cropped back)."""
    if not min_size or int(min_size) <= 1:
        return module
    need_min = int(min_size)

    def forward(x: np.ndarray) -> np.ndarray:
        size = [int(n) for n in x.shape[2:]]
        need = [max(0, need_min - n) for n in size]
        if not any(need):
            return np.asarray(module(x))
        out = np.asarray(module(np.pad(x, [(0, 0), (0, 0)] + [(0, n) for n in need])))
        return out[(slice(None), slice(None), *(slice(0, n) for n in size))]

    return forward


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 1 of ``(N, C, ...)`` float32 logits."""
    z = logits.astype(np.float32, copy=True)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def predict_with_tta_numpy(forward: Callable[[np.ndarray], np.ndarray], x: np.ndarray, *, tta: bool,
                           spatial_dims: int, mirror_axes: Sequence[int] | None = None) -> np.ndarray:
    """:func:`predict_with_tta` on numpy arrays: ``(N, C, *spatial)`` float32 -> softmax ``(N, C_out, *spatial)``."""
    combos = mirror_axes_combinations(spatial_dims, mirror_axes) if tta else [()]
    acc: np.ndarray | None = None
    for flip in combos:
        xi = np.ascontiguousarray(np.flip(x, flip)) if flip else x
        p = _softmax(np.asarray(forward(xi)))
        if flip:
            p = np.flip(p, flip)
        acc = p if acc is None else acc + p
    if acc is None:  # pragma: no cover - combos always holds ()
        raise ValueError("no forward pass")
    return np.ascontiguousarray(acc / len(combos), dtype=np.float32) if len(combos) > 1 else acc


def sliding_window_3d(
    module: Any,
    image: np.ndarray,
    patch_size: Sequence[int],
    *,
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    tta: bool = False,
    mirror_axes: Sequence[int] | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """Gaussian-weighted sliding-window prediction of a 3D network (MONAI).

    Parameters
    ----------
    module:
        3D segmentation network in eval mode, logits ``(N, C_out, X, Y, Z)``.
    image:
        ``(C_in, I, J, K)`` float32 (normalised) volume.
    patch_size:
        Window size in voxels ``(pi, pj, pk)``; volumes smaller than it are padded.
    overlap:
        Fraction of overlap between windows (0.5 as nnU-Net).
    tta:
        Mirror along all spatial axes (or ``mirror_axes``) and average.

    Returns
    -------
    numpy.ndarray
        ``(C_out, I, J, K)`` float32 probabilities.
    """
    torch = _torch()
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(device)
    roi = tuple(int(p) for p in patch_size)

    def window_probs(batch: Any) -> Any:
        return predict_with_tta(module, batch, tta=tta, spatial_dims=3, mirror_axes=mirror_axes)

    with torch.inference_mode():
        probs = sliding_window_inference(
            x, roi_size=roi, sw_batch_size=sw_batch_size, predictor=window_probs, overlap=overlap,
            mode="gaussian", sigma_scale=0.125, padding_mode="constant", cval=float(x.min()) if x.numel() else 0.0,
        )
    return probs[0].cpu().numpy().astype(np.float32, copy=False)


def predict_2d(
    module: Any,
    image: np.ndarray,
    *,
    tta: bool = False,
    mirror_axes: Sequence[int] | None = None,
    device: str = "cpu",
    min_size: int | None = None,
) -> np.ndarray:
    """Whole-image prediction of a 2D network: ``(C_in, rows, cols)`` -> ``(C_out, rows, cols)``.

    2D networks are fully convolutional (the registry pads to the encoder's
    multiple), so the image is fed whole at the plan's spacing; an image smaller
    than the network's ``min_size`` is padded to it and cropped back
    (:func:`min_size_forward`).  ``mirror_axes`` restricts TTA mirroring to these
    axes (0 = rows, 1 = columns).
    """
    if _on_numpy(module):
        x_np = np.ascontiguousarray(image, dtype=np.float32)[None]
        p_np = predict_with_tta_numpy(_min_size_numpy(module, min_size), x_np, tta=tta, spatial_dims=2,
                                      mirror_axes=mirror_axes)
        return p_np[0]
    torch = _torch()
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(device)
    forward = min_size_forward(module, min_size)
    with torch.inference_mode():
        p = predict_with_tta(forward, x, tta=tta, spatial_dims=2, mirror_axes=mirror_axes)
    return p[0].cpu().numpy().astype(np.float32, copy=False)


def predict_slicewise(
    module: Any,
    volume: np.ndarray,
    *,
    batch_size: int = 8,
    tta: bool = False,
    mirror_axes: Sequence[int] | None = None,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
    min_size: int | None = None,
) -> np.ndarray:
    """Batched slice-wise prediction of a 2D network on a volume.

    Parameters
    ----------
    volume:
        ``(C_in, I, J, K)`` float32; slices ``[:, :, :, k]`` (axial for RAS).
    batch_size:
        Slices per forward pass.
    mirror_axes:
        In-plane axes (0 = I, 1 = J) TTA may mirror; None: both.
    min_size:
        The network's smallest input per axis: smaller slices are padded and cropped back
        (:func:`min_size_forward`).

    Returns
    -------
    numpy.ndarray
        ``(C_out, I, J, K)`` float32 probabilities, slices stacked back along K.
    """
    vol = np.ascontiguousarray(np.moveaxis(np.asarray(volume, dtype=np.float32), -1, 0))  # (K, C, I, J)
    run: Callable[[np.ndarray], np.ndarray]
    if _on_numpy(module):
        forward_np = _min_size_numpy(module, min_size)

        def run(x: np.ndarray) -> np.ndarray:
            return predict_with_tta_numpy(forward_np, x, tta=tta, spatial_dims=2, mirror_axes=mirror_axes)
    else:
        torch = _torch()
        forward = min_size_forward(module, min_size)

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                t = torch.from_numpy(x).to(device)
                return np.asarray(predict_with_tta(forward, t, tta=tta, spatial_dims=2,
                                                   mirror_axes=mirror_axes).cpu().numpy())

    out: np.ndarray | None = None
    for start in range(0, vol.shape[0], batch_size):
        p = run(vol[start : start + batch_size])
        if out is None:
            out = np.empty((p.shape[1],) + volume.shape[1:], dtype=np.float32)
        out[..., start : start + p.shape[0]] = np.moveaxis(p, 0, -1)
        if progress is not None:
            progress(p.shape[0])
    if out is None:
        raise ValueError("volume has no slices")
    return out
