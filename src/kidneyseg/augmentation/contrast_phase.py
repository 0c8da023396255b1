"""Contrast-phase simulation for CT (MONAI has none): enhanced tissue pulled back to soft tissue.

Contrast-enhanced kidneys are 150-250 HU; without contrast they are 30-40 HU,
like muscle and liver.  A model trained on enhanced scans only (KiTS) then looks
for bright organs and misses unenhanced kidneys.  :func:`compress_enhancement`
maps every value ``v`` between a soft-tissue level ``c`` and a bone threshold
``b`` (both in HU) to ``c + (v - c) * f`` with ``0 < f <= 1``: enhancement
shrinks towards ``c`` while fat, air and bone stay where they are.  Values are
given and returned in the *normalised* units of the plan's intensity window
(``(HU - low) / (high - low)``), the units a training sample is in.

:class:`RandContrastPhased` is the seeded dictionary wrapper (it changes image
keys only, never labels), drawing ``c`` and ``f`` per sample.  Inside the
labelled organs (label > 0, grown by ``grow`` pixels) the bone threshold is
lifted: training data clipped to a window (KiTS19 slices: 0..255 HU) saturate
the enhanced renal cortex at the window's top, where it would otherwise be
taken for bone and stay bright.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform

from kidneyseg.errors import KidneysegError


def compress_enhancement(img: np.ndarray | torch.Tensor, level: float, factor: float, bone: float,
                         organ: np.ndarray | None = None) -> np.ndarray | torch.Tensor:
    """Return ``img`` with values in ``(level, bone)`` mapped to ``level + (v - level) * factor``.

    ``img``: any shape; ``level``, ``bone``: thresholds in the image's units
    (``level < bone``); ``factor`` in ``(0, 1]``; ``organ``: optional boolean
    mask of ``img``'s shape where every value above ``level`` is compressed
    (no bone threshold).
    """
    if not 0.0 < factor <= 1.0 or not level < bone:
        raise KidneysegError("contrast-phase parameters", found={"level": level, "factor": factor, "bone": bone},
                             expected="0 < factor <= 1 and level < bone")
    a = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    sel = (a > level) & (a < bone)
    if organ is not None:
        sel |= np.asarray(organ, dtype=bool) & (a > level)
    out = np.where(sel, level + (a - level) * factor, a).astype(a.dtype, copy=False)
    return torch.as_tensor(out, dtype=img.dtype, device=img.device) if isinstance(img, torch.Tensor) else out


class RandContrastPhased(RandomizableTransform, MapTransform):
    """With probability ``prob``, simulate an unenhanced (or weakly enhanced) CT.

    ``window``: the plan's intensity window ``(low, high)`` in HU, to convert
    ``level_hu`` (range of the soft-tissue level drawn per sample), ``bone_hu``
    and the images' normalised values; ``factor_range``: range of ``f``.
    """

    def __init__(self, keys: Sequence[Hashable] | str, window: tuple[float, float], prob: float = 0.3,
                 level_hu: tuple[float, float] = (20.0, 60.0), factor_range: tuple[float, float] = (0.05, 1.0),
                 bone_hu: float = 250.0, label_key: str | None = "label", grow: int = 2) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        low, high = float(window[0]), float(window[1])
        if not high > low:
            raise KidneysegError("contrast-phase window", found=window, expected="low < high (HU)")
        self._norm = lambda hu: (float(hu) - low) / (high - low)
        self.level_hu = (float(level_hu[0]), float(level_hu[1]))
        self.factor_range = (float(factor_range[0]), float(factor_range[1]))
        self.bone = self._norm(bone_hu)
        self.label_key = label_key
        self.grow = int(grow)
        self._level = 0.0
        self._factor = 1.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self._level = self._norm(self.R.uniform(*self.level_hu))
        self._factor = float(self.R.uniform(*self.factor_range))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        organ = None
        if self.label_key is not None and self.label_key in d:
            lab = d[self.label_key]
            lab = lab.detach().cpu().numpy() if isinstance(lab, torch.Tensor) else np.asarray(lab)
            organ = lab > 0
            if self.grow > 0 and organ.any():
                from scipy.ndimage import binary_dilation

                # channel-first sample: grow in the spatial axes only
                st = np.zeros((3,) * organ.ndim, bool)
                st[(1,) + (slice(None),) * (organ.ndim - 1)] = True
                organ = binary_dilation(organ, structure=st, iterations=self.grow)
        for key in self.key_iterator(d):
            d[key] = compress_enhancement(d[key], self._level, self._factor, self.bone, organ)
        return d
