"""Training of the kidney detector (Faster R-CNN) on axial slices with kidney boxes.

Samples: ``{"image": float32 (1, H, W) in [0, 1], "boxes": float32 (n, 4)}`` with
``(x1, y1, x2, y2)`` boxes (:mod:`kidneyseg.models.detection`).  Augmentation:
seeded horizontal and vertical flips with the boxes flipped alike, brightness shift.
Validation score ``recall_50``: fraction of ground-truth boxes matched (IoU >= 0.5) by
a detection with score >= 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from kidneyseg.models.detection import detection_target
from kidneyseg.training.trainer import StageTrainer


class DetectorTrainer(StageTrainer):
    """:class:`StageTrainer` with detection batches, flips that move the boxes, and box recall."""

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
        from torchvision.ops import box_iou

        self.module.eval()
        found = total = 0
        for s in samples:
            gt = torch.as_tensor(np.asarray(s["boxes"], dtype=np.float32).reshape(-1, 4))
            if len(gt) == 0:
                continue
            out = self.module([torch.as_tensor(np.asarray(s["image"], dtype=np.float32)).to(self.device)])[0]
            pred = out["boxes"][out["scores"] >= 0.5].cpu()
            total += len(gt)
            if len(pred):
                found += int((box_iou(gt, pred).max(dim=1).values >= 0.5).sum())
        return {"recall_50": found / total if total else 1.0}
