"""Geometry operations: reorient / resample / crop recorded on the case and undone."""

from __future__ import annotations

import numpy as np
import pytest

from kidneyseg.case import Case
from kidneyseg.errors import GeometryError, KidneysegError
from kidneyseg.preprocessing.geometry import (
    crop,
    memory_order,
    original_affine,
    reorient,
    resample,
    undo,
    undo_argmax,
)


def _oblique() -> np.ndarray:
    # axes point roughly I, P, L (like KiTS23), anisotropic, slightly rotated, shifted origin
    c, s = np.cos(0.1), np.sin(0.1)
    rot = np.array([[0, 0, -1.0], [0, -1.0, 0], [-1.0, 0, 0]]) @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([3.0, 0.8, 0.9])
    aff[:3, 3] = [5.0, -7.0, 11.0]
    return aff


def _ellipsoid(shape, spacing, centre_mm, radii_mm) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    r = sum(((g - c) / rr) ** 2 for g, c, rr in zip(grids, centre_mm, radii_mm))
    return r <= 1.0


@pytest.fixture
def case3d() -> Case:
    shape = (20, 40, 36)
    lab = np.zeros(shape, np.uint8)
    lab[_ellipsoid(shape, (3.0, 0.8, 0.9), (30, 16, 16), (18, 10, 9))] = 1
    lab[_ellipsoid(shape, (3.0, 0.8, 0.9), (33, 18, 15), (8, 5, 5))] = 2
    lab[_ellipsoid(shape, (3.0, 0.8, 0.9), (22, 12, 20), (5, 3, 3))] = 3
    img = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    return Case(image=img, label=lab, affine=_oblique())


def _world(affine, idx):
    return (affine @ np.r_[idx, 1.0])[:3]


def test_reorient_to_ras_keeps_world_positions(case3d):
    ras = reorient(case3d, "RAS")
    assert ras.orientation == ("R", "A", "S")
    assert ras.history[-1].name == "reorient"
    # every labelled voxel keeps its world position
    for idx in np.argwhere(case3d.label == 2)[:20]:
        w = _world(case3d.affine, idx)
        new_idx = np.linalg.solve(ras.affine[:3, :3], w - ras.affine[:3, 3])
        np.testing.assert_allclose(new_idx, np.round(new_idx), atol=1e-9)
        assert ras.label[tuple(np.round(new_idx).astype(int))] == 2
    np.testing.assert_array_equal(undo(ras, ras.label), case3d.label)
    np.testing.assert_array_equal(undo(ras, ras.image, is_label=False), case3d.image)
    np.testing.assert_array_equal(original_affine(ras), case3d.affine)


def test_reorient_probabilities_with_channel_axis(case3d):
    ras = reorient(case3d, "LPI")
    probs = np.stack([ras.label == v for v in range(4)]).astype(np.float32)
    back = undo(ras, probs, is_label=False, channel_axis=True)
    np.testing.assert_array_equal(back.argmax(0), case3d.label)


def test_reorient_already_there_is_identity(case3d):
    ras = reorient(case3d)
    again = reorient(ras)
    np.testing.assert_array_equal(again.label, ras.label)
    np.testing.assert_array_equal(undo(again, again.label), case3d.label)


def test_resample_affine_spacing_and_field_of_view(case3d):
    res = resample(case3d, (1.5, 1.5, 1.5))
    assert res.shape == (40, 21, 22)
    np.testing.assert_allclose(res.spacing, [60 / 40, 32 / 21, 32.4 / 22], rtol=1e-12)
    # corner-aligned: the outer edges of the grid are unchanged
    for corner in [(-0.5, -0.5, -0.5), (19.5, 39.5, 35.5)]:
        # the same world point is the outer corner of the new grid
        w = _world(case3d.affine, corner)
        np.testing.assert_allclose(np.linalg.solve(res.affine[:3, :3], w - res.affine[:3, 3]),
                                   [-0.5 if c < 0 else s - 0.5 for c, s in zip(corner, res.shape)], atol=1e-9)
    assert res.image.dtype == np.float32 and res.label.dtype == np.uint8


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resample_and_undo_dice(case3d, mode):
    res = resample(case3d, 1.5, label_mode=mode)
    back = undo(res, res.label)
    assert back.shape == case3d.shape and back.dtype == np.uint8
    fg, bfg = case3d.label > 0, back > 0
    dice = 2 * np.count_nonzero(fg & bfg) / (np.count_nonzero(fg) + np.count_nonzero(bfg))
    assert dice >= 0.9
    assert set(np.unique(back)) <= {0, 1, 2, 3}


