"""Confusion counts first, then every overlap metric from them.

Empty-mask policy (one rule for every ratio)
--------------------------------------------
``dice``, ``jaccard``, ``precision``, ``recall`` and ``f1`` are

* **1.0** when reference and prediction are both empty (nothing to find, nothing
  claimed: the KiTS rule for Dice extended to the other ratios),
* **0.0** when exactly one of them is empty (KiTS: Dice 0; precision with an empty
  prediction and recall with an empty reference, whose denominators are 0, are
  also 0),
* the usual formula otherwise.

``accuracy`` is ``(tp + tn) / n`` and always defined (n > 0).

Each ratio takes a :class:`Confusion` or, for convenience, two boolean masks
``(pred, ref)`` of the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Confusion",
    "accuracy",
    "confusion",
    "dice",
    "f1",
    "jaccard",
    "overlap_metrics",
    "precision",
    "recall",
]


@dataclass(frozen=True)
class Confusion:
    """Voxel (pixel) confusion counts of one binary region.

    ``tp``: in both; ``fp``: predicted only; ``fn``: reference only;
    ``tn``: in neither.  ``n = tp + fp + fn + tn`` is the number of voxels.
    """

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        """Number of voxels."""
        return self.tp + self.fp + self.fn + self.tn

    @property
    def ref_empty(self) -> bool:
        """True when the reference region is empty."""
        return self.tp + self.fn == 0

    @property
    def pred_empty(self) -> bool:
        """True when the predicted region is empty."""
        return self.tp + self.fp == 0


def confusion(pred: np.ndarray, ref: np.ndarray, *, n_total: int | None = None) -> Confusion:
    """Confusion counts of two boolean masks of the same shape.

    ``n_total`` is the voxel count of the whole image when ``pred``/``ref`` are
    crops of it that hold every foreground voxel (the voxels outside count as
    true negatives).
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    tp = int(np.count_nonzero(pred & ref))
    p = int(np.count_nonzero(pred))
    r = int(np.count_nonzero(ref))
    n = int(pred.size) if n_total is None else int(n_total)
    return Confusion(tp=tp, fp=p - tp, fn=r - tp, tn=n - p - r + tp)


def _counts(c: Confusion | np.ndarray, ref: np.ndarray | None) -> Confusion:
    """``c`` itself, or the counts of the masks ``c`` (prediction) and ``ref``."""
    if isinstance(c, Confusion):
        return c
    if ref is None:
        raise TypeError("pass a Confusion, or a prediction mask and a reference mask")
    return confusion(c, ref)


def _ratio(num: int, den: int, c: Confusion) -> float:
    if c.ref_empty and c.pred_empty:
        return 1.0
    if c.ref_empty or c.pred_empty:
        return 0.0
    return float(num) / float(den)


def dice(c: Confusion | np.ndarray, ref: np.ndarray | None = None) -> float:
    """Dice ``2 tp / (2 tp + fp + fn)`` with the empty-mask policy of this module."""
    c = _counts(c, ref)
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn, c)


def jaccard(c: Confusion | np.ndarray, ref: np.ndarray | None = None) -> float:
    """Jaccard (IoU) ``tp / (tp + fp + fn)`` with the empty-mask policy."""
    c = _counts(c, ref)
    return _ratio(c.tp, c.tp + c.fp + c.fn, c)


def precision(c: Confusion | np.ndarray, ref: np.ndarray | None = None) -> float:
    """Precision ``tp / (tp + fp)`` with the empty-mask policy."""
    c = _counts(c, ref)
    return _ratio(c.tp, c.tp + c.fp, c)


def recall(c: Confusion | np.ndarray, ref: np.ndarray | None = None) -> float:
    """Recall (sensitivity) ``tp / (tp + fn)`` with the empty-mask policy."""
    c = _counts(c, ref)
    return _ratio(c.tp, c.tp + c.fn, c)


def f1(c: Confusion | np.ndarray, ref: np.ndarray | None = None) -> float:
    """F1, the harmonic mean of precision and recall (equal to Dice for one binary region)."""
    c = _counts(c, ref)
    p, r = precision(c), recall(c)
    if c.ref_empty and c.pred_empty:
        return 1.0
    if p + r == 0:
        return 0.0
    return 2.0 * p * r / (p + r)


def accuracy(c: Confusion | np.ndarray, ref: np.ndarray | None = None) -> float:
    """Pixel accuracy ``(tp + tn) / n``."""
    c = _counts(c, ref)
    return float(c.tp + c.tn) / float(c.n) if c.n else float("nan")


def overlap_metrics(c: Confusion) -> dict[str, float]:
    """Every overlap metric of one region, keyed as in ``results.csv``."""
    return {
        "dice": dice(c),
        "jaccard": jaccard(c),
        "precision": precision(c),
        "recall": recall(c),
        "accuracy": accuracy(c),
        "f1": f1(c),
    }
