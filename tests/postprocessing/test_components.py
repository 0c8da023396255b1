"""Known-answer tests for post-processing on small synthetic label maps."""

from __future__ import annotations

import numpy as np
import pytest

from kidneyseg.postprocessing import (
    fill_holes,
    keep_largest_components,
    postprocess_label,
    remove_small_components,
)


def _box(shape, lo, hi, value=1, out=None):
    out = np.zeros(shape, np.uint8) if out is None else out
    out[tuple(slice(a, b) for a, b in zip(lo, hi))] = value
    return out


def test_second_kidney_kept_only_if_one_third_of_first():
    lab = _box((40, 20, 20), (2, 2, 2), (12, 12, 12))  # 1000 voxels
    _box(lab.shape, (20, 2, 2), (27, 12, 12), out=lab)  # 700 -> kept
    _box(lab.shape, (30, 2, 2), (32, 12, 12), out=lab)  # 200 -> third component, dropped
    kept = keep_largest_components(lab > 0, 2, 1 / 3)
    assert kept.sum() == 1700
    lab2 = _box((40, 20, 20), (2, 2, 2), (12, 12, 12))
    _box(lab2.shape, (20, 2, 2), (23, 12, 12), out=lab2)  # 300 < 1000/3 -> dropped
    assert keep_largest_components(lab2 > 0, 2, 1 / 3).sum() == 1000


def test_small_blob_threshold_is_physical():
    lab = _box((30, 30, 30), (0, 0, 0), (5, 5, 5))  # 125 voxels
    # at 2 mm isotropic: 125 * 8 mm^3 = 1.0 mL
    assert remove_small_components(lab > 0, (2, 2, 2), 0.9).sum() == 125
    assert remove_small_components(lab > 0, (2, 2, 2), 1.1).sum() == 0
    # at 1 mm: 0.125 mL
    assert remove_small_components(lab > 0, (1, 1, 1), 0.2).sum() == 0


def test_fill_holes_fills_enclosed_cavity_only():
    m = np.zeros((12, 12, 12), bool)
    m[2:10, 2:10, 2:10] = True
    m[5:7, 5:7, 5:7] = False  # enclosed
    m[3, 3, 0:5] = False  # a dent open to the border: not a hole
    filled = fill_holes(m)
    assert filled[5, 5, 6]
    assert not filled[3, 3, 3]


def test_postprocess_lesions_must_touch_kidney_and_holes_filled():
    lab = _box((50, 30, 30), (5, 5, 5), (20, 20, 20), value=1)
    _box(lab.shape, (18, 10, 10), (24, 15, 15), value=2, out=lab)  # tumour touching kidney
    _box(lab.shape, (40, 10, 10), (45, 15, 15), value=3, out=lab)  # cyst far away
    lab[10, 10, 10] = 0  # enclosed hole
    lab[0, 0, 0] = 1  # one-voxel blob
    out = postprocess_label(lab, (1.0, 1.0, 1.0), min_volume_ml=0.01)
    assert (out == 2).sum() == (lab == 2).sum()
    assert (out == 3).sum() == 0
    assert out[10, 10, 10] == 1
    assert out[0, 0, 0] == 0
    assert out.dtype == np.uint8 and out.shape == lab.shape


def test_postprocess_2d_and_mr_labels():
    lab = _box((40, 40), (2, 2), (12, 12), value=2)
    _box(lab.shape, (20, 20), (30, 30), value=3, out=lab)
    _box(lab.shape, (35, 35), (36, 36), value=2, out=lab)  # tiny blob
    out = postprocess_label(lab, (1.0, 1.0), kidney_labels=(2, 3), lesion_labels=(), min_volume_ml=0.005)
    assert (out == 2).sum() == 100 and (out == 3).sum() == 100


def test_bad_spacing_raises():
    from kidneyseg.errors import GeometryError

    with pytest.raises(GeometryError):
        remove_small_components(np.ones((3, 3, 3), bool), (1.0, 1.0), 1.0)


