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

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from kidneyseg.case import Case, Operation
from kidneyseg.errors import GeometryError, KidneysegError

#: A box of voxels ``((lo, hi), ...)``, one pair per array axis, ``hi`` exclusive (as :func:`crop` takes).
Box = tuple[tuple[int, int], ...]

# ----------------------------------------------------------------------------- boxes


def nonzero_box(mask: np.ndarray, margin: int = 0) -> Box | None:
    """Smallest box holding every non-zero voxel of ``mask``, grown by ``margin`` voxels; None when all are zero.

    The one bounding-box primitive of the package.  Returns ``((lo, hi), ...)``
    per array axis, ``hi`` exclusive, clipped to the array after the margin.
    Uses per-axis projections, which numpy evaluates in memory order (fast for
    the Fortran-ordered arrays nibabel returns).

    >>> nonzero_box(np.array([[0, 0, 0], [0, 1, 1]]))
    ((1, 2), (1, 3))
    >>> nonzero_box(np.array([[0, 0, 0], [0, 1, 0]]), margin=1)
    ((0, 2), (0, 3))
    >>> nonzero_box(np.zeros((2, 2))) is None
    True
    """
    m = np.asarray(mask)
    if m.dtype != bool:
        m = m != 0
    box = []
    for ax in range(m.ndim):
        idx = np.flatnonzero(m.any(axis=tuple(o for o in range(m.ndim) if o != ax)))
        if idx.size == 0:
            return None
        box.append((max(0, int(idx[0]) - margin), min(m.shape[ax], int(idx[-1]) + 1 + margin)))
    return tuple(box)


#: Memory layout of an array built for a grid: C (row-major) or F (column-major, as NIfTI stores volumes).
MemoryOrder = Literal["C", "F"]


def memory_order(array: np.ndarray | None) -> MemoryOrder:
    """``"F"`` for an array that is Fortran- but not C-contiguous (volumes read from NIfTI), else ``"C"``: the order
    in which to build an array that will be written on the same grid (no transposing copy on write)."""
    if array is not None and array.ndim > 1 and array.flags.f_contiguous and not array.flags.c_contiguous:
        return "F"
    return "C"


def box_slices(box: Sequence[tuple[int, int]]) -> tuple[slice, ...]:
    """The box ``((lo, hi), ...)`` as index slices (``array[box_slices(box)]`` cuts it out)."""
    return tuple(slice(int(lo), int(hi)) for lo, hi in box)


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
    transform = _orientation_transform(case.affine, codes)
    if np.array_equal(transform, _IDENTITY_ORNT):
        new.record("reorient", codes="".join(codes), transform=None,
                   shape_before=list(case.shape), affine_before=case.affine.tolist())
        return new
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


def reoriented_axes(affine: np.ndarray, codes: str | Sequence[str]) -> list[int]:
    """Where each array axis of a volume on ``affine`` goes when :func:`reorient` points it along ``codes``:
    entry ``i`` is the new position of axis ``i`` (a permutation of 0, 1, 2)."""
    return [int(a) for a in _orientation_transform(affine, codes)[:, 0]]


#: The orientation transform that moves no axis (nibabel's ``[[axis, flip], ...]`` layout).
_IDENTITY_ORNT = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


def _orientation_transform(affine: np.ndarray, codes: str | Sequence[str]) -> np.ndarray:
    """nibabel's orientation transform ``(3, 2)`` (new axis, flip) taking the axes of a volume on ``affine`` to
    ``codes``: the one derivation behind :func:`reorient` and :func:`reoriented_axes`."""
    import nibabel as nib

    target = nib.orientations.axcodes2ornt(tuple(codes))
    return np.asarray(nib.orientations.ornt_transform(nib.orientations.io_orientation(affine), target), dtype=float)


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