def test_linear_label_mode_takes_most_probable_label():
    """Three labels meeting: the voxel between them takes the largest share, not background."""
    lab = np.zeros((2, 1, 1), np.uint8)
    lab[0, 0, 0], lab[1, 0, 0] = 1, 2
    case = Case(image=None, label=lab, affine=np.eye(4))
    up = resample(case, (0.5, 1.0, 1.0), label_mode="linear")
    # sample coordinates -0.25, 0.25, 0.75, 1.25 -> clamp -> labels 1, 1, 2, 2
    np.testing.assert_array_equal(up.label[:, 0, 0], [1, 1, 2, 2])
    lab3 = np.zeros((3, 1, 1), np.uint8)
    lab3[:, 0, 0] = [1, 0, 2]
    down = resample(Case(image=None, label=lab3, affine=np.eye(4)), (3.0, 1, 1), label_mode="linear")
    # one output voxel samples coordinate 1.0: background 1.0 -> 0
    assert down.label[0, 0, 0] == 0


def test_linear_and_nearest_identical_for_integer_factor_downsampling():
    lab = np.zeros((8, 8, 8), np.uint8)
    lab[2:6, 2:6, 2:6] = 1
    case = Case(image=None, label=lab, affine=np.eye(4))
    a = resample(case, 2.0, label_mode="nearest").label
    b = resample(case, 2.0, label_mode="linear").label
    np.testing.assert_array_equal(a[1:3, 1:3, 1:3], 1)
    np.testing.assert_array_equal(b[1:3, 1:3, 1:3], 1)


def test_crop_and_undo(case3d):
    cropped = crop(case3d, [(2, 15), (5, 30), (-3, 50)])
    assert cropped.shape == (13, 25, 36)
    np.testing.assert_allclose(_world(cropped.affine, (0, 0, 0)), _world(case3d.affine, (2, 5, 0)))
    back = undo(cropped, cropped.label)
    expected = np.zeros_like(case3d.label)
    expected[2:15, 5:30, :] = case3d.label[2:15, 5:30, :]
    np.testing.assert_array_equal(back, expected)


def test_chain_reorient_crop_resample_undo(case3d):
    step = resample(crop(reorient(case3d, "RAS"), [(0, 40), (0, 40), (0, 40)]), (1.0, 1.0, 1.0))
    assert [op.name for op in step.history] == ["reorient", "crop", "resample"]
    back = undo(step, step.label)
    assert back.shape == case3d.shape
    agree = np.mean(back == case3d.label)
    assert agree > 0.97
    np.testing.assert_array_equal(original_affine(step), case3d.affine)


def _softmax_probs(shape, n, seed=0):
    logits = np.random.default_rng(seed).normal(size=(n,) + tuple(shape)).astype(np.float32) * 2.0
    logits[0] += 1.0  # background a little more likely, as in a real prediction
    e = np.exp(logits - logits.max(axis=0))
    return e / e.sum(axis=0)


def test_undo_argmax_equals_argmax_of_undone_probabilities(case3d):
    """Reorient + crop + resample: the fast box-restricted path agrees with argmax(undo(probs))."""
    step = resample(crop(reorient(case3d, "RAS"), [(2, 34), (0, 40), (1, 20)]), (1.5, 1.5, 2.0))
    probs = _softmax_probs(step.shape, 4)
    values = [0, 1, 2, 3]
    fast = undo_argmax(step, probs, values)
    slow = np.asarray(values)[np.argmax(undo(step, probs, is_label=False, channel_axis=True), axis=0)]
    assert fast.shape == case3d.shape and fast.dtype == np.uint8
    # cropped-away voxels: every channel 0 there, which is background
    assert np.mean(fast == slow) > 0.999
    assert set(np.unique(fast)) <= set(values)
    assert (fast != 0).any() and (fast == 0).any()


