"""Speckle noise for ultrasound (MONAI has none): multiplicative Gaussian noise.

``speckle(img, std, rng)`` returns ``img * (1 + n)``, ``n ~ N(0, std^2)`` per
pixel; :class:`RandSpeckleNoised` is the seeded dictionary wrapper (MONAI
``RandomizableTransform``), touching only the image keys (never labels).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform


def speckle(img: np.ndarray | torch.Tensor, std: float, rng: np.random.RandomState) -> np.ndarray | torch.Tensor:
    """Multiply every pixel of ``img`` (any shape) by ``1 + N(0, std^2)``."""
    noise = rng.normal(0.0, std, size=tuple(img.shape)).astype(np.float32)
    if isinstance(img, torch.Tensor):
        return img * (1.0 + torch.as_tensor(noise, device=img.device, dtype=img.dtype))
    return (img * (1.0 + noise)).astype(np.float32)


class RandSpeckleNoised(RandomizableTransform, MapTransform):
    """With probability ``prob``, apply :func:`speckle` with ``std`` drawn from ``std_range``."""

    def __init__(self, keys: Sequence[Hashable] | str, prob: float = 0.2, std_range: tuple[float, float] = (0.05, 0.2)) -> None:
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, keys)
        self.std_range = (float(std_range[0]), float(std_range[1]))
        self._std = 0.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self._std = float(self.R.uniform(*self.std_range))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            d[key] = speckle(d[key], self._std, self.R)
        return d
