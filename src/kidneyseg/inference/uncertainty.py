"""Per-voxel uncertainty of a prediction: normalised entropy and mutual information.

Definitions (``C`` classes, natural logarithms, every map divided by ``log C`` so it lies in 0..1):

* **predictive entropy** of the mean probabilities ``p̄ = mean_m p_m`` over the ensemble members
  (and TTA passes) ``m``: ``H(p̄) = -Σ_c p̄_c log p̄_c / log C``. 0 where the prediction is certain,
  1 where every class is equally likely. It holds both the data's ambiguity and the members'
  disagreement.
* **mutual information** (BALD) ``MI = H(p̄) - mean_m H(p_m)``: the members' disagreement alone
  (0 when they all give the same probabilities). Needs the members' own probabilities.

What the Predictor has decides what can be computed (:func:`describe_sources`): the members of an
ensemble of model folders (``--model A --model B``) are separate, so their MI is computed too; the
members of one ``ensemble-mean`` network (the MR default: 5 fold networks) and mirroring TTA passes
are averaged inside the network / engine, so only the entropy of their mean is available; a single
network without TTA has no members at all and its map is the normalised entropy of its softmax
(the honest fallback: it mixes the data's ambiguity with the model's, and a confidently wrong
network shows low values).

To keep prediction cheap the maps are computed only inside :attr:`Uncertainty.box`, the bounding
box (grown by :data:`BOX_MARGIN` voxels) of every voxel labelled foreground or whose background
probability is below :data:`BACKGROUND_CERTAIN`; outside it every voxel has background probability
at least 0.99, i.e. a normalised entropy below 0.06 for 3 classes, and :meth:`Uncertainty.full_map`
writes 0 there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kidneyseg.errors import InputError

#: A voxel whose background probability is at least this counts as certain background (outside the box).
BACKGROUND_CERTAIN = 0.99
#: Voxels added on each side of the box (room for the boundary band of a structure at its edge).
BOX_MARGIN = 3
_EPS = 1e-12


def _check_probs(probs: np.ndarray, name: str = "probabilities") -> np.ndarray:
    p = np.asarray(probs)
    if p.ndim < 2 or p.shape[0] < 2:
        raise InputError(f"{name} must have a class axis of at least 2 first", found=f"shape {p.shape}",
                         expected="(C, *spatial) with C >= 2", fix="pass softmax probabilities, class channel first")
    if not np.issubdtype(p.dtype, np.floating):
        raise InputError(f"{name} must be floating point", found=str(p.dtype), expected="float16/float32/float64",
                         fix="pass probabilities, not a label map")
    return p


def _entropy_unnormalised(p: np.ndarray) -> np.ndarray:
    """``-Σ_c p_c log p_c`` over axis 0 in float32 (0 log 0 = 0)."""
    p = np.asarray(p, dtype=np.float32)
    out = np.zeros(p.shape[1:], dtype=np.float32)
    for c in range(p.shape[0]):
        pc = p[c]
        out -= pc * np.log(np.maximum(pc, _EPS))
    return out


def normalised_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy of ``probs`` ``(C, *spatial)`` over the class axis, divided by ``log C``: float32 ``spatial``, 0..1.

    >>> float(normalised_entropy(np.array([[0.5], [0.5]]))[0])
    1.0
    >>> float(normalised_entropy(np.array([[1.0], [0.0]]))[0])
    0.0
    """
    p = _check_probs(probs)
    h = _entropy_unnormalised(p) / np.float32(math.log(p.shape[0]))
    return np.clip(h, 0.0, 1.0, out=h)


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy of a two-class probability ``p`` (of any shape) in bits (0..1), float32."""
    q = np.clip(np.asarray(p, dtype=np.float32), 0.0, 1.0)
    h = -(q * np.log2(np.maximum(q, _EPS)) + (1 - q) * np.log2(np.maximum(1 - q, _EPS)))
    return np.clip(h, 0.0, 1.0).astype(np.float32, copy=False)


def mutual_information(members: Sequence[np.ndarray]) -> np.ndarray:
    """Mutual information (BALD) of members' probabilities, each ``(C, *spatial)``, divided by ``log C``.

    ``H(mean_m p_m) - mean_m H(p_m)``, float32 ``spatial``, 0..1 (clipped at 0 against rounding).
    Two members that agree give 0; two certain members that disagree (``[1, 0]`` and ``[0, 1]``)
    give 1 for ``C = 2``.
    """
    if len(members) < 2:
        raise InputError("mutual information needs at least two members", found=len(members),
                         expected=">= 2 probability arrays", fix="use normalised_entropy for a single model")
    arrs = [_check_probs(m, "member probabilities") for m in members]
    shape = arrs[0].shape
    for a in arrs[1:]:
        if a.shape != shape:
            raise InputError("ensemble members' probabilities differ in shape", found=a.shape, expected=shape,
                             fix="bring every member onto the same grid first")
    mean = np.zeros(shape, dtype=np.float32)
    mean_h = np.zeros(shape[1:], dtype=np.float32)
    for a in arrs:
        mean += np.asarray(a, dtype=np.float32)
        mean_h += _entropy_unnormalised(a)
    mean /= len(arrs)
    mean_h /= len(arrs)
    mi = (_entropy_unnormalised(mean) - mean_h) / np.float32(math.log(shape[0]))
    return np.clip(mi, 0.0, 1.0, out=mi)


@dataclass
class Uncertainty:
    """Uncertainty of one prediction on the input grid, kept only inside ``box``.

    Attributes
    ----------
    box:
        Slices of the input grid (``[i, j, k]`` or ``[row, col]``) where the maps were computed.
    shape:
        Shape of the whole input grid.
    probabilities:
        float32 ``(C, *box shape)`` mean probabilities in the box (channel ``c`` = ``label_values[c]``).
    label_values:
        Label value of each channel (sorted, background 0 first).
    entropy:
        float32 box: normalised predictive entropy (0..1) of ``probabilities``.
    mutual_information:
        float32 box (0..1) when the members' probabilities were separate, else ``None``.
    sources:
        :func:`describe_sources`: ``method`` (one sentence), ``members``, ``tta_passes``, ``map``.
    """

    box: tuple[slice, ...]
    shape: tuple[int, ...]
    probabilities: np.ndarray
    label_values: list[int]
    entropy: np.ndarray
    mutual_information: np.ndarray | None = None
    sources: dict[str, Any] = field(default_factory=dict)

    @property
    def starts(self) -> tuple[int, ...]:
        """First voxel of the box on the input grid."""
        return tuple(int(s.start) for s in self.box)

    def full_map(self, which: str = "entropy") -> np.ndarray:
        """float32 map of the whole input grid: the box's ``entropy`` (or ``mutual_information``), 0 outside."""
        part = self.entropy if which == "entropy" else self.mutual_information
        if part is None:
            raise InputError("no such uncertainty map for this prediction", found=which,
                             expected="entropy" + (", mutual_information" if self.mutual_information is not None
                                                   else ""), fix="ask for the entropy map")
        out = np.zeros(self.shape, dtype=np.float32)
        out[self.box] = part
        return out