def test_undo_argmax_memory_order(case3d):
    """order="F" gives the same labels, Fortran-contiguous (a NIfTI volume's order: written without a transpose)."""
    step = resample(crop(reorient(case3d, "PLS"), [(2, 34), (0, 40), (1, 20)]), (1.5, 1.5, 2.0))
    probs = _softmax_probs(step.shape, 3)
    c_out = undo_argmax(step, probs, [0, 1, 2])
    f_out = undo_argmax(step, probs, [0, 1, 2], order="F")
    assert c_out.flags.c_contiguous and f_out.flags.f_contiguous and not f_out.flags.c_contiguous
    assert np.array_equal(c_out, f_out)
    assert memory_order(np.asfortranarray(np.zeros((3, 4, 5)))) == "F"
    assert memory_order(np.zeros((3, 4, 5))) == "C"
    assert memory_order(np.zeros((1, 4, 1))) == "C"  # both: C
    with pytest.raises(KidneysegError, match="memory order"):
        undo_argmax(step, probs, [0, 1, 2], order="A")


def test_undo_argmax_interpolates_probabilities_not_labels():
    """Known answer in 1D: two 4 mm voxels brought back to eight 1 mm voxels.

    Output voxel n samples coordinate x = (n + 0.5) / 4 - 0.5, clamped to [0, 1]:
    0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1.  A nearest-neighbour label map
    would give four foreground voxels whatever the probabilities.
    """
    case = Case(image=np.zeros((8, 1, 1), np.float32), affine=np.eye(4))
    small = resample(case, (4.0, 1.0, 1.0))
    assert small.shape == (2, 1, 1)

    def run(fg, other):
        probs = np.zeros((3, 2, 1, 1), np.float32)
        probs[1, :, 0, 0], probs[2, :, 0, 0] = fg, other
        probs[0] = 1.0 - probs[1] - probs[2]
        return undo_argmax(small, probs, [0, 2, 5])[:, 0, 0]

    # p = 0.6 (1 - x) beats background 1 - p only for x < 1/6: three voxels
    np.testing.assert_array_equal(run([0.6, 0.0], [0.0, 0.0]), [2, 2, 2, 0, 0, 0, 0, 0])
    # p = 1 - 0.55 x > 0.5 for x < 0.91: six voxels
    np.testing.assert_array_equal(run([1.0, 0.45], [0.0, 0.0]), [2, 2, 2, 2, 2, 2, 0, 0])
    # a second foreground channel rising to 0.7 takes over once it beats both others
    # (x = 0.375: 0.5 / 0.2625 / 0.2375 -> label 2; x = 0.625: 0.3 / 0.4375 / 0.2625 -> label 5)
    np.testing.assert_array_equal(run([0.8, 0.0], [0.0, 0.7]), [2, 2, 2, 2, 5, 5, 5, 5])
    # equal foreground and background: ties go to background
    np.testing.assert_array_equal(run([0.5, 0.5], [0.0, 0.0]), [0] * 8)


def test_undo_argmax_rejects_bad_channels(case3d):
    step = resample(case3d, 2.0)
    with pytest.raises(KidneysegError, match="background"):
        undo_argmax(step, _softmax_probs(step.shape, 2), [1, 2])
    with pytest.raises(KidneysegError, match="grid"):
        undo_argmax(step, _softmax_probs((3, 3, 3), 2), [0, 1])