def resample_array(
    array: np.ndarray,
    new_shape: Sequence[int],
    *,
    order: int,
    is_label: bool,
    label_mode: str = "nearest",
) -> np.ndarray:
    """Corner-aligned resampling of one array to ``new_shape`` (what :func:`resample` does to a case's arrays).

    Index ``n`` of the output samples input coordinate ``(n + 0.5) * f - 0.5``
    with ``f = old / new`` per axis.  ``is_label``: nearest neighbour
    (``label_mode="nearest"``) or per-label linear then the most probable label
    (``"linear"``); else spline ``order`` (1 linear).  For arrays that share a
    case's grid but are not its image or label (a kidney mask carried to another
    stage's grid).
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
            return _resample_label_linear(array, tuple(int(x) for x in new))
        return _resample_label_nearest(array, tuple(int(x) for x in new))
    src = array.astype(np.float32, copy=False)
    if memory_order(src) == "F":
        # a Fortran-ordered volume (read from NIfTI): resample its C-ordered transpose, so that the input is read
        # in memory order (about 2x faster than striding through it), and return the transpose back (F-ordered)
        return ndimage.affine_transform(
            src.T, f[::-1], offset=offset[::-1], output_shape=tuple(int(x) for x in new[::-1]), order=order,
            mode="nearest", prefilter=order > 1,
        ).T
    out = ndimage.affine_transform(
        src, f, offset=offset, output_shape=tuple(int(x) for x in new), order=order, mode="nearest",
        prefilter=order > 1,
    )
    return out


def _sample_coords(n_old: int, n_new: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """Input coordinates sampled by output indices ``lo..hi-1`` (corner-aligned), clamped to the array."""
    f = n_old / n_new
    n = np.arange(lo, n_new if hi is None else hi, dtype=np.float64)
    return np.clip((n + 0.5) * f - 0.5, 0.0, n_old - 1.0)


def _resample_label_nearest(array: np.ndarray, new_shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour label resampling by index gathering (exact values, no interpolation).

    Output index ``n`` takes input index ``floor((n + 0.5) * old / new)``, the
    input voxel whose extent contains the output voxel centre.
    """
    idx = []
    for n_old, n_new in zip(array.shape, new_shape):
        centre = (np.arange(n_new, dtype=np.float64) + 0.5) * (n_old / n_new)
        idx.append(np.clip(np.floor(centre).astype(np.intp), 0, n_old - 1))
    box = nonzero_box(array)
    out = np.zeros(new_shape, dtype=array.dtype)
    if box is None:
        return out
    # Only output voxels that fall in the non-zero box can be non-zero.
    dst = []
    for ix, (lo, hi) in zip(idx, box):
        inside = np.flatnonzero((ix >= lo) & (ix < hi))
        if inside.size == 0:
            return out
        dst.append(slice(int(inside[0]), int(inside[-1]) + 1))
    sub = array[box_slices(box)]
    local = [ix[d] - lo for ix, d, (lo, _) in zip(idx, dst, box)]
    out[tuple(dst)] = sub[np.ix_(*local)]
    return out


