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

Partial labels (several data sets with different label sets): ``dice-ce`` also
takes ``groups``, a ``(N, G, C)`` 0/1 tensor whose row ``g`` marks the channels
that target value ``g`` of sample ``n`` stands for (CURVAS "kidney" = kidney +
tumour; KiTS19 background = background + liver + ...).  The loss is then the
*marginal* Dice + cross-entropy (Shi et al., Med Image Anal 2021): the softmax
probabilities of each group's channels are summed and scored against the group
target, so a data set is never punished for a class it cannot see.  With one
group per channel (identity rows) it equals the plain ``dice-ce``.
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
        self.weight: torch.Tensor | None
        self.register_buffer("weight", None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32))
        self.dice_weight, self.ce_weight = float(dice_weight), float(ce_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of ``logits`` (N, C, *spatial) against ``target`` (N, 1, *spatial).

        ``groups`` (N, G, C), optional: partial labels, ``target`` then holds group
        indices ``0..G-1`` (see the module docstring); all-zero rows pad samples with
        fewer groups.
        """
        _check(logits, target, self.weight)
        if groups is not None:
            return self._marginal(logits, target, groups)
        ce = F.cross_entropy(logits, target[:, 0].long(), weight=self.weight)
        return self.dice_weight * self.dice(logits, target) + self.ce_weight * ce

    def _marginal(self, logits: torch.Tensor, target: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        n, c = logits.shape[:2]
        if groups.ndim != 3 or groups.shape[0] != n or groups.shape[2] != c:
            raise KidneysegError("partial-label groups do not fit the logits", found=tuple(groups.shape),
                                 expected=f"(N={n}, G, C={c})", fix="give one (G, C) 0/1 matrix per sample")
        if self.weight is not None:
            raise KidneysegError("class weights with partial labels", found="class_weights and groups",
                                 expected="one of them", fix="use dice-ce without class weights for partial labels")
        m = groups.to(logits.dtype)
        logp = F.log_softmax(logits.flatten(2), dim=1)  # (N, C, V)
        # (N, G, C, 1): 0 inside a group, a large negative number outside (not -inf: a padded all-zero row
        # would give logsumexp a NaN gradient)
        log_m = torch.where(m > 0, 0.0, -1e4).to(logits.dtype).unsqueeze(-1)
        logq = torch.logsumexp(logp.unsqueeze(1) + log_m, dim=2)  # (N, G, V): log of the summed probabilities
        t = target.flatten(2)[:, 0].long()  # (N, V)
        if int(t.max()) >= groups.shape[1] or int(t.min()) < 0:
            raise KidneysegError("partial-label target outside its groups", found=int(t.max()),
                                 expected=f"0..{groups.shape[1] - 1}", fix="map label values to group indices")
        ce = -torch.gather(logq, 1, t.unsqueeze(1)).mean()
        q = logq.exp()  # padded rows: exp(-1e4) = 0
        y = F.one_hot(t, groups.shape[1]).movedim(-1, 1).to(q.dtype)  # (N, G, V)
        inter, denom = (q * y).sum(-1), q.sum(-1) + y.sum(-1)
        dice = 1.0 - (2.0 * inter + 1e-5) / (denom + 1e-5)  # MONAI's smoothing
        valid = m.sum(-1) > 0
        valid[:, 0] = False  # background group excluded, as include_background=False
        dice_loss = dice[valid].mean() if bool(valid.any()) else logits.sum() * 0.0
        return self.dice_weight * dice_loss + self.ce_weight * ce


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
