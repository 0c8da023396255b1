"""Grid operations that are recorded on the case and undone exactly.

Each function returns a *new* :class:`~kidneyseg.case.Case` whose ``history``
ends with one :class:`~kidneyseg.case.Operation` holding what is needed to go
back: the shape and affine before the step.  :func:`undo` replays the history
backwards on a label map or a probability map so that it lands on the grid of
the case as it was read.

Operations
----------
``reorient``  permute/flip axes to orientation codes (default RAS); exact.
``resample``  change voxel spacing (mm); the field of view is kept (corner-aligned
              grids, like nnU-Net and SimpleITK's ``Resample`` with the same extent).
``crop``      keep a box of voxels ``[lo, hi)`` per axis; undone by zero padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kidneyseg.case import Case, Operation
from kidneyseg.errors import GeometryError, KidneysegError

# ----------------------------------------------------------------------------- reorient


def reorient(case: Case, codes: str | Sequence[str] = "RAS") -> Case:
    """Permute and flip array axes so they point along ``codes`` (e.g. ``"RAS"``).

    Only for 3D cases; a 2D case is returned unchanged (its axes are image
    rows/columns).  Image and label are transformed together; the world
    position of every voxel is unchanged (the affine is updated).
    """
    import nibabel as nib

    new = case.copy()
    if case.ndim != 3:
        return new
    target = nib.orientations.axcodes2ornt(tuple(codes))
    current = nib.orientations.io_orientation(case.affine)
    if np.array_equal(current, target):
        new.record("reorient", codes="".join(codes), transform=None,
                   shape_before=list(case.shape), affine_before=case.affine.tolist())
        return new
    transform = nib.orientations.ornt_transform(current, target)
    if case.image is not None:
        new.image = np.ascontiguousarray(nib.orientations.apply_orientation(case.image, transform))
    if case.label is not None:
        new.label = np.ascontiguousarray(nib.orientations.apply_orientation(case.label, transform))
    new.affine = case.affine @ nib.orientations.inv_ornt_aff(transform, case.shape)
    new.record(
        "reorient",
        codes="".join(codes),
        transform=transform.tolist(),
        shape_before=list(case.shape),
        affine_before=case.affine.tolist(),
    )
    return new


def _undo_reorient(op: Operation, array: np.ndarray, channel_axis: bool) -> np.ndarray:
    import nibabel as nib

    if op.params["transform"] is None:
        return array
    transform = np.asarray(op.params["transform"], dtype=float)
    # inverse of an orientation transform: axes permuted back, flips repeated.
    inverse = np.empty_like(transform)
    for in_ax, (out_ax, flip) in enumerate(transform):
        inverse[int(out_ax)] = (in_ax, flip)
    if channel_axis:
        return np.stack([nib.orientations.apply_orientation(c, inverse) for c in array])
    return nib.orientations.apply_orientation(array, inverse)


# ----------------------------------------------------------------------------- resample


def _grid_for_spacing(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def _resample_array(
    array: np.ndarray,
    new_shape: Sequence[int],
    *,
    order: int,
    is_label: bool,
    label_mode: str = "nearest",
) -> np.ndarray:
    """Corner-aligned resampling of one array to ``new_shape``.

    Index ``n`` of the output samples input coordinate ``(n + 0.5) * f - 0.5``
    with ``f = old / new`` per axis.
    """
    from scipy import ndimage

    old = np.asarray(array.shape, dtype=float)
    new = np.asarray(new_shape, dtype=float)
    if tuple(int(x) for x in new) == array.shape:
        return array.copy()
    f = old / new
    offset = 0.5 * f - 0.5
    if is_label:
        if label_mode == "linear":
            values = [v for v in np.unique(array) if v != 0]
            out = np.zeros(tuple(int(x) for x in new), dtype=array.dtype)
            best = np.full(out.shape, 0.5, dtype=np.float32)
            for v in values:
                p = ndimage.affine_transform(
                    (array == v).astype(np.float32), f, offset=offset,
                    output_shape=out.shape, order=1, mode="nearest",
                )
                take = p > best
                out[take] = v
                best[take] = p[take]
            return out
        return ndimage.affine_transform(
            array, f, offset=offset, output_shape=tuple(int(x) for x in new), order=0, mode="nearest"
        )
    src = array.astype(np.float32, copy=False)
    out = ndimage.affine_transform(
        src, f, offset=offset, output_shape=tuple(int(x) for x in new), order=order, mode="nearest",
        prefilter=order > 1,
    )
    return out


def _scaled_affine(affine: np.ndarray, old_shape: Sequence[int], new_shape: Sequence[int]) -> np.ndarray:
    m = np.eye(4)
    for ax, (o, n) in enumerate(zip(old_shape, new_shape)):
        f = o / n
        m[ax, ax] = f
        m[ax, 3] = 0.5 * f - 0.5
    return affine @ m


def resample(
    case: Case,
    spacing: Sequence[float] | float,
    *,
    order: int = 1,
    label_mode: str = "nearest",
) -> Case:
    """Resample image and label to ``spacing`` (mm per array axis), keeping the field of view.

    Parameters
    ----------
    spacing:
        Target spacing in mm, one value per array axis (or one for all axes).
    order:
        Spline order for the image: 1 linear (default) or 3 cubic.
    label_mode:
        ``"nearest"`` or ``"linear"`` (per-label linear interpolation, then the
        most probable label: smoother surfaces, no label bleeding).
    """
    ndim = case.ndim
    target = (float(spacing),) * ndim if np.isscalar(spacing) else tuple(float(s) for s in spacing)  # type: ignore[arg-type]
    if len(target) != ndim or any(not np.isfinite(t) or t <= 0 for t in target):
        raise GeometryError(
            "invalid target spacing",
            found=target,
            expected=f"{ndim} positive values in mm",
            fix="give one positive spacing per image axis",
        )
    if label_mode not in ("nearest", "linear"):
        raise KidneysegError("unknown label interpolation", found=label_mode, expected="'nearest' or 'linear'")
    new_shape = _grid_for_spacing(case.shape, case.spacing, target)
    new = case.copy()
    if case.image is not None:
        new.image = _resample_array(case.image, new_shape, order=order, is_label=False)
    if case.label is not None:
        new.label = _resample_array(case.label, new_shape, order=0, is_label=True, label_mode=label_mode)
    new.affine = _scaled_affine(case.affine, case.shape, new_shape + (1,) * (3 - ndim))
    new.record(
        "resample",
        spacing=list(target),
        shape_before=list(case.shape),
        affine_before=case.affine.tolist(),
        label_mode=label_mode,
    )
    return new


# ----------------------------------------------------------------------------- crop


def crop(case: Case, box: Sequence[tuple[int, int]]) -> Case:
    """Keep voxels ``box[a][0] <= index < box[a][1]`` on each array axis (clipped to the array)."""
    shape = case.shape
    if len(box) != len(shape):
        raise KidneysegError("crop box has the wrong number of axes", found=len(box), expected=len(shape))
    clipped = [(max(0, int(lo)), min(n, int(hi))) for (lo, hi), n in zip(box, shape)]
    if any(hi <= lo for lo, hi in clipped):
        raise KidneysegError("crop box is empty", found=clipped, expected=f"a box inside {shape}")
    sl = tuple(slice(lo, hi) for lo, hi in clipped)
    new = case.copy()
    if case.image is not None:
        new.image = np.ascontiguousarray(case.image[sl])
    if case.label is not None:
        new.label = np.ascontiguousarray(case.label[sl])
    shift = np.eye(4)
    for ax, (lo, _) in enumerate(clipped):
        shift[ax, 3] = lo
    new.affine = case.affine @ shift
    new.record("crop", box=[list(b) for b in clipped], shape_before=list(shape), affine_before=case.affine.tolist())
    return new


# ----------------------------------------------------------------------------- undo


def undo(case: Case, array: np.ndarray, *, is_label: bool = True, channel_axis: bool = False) -> np.ndarray:
    """Bring ``array`` from ``case``'s grid back to the grid before any recorded operation.

    Parameters
    ----------
    case:
        The preprocessed case whose ``history`` describes how its grid was made.
    array:
        Label map on ``case``'s grid (``is_label=True``, nearest neighbour), or
        an image / probabilities (``is_label=False``, linear); with
        ``channel_axis`` the first axis holds channels ``(C, *spatial)``.

    Returns
    -------
    numpy.ndarray
        The array on the original grid (same dtype for labels).
    """
    out = np.asarray(array)
    spatial = out.shape[1:] if channel_axis else out.shape
    if tuple(spatial) != case.shape:
        raise KidneysegError(
            "array to undo does not lie on the case grid", found=tuple(spatial), expected=case.shape
        )
    for op in reversed(case.history):
        before = tuple(op.params.get("shape_before", ()))
        if op.name == "reorient":
            out = _undo_reorient(op, out, channel_axis)
        elif op.name == "resample":
            mode = op.params.get("label_mode", "nearest")
            if channel_axis:
                out = np.stack([_resample_array(c, before, order=1, is_label=is_label, label_mode=mode) for c in out])
            else:
                out = _resample_array(out, before, order=1, is_label=is_label, label_mode=mode)
        elif op.name == "crop":
            lead = (out.shape[0],) if channel_axis else ()
            full = np.zeros(lead + before, dtype=out.dtype)
            sl = tuple(slice(lo, hi) for lo, hi in op.params["box"])
            full[(slice(None),) * len(lead) + sl] = out
            out = full
        else:
            raise KidneysegError(f"cannot undo operation '{op.name}'", expected="reorient, resample or crop")
    return out


def original_affine(case: Case) -> np.ndarray:
    """Affine of the grid before the first recorded operation."""
    if not case.history:
        return case.affine
    return np.asarray(case.history[0].params["affine_before"], dtype=float)