def uncertainty_box(probs: np.ndarray, label: np.ndarray, *, margin: int = BOX_MARGIN) -> tuple[slice, ...]:
    """Bounding box of voxels labelled foreground or with background probability below
    :data:`BACKGROUND_CERTAIN`, grown by ``margin`` voxels and clipped to the grid; an empty box
    (``slice(0, 0)`` on every axis) when there is none.  ``probs`` ``(C, *shape)``, channel 0 = background."""
    p0 = np.asarray(probs[0])
    lab = np.asarray(label)
    if lab.shape != p0.shape:
        raise InputError("label map and probabilities lie on different grids", found=lab.shape, expected=p0.shape,
                         fix="pass the label map the probabilities produced")
    keep = (p0 < BACKGROUND_CERTAIN) | (lab != 0)
    box = []
    for ax in range(keep.ndim):
        other = tuple(a for a in range(keep.ndim) if a != ax)
        hit = np.flatnonzero(keep.any(axis=other))
        if hit.size == 0:
            return tuple(slice(0, 0) for _ in range(keep.ndim))
        box.append(slice(max(0, int(hit[0]) - margin), min(keep.shape[ax], int(hit[-1]) + 1 + margin)))
    return tuple(box)


def compute_uncertainty(
    probs: np.ndarray,
    label: np.ndarray,
    label_values: Sequence[int],
    *,
    members: Sequence[np.ndarray] | None = None,
    sources: dict[str, Any] | None = None,
) -> Uncertainty:
    """:class:`Uncertainty` of a prediction: mean probabilities ``probs`` ``(C, *shape)`` on the input grid,
    its final (post-processed) ``label`` ``shape``, and, for an ensemble of separate members, their own
    probabilities ``members`` (each ``(C, *shape)``) for the mutual information."""
    p = _check_probs(probs)
    if len(label_values) != p.shape[0]:
        raise InputError("one label value per probability channel needed", found=list(label_values),
                         expected=f"{p.shape[0]} values", fix="pass the model's sorted label values")
    box = uncertainty_box(p, label)
    sub = np.asarray(p[(slice(None), *box)], dtype=np.float32)
    mi = None
    if members is not None and len(members) >= 2:
        mi = mutual_information([np.asarray(m[(slice(None), *box)]) for m in members])
    return Uncertainty(box=box, shape=tuple(int(s) for s in label.shape), probabilities=sub,
                       label_values=[int(v) for v in label_values], entropy=normalised_entropy(sub),
                       mutual_information=mi, sources=dict(sources or {}))


def describe_sources(models: Sequence[Any], tta_passes: int) -> dict[str, Any]:
    """What the uncertainty of a Predictor is made of: ``members`` (separate model folders times the
    members of ``ensemble-mean`` networks), ``separate_members`` (those whose probabilities are kept
    apart: the model folders), ``tta_passes`` and ``method`` (one sentence for ``volumes.json``)."""
    inner = 1
    for m in models:
        for st in getattr(m, "stages", {}).values():
            spec = getattr(st, "spec", {}) or {}
            if str(spec.get("arch", "")) == "ensemble-mean":
                inner = max(inner, len((spec.get("arch_kwargs") or {}).get("members") or []))
    n_sep = len(models)
    members = n_sep * inner
    tta = max(1, int(tta_passes))
    if members == 1 and tta == 1:
        method = ("normalised entropy of the softmax of a single network (no ensemble members, no TTA passes: "
                  "data and model uncertainty mixed; a confidently wrong network shows low values)")
    else:
        parts = []
        if members > 1:
            parts.append(f"{members} ensemble members")
        if tta > 1:
            parts.append(f"{tta} mirroring TTA passes")
        method = "normalised entropy of the mean probabilities over " + " x ".join(parts)
        if n_sep > 1:
            method += f"; mutual information of the {n_sep} model folders also computed"
    return {"map": "normalised_entropy", "method": method, "members": members, "separate_members": n_sep,
            "tta_passes": tta}
