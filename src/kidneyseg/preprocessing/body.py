"""Body mask and body crop: drop the air, the table and the blanket around a CT/MR body."""

from __future__ import annotations

import numpy as np

from kidneyseg.case import Case


def body_mask(image: np.ndarray, threshold: float = -500.0) -> np.ndarray:
    """Boolean mask of the largest connected object above ``threshold`` with holes filled.

    ``threshold`` is in image units: -500 HU suits CT; for MR pass e.g. a low
    percentile of the image.  Holes are filled per axial slice ``[:, :, k]``
    (lungs and bowel gas are inside the body).
    """
    from scipy import ndimage

    fg = np.asarray(image) > threshold
    if not fg.any():
        return fg
    fg = ndimage.binary_opening(fg, iterations=2 if fg.ndim == 3 else 1)
    lab, n = ndimage.label(fg)
    if n == 0:
        return fg
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    mask = lab == int(np.argmax(sizes))
    if mask.ndim == 3:
        for k in range(mask.shape[2]):
            mask[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    else:
        mask = ndimage.binary_fill_holes(mask)
    return mask


def body_box(mask: np.ndarray, margin: int = 2) -> list[tuple[int, int]]:
    """Bounding box ``[(lo, hi), ...]`` (hi exclusive) of ``mask`` grown by ``margin`` voxels; the whole
    array when ``mask`` is empty (:func:`kidneyseg.preprocessing.geometry.nonzero_box`)."""
    from kidneyseg.preprocessing.geometry import nonzero_box

    box = nonzero_box(mask, margin)
    return list(box) if box is not None else [(0, n) for n in mask.shape]


def crop_to_body(case: Case, threshold: float | None = None, margin: int = 2) -> Case:
    """Crop a case to its body (recorded in ``history``, undone by zero padding).

    ``threshold`` defaults to -500 HU for CT and to the 20th percentile of the
    image otherwise.  Axial extent (axis 2 of a volume) is kept.
    """
    from kidneyseg.preprocessing.geometry import crop

    if case.image is None:
        return case.copy()
    thr = threshold if threshold is not None else (-500.0 if case.modality == "ct" else
                                                    float(np.percentile(case.image, 20)))
    box = body_box(body_mask(case.image, thr), margin)
    if case.ndim == 3:
        box[2] = (0, case.shape[2])
    return crop(case, box)
