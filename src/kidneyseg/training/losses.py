"""Segmentation losses by name.

Every loss takes logits ``(N, C, *spatial)`` and an integer target
``(N, 1, *spatial)`` (class index per voxel, ``0..C-1``) and returns a scalar.

========================= ==================================================================
name                      definition
========================= ==================================================================
``dice-ce``               MONAI ``DiceCELoss`` (softmax Dice + cross-entropy), nnU-Net style
``bce-dice``              binary cross-entropy on one-hot targets (sigmoid per channel) +
                          sigmoid Dice (CT ensemble transfer-learning paper)
``weighted-ce-dice``      class-weighted cross-entropy + softmax Dice (3-step cascade paper);
                          ``class_weights`` per channel, default from the training labels
``dice``                  plain softmax Dice (MONAI ``DiceLoss``)
========================= ==================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kidneyseg.errors import KidneysegError, unknown_name


class DiceCE(nn.Module):
    """Softmax Dice + cross-entropy (optionally class-weighted)."""

    def __init__(self, class_weights: Sequence[float] | None = None, dice_weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(to_onehot_y=True, softmax=True, include_background=False, smooth_nr=1e-5, smooth_dr=1e-5)
        self.register_buffer("weight", None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32))
        self.dice_weight, self.ce_weight = float(dice_weight), float(ce_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check(logits, target, self.weight)
        ce = F.cross_entropy(logits, target[:, 0].long(), weight=self.weight)
        return self.dice_weight * self.dice(logits, target) + self.ce_weight * ce


class BCEDice(nn.Module):
    """Per-channel sigmoid BCE against one-hot targets + sigmoid Dice."""

    def __init__(self) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(to_onehot_y=True, sigmoid=True, include_background=False, smooth_nr=1e-5, smooth_dr=1e-5)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check(logits, target, None)
        onehot = F.one_hot(target[:, 0].long(), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, onehot) + self.dice(logits, target)


class Dice(nn.Module):
    """Plain softmax Dice over the foreground channels."""

    def __init__(self) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(to_onehot_y=True, softmax=True, include_background=False, smooth_nr=1e-5, smooth_dr=1e-5)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check(logits, target, None)
        return self.dice(logits, target)


def _check(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> None:
    if target.shape[0] != logits.shape[0] or target.shape[1] != 1 or target.shape[2:] != logits.shape[2:]:
        raise KidneysegError("loss target does not fit the logits", found=tuple(target.shape),
                             expected=f"(N, 1) + {tuple(logits.shape[2:])} for logits {tuple(logits.shape)}",
                             fix="pass the label map with a channel axis of size 1")
    if weight is not None and weight.numel() != logits.shape[1]:
        raise KidneysegError("class_weights has the wrong length", found=weight.numel(), expected=logits.shape[1],
                             fix="give one weight per output channel (background first)")


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "dice-ce": lambda **kw: DiceCE(**kw),
    "bce-dice": lambda **kw: BCEDice(**kw),
    "weighted-ce-dice": lambda class_weights=None, **kw: DiceCE(class_weights=class_weights, **kw),
    "dice": lambda **kw: Dice(**kw),
}


def loss_names() -> list[str]:
    """Names accepted by :func:`create_loss`."""
    return list(LOSSES)


def create_loss(name: str, **kwargs: Any) -> nn.Module:
    """The loss ``name`` (see module docstring); an unknown name lists the valid ones."""
    if name not in LOSSES:
        raise unknown_name("loss", name, list(LOSSES))
    return LOSSES[name](**kwargs)


def class_weights_from_counts(counts: Sequence[float]) -> list[float]:
    """Inverse-square-root frequency weights, normalised to mean 1 (absent classes get the largest weight)."""
    c = torch.as_tensor([float(x) for x in counts], dtype=torch.float64)
    c = torch.where(c > 0, c, c[c > 0].min() if (c > 0).any() else torch.ones_like(c))
    w = 1.0 / torch.sqrt(c)
    w = w / w.mean()
    return [round(float(x), 4) for x in w]