def test_2d_resample_and_undo():
    lab = np.zeros((30, 40), np.uint8)
    lab[4:24, 8:28] = 1  # aligned with the 2x4 pixel blocks, so nearest down and up is exact
    case = Case(image=lab.astype(np.float32), label=lab, affine=np.diag([0.5, 0.25, 1.0, 1.0]))
    assert reorient(case).shape == (30, 40)  # 2D: unchanged
    res = resample(case, (1.0, 1.0))
    assert res.shape == (15, 10)
    np.testing.assert_allclose(res.spacing, (1.0, 1.0))
    np.testing.assert_array_equal(undo(res, res.label), lab)


def test_invalid_target_spacing(case3d):
    for bad in [(0, 1, 1), (1, -1, 1), (1, np.nan, 1), (1, 1)]:
        with pytest.raises(GeometryError):
            resample(case3d, bad)


@pytest.mark.shared
def test_real_kits23_masks_round_trips(shared_data, tmp_path):
    """Two real masks (IPL, 3 and 5 mm slices): file round trips exact, reorient exact, resample Dice."""
    from kidneyseg import io

    for name in ("case_00010.nii.gz", "case_00030.nii.gz"):
        case = io.read(shared_data / "kits23_masks" / name, is_label=True)
        assert case.orientation == ("I", "P", "L")
        for suffix in (".nii.gz", ".nrrd"):
            back = io.read(io.write(case.label, tmp_path / f"m{suffix}", case), is_label=True)
            np.testing.assert_array_equal(back.label, case.label)
            np.testing.assert_array_equal(back.affine, case.affine)
        ras = reorient(case, "RAS")
        np.testing.assert_array_equal(undo(ras, ras.label), case.label)
        res = resample(case, 1.5, label_mode="nearest")
        back = undo(res, res.label)
        fg, bfg = case.label > 0, back > 0
        dice = 2 * np.count_nonzero(fg & bfg) / (np.count_nonzero(fg) + np.count_nonzero(bfg))
        assert dice >= 0.97, (name, dice)


