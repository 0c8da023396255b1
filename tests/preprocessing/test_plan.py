"""apply_plan and plan_from_fingerprint on small synthetic cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kidneyseg.case import Case
from kidneyseg.errors import KidneysegError
from kidneyseg.preprocessing.geometry import undo
from kidneyseg.preprocessing.plan import apply_plan, load_plan, plan_from_fingerprint, save_plan


def _volume(rng: np.random.Generator) -> Case:
    """A 40x36x10 LAS volume (1.25 x 1.25 x 7.7 mm, like CHAOS) with a label block."""
    affine = np.diag([-1.25, 1.25, 7.7, 1.0])
    affine[:3, 3] = (20.0, -30.0, 5.0)
    image = rng.normal(100, 20, (40, 36, 10)).astype(np.float32)
    label = np.zeros(image.shape, np.uint8)
    label[5:15, 8:20, 2:6] = 2
    label[25:33, 8:20, 3:8] = 3
    return Case(image=image, affine=affine, label=label, name="v", modality="mr")


def _plan(**kw):  # type: ignore[no-untyped-def]
    plan = {"modality": "ct", "spatial_dims": 2, "orientation": "RAS", "target_spacing": [2.0, 2.0],
            "patch_size": [64, 64], "intensity": {"kind": "window", "low": -60, "high": 300}, "denoise": None,
            "labels": {"0": "background", "1": "kidney"}}
    plan.update(kw)
    return plan


def test_2d_plan_on_volume_resamples_in_plane_only(rng: np.random.Generator) -> None:
    case = _volume(rng)
    out = apply_plan(case, _plan())
    assert out.orientation == ("R", "A", "S")
    assert out.spacing == pytest.approx((2.0, 2.0, 7.7), rel=0.03)
    assert out.shape == (25, 22, 10)  # axis 2 untouched
    assert out.image.dtype == np.float32 and 0.0 <= out.image.min() and out.image.max() <= 1.0
    assert set(np.unique(out.label)) <= {0, 2, 3}  # nearest neighbour: no new label values
    assert [h.name for h in out.history] == ["reorient", "resample"]
    back = undo(out, out.label)
    assert back.shape == case.shape
    assert (back == case.label).mean() > 0.97


def test_3d_plan_with_denoise_and_zscore(rng: np.random.Generator) -> None:
    case = _volume(rng)
    plan = _plan(spatial_dims=3, target_spacing=[2.5, 2.5, 5.0], patch_size=[32, 32, 16],
                 intensity={"kind": "zscore", "mean": 100.0, "std": 20.0, "low": 0, "high": 200},
                 denoise={"method": "median", "size": 3})
    out = apply_plan(case, plan)
    assert out.spacing == pytest.approx((2.5, 2.5, 5.0), rel=0.05)
    assert abs(float(out.image.mean())) < 0.2 and float(out.image.std()) < 0.5  # median removed most noise
    assert undo(out, out.label).shape == case.shape


def test_undo_lands_on_input_grid_exactly_without_resampling(rng: np.random.Generator) -> None:
    case = _volume(rng)
    out = apply_plan(case, _plan(target_spacing=None, intensity={"kind": "percentile_zscore"}))
    np.testing.assert_array_equal(undo(out, out.label), case.label)
    assert abs(float(out.image.mean())) < 1e-3


def test_2d_plan_on_image_and_body_crop(rng: np.random.Generator) -> None:
    img = np.full((50, 40), -1000.0, np.float32)
    img[10:40, 8:30] = 40.0
    lab = np.zeros(img.shape, np.uint8)
    lab[20:25, 15:20] = 1
    case = Case(image=img, affine=np.diag([0.5, 0.5, 1.0, 1.0]), label=lab, modality="ct")
    out = apply_plan(case, _plan(orientation=None, target_spacing=[1.0, 1.0], crop="body"))
    assert [h.name for h in out.history] == ["crop", "resample"]
    assert out.shape[0] < 25 and out.label.sum() > 0
    np.testing.assert_array_equal(undo(out, out.label).shape, case.shape)


def test_plan_from_fingerprint_and_roundtrip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fp = {"modality": "ct", "spatial_dims": 3, "task": "kits23",
          "spacings": [[0.8, 0.8, 1.0], [0.7, 0.7, 5.0], [0.9, 0.9, 5.0]],
          "shapes": [[512, 512, 300], [512, 512, 60], [512, 512, 80]],
          "intensity_foreground": {"mean": 120.0, "std": 50.0, "p00_5": -40.0, "p99_5": 290.0}}
    p3 = plan_from_fingerprint(fp, 3)
    # median spacing (0.8, 0.8, 5.0) is anisotropic (6.25 > 3): the coarse axis takes the
    # 10th percentile of (1, 5, 5) = 1.8 mm, as nnU-Net does
    assert p3.target_spacing == (0.8, 0.8, 1.8)
    assert np.prod(p3.patch_size) <= 160 * 160 * 80 and all(s % 16 == 0 for s in p3.patch_size)
    assert p3.intensity == {"kind": "zscore", "mean": 120.0, "std": 50.0, "low": -40.0, "high": 290.0}
    assert p3.labels["3"] == "cyst"
    p2 = plan_from_fingerprint(fp, 2)
    assert p2.target_spacing == (0.8, 0.8) and p2.patch_size == (512, 512)
    mr = plan_from_fingerprint(dict(fp, modality="mr"), 3)
    assert mr.intensity is not None and mr.intensity["kind"] == "percentile_zscore"
    path = save_plan(p2, tmp_path / "plan.json")
    assert load_plan(path) == p2
    assert json.loads(path.read_text()) == p2.to_json()


def test_bad_plan_raises() -> None:
    with pytest.raises(KidneysegError, match="lacks keys"):
        apply_plan(Case(image=np.zeros((4, 4)), affine=np.eye(4)), {"modality": "ct"})
    with pytest.raises(KidneysegError, match="denoising method"):
        apply_plan(Case(image=np.zeros((4, 4)), affine=np.eye(4)),
                   _plan(orientation=None, target_spacing=None, denoise={"method": "wavelet"}))


def test_slice_context_known_answer_and_clamping() -> None:
    from kidneyseg.preprocessing.plan import slice_context

    vol = np.zeros((2, 2, 4), np.float32)
    vol[..., :] = np.arange(4, dtype=np.float32)  # slice k holds the value k
    ctx = slice_context(vol, 1)
    assert ctx.shape == (3, 2, 2, 4)
    np.testing.assert_array_equal(ctx[:, 0, 0, :], [[0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 3]])
    ctx2 = slice_context(vol, 2)
    np.testing.assert_array_equal(ctx2[:, 1, 1, 0], [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(slice_context(vol, 0), vol[None])
    img = np.ones((3, 5), np.float32)
    assert slice_context(img, 1).shape == (3, 3, 5)  # a 2D image has no neighbours: repeated


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_context_slices_must_be_a_whole_number(bad) -> None:
    from kidneyseg.preprocessing.plan import validate_plan

    plan = _plan(context_slices=bad)
    with pytest.raises(KidneysegError, match="context_slices"):
        validate_plan(plan)


def test_context_slices_rejected_for_3d_plans() -> None:
    from kidneyseg.preprocessing.plan import validate_plan

    plan = _plan(spatial_dims=3, target_spacing=None, patch_size=[8, 8, 8], context_slices=1)
    with pytest.raises(KidneysegError, match="context_slices"):
        validate_plan(plan)


def test_2d_plan_slices_volumes_axially_whatever_their_axis_order(rng: np.random.Generator) -> None:
    """KiTS volumes are stored I, P, L: a slice-wise model must still see axial slices, in display order."""
    from kidneyseg.preprocessing.geometry import reorient
    from kidneyseg.preprocessing.plan import SLICE_ORIENTATION

    case = _volume(rng)  # LAS
    ipl = reorient(case, "IPL")
    assert ipl.shape == (10, 36, 40)
    for plan in (_plan(orientation=None), _plan(orientation=SLICE_ORIENTATION)):
        a, b = apply_plan(case, plan), apply_plan(ipl, plan)
        assert a.orientation == b.orientation == ("P", "L", "S")
        assert a.shape[2] == 10  # the 10 axial slices
        np.testing.assert_array_equal(a.label, b.label)
        np.testing.assert_allclose(a.image, b.image, atol=1e-5)
        back = undo(b, b.label)  # every recorded step undone, the test's own reorient too
        assert back.shape == case.shape and (back == case.label).mean() > 0.97
    # ultrasound plans have no axial anatomy: the same rule that gives them no orientation leaves volumes as stored
    assert apply_plan(ipl, _plan(modality="us", orientation=None)).orientation == ("I", "P", "L")


def test_plan_from_fingerprint_gives_2d_ct_slices_the_display_orientation() -> None:
    fp = {"modality": "ct", "spatial_dims": 2, "task": "kits19", "spacings": [[0.8, 0.8], [0.7, 0.7]],
          "shapes": [[512, 512], [512, 512]]}
    assert plan_from_fingerprint(fp, 2).orientation == "PLS"
    assert plan_from_fingerprint(dict(fp, modality="us"), 2).orientation is None  # no axial anatomy


@pytest.mark.parametrize("stored", ["LAS", "IPL", "RAS"])
@pytest.mark.parametrize("layout", ["C", "F"])
def test_image_alone_is_resampled_before_reorienting_with_the_same_result(
    rng: np.random.Generator, stored: str, layout: str
) -> None:
    """An image without a label is resampled on its own axes and reoriented after (no full-size transposing copy):
    the voxels, grid and undo are those of reorienting first, for any stored axis order and memory layout."""
    from kidneyseg.preprocessing.geometry import reorient, undo_argmax
    from kidneyseg.preprocessing.plan import SLICE_ORIENTATION

    base = reorient(_volume(rng), stored)
    if layout == "F":
        base.image = np.asfortranarray(base.image)
        base.label = np.asfortranarray(base.label)
    alone = base.copy()
    alone.label = None
    for plan in (_plan(orientation=SLICE_ORIENTATION),
                 _plan(spatial_dims=3, target_spacing=[2.5, 3.0, 5.0], patch_size=[32, 32, 16])):
        fast, ref = apply_plan(alone, plan), apply_plan(base, plan)  # the label keeps reorient-then-resample
        assert [h.name for h in fast.history][-2:] == ["resample", "reorient"]  # after the test's own reorient
        assert [h.name for h in ref.history][-2:] == ["reorient", "resample"]
        assert fast.shape == ref.shape
        np.testing.assert_allclose(fast.affine, ref.affine, atol=1e-9)
        np.testing.assert_allclose(fast.image, ref.image, atol=1e-5)
        probs = rng.random((3, *fast.shape)).astype(np.float32)
        probs /= probs.sum(axis=0)
        np.testing.assert_array_equal(undo_argmax(fast, probs, [0, 2, 3]), undo_argmax(ref, probs, [0, 2, 3]))
        np.testing.assert_allclose(undo(fast, probs, is_label=False, channel_axis=True),
                                   undo(ref, probs, is_label=False, channel_axis=True), atol=1e-5)
