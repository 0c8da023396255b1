"""Two follow-up phantoms with known answers (built in the tests, no shared data).

Two ellipsoid kidneys (1 mm voxels, identity affine: high i = patient right).  Before: a tumour of
radius :data:`R1` in the right kidney and one of 5 mm in the left.  After: the right tumour has radius
:data:`R2` (same place in the kidney), the left one is gone and a new 5 mm tumour sits low in the
right kidney.
"""

from __future__ import annotations

import numpy as np

SHAPE = (110, 40, 70)  # 1 mm voxels; RAS: high i = patient right
RIGHT, LEFT = (85, 20, 35), (25, 20, 35)
RADII = (18, 14, 30)
GROWING = (3, 0, 6)  # the growing tumour's offset from the right kidney's centre (mm)
R1, R2 = 6, 9  # its radius before and after (mm)


def _ball(centre, r):  # type: ignore[no-untyped-def]
    g = np.ogrid[tuple(slice(0, n) for n in SHAPE)]
    return sum((gg - c) ** 2 for gg, c in zip(g, centre)) <= r * r


def _kidneys() -> np.ndarray:
    g = np.ogrid[tuple(slice(0, n) for n in SHAPE)]
    lab = np.zeros(SHAPE, np.uint8)
    for c in (RIGHT, LEFT):
        lab[sum(((gg - cc) / r) ** 2 for gg, cc, r in zip(g, c, RADII)) <= 1] = 1
    return lab


def _at(kidney, offset):  # type: ignore[no-untyped-def]
    return tuple(k + o for k, o in zip(kidney, offset))


def phantoms() -> tuple[np.ndarray, np.ndarray]:
    """Before: right tumour of radius R1, a left tumour of 5 mm.  After: the right tumour of radius R2,
    the left one gone, a new 5 mm tumour low in the right kidney."""
    before, after = _kidneys(), _kidneys()
    before[_ball(_at(RIGHT, GROWING), R1)] = 2
    before[_ball(_at(LEFT, (-4, 0, 10)), 5)] = 2
    after[_ball(_at(RIGHT, GROWING), R2)] = 2
    after[_ball(_at(RIGHT, (-6, 0, -16)), 5)] = 2
    return before, after