def _axis_stencil(x: np.ndarray, n: int) -> tuple[slice, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Linear stencil of one axis sampled at coordinates ``x`` (already clamped to ``0..n-1``): the source slice
    it reads and, local to that slice, the lower / upper indices and the upper weight (for :func:`_interp`)."""
    i0 = np.floor(x).astype(np.intp)
    i1 = np.minimum(i0 + 1, int(n) - 1)
    s_lo = int(i0.min())
    return slice(s_lo, int(i1.max()) + 1), (i0 - s_lo, i1 - s_lo, (x - i0).astype(np.float32))


def _linear_stencil(
    shape: Sequence[int], new_shape: Sequence[int], box: Box
) -> tuple[list[slice], list[slice], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Separable linear stencil of corner-aligned resampling, restricted to ``box``.

    Returns the source slices, the destination slices (output voxels whose
    two-voxel stencil can touch the input ``box``, ``hi`` exclusive) and per axis the
    local lower / upper source indices and the upper weight.
    """
    src_sl, dst_sl, weights = [], [], []
    for ax, (n_old, n_new) in enumerate(zip(shape, new_shape)):
        lo, hi = box[ax]
        f = n_old / n_new
        o_lo = max(0, int(np.floor((lo - 1 + 0.5) / f - 0.5)))
        o_hi = min(int(n_new), int(np.ceil((hi + 0.5) / f - 0.5)) + 1)  # hi exclusive: last voxel hi - 1
        sl, stencil = _axis_stencil(_sample_coords(int(n_old), int(n_new), o_lo, o_hi), int(n_old))
        src_sl.append(sl)
        dst_sl.append(slice(o_lo, o_hi))
        weights.append(stencil)
    return src_sl, dst_sl, weights


def _interp(p: np.ndarray, weights: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Apply a separable linear stencil (from :func:`_linear_stencil`) to ``p``; axes whose
    stencil is the identity are skipped."""
    p = p.astype(np.float32, copy=False)
    for ax, (i0, i1, w) in enumerate(weights):
        if i0.size == p.shape[ax] and not w.any() and np.array_equal(i0, np.arange(i0.size)):
            continue
        shape = [1] * p.ndim
        shape[ax] = -1
        wv = w.reshape(shape)
        p = np.take(p, i0, axis=ax) * (1.0 - wv) + np.take(p, i1, axis=ax) * wv
    return p


def _argmax_resample(
    values: Sequence[int], fetch: Callable[[int, tuple[slice, ...]], np.ndarray], box: Box | None,
    shape: Sequence[int], new_shape: tuple[int, ...], dtype: Any, order: MemoryOrder = "C",
) -> np.ndarray:
    """Most probable value per output voxel of linearly resampled foreground maps.

    ``fetch(i, slices)`` returns the foreground probability map of ``values[i]``
    on the input grid, cut to ``slices`` (background is ``1 - sum``); only output voxels whose stencil
    touches the input ``box`` (``hi`` exclusive) can be foreground, the rest are 0.
    Ties go to background, then to the earlier channel.  The output is allocated in memory ``order``.
    """
    out = np.zeros(new_shape, dtype=dtype, order=order)
    if box is None:
        return out
    src_sl, dst_sl, weights = _linear_stencil(shape, new_shape, box)
    best: np.ndarray | None = None
    fg_total: np.ndarray | None = None
    region = np.zeros(tuple(s.stop - s.start for s in dst_sl), dtype=dtype)
    for i, v in enumerate(values):
        p = _interp(fetch(i, tuple(src_sl)), weights)
        if best is None:
            best, fg_total = p, p.copy()
            region[...] = v
        else:
            take = p > best
            region[take] = v
            best = np.where(take, p, best)
            fg_total = fg_total + p if fg_total is not None else p
    if best is None or fg_total is None:
        return out
    region[best <= 1.0 - fg_total] = 0
    out[tuple(dst_sl)] = region
    return out


def _resample_label_linear(array: np.ndarray, new_shape: tuple[int, ...]) -> np.ndarray:
    """Per-label linear resampling: each value's 0/1 mask is interpolated (separable
    multilinear, edge-clamped), and every output voxel takes the most probable value.

    Linear weights sum to one, so the background probability is
    ``1 - sum(foreground probabilities)`` and only the bounding box of the
    foreground (plus one voxel) is computed; outside it the output is 0.  Ties
    go to background, then to the lower label value.
    """
    box = nonzero_box(array)
    if box is None:
        return np.zeros(new_shape, dtype=array.dtype)
    sub = array[box_slices(box)]
    values = [v for v in np.unique(sub) if v != 0]
    return _argmax_resample(values, lambda i, sl: array[sl] == values[i], box, array.shape, new_shape, array.dtype)


def _resample_probs_argmax(probs: np.ndarray, values: Sequence[int], new_shape: tuple[int, ...],
                           order: MemoryOrder = "C") -> np.ndarray:
    """Label map (uint8) of the argmax of ``probs`` ``(C, *shape)`` resampled linearly to ``new_shape``.

    Channel ``c`` is label ``values[c]``; ``values[0]`` must be 0 (background)
    and the channels sum to 1 (or 0 where nothing was predicted, which counts as
    background).  A foreground value can only win where it reaches ``1 / C``, so
    only the box of such input voxels (plus the stencil) is interpolated.
    """
    n = probs.shape[0]
    fg = probs[1:]
    box = nonzero_box(fg.max(axis=0) >= 1.0 / n) if n > 1 else None
    return _argmax_resample([int(v) for v in values[1:]], lambda i, sl: probs[(i + 1,) + sl], box, probs.shape[1:],
                            tuple(int(x) for x in new_shape), np.uint8, order)


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
    target = ((float(spacing),) * ndim if isinstance(spacing, (int, float, np.number))
              else tuple(float(s) for s in spacing))
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
        new.image = resample_array(case.image, new_shape, order=order, is_label=False)
    if case.label is not None:
        new.label = resample_array(case.label, new_shape, order=0, is_label=True, label_mode=label_mode)
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
        out = _undo_step(op, out, is_label=is_label, channel_axis=channel_axis)
    return out


def _undo_step(op: Operation, out: np.ndarray, *, is_label: bool, channel_axis: bool) -> np.ndarray:
    """Undo one recorded operation on ``out`` (labels nearest, others linear; optional channel axis first)."""
    before = tuple(int(x) for x in op.params.get("shape_before", ()))
    if op.name == "reorient":
        return _undo_reorient(op, out, channel_axis)
    if op.name == "resample":
        mode = op.params.get("label_mode", "nearest")
        if channel_axis:
            return np.stack([resample_array(c, before, order=1, is_label=is_label, label_mode=mode) for c in out])
        return resample_array(out, before, order=1, is_label=is_label, label_mode=mode)
    if op.name == "crop":
        lead = (out.shape[0],) if channel_axis else ()
        full = np.zeros(lead + before, dtype=out.dtype)
        sl = box_slices(op.params["box"])
        full[(slice(None),) * len(lead) + sl] = out
        return full
    raise KidneysegError(f"cannot undo operation '{op.name}'", expected="reorient, resample or crop")


def undo_argmax(case: Case, probs: np.ndarray, values: Sequence[int] | np.ndarray, *, order: MemoryOrder = "C") -> np.ndarray:
    """Label map on the grid before any recorded operation: the argmax of ``probs`` brought back linearly.

    ``probs`` is ``(C, *case.shape)`` (channel ``c`` is label ``values[c]``,
    ``values[0] == 0`` is background, channels sum to 1).  The probabilities,
    not the labels, are interpolated at the resampling step (nnU-Net's
    "resample the probabilities, then argmax": smoother boundaries than a
    nearest-neighbour label map); crops and reorientations before it move the
    channels, those after it move the labels.  Only the box where a foreground
    channel reaches ``1 / C`` is interpolated, so this costs little more than
    the nearest-neighbour path.  Equal, up to float rounding, to the argmax of
    ``undo(case, probs, is_label=False, channel_axis=True)``.

    Returns a uint8 label map, C- or Fortran-contiguous as ``order`` (``"C"`` or ``"F"``): a volume read from
    NIfTI is Fortran-ordered, and a label map in the same order is written without a transposing copy (about
    0.8 s on a 512x512x200 CT).
    """
    if order not in ("C", "F"):
        raise KidneysegError("unknown memory order", found=order, expected="'C' or 'F'")
    vals = [int(v) for v in values]
    if not vals or vals[0] != 0:
        raise KidneysegError("the first probability channel must be background (label 0)", found=vals,
                             expected="values sorted with 0 first")
    out = np.asarray(probs)
    if tuple(out.shape[1:]) != case.shape or out.shape[0] != len(vals):
        raise KidneysegError("probabilities to undo do not lie on the case grid", found=tuple(out.shape),
                             expected=(len(vals),) + tuple(case.shape))
    channels = True
    for op in reversed(case.history):
        if channels and op.name == "resample":
            # the first resampling met (the last one applied) interpolates the probabilities and takes the argmax
            out = _resample_probs_argmax(out, vals, tuple(int(x) for x in op.params["shape_before"]), order)
            channels = False
        else:
            out = _undo_step(op, out, is_label=not channels, channel_axis=channels)
    if channels:
        out = np.asarray(vals, dtype=np.uint8)[np.argmax(out, axis=0)]
    return np.require(out.astype(np.uint8, copy=False), requirements=["F" if order == "F" else "C"])


def undo_probabilities_box(case: Case, probs: np.ndarray, box: Sequence[tuple[int, int]]) -> np.ndarray:
    """``undo(case, probs, is_label=False, channel_axis=True)`` computed only inside ``box`` of the original grid.

    ``probs`` ``(C, *case.shape)`` on the preprocessed grid; ``box`` ``((lo, hi), ...)`` (``hi`` exclusive)
    on the grid before any recorded operation.  Reorientations and resamplings compose into one affine map
    of voxel indices (original -> preprocessed: ``inv(case.affine) @ original affine``), so every voxel of
    the box is sampled linearly at its place on the preprocessed grid, clamped at the edges as the undo
    clamps (``mode="nearest"``): equal to the whole-grid undo cut to the box, up to float rounding, at the
    cost of the box alone.  A history with a crop (whose undo pads with zeros) takes the whole-grid undo.
    Returns float32 ``(C, *box shape)``.
    """
    p = np.asarray(probs)
    if tuple(p.shape[1:]) != case.shape:
        raise KidneysegError("probabilities to undo do not lie on the case grid", found=tuple(p.shape),
                             expected=(p.shape[0],) + tuple(case.shape))
    sl = box_slices(box)
    if any(op.name == "crop" for op in case.history) or not case.history:
        return np.ascontiguousarray(undo(case, p, is_label=False, channel_axis=True)[(slice(None), *sl)],
                                    dtype=np.float32)
    ndim = case.ndim
    before = np.asarray(case.history[0].params["affine_before"], dtype=np.float64)
    to_pre = np.linalg.inv(np.asarray(case.affine, dtype=np.float64)) @ before
    shape = tuple(int(hi - lo) for lo, hi in box)
    lin, shift = to_pre[:ndim, :ndim], to_pre[:ndim, 3]  # 2D grids: the affine's third axis is the plane's normal
    if not np.any(lin - np.diag(np.diag(lin))):
        # resamplings only (no axis swapped or flipped): a zoom and shift per axis, sampled by the separable
        # linear stencil of the resampling undo on the source box alone (a 2D ultrasound box: 0.7 ms against
        # 4.1 ms for scipy's affine_transform; clamped at the edges as mode="nearest")
        zoom = np.diag(lin)
        src, weights = [], []
        for ax, (lo, hi) in enumerate(box):
            n = int(case.shape[ax])
            axis_src, stencil = _axis_stencil(
                np.clip(shift[ax] + zoom[ax] * np.arange(lo, hi, dtype=np.float64), 0.0, n - 1.0), n)
            src.append(axis_src)
            weights.append(stencil)
        out = np.empty((p.shape[0],) + shape, dtype=np.float32)
        for c in range(p.shape[0]):
            out[c] = _interp(np.asarray(p[c][tuple(src)], dtype=np.float32), weights)
        return out
    from scipy import ndimage

    idx = np.indices(shape, dtype=np.float32).reshape(ndim, -1)
    idx += np.asarray([lo for lo, _ in box], dtype=np.float32)[:, None]
    if ndim == 3:
        coords = to_pre[:3, :3].astype(np.float32) @ idx + to_pre[:3, 3:4].astype(np.float32)
    else:  # 2D grids: the affine's third axis is the image plane's normal
        coords = to_pre[:2, :2].astype(np.float32) @ idx + to_pre[:2, 3:4].astype(np.float32)
    out = np.empty((p.shape[0],) + shape, dtype=np.float32)
    for c in range(p.shape[0]):
        out[c] = ndimage.map_coordinates(np.asarray(p[c], dtype=np.float32), coords, order=1,
                                         mode="nearest").reshape(shape)
    return out


def original_affine(case: Case) -> np.ndarray:
    """Affine of the grid before the first recorded operation."""
    if not case.history:
        return case.affine
    return np.asarray(case.history[0].params["affine_before"], dtype=float)


def world_box_to_grid(box: Sequence[tuple[int, int]], src_affine: np.ndarray, dst: Case, margin_mm: float) -> Box:
    """Map a half-open voxel box on a source grid to ``dst``'s grid, grown by ``margin_mm`` (mm).

    The 8 corners of the box (voxel edges, i.e. index - 0.5 and hi - 0.5) go
    through world mm (``src_affine``, then the inverse of ``dst.affine``) into
    ``dst`` index space; the result is clipped to ``dst``.  3D boxes, ``((lo, hi),) * 3``.
    """
    lo = np.array([b[0] for b in box], float) - 0.5
    hi = np.array([b[1] for b in box], float) - 0.5
    corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    m = np.linalg.inv(dst.affine) @ np.asarray(src_affine, float)
    idx = (corners @ m.T)[:, :3]
    grow = np.asarray([margin_mm / s for s in dst.spacing])
    a = np.floor(idx.min(0) + 0.5 - grow).astype(int)
    b = np.ceil(idx.max(0) + 0.5 + grow).astype(int)
    return tuple((max(0, int(x)), min(int(n), int(y))) for x, y, n in zip(a, b, dst.shape))


def resample_to_shape(case: Case, shape: Sequence[int], *, order: int = 1) -> Case:
    """:func:`resample` ``case`` to exactly ``shape`` voxels (the spacing that gives it; recorded in ``history``).

    How a crop is fitted to a fixed network input (the V-Net segmenter), the same in training and prediction.
    """
    spacing = [n * s / int(p) for n, s, p in zip(case.shape, case.spacing, shape)]
    return resample(case, spacing, order=order)
