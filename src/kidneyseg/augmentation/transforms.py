"""Training transforms: patch sampling with foreground oversampling, then augmentation by modality.

``build_train_transform(modality, spatial_dims, patch_size, ...)`` returns a
MONAI ``Compose``; call ``set_random_state(seed)`` on it (the trainer does it
every epoch with ``seed + epoch``) to make the sequence of random draws
reproducible.

Per modality (``strength="default"``):

============== ===================================================================
all            pad to the patch, crop a patch (``fg_ratio`` of patches centred on
               foreground), rotation by 90/180/270 degrees in-plane (square in-plane
               patches only; shapes must not change) and flips (not
               when labels are sided left/right; ``mirror="left-right"``: the
               patient's left-right axis only, no 90-degree rotations), small
               rotations (+-15 deg),
               scaling (0.85-1.15), elastic deformation (2D only by default),
               brightness, contrast, gamma, Gaussian noise
us             + speckle (multiplicative) noise, no 90-degree rotations and
               left-right flips only (columns; the probe is always at the top)
============== ===================================================================

``strength="rot90-elastic"`` (the CT ensemble paper's augmentation, ``train --recipe paper``):
pad and crop the patch as above, then only a rotation by 90, 180 or 270 degrees in-plane
(probability 0.5, square in-plane patches) and an elastic deformation (probability 0.5; 3D
patches too): no flips, no other spatial or intensity change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from kidneyseg.errors import KidneysegError, unknown_name

KEYS = ("image", "label")
STRENGTHS = ("none", "light", "default", "rot90-elastic")
#: ``mirror`` values: ``all`` (flips along every axis, plus 90-degree rotations where allowed),
#: ``left-right`` (flips along the patient's left-right axis only: the anatomy keeps its front and back,
#: the kidneys stay behind, beside the spine), ``none``.
MIRRORS = ("all", "left-right", "none")
#: The one axis ultrasound images are flipped along (augmentation and ``--tta``): columns of ``[row, col]``.
#: Rows (axis 0) run from the probe at the top into the body; no flip ever turns them upside down.
US_FLIP_AXIS = 1


def left_right_axis(orientation: str | Sequence[str] | None, spatial_dims: int) -> int:
    """Index of the patient's left-right axis among the first ``spatial_dims`` axes of ``orientation``.

    ``orientation``: the plan's axis codes (e.g. ``"PLS"``: axis 1 runs right -> left).
    Raises :class:`KidneysegError` when the orientation is unknown or has no
    left-right axis in-plane (a 2D image without an orientation, a sagittal plan).
    """
    codes = [str(c).upper() for c in (orientation or "")][: int(spatial_dims)]
    for i, c in enumerate(codes):
        if c in ("L", "R"):
            return i
    raise KidneysegError("no left-right axis to mirror", found=f"orientation {orientation!r}",
                         expected=f"orientation codes with L or R among the first {spatial_dims} axes",
                         fix="set the plan's orientation (e.g. PLS for axial display slices) or use mirror 'all'")


def flip_axes(modality: str, spatial_dims: int, strength: str, sided_labels: bool, mirror: str = "all",
              orientation: str | Sequence[str] | None = None) -> list[int]:
    """Spatial axes (0-based) that :func:`build_train_transform` flips at random.

    None when labels name left and right (a flip would swap them), with
    ``strength="none"`` or ``mirror="none"``.  Ultrasound images (``[row, col]``,
    the probe at the top row) are only ever flipped left-right, along the
    columns (:data:`US_FLIP_AXIS`), whatever ``mirror`` and ``orientation`` say:
    an upside-down scan never comes out of a probe.  Otherwise, with
    ``mirror="left-right"`` the left-right axis of ``orientation`` only
    (:func:`left_right_axis`), and every axis with ``mirror="all"``.  Mirroring
    test-time augmentation may only use these axes: a network never shown a
    mirrored image has no reason to segment one.
    """
    if mirror not in MIRRORS:
        raise unknown_name("mirror", mirror, MIRRORS)
    if sided_labels or strength in ("none", "rot90-elastic") or mirror == "none":
        return []
    if modality == "us":
        return [US_FLIP_AXIS]
    if mirror == "left-right":
        return [left_right_axis(orientation, spatial_dims)]
    return list(range(int(spatial_dims)))


def augmentation_names() -> list[str]:
    """Accepted ``strength`` values."""
    return list(STRENGTHS)


def build_train_transform(
    modality: str,
    spatial_dims: int,
    patch_size: Sequence[int],
    *,
    fg_ratio: float = 0.33,
    strength: str = "default",
    sided_labels: bool = False,
    elastic_3d: bool = False,
    extra_label_keys: Sequence[str] = (),
    contrast_phase: tuple[float, tuple[float, float]] | None = None,
    mirror: str = "all",
    orientation: str | Sequence[str] | None = None,
) -> Any:
    """Compose of patch sampling and augmentation.

    Parameters
    ----------
    modality:
        ``ct``, ``mr`` or ``us``.
    spatial_dims:
        2 (``(1, H, W)`` samples) or 3 (``(1, X, Y, Z)``).
    patch_size:
        Output spatial size; samples smaller than it are zero-padded first.
    fg_ratio:
        Fraction of patches centred on a foreground voxel (label > 0);
        the rest are centred on background (nnU-Net's oversampling is 1/3).
    strength:
        ``none`` (patch sampling only), ``light`` (flips, small rotations,
        brightness), ``default`` (the table above) or ``rot90-elastic`` (90/180/270-degree
        rotations and elastic deformation only; not for ultrasound or left/right labels).
    sided_labels:
        Labels distinguish left and right (CHAOS): no flips or 90-degree
        rotations, which would swap sides.
    elastic_3d:
        Also run elastic deformation on 3D patches (slow on CPU).
    extra_label_keys:
        Further keys transformed like the label (nearest neighbour, no
        intensity change), e.g. ``"mask"`` for the lesion stage's kidney mask.
    contrast_phase:
        ``(prob, (low, high))``: CT only, simulate unenhanced scans with
        probability ``prob`` (:class:`~kidneyseg.augmentation.contrast_phase.RandContrastPhased`);
        ``(low, high)`` is the plan's intensity window in HU.
    mirror, orientation:
        Which flips (:func:`flip_axes`); 90-degree rotations only with
        ``mirror="all"``.  ``orientation``: the plan's axis codes, needed by
        ``mirror="left-right"``.
    """
    from monai import transforms as T

    from kidneyseg.augmentation.speckle import RandSpeckleNoised

    if strength not in STRENGTHS:
        raise unknown_name("augmentation strength", strength, STRENGTHS)
    if spatial_dims not in (2, 3) or len(patch_size) != spatial_dims:
        raise KidneysegError("patch size does not fit spatial_dims", found=list(patch_size),
                             expected=f"{spatial_dims} sizes", fix="check the plan's patch_size")
    if not 0.0 <= fg_ratio <= 1.0:
        raise KidneysegError("fg_ratio out of range", found=fg_ratio, expected="0..1")
    patch = [int(p) for p in patch_size]
    keys = ("image", "label", *extra_label_keys)
    modes = ("bilinear", "nearest", *("nearest" for _ in extra_label_keys))
    pos = fg_ratio
    neg = 1.0 - fg_ratio
    ts: list[Any] = [
        T.SpatialPadd(keys, spatial_size=patch),
        T.RandCropByPosNegLabeld(keys, label_key="label", spatial_size=patch, pos=pos, neg=neg, num_samples=1,
                                 allow_smaller=False),
    ]
    if strength == "none":
        return T.Compose(ts)
    if strength == "rot90-elastic":
        return T.Compose(ts + _rot90_elastic(keys, modes, patch, modality, sided_labels))
    plane = (0, 1)
    axes = flip_axes(modality, spatial_dims, strength, sided_labels, mirror, orientation)
    if not sided_labels and mirror == "all":
        # 90/270 degrees swap the in-plane axes: only for square in-plane patches
        # (a batch needs equal shapes); 180 degrees is covered by the two flips.
        if modality != "us" and strength == "default" and patch[0] == patch[1]:
            ts.append(T.RandRotate90d(keys, prob=0.5, max_k=3, spatial_axes=plane))
    for ax in axes:
        ts.append(T.RandFlipd(keys, prob=0.5, spatial_axis=ax))
    small = math.radians(15)
    if spatial_dims == 2:
        ts.append(T.RandRotated(keys, range_x=small, prob=0.3, mode=modes, padding_mode="zeros"))
    else:
        ts.append(T.RandRotated(keys, range_z=small, prob=0.3, mode=modes, padding_mode="zeros"))
    if strength == "default":
        # labels: "nearest-exact" (torch's "nearest" rounds down, shifting the label up to a voxel off the image)
        zoom_modes = tuple("nearest-exact" if m == "nearest" else m for m in modes)
        ts.append(T.RandZoomd(keys, min_zoom=0.85, max_zoom=1.15, prob=0.3, mode=zoom_modes, keep_size=True))
        if spatial_dims == 2:
            ts.append(T.Rand2DElasticd(keys, spacing=(32, 32), magnitude_range=(1, 3), prob=0.1, mode=modes,
                                       padding_mode="zeros"))
        elif elastic_3d:
            ts.append(T.Rand3DElasticd(keys, sigma_range=(5, 8), magnitude_range=(50, 150), prob=0.1, mode=modes,
                                       padding_mode="zeros"))
    if contrast_phase is not None and contrast_phase[0] > 0 and strength != "none":
        from kidneyseg.augmentation.contrast_phase import RandContrastPhased

        # before the generic intensity transforms, while values are still in window units
        window = contrast_phase[1]
        ts.append(RandContrastPhased("image", window=(window[0], window[1]), prob=float(contrast_phase[0])))
    ts.append(T.RandShiftIntensityd("image", offsets=0.1, prob=0.3))  # brightness
    if strength == "default":
        ts.append(T.RandScaleIntensityd("image", factors=0.15, prob=0.3))  # contrast
        ts.append(T.RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=0.3))  # gamma
        ts.append(T.RandGaussianNoised("image", std=0.05, prob=0.15))
        if modality == "us":
            ts.append(RandSpeckleNoised("image", prob=0.3, std_range=(0.05, 0.2)))
    return T.Compose(ts)


def _rot90_elastic(keys: Sequence[str], modes: Sequence[str], patch: list[int], modality: str,
                   sided_labels: bool) -> list[Any]:
    """The ``rot90-elastic`` transforms: rotation by 90, 180 or 270 degrees in-plane, elastic deformation."""
    from monai import transforms as T

    if modality == "us" or sided_labels:
        why = "ultrasound images (the probe stays at the top)" if modality == "us" else "left/right labels"
        raise KidneysegError(f"augmentation 'rot90-elastic' rotates by 90 degrees, which {why} must not be",
                             found=f"modality {modality}, sided labels {sided_labels}",
                             expected="CT or MR with unsided labels", fix="use --augmentation default")
    if patch[0] != patch[1]:
        raise KidneysegError("augmentation 'rot90-elastic' needs a square in-plane patch (a 90-degree rotation "
                             "swaps the axes)", found=patch[:2], expected="equal first two patch sizes",
                             fix="give a square --patch-size, or use --augmentation default")
    ts: list[Any] = [T.RandRotate90d(list(keys), prob=0.5, max_k=3, spatial_axes=(0, 1))]  # k in 1..3
    if len(patch) == 2:
        ts.append(T.Rand2DElasticd(list(keys), spacing=(32, 32), magnitude_range=(1, 3), prob=0.5, mode=list(modes),
                                   padding_mode="zeros"))
    else:
        ts.append(T.Rand3DElasticd(list(keys), sigma_range=(5, 8), magnitude_range=(50, 150), prob=0.5,
                                   mode=list(modes), padding_mode="zeros"))
    return ts
