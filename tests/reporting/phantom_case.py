"""A small kidney phantom with known geometry, built in the tests (no shared data).

The volume is stored in LAS order (array axis 0 increases towards the patient's
LEFT), so a report that ignores the affine would put the kidneys on the wrong side.
"""

from __future__ import annotations

import numpy as np

from kidneyseg.case import Case

SHAPE = (64, 56, 40)
SPACING = (1.5, 1.5, 2.5)
# voxel centres (file order i, j, k) of the objects
RIGHT_KIDNEY = (16, 30, 20)  # small i = patient right, because axis 0 points left
LEFT_KIDNEY = (47, 30, 20)
TUMOR = (12, 30, 20)  # in the right kidney
CYST = (51, 30, 20)  # in the left kidney


def _ball(shape, centre, radii_vox):  # type: ignore[no-untyped-def]
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    d = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii_vox))
    return d <= 1.0


def phantom(seed: int = 0, shape: tuple[int, int, int] = SHAPE) -> tuple[Case, np.ndarray]:
    """(case with a CT image in HU, label map 0/1/2/3) on an LAS grid of ``shape``."""
    rng = np.random.default_rng(seed)
    affine = np.diag([-SPACING[0], SPACING[1], SPACING[2], 1.0])
    affine[:3, 3] = [SPACING[0] * (shape[0] - 1) / 2, -40.0, -50.0]
    lab = np.zeros(shape, np.uint8)
    for c in (RIGHT_KIDNEY, LEFT_KIDNEY):
        lab[_ball(shape, c, (9, 8, 7))] = 1
    lab[_ball(shape, TUMOR, (4, 4, 3))] = 2
    lab[_ball(shape, CYST, (3.5, 3.5, 2.5))] = 3
    body = _ball(shape, (shape[0] / 2, shape[1] / 2, shape[2] / 2), (shape[0] / 2 - 1, shape[1] / 2 - 2, 60))
    img = np.where(body, 40.0, -900.0) + rng.normal(0, 8, shape)
    img[lab == 1] = 160 + rng.normal(0, 8, (lab == 1).sum())
    img[lab == 2] = 90 + rng.normal(0, 8, (lab == 2).sum())
    img[lab == 3] = 5 + rng.normal(0, 5, (lab == 3).sum())
    case = Case(image=img.astype(np.float32), affine=affine, name="phantom", modality="ct")
    return case, lab