def test_equal_sizes_tie_broken_in_world_space():
    """Three equal blobs, keep 2: the choice must follow the patient, not the array order."""
    lab = np.zeros((30, 6, 6), np.uint8)
    for lo in (2, 12, 22):
        lab[lo:lo + 3, 1:4, 1:4] = 1
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    a = keep_largest_components(lab > 0, 2, 0.1, affine=aff)
    flipped_aff = aff @ np.array([[-1, 0, 0, 29], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    b = keep_largest_components(lab[::-1] > 0, 2, 0.1, affine=flipped_aff)[::-1]
    np.testing.assert_array_equal(a, b)


def test_postprocess_2d_keeps_tumour_without_kidney_in_the_slice():
    # a KiTS slice can cut a tumour where its kidney is out of plane: the tumour stays in 2D ...
    lab = _box((60, 60), (10, 10), (30, 30), value=2)
    _box(lab.shape, (50, 50), (51, 51), value=2, out=lab)  # tiny tumour blob: still removed
    out = postprocess_label(lab, (1.0, 1.0), min_volume_ml=0.01)
    assert (out == 2).sum() == 400 and out[50, 50] == 0
    # ... while the 3D rule (lesions must touch kidney) still applies when asked for
    out3 = postprocess_label(lab, (1.0, 1.0), min_volume_ml=0.01, lesions_need_kidney=True)
    assert (out3 == 2).sum() == 0
    vol = _box((20, 20, 20), (5, 5, 5), (12, 12, 12), value=2)
    assert (postprocess_label(vol, (1.0, 1.0, 1.0), min_volume_ml=0.001) == 2).sum() == 0


def test_postprocess_2d_keeps_a_small_second_kidney_cross_section():
    """One slice cuts one kidney at its hilum and the other near a pole: in 2D the second cross-section stays
    whatever its share of the first (the 1/3 rule is about 3D volumes); a third blob still goes."""
    lab = _box((80, 80), (10, 10), (40, 40), value=1)  # 900 px
    _box(lab.shape, (10, 60), (20, 70), value=1, out=lab)  # 100 px: a pole, 1/9 of the first
    _box(lab.shape, (60, 60), (66, 66), value=1, out=lab)  # 36 px: a third blob
    out = postprocess_label(lab, (1.0, 1.0), min_volume_ml=0.01)
    assert (out == 1).sum() == 1000 and out[62, 62] == 0
    assert (postprocess_label(lab, (1.0, 1.0), min_volume_ml=0.01, second_kidney_ratio=1 / 3) == 1).sum() == 900
    vol = np.stack([lab] * 3, axis=2)  # the same blobs as a 3-slice volume: the 3D default drops the pole
    assert (postprocess_label(vol, (1.0, 1.0, 1.0), min_volume_ml=0.01) == 1).sum() == 2700


def test_volume_keeps_the_two_components_at_one_craniocaudal_level():
    """Two kidneys side by side at one level and false blobs in the pelvis (array axis 2 = superior): a blob
    larger than one kidney, or larger than both together, does not push a kidney out; without an affine the
    size rule alone decides."""
    lab = np.zeros((60, 20, 80), np.uint8)
    lab[5:15, 5:15, 50:70] = 1  # kidney A: 2000 voxels at levels 50-69
    lab[40:50, 5:15, 52:68] = 1  # kidney B: 1600 voxels, same levels
    lab[20:40, 5:15, 5:20] = 2  # pelvic "tumour": 3000 voxels at levels 5-19
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    out = postprocess_label(lab, (1.0, 1.0, 1.0), min_volume_ml=0.01, affine=aff)
    assert (out[5:15, 5:15, 50:70] == 1).all() and (out[40:50, 5:15, 52:68] == 1).all()
    assert (out[:, :, :30] == 0).all()
    lab[10:50, 5:15, 0:30] = 2  # now larger than both kidneys together (12000 voxels)
    out = postprocess_label(lab, (1.0, 1.0, 1.0), min_volume_ml=0.01, affine=aff)
    assert (out[:, :, :30] == 0).all() and (out > 0).sum() == 3600
    kept = keep_largest_components(lab > 0, 2, 1 / 3)  # no affine: by size alone the pelvic blob wins, alone
    assert kept[:, :, :30].sum() == 12000 and kept.sum() == 12000
    rotated = np.transpose(lab, (2, 1, 0))  # superior along array axis 0: the affine says which axis that is
    aff_r = np.array([[0, 0, 1.0, 0], [0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1.0]])
    out_r = postprocess_label(rotated, (1.0, 1.0, 1.0), min_volume_ml=0.01, affine=aff_r)
    np.testing.assert_array_equal(out_r, np.transpose(out, (2, 1, 0)))


def test_face_connectivity_splits_diagonal_touch():
    m = np.zeros((4, 4, 4), bool)
    m[0, 0, 0] = m[1, 1, 1] = True  # corner contact only
    from kidneyseg.preprocessing.components import label_components

    assert label_components(m)[1] == 1
    assert label_components(m, "face")[1] == 2
    assert keep_largest_components(m, 1, 1.0, connectivity="face").sum() == 1
    from kidneyseg.errors import RegistryError

    with pytest.raises(RegistryError, match="face"):
        label_components(m, "diagonal")


def test_postprocess_mr_side_labels_drop_blob_touching_across_a_slice():
    """CHAOS-like: 7.7 mm slices; a left-kidney blob on the spleen touches the left kidney only
    along an edge on the next slice and is dropped; each side keeps one organ."""
    lab = _box((60, 60, 12), (5, 20, 2), (20, 35, 7), value=2)  # right kidney, 5 slices
    _box(lab.shape, (35, 20, 2), (50, 35, 7), value=3, out=lab)  # left kidney
    _box(lab.shape, (50, 35, 7), (58, 45, 10), value=3, out=lab)  # spleen blob: edge contact on slice 6/7
    _box(lab.shape, (5, 45, 2), (12, 52, 4), value=2, out=lab)  # separate small right blob
    out = postprocess_label(lab, (1.25, 1.25, 7.7), kidney_labels=(2, 3), lesion_labels=(), min_volume_ml=0.1)
    assert (out == 3).sum() == 15 * 15 * 5
    assert (out == 2).sum() == 15 * 15 * 5


def test_postprocess_side_labels_do_not_drop_a_kidney_for_two_larger_false_blobs():
    """Each side label keeps its own largest blob: two false left-kidney blobs larger than the right
    kidney must not push the right kidney out (no 'two largest components' rule on the union)."""
    lab = _box((80, 40, 10), (2, 10, 2), (12, 20, 6), value=2)  # right kidney: 400 voxels
    _box(lab.shape, (30, 5, 1), (45, 20, 8), value=3, out=lab)  # left kidney: 1575 voxels
    _box(lab.shape, (55, 5, 1), (70, 15, 7), value=3, out=lab)  # false left blob: 900 voxels
    out = postprocess_label(lab, (1.0, 1.0, 1.0), kidney_labels=(2, 3), lesion_labels=(), min_volume_ml=0.01)
    assert (out == 2).sum() == 400
    assert (out == 3).sum() == 1575


def test_keep_largest_components_ranks_by_score():
    m = np.zeros((30, 10), bool)
    m[0:10, :] = True  # 100 pixels, unsure
    m[20:26, :] = True  # 60 pixels, sure
    score = np.zeros(m.shape)
    score[20:26, :] = 1.0
    score[0:10, 0:2] = 1.0  # 20 sure pixels in the large one
    kept = keep_largest_components(m, 1, 1.0, score=score)
    assert kept.sum() == 60 and kept[22, 5]
    assert keep_largest_components(m, 1, 1.0).sum() == 100  # without a score: the larger


def test_postprocess_side_label_keeps_the_confident_component():
    """A wide, hesitant false left-kidney rim (a giant cyst) outgrows the true left kidney: with the
    probabilities the confidently found kidney is kept; without them the larger blob."""
    lab = _box((80, 40, 10), (2, 10, 2), (12, 20, 6), value=2)
    _box(lab.shape, (30, 10, 2), (40, 20, 6), value=3, out=lab)  # true left kidney: 400 voxels
    _box(lab.shape, (50, 5, 1), (70, 35, 8), value=3, out=lab)  # rim on a cyst: 4200 voxels
    p3 = np.where(lab == 3, 0.6, 0.0)
    p3[30:40, 10:20, 2:6] = 0.97
    p2 = np.where(lab == 2, 0.95, 0.0)
    kw = dict(kidney_labels=(2, 3), lesion_labels=(), min_volume_ml=0.01)
    out = postprocess_label(lab, (1.0, 1.0, 1.0), probabilities={2: p2, 3: p3}, **kw)
    assert (out == 3).sum() == 400 and out[35, 15, 4] == 3
    assert (postprocess_label(lab, (1.0, 1.0, 1.0), **kw) == 3).sum() == 4200
    from kidneyseg.errors import GeometryError

    with pytest.raises(GeometryError, match="probability map"):
        postprocess_label(lab, (1.0, 1.0, 1.0), probabilities={3: p3[:-1]}, **kw)


def test_touching_keeps_components_that_meet_the_anchor_by_a_face_edge_or_corner():
    from kidneyseg.postprocessing.components import touching

    anchor = np.zeros((12, 12, 12), np.uint8)
    anchor[4:6, 4:6, 4:6] = 3  # any nonzero value is the anchor
    mask = np.zeros_like(anchor)
    mask[5:8, 5:8, 5:8] = 2  # overlaps the anchor (label values, not booleans)
    mask[6, 3, 6] = 2  # meets the anchor voxel (5, 4, 5) across a corner only
    mask[2, 4, 4] = 2  # one voxel of background (x = 3) from the anchor: not touching
    mask[0:2, 10:12, 0:2] = 2  # far away
    got = touching(mask, anchor)
    want = np.zeros(mask.shape, bool)
    want[5:8, 5:8, 5:8] = True
    want[6, 3, 6] = True
    np.testing.assert_array_equal(got, want)
    empty = touching(np.zeros_like(mask), anchor)
    assert empty.dtype == bool and not empty.any()


def test_voxel_volume_in_ml_and_its_refusal():
    from kidneyseg.errors import GeometryError
    from kidneyseg.postprocessing.components import _unit_ml

    assert _unit_ml((1.0, 1.0, 1.0), 3) == 0.001  # 1 mm^3 = 0.001 mL
    assert _unit_ml((2.0, 0.5, 3.0, 9.0), 3) == pytest.approx(0.003)  # extra axes ignored
    for bad in ((1, 0, 1), (1, -1, 1), (1, 1)):
        with pytest.raises(GeometryError) as exc:
            _unit_ml(bad, 3)
        assert str(exc.value) == (f"spacing does not match the label map; found {bad}; expected 3 positive values "
                                  "in mm. Fix: pass case.spacing of the grid the label map lies on")


def test_postprocess_defaults_known_answer():
    """Defaults: at most two kidneys, a lesion needs a kidney beside it (else background, not kidney), and a
    0.3 mL tumour on a kidney stays (the floor is 0.1 mL)."""
    from kidneyseg.postprocessing import postprocess_label

    lab = np.zeros((60, 30, 30), np.uint8)
    lab[2:12, 5:25, 5:25] = 1  # 4.0 mL kidney
    lab[20:30, 5:25, 5:25] = 1  # 4.0 mL kidney
    lab[38:46, 5:25, 5:25] = 1  # 3.2 mL: a third kidney
    lab[12:14, 10:20, 10:25] = 2  # 0.3 mL tumour on the first kidney
    lab[52:57, 10:20, 10:20] = 2  # 0.5 mL tumour with no kidney next to it
    out = postprocess_label(lab, (1.0, 1.0, 1.0), lesions_need_kidney=True)
    assert (out[38:46] == 0).all()  # third kidney removed
    assert (out[2:12, 5:25, 5:25] == 1).all() and (out[20:30, 5:25, 5:25] == 1).all()
    assert (out[12:14, 10:20, 10:25] == 2).all()  # the small tumour on a kidney is kept
    assert (out[50:] == 0).all()  # the lone tumour goes to background


def _old_touching(mask: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """The dilation definition: components of mask meeting the 3x3(x3)-dilated anchor."""
    from scipy import ndimage

    lab, _ = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    grown = ndimage.binary_dilation(anchor, structure=np.ones((3,) * mask.ndim, bool))
    hit = np.unique(lab[grown & mask])
    return np.isin(lab, hit[hit != 0])


@pytest.mark.parametrize("shape", [(40, 33), (17, 21, 9), (30, 12, 14)])
@pytest.mark.parametrize("density", [0.3, 0.55, 0.7])
def test_fill_holes_and_touching_equal_scipy_on_random_masks(shape, density) -> None:  # type: ignore[no-untyped-def]
    """Oracles: scipy.ndimage.binary_fill_holes, and components meeting the dilated anchor (the old code)."""
    from scipy import ndimage

    from kidneyseg.postprocessing.components import fill_holes, touching

    rng = np.random.default_rng(len(shape) * 100 + int(density * 10))
    for trial in range(4):
        mask = ndimage.binary_opening(rng.random(shape) < density) if trial % 2 else rng.random(shape) < density
        np.testing.assert_array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))
        anchor = rng.random(shape) < 0.02
        np.testing.assert_array_equal(touching(mask, anchor), _old_touching(mask, anchor))
        np.testing.assert_array_equal(touching(mask & ~anchor, anchor), _old_touching(mask & ~anchor, anchor))


def test_drop_hesitant_components_known_answer():
    """Two kidney-region blobs (one kidney + tumour, mean probability 0.95; one kidney, 0.7) and a liver blob:
    a floor of 0.8 removes the hesitant kidney blob only; the liver and the confident blob stay as they were."""
    from kidneyseg.errors import GeometryError
    from kidneyseg.postprocessing import drop_hesitant_components

    lab = np.zeros((12, 12), np.uint8)
    prob = np.zeros((12, 12), np.float32)
    lab[1:4, 1:4], lab[2, 2] = 1, 2  # confident: kidney with a tumour pixel
    prob[1:4, 1:4] = 0.95
    lab[7:10, 7:10] = 1  # hesitant: mean 0.7 (one pixel at 0.98 does not save it)
    prob[7:10, 7:10] = 0.665
    prob[8, 8] = 0.98
    lab[1:3, 8:11] = 5  # another organ: never touched
    out = drop_hesitant_components(lab, prob, 0.8, kidney_labels=(1,), lesion_labels=(2,))
    expect = lab.copy()
    expect[7:10, 7:10] = 0
    assert np.array_equal(out, expect) and out.dtype == np.uint8
    assert np.array_equal(drop_hesitant_components(lab, prob, 0.6, (1,), (2,)), lab)
    assert np.array_equal(drop_hesitant_components(lab, prob, 0.96, (1,), (2,)), np.where(np.isin(lab, (1, 2)), 0, lab))
    with pytest.raises(GeometryError, match="does not match"):
        drop_hesitant_components(lab, prob[:5], 0.8)