def _voxels_overlapping(src_affine, box, dst_affine, dst_shape, margin_mm):
    """Oracle for axis-aligned grids: the box of dst voxels that overlap the src box's world extent (grown)."""
    lo = np.array([b[0] for b in box], float) - 0.5
    hi = np.array([b[1] for b in box], float) - 0.5
    w = [src_affine[:3, :3] @ c + src_affine[:3, 3] for c in (lo, hi)]
    wlo, whi = np.minimum(*w) - margin_mm, np.maximum(*w) + margin_mm
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in dst_shape], indexing="ij"), -1).reshape(-1, 3)
    world = idx @ dst_affine[:3, :3].T + dst_affine[:3, 3]
    half = np.abs(np.diag(dst_affine[:3, :3])) / 2.0
    inside = idx[np.all((world + half > wlo) & (world - half < whi), axis=1)]
    return tuple((int(inside[:, a].min()), int(inside[:, a].max()) + 1) for a in range(3))


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("margin", [0.0, 4.0])
def test_world_box_to_grid_matches_the_overlap_oracle(flip, margin):
    from kidneyseg.preprocessing.geometry import world_box_to_grid

    src = np.diag([4.0, 4.0, 5.0, 1.0])
    src[:3, 3] = [0.3, -10.3, 2.7]
    dst = np.diag([2.0, 1.5, 2.5, 1.0])
    dst[:3, 3] = [-0.1, -11.2, 0.4]
    shape = (40, 50, 30)
    if flip:  # an LPS-like grid: the first two axes run the other way
        dst = dst @ np.array([[-1, 0, 0, shape[0] - 1], [0, -1, 0, shape[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    box = ((3, 6), (2, 5), (1, 4))
    grid = Case(np.zeros(shape, np.float32), dst)
    got = world_box_to_grid(box, src, grid, margin)
    assert got == _voxels_overlapping(src, box, dst, shape, margin)


def test_world_box_to_grid_is_clipped_to_the_grid():
    from kidneyseg.preprocessing.geometry import world_box_to_grid

    grid = Case(np.zeros((10, 10, 10), np.float32), np.eye(4))
    assert world_box_to_grid(((-3, 4), (8, 30), (0, 10)), np.eye(4), grid, 1.0) == ((0, 5), (7, 10), (0, 10))


def test_resample_to_shape_fits_the_field_of_view_and_undoes(case3d):
    from kidneyseg.preprocessing.geometry import resample_to_shape

    out = resample_to_shape(case3d, (16, 20, 12), order=1)
    assert out.shape == (16, 20, 12)
    want = [n * s / p for n, s, p in zip(case3d.shape, case3d.spacing, (16, 20, 12))]
    np.testing.assert_allclose(out.spacing, want, rtol=1e-6)
    # the same field of view: the outer voxel edges stay where they were in world mm
    corner = lambda c: c.affine[:3, :3] @ np.full(3, -0.5) + c.affine[:3, 3]  # noqa: E731
    np.testing.assert_allclose(corner(out), corner(case3d), atol=1e-6)
    assert out.label is not None and set(np.unique(out.label)) <= set(np.unique(case3d.label))
    back = undo(out, out.label, is_label=True)
    assert back.shape == case3d.shape


def test_crop_keeps_the_image_voxels_and_the_original_affine(case3d):
    cropped = crop(case3d, [(2, 15), (5, 30), (-3, 50)])
    np.testing.assert_array_equal(cropped.image, case3d.image[2:15, 5:30, :])
    np.testing.assert_array_equal(original_affine(cropped), case3d.affine)  # crop as the first recorded step
    assert undo(cropped, cropped.label).dtype == case3d.label.dtype
    # a box one voxel wide is a crop, not an empty box
    assert crop(case3d, [(3, 4), (0, 40), (0, 36)]).shape == (1, 40, 36)


def test_crop_refusals_say_what_was_found_and_expected(case3d):
    with pytest.raises(KidneysegError) as exc:
        crop(case3d, [(0, 4), (0, 4)])
    assert str(exc.value) == "crop box has the wrong number of axes; found 2; expected 3"
    with pytest.raises(KidneysegError) as exc:
        crop(case3d, [(5, 5), (0, 4), (0, 4)])
    assert str(exc.value) == "crop box is empty; found [(5, 5), (0, 4), (0, 4)]; expected a box inside (20, 40, 36)"


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_undo_of_a_resample_uses_its_label_mode_and_keeps_the_dtype(case3d, mode):
    from kidneyseg.preprocessing.geometry import resample_array

    small = resample(case3d, (6.0, 2.4, 2.7), label_mode=mode)
    back = undo(small, small.label, is_label=True)
    assert back.dtype == small.label.dtype
    np.testing.assert_array_equal(back, resample_array(small.label, case3d.shape, order=1, is_label=True,
                                                       label_mode=mode))
    other = "linear" if mode == "nearest" else "nearest"
    assert (back != resample_array(small.label, case3d.shape, order=1, is_label=True, label_mode=other)).any()


def test_undo_of_probabilities_is_linear(case3d):
    """Probabilities come back by linear interpolation: a step stays within [0, 1] (a spline would overshoot)."""
    from kidneyseg.preprocessing.geometry import resample_array

    small = resample(case3d, (6.0, 2.4, 2.7))
    step = np.zeros((2, *small.shape), np.float32)
    step[1, :, : small.shape[1] // 2] = 1.0
    step[0] = 1.0 - step[1]
    back = undo(small, step, is_label=False, channel_axis=True)
    assert back.dtype == np.float32 and back.min() >= 0.0 and back.max() <= 1.0
    np.testing.assert_allclose(back[1], resample_array(step[1], case3d.shape, order=1, is_label=False), atol=1e-6)
    one = undo(small, step[1], is_label=False)  # one map, no channel axis
    assert one.min() >= 0.0 and one.max() <= 1.0
    np.testing.assert_allclose(one, back[1], atol=1e-6)


def test_nearest_label_resampling_known_answers():
    from kidneyseg.preprocessing.geometry import resample_array

    up = resample_array(np.arange(4, dtype=np.uint8)[:, None], (8, 1), order=0, is_label=True)
    np.testing.assert_array_equal(up[:, 0], [0, 0, 1, 1, 2, 2, 3, 3])  # each new voxel takes the old one it is in
    down = resample_array(np.arange(8, dtype=np.uint8)[:, None], (4, 1), order=0, is_label=True)
    np.testing.assert_array_equal(down[:, 0], [1, 3, 5, 7])


def test_empty_label_resampled_linearly_stays_empty_with_its_dtype():
    from kidneyseg.preprocessing.geometry import resample_array

    out = resample_array(np.zeros((6, 5, 4), np.uint8), (3, 10, 4), order=1, is_label=True, label_mode="linear")
    assert out.shape == (3, 10, 4) and out.dtype == np.uint8 and not out.any()


def test_reorient_already_there_still_records_its_undo(case3d):
    ras = reorient(case3d, "RAS")
    again = reorient(ras, "RAS")
    assert again.history[-1].name == "reorient" and again.history[-1].params["codes"] == "RAS"
    fresh = Case(image=ras.image, label=ras.label, affine=ras.affine)
    same = reorient(fresh, "RAS")
    np.testing.assert_array_equal(original_affine(same), fresh.affine)
    np.testing.assert_array_equal(undo(same, same.label), fresh.label)


def test_undo_refuses_an_array_off_the_case_grid(case3d):
    small = resample(case3d, (6.0, 2.4, 2.7))
    with pytest.raises(KidneysegError) as exc:
        undo(small, np.zeros((3, 3, 3), np.uint8))
    assert str(exc.value) == f"array to undo does not lie on the case grid; found (3, 3, 3); expected {small.shape}"


def test_resample_and_undo_argmax_refusals_give_their_whole_message():
    c = Case(np.zeros((4, 4, 4), np.float32), np.eye(4))
    with pytest.raises(KidneysegError) as exc:
        resample(c, (1, 0, 1))
    assert str(exc.value) == ("invalid target spacing; found (1.0, 0.0, 1.0); expected 3 positive values in mm. "
                              "Fix: give one positive spacing per image axis")
    with pytest.raises(KidneysegError) as exc:
        undo_argmax(c, np.zeros((2, 4, 4, 4), np.float32), np.array([1, 0]))
    assert str(exc.value) == ("the first probability channel must be background (label 0); found [1, 0]; "
                              "expected values sorted with 0 first")


def test_undo_argmax_without_a_resample_moves_the_channels(case3d):
    """Crops and reorientations only: the argmax is taken on the original grid, values mapped (0, 2, 3)."""
    moved = crop(reorient(case3d, "RAS"), [(1, 18), (3, 33), (0, 30)])
    rng = np.random.default_rng(1)
    p = rng.random((3, *moved.shape)).astype(np.float32)
    p /= p.sum(0, keepdims=True)
    got = undo_argmax(moved, p, [0, 2, 3])
    assert got.dtype == np.uint8 and got.shape == case3d.shape
    back = undo(moved, p, is_label=False, channel_axis=True)
    inside = back.sum(0) > 0.5  # outside the crop every channel comes back 0
    want = np.array([0, 2, 3], np.uint8)[np.argmax(back, axis=0)]
    np.testing.assert_array_equal(got[inside], want[inside])
    assert set(np.unique(got)) == {0, 2, 3}
    with pytest.raises(KidneysegError) as exc:
        undo_argmax(moved, p[:, :-1], [0, 2, 3])
    assert str(exc.value) == (f"probabilities to undo do not lie on the case grid; found {p[:, :-1].shape}; "
                              f"expected {(3, *moved.shape)}")


def test_unknown_label_interpolation_is_refused(case3d):
    with pytest.raises(KidneysegError) as exc:
        resample(case3d, 2.0, label_mode="cubic")
    assert str(exc.value) == "unknown label interpolation; found cubic; expected 'nearest' or 'linear'"


_NOT_RAS = np.array([[0, -0.8, 0, 10], [0, 0, 2.5, -3], [-0.8, 0, 0, 7], [0, 0, 0, 1.0]])
_RAS = np.array([[0.8, 0, 0, 10], [0, 0.8, 0, -3], [0, 0, 2.5, 7], [0, 0, 0, 1.0]])


@pytest.mark.parametrize("orientation,spacing,affine", [("PLS", (2.0, 2.0, None), _NOT_RAS),
                                                        ("RAS", (1.3, 2.1, 4.0), _NOT_RAS),
                                                        ("RAS", (1.3, 2.1, 4.0), _RAS)])  # resampled only
def test_undo_probabilities_box_equals_the_whole_grid_undo_in_the_box(orientation, spacing, affine):
    """Probabilities brought back only in a box of the input grid: the whole-grid undo, cut to the box."""
    from kidneyseg.preprocessing.geometry import box_slices, undo_probabilities_box

    rng = np.random.default_rng(0)
    case = Case(rng.random((60, 50, 30)).astype(np.float32), affine)
    pre = reorient(case, orientation)
    pre = resample(pre, [s if s is not None else pre.spacing[2] for s in spacing])
    probs = rng.random((3,) + pre.shape).astype(np.float32)
    full = undo(pre, probs, is_label=False, channel_axis=True)
    for box in (((5, 40), (3, 50), (0, 30)), ((0, 60), (0, 50), (29, 30)), ((59, 60), (0, 1), (10, 20))):
        sub = undo_probabilities_box(pre, probs, box)
        assert sub.shape == (3,) + tuple(hi - lo for lo, hi in box)
        assert np.abs(full[(slice(None), *box_slices(box))] - sub).max() < 1e-4


def test_undo_probabilities_box_of_a_resampled_2d_image():
    from kidneyseg.preprocessing.geometry import box_slices, undo_probabilities_box

    rng = np.random.default_rng(2)
    pre = resample(Case(rng.random((48, 64)).astype(np.float32), np.diag([0.3, 0.3, 1.0, 1.0])), [1.0, 1.0])
    probs = rng.random((2,) + pre.shape).astype(np.float32)
    full = undo(pre, probs, is_label=False, channel_axis=True)
    for box in (((0, 48), (0, 64)), ((7, 30), (40, 64))):
        sub = undo_probabilities_box(pre, probs, box)
        assert sub.shape == (2,) + tuple(hi - lo for lo, hi in box)
        assert np.abs(full[(slice(None), *box_slices(box))] - sub).max() < 1e-4


def test_undo_probabilities_box_after_a_crop_pads_like_undo():
    from kidneyseg.preprocessing.geometry import undo_probabilities_box

    rng = np.random.default_rng(1)
    case = Case(rng.random((20, 20, 10)).astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))
    pre = resample(crop(case, ((5, 15), (5, 15), (0, 10))), [2.0, 2.0, 2.0])
    probs = rng.random((2,) + pre.shape).astype(np.float32)
    sub = undo_probabilities_box(pre, probs, ((0, 20), (0, 20), (0, 10)))
    assert np.allclose(sub, undo(pre, probs, is_label=False, channel_axis=True), atol=1e-6)
    assert sub[:, :5].max() == 0.0  # outside the crop: nothing, as the undo pads


@pytest.mark.parametrize("order", [1, 3])
def test_resample_array_same_for_fortran_and_c_layout(order: int) -> None:
    """A Fortran-ordered volume (NIfTI) is resampled through its transpose: same values, F-ordered result."""
    from kidneyseg.preprocessing.geometry import resample_array

    a = np.random.default_rng(3).normal(size=(17, 12, 9)).astype(np.float32)
    c_out = resample_array(a, (7, 20, 9), order=order, is_label=False)
    f_out = resample_array(np.asfortranarray(a), (7, 20, 9), order=order, is_label=False)
    assert f_out.flags.f_contiguous and f_out.shape == c_out.shape == (7, 20, 9)
    np.testing.assert_allclose(f_out, c_out, atol=1e-5)
