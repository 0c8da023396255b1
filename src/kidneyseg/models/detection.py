"""Kidney detector (torchvision Faster R-CNN, ResNet-50 FPN or C4) and box derivation.

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


#: ``backbone`` values of :class:`KidneyDetector`.
BACKBONES = ("resnet50-fpn", "resnet50-c4")


class _C4Backbone(nn.Module):
    """ResNet-50 up to ``layer3`` (C4: 1024 channels, stride 16), one feature map ``"0"``."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        from torchvision.models._utils import IntermediateLayerGetter

        self.body = IntermediateLayerGetter(trunk, {"layer3": "0"})
        self.out_channels = 1024

    def forward(self, x: torch.Tensor) -> Any:
        return self.body(x)


class _Res5Head(nn.Module):
    """The C4 detector's box head: ResNet-50 ``layer4`` on each 14x14 RoI, then global average pooling (2048)."""

    def __init__(self, layer4: nn.Module) -> None:
        super().__init__()
        self.layer4 = layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(self.layer4(x), 1), 1)


def _faster_rcnn_c4(num_classes: int, min_size: int, max_size: int, **kwargs: Any) -> nn.Module:
    """torchvision ``FasterRCNN`` on ResNet-50 C4 features, as the original Faster R-CNN (Ren et al. 2015) with a
    ResNet trunk (He et al. 2016): RPN on C4 (15 anchors: sizes 32-512 px, ratios 0.5, 1, 2), RoIAlign 14x14 on
    C4, ``layer4`` + average pooling as the box head."""
    from torchvision.models import resnet50
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.ops import MultiScaleRoIAlign

    trunk = resnet50(weights=None)
    layer4 = trunk.layer4
    anchors = AnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    return FasterRCNN(
        _C4Backbone(trunk), num_classes=None, min_size=min_size, max_size=max_size,
        rpn_anchor_generator=anchors, rpn_head=RPNHead(1024, anchors.num_anchors_per_location()[0]),
        box_roi_pool=MultiScaleRoIAlign(featmap_names=["0"], output_size=14, sampling_ratio=2),
        box_head=_Res5Head(layer4), box_predictor=FastRCNNPredictor(2048, num_classes), **kwargs,
    )


class KidneyDetector(nn.Module):
    """Faster R-CNN with two classes (background, kidney) for 1-channel slices.

    ``forward(images, targets=None)``:

    * ``images``: tensor ``(N, C, H, W)`` (windowed, scaled to [0, 1]) or a
      list of ``(C, H, W)``; 1-channel inputs are repeated to 3 channels.
    * training: ``targets`` is a list of dicts with ``boxes`` float ``(n, 4)``
      and ``labels`` int64 ``(n,)``; returns a dict of losses.
    * eval: returns a list of dicts ``boxes``, ``labels``, ``scores``.

    ``backbone``: ``resnet50-fpn`` (torchvision's ``fasterrcnn_resnet50_fpn``, the default) or
    ``resnet50-c4`` (ResNet-50 C4 features without FPN, ``layer4`` as the box head: the
    detection cascade paper's detector).  Further keyword arguments go to torchvision's
    ``FasterRCNN``, e.g. ``rpn_post_nms_top_n_train`` / ``rpn_post_nms_top_n_test``
    (proposals kept), ``rpn_positive_fraction`` / ``box_positive_fraction`` (share of
    positives among the sampled anchors / RoIs; 0.5 = 1:1), ``box_batch_size_per_image``.

    ``self.net.backbone.body`` is a torchvision ResNet-50 trunk (C4: up to ``layer3``), so a
    torchvision ``resnet50`` state dict loads into it.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, min_size: int = 512, max_size: int = 512,
                 backbone: str = "resnet50-fpn", **kwargs: Any) -> None:
        super().__init__()
        from torchvision.models.detection import fasterrcnn_resnet50_fpn

        from kidneyseg.errors import unknown_name

        self.in_channels = int(in_channels)
        if backbone == "resnet50-fpn":
            self.net = fasterrcnn_resnet50_fpn(
                weights=None, weights_backbone=None, num_classes=num_classes, min_size=min_size, max_size=max_size,
                **kwargs
            )
        elif backbone == "resnet50-c4":
            self.net = _faster_rcnn_c4(num_classes, min_size, max_size, **kwargs)
        else:
            raise unknown_name("detector backbone", backbone, BACKBONES)

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
    from kidneyseg.models.boxes import kidney_slice_boxes, reference_kidneys

    # the kidneys and their slice boxes as the detection evaluation finds them (one rule, kidneyseg.models.boxes)
    kidneys = reference_kidneys(np.moveaxis(np.asarray(label), axis, -1), foreground, max_kidneys=max_kidneys,
                                min_voxels=min_voxels)
    return {k: b.astype(np.float32) for k, b in kidney_slice_boxes(kidneys).items()}


def detection_target(boxes: np.ndarray) -> dict[str, torch.Tensor]:
    """torchvision target dict for ``(n, 4)`` kidney boxes (may be empty)."""
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
    return {"boxes": b, "labels": torch.full((b.shape[0],), KIDNEY_CLASS, dtype=torch.int64)}
