"""Kidney detector (torchvision Faster R-CNN ResNet-50 FPN) and box derivation.

Boxes follow torchvision: ``(x1, y1, x2, y2)`` in pixels, ``x`` along image
columns (array axis 1), ``y`` along rows (axis 0), ``x2``/``y2`` exclusive
(one past the last foreground pixel).  For an axial slice ``vol[:, :, k]`` of
a RAS volume, rows are the ``i`` (R) axis and columns the ``j`` (A) axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

KIDNEY_CLASS = 1


class KidneyDetector(nn.Module):
    """Faster R-CNN with two classes (background, kidney) for 1-channel slices.

    ``forward(images, targets=None)``:

    * ``images``: tensor ``(N, C, H, W)`` (windowed, scaled to [0, 1]) or a
      list of ``(C, H, W)``; 1-channel inputs are repeated to 3 channels.
    * training: ``targets`` is a list of dicts with ``boxes`` float ``(n, 4)``
      and ``labels`` int64 ``(n,)``; returns a dict of losses.
    * eval: returns a list of dicts ``boxes``, ``labels``, ``scores``.

    ``self.net.backbone.body`` is a torchvision ResNet-50 trunk, so a
    torchvision ``resnet50`` state dict loads into it.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, min_size: int = 512, max_size: int = 512, **kwargs: Any) -> None:
        super().__init__()
        from torchvision.models.detection import fasterrcnn_resnet50_fpn

        self.in_channels = int(in_channels)
        self.net = fasterrcnn_resnet50_fpn(
            weights=None, weights_backbone=None, num_classes=num_classes, min_size=min_size, max_size=max_size, **kwargs
        )

    def _prepare(self, images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for im in images:
            if im.shape[0] == 1:
                im = im.expand(3, *im.shape[1:])
            out.append(im)
        return out

    def forward(self, images: torch.Tensor | Sequence[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        return self.net(self._prepare(images), targets)


def boxes_from_slice(label: np.ndarray, foreground: Sequence[int] | None = None, min_pixels: int = 10) -> np.ndarray:
    """One box per kidney in a 2D label map.

    Kidneys are the 8-connected components of the foreground (``label != 0``,
    or ``np.isin(label, foreground)``) with at least ``min_pixels`` pixels.

    Returns
    -------
    numpy.ndarray
        ``(n, 4)`` float32 boxes ``(x1, y1, x2, y2)``, sorted by ``x1``.
    """
    from scipy import ndimage

    fg = label != 0 if foreground is None else np.isin(label, list(foreground))
    comps, _n = ndimage.label(fg, structure=np.ones((3, 3), bool))
    boxes = []
    for idx, sl in enumerate(ndimage.find_objects(comps), start=1):
        if sl is None or int((comps[sl] == idx).sum()) < min_pixels:
            continue
        boxes.append([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop])
    arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return arr[np.argsort(arr[:, 0], kind="stable")] if len(arr) else arr


def boxes_from_volume(
    label: np.ndarray, foreground: Sequence[int] | None = None, max_kidneys: int = 2, min_voxels: int = 100, axis: int = 2
) -> dict[int, np.ndarray]:
    """Per-slice kidney boxes from a 3D label map: one box per kidney per slice.

    Kidneys are the ``max_kidneys`` largest 26-connected 3D components of the
    foreground with at least ``min_voxels`` voxels; in each slice along
    ``axis`` (2 = axial for RAS volumes) the pixels of one kidney give one box,
    even when they fall into several 2D pieces.

    Returns
    -------
    dict
        slice index -> ``(n, 4)`` float32 boxes ``(x1, y1, x2, y2)`` of that
        slice (rows = first remaining axis, columns = second), sorted by ``x1``;
        slices without kidney are absent.
    """
    from scipy import ndimage

    from kidneyseg.preprocessing.geometry import nonzero_box

    fg = label != 0 if foreground is None else np.isin(label, list(foreground))
    comps, n = ndimage.label(fg, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return {}
    sizes = np.bincount(comps.ravel())[1:]
    order = [int(i) + 1 for i in np.argsort(-sizes, kind="stable") if sizes[i] >= min_voxels][:max_kidneys]
    comps = np.moveaxis(comps, axis, -1)
    out: dict[int, list[list[float]]] = {}
    for cid in order:
        mask = comps == cid
        ks = np.nonzero(mask.any(axis=(0, 1)))[0]
        for k in ks:
            box = nonzero_box(mask[:, :, k])
            if box is None:  # pragma: no cover - ks are the slices holding the kidney
                continue
            (r0, r1), (c0, c1) = box
            out.setdefault(int(k), []).append([c0, r0, c1, r1])
    return {k: np.asarray(sorted(v), dtype=np.float32) for k, v in sorted(out.items())}


def detection_target(boxes: np.ndarray) -> dict[str, torch.Tensor]:
    """torchvision target dict for ``(n, 4)`` kidney boxes (may be empty)."""
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
    return {"boxes": b, "labels": torch.full((b.shape[0],), KIDNEY_CLASS, dtype=torch.int64)}
