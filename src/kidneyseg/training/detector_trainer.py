"""Training of the kidney detector (Faster R-CNN) on axial slices with kidney boxes.

Samples: ``{"image": float32 (1, H, W) in [0, 1], "boxes": float32 (n, 4)}`` with
``(x1, y1, x2, y2)`` boxes (:mod:`kidneyseg.models.detection`).  Augmentation:
seeded horizontal and vertical flips with the boxes flipped alike, brightness shift.

Validation counts kidney boxes as the detection paper reports them (kidney recall 96.13 %) and as
``kidneyseg evaluate --detections`` does: on every validation slice (background slices included), the
detections with score >= :attr:`DetectorTrainer.score_threshold` (0.5) are matched one-to-one to the
slice's ground-truth boxes, greedily by decreasing score at IoU >= 0.5
(:func:`kidneyseg.models.boxes.match_boxes`); TP, FP and FN are summed over the slices.  The log
(``log.csv``) gets ``recall_50 = TP / (TP + FN)``, ``precision_50 = TP / (TP + FP)`` and ``f1_50``, with the
empty policy of :class:`~kidneyseg.models.boxes.DetectionCounts` (no box and no detection: 1.0).

``best`` is the epoch with the highest ``recall_50``, the criterion used before, now counted one-to-one:
until then a ground-truth box counted as found whenever any detection overlapped it, so one detection
spanning both kidneys counted for two (it is now 1 TP + 1 FN).  Recall stays the criterion because it is
the paper's figure and a missed kidney is never segmented, whereas a false box costs a V-Net crop that
finds nothing; ``precision_50`` is logged beside it to show what that recall costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from kidneyseg.models.boxes import DetectionCounts, box_iou, match_boxes
from kidneyseg.models.detection import detection_target
from kidneyseg.training.trainer import StageTrainer


class DetectorTrainer(StageTrainer):
    """:class:`StageTrainer` with detection batches, flips that move the boxes, and one-to-one box recall.

    ``best`` is chosen by ``recall_50`` (module docstring); ``precision_50`` and ``f1_50`` are logged with it.
    """

    #: Detections with a lower score are dropped before matching (the ``ct-detect-vnet`` stage's default).
    score_threshold = 0.5
    #: Smallest IoU of a match.
    iou_threshold = 0.5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.score_key = "recall_50"

    def _transform(self, extra_keys: tuple[str, ...]) -> Any:
        return None

    def _step(self, batch: list[dict[str, Any]], transform: Any, keys: tuple[str, ...], phase: str,
              seeds: Sequence[int]) -> float:
        images, targets = [], []
        for s, seed in zip(batch, seeds):
            rng = np.random.default_rng(seed)  # one generator per sample: the same flips whichever process takes it
            img = np.asarray(s["image"], dtype=np.float32)
            boxes = np.asarray(s["boxes"], dtype=np.float32).reshape(-1, 4).copy()
            h, w = img.shape[1:]
            if self.cfg.augmentation != "none":
                if rng.random() < 0.5:  # columns reversed: x -> w - x
                    img = img[:, :, ::-1]
                    boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
                if rng.random() < 0.5:  # rows reversed: y -> h - y
                    img = img[:, ::-1, :]
                    boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
                if rng.random() < 0.3:
                    img = img + np.float32(rng.uniform(-0.1, 0.1))
            images.append(torch.from_numpy(np.ascontiguousarray(img)).to(self.device))
            targets.append({k: v.to(self.device) for k, v in detection_target(boxes).items()})
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        losses = self.train_module(images, targets)  # DistributedDataParallel when several processes train
        loss = sum(losses.values())
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def validate(self, samples: list[dict[str, Any]], phase: str | None = None) -> dict[str, float]:
        """Box recall, precision and F1 over ``samples`` (one-to-one matching, module docstring).

        Returns ``{"recall_50", "precision_50", "f1_50", "tp_50", "fp_50", "fn_50"}``.
        """
        self.module.eval()
        counts = DetectionCounts()
        for s in samples:
            gt = np.asarray(s["boxes"], dtype=np.float32).reshape(-1, 4)
            out = self.module([torch.as_tensor(np.asarray(s["image"], dtype=np.float32)).to(self.device)])[0]
            scores = out["scores"].detach().cpu().numpy().astype(np.float64)
            keep = scores >= self.score_threshold
            pred = out["boxes"].detach().cpu().numpy().reshape(-1, 4)[keep]
            c, _ = match_boxes(box_iou(pred, gt), scores[keep], iou_threshold=self.iou_threshold)
            counts = counts + c
        return {"recall_50": counts.recall, "precision_50": counts.precision, "f1_50": counts.f1,
                "tp_50": counts.tp, "fp_50": counts.fp, "fn_50": counts.fn}
