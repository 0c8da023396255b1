"""Surface distances: the surfel table, DeepMind's package as oracle, known geometry."""

from __future__ import annotations

import numpy as np
import pytest

from kidneyseg.errors import GeometryError
from kidneyseg.evaluation import (
    assd,
    hd95,
    neighbour_code_table,
    robust_hausdorff,
    sdd,
    surface_dice,
    surface_distances,
)

from ._reference import brute_surface

sd_pkg = pytest.importorskip("surface_distance", reason="dev oracle 'surface-distance' not installed")


@pytest.fixture(autouse=True)
def _fresh_code_tables():
    """Each test builds the neighbour-code tables itself: a table cached by an earlier test (or process)
    would hide a broken table builder (mutation testing found 71 surviving mutants of the 2D builder so)."""
    neighbour_code_table.cache_clear()
    yield


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 1.3, 2.9), (5.0, 0.78125, 0.78125), (3.0, 0.5, 2.0)])
def test_3d_surfel_table_matches_deepmind_for_all_256_codes(spacing):
    ours = neighbour_code_table(spacing)
    theirs = sd_pkg.lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.4, 1.7)])
def test_2d_contour_table_matches_deepmind_for_all_16_codes(spacing):
    ours = neighbour_code_table(spacing)
    theirs = sd_pkg.lookup_tables.create_table_neighbour_code_to_contour_length(spacing)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def _blobs(rng, shape, n=3):
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    a = noise > 0.15
    b = ndimage.binary_dilation(a, iterations=1) ^ (ndimage.gaussian_filter(rng.standard_normal(shape), 2.0) > 0.4)
    return a, b


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.6)])
def test_distances_and_metrics_match_deepmind_on_random_shapes(rng, spacing):
    ref, pred = _blobs(rng, (24, 30, 28))
    ours = surface_distances(ref, pred, spacing)
    theirs = sd_pkg.compute_surface_distances(ref, pred, spacing)
    np.testing.assert_allclose(ours.ref_to_pred, theirs["distances_gt_to_pred"], rtol=1e-12)
    np.testing.assert_allclose(ours.pred_to_ref, theirs["distances_pred_to_gt"], rtol=1e-12)
    np.testing.assert_allclose(np.sort(ours.ref_areas), np.sort(theirs["surfel_areas_gt"]), rtol=1e-12)
    np.testing.assert_allclose(ours.pred_areas.sum(), theirs["surfel_areas_pred"].sum(), rtol=1e-12)
    for tol in (0.5, 1.0330772532390826, 2.0):
        assert surface_dice(ours, tol) == pytest.approx(sd_pkg.compute_surface_dice_at_tolerance(theirs, tol), abs=1e-12)
    assert hd95(ours) == pytest.approx(sd_pkg.compute_robust_hausdorff(theirs, 95), abs=1e-12)
    assert robust_hausdorff(ours, 100) == pytest.approx(sd_pkg.compute_robust_hausdorff(theirs, 100), abs=1e-12)
    # ASSD: pooled surfel-weighted mean, i.e. the area-weighted mix of DeepMind's two directed means
    m_rp, m_pr = sd_pkg.compute_average_surface_distance(theirs)
    a_r, a_p = theirs["surfel_areas_gt"].sum(), theirs["surfel_areas_pred"].sum()
    assert assd(ours) == pytest.approx((m_rp * a_r + m_pr * a_p) / (a_r + a_p), abs=1e-12)


def test_distances_match_brute_force_kdtree(rng):
    spacing = (3.0, 0.7, 0.9)
    ref, pred = _blobs(rng, (16, 26, 22))
    ours = surface_distances(ref, pred, spacing)
    brute = brute_surface(ref, pred, spacing)
    np.testing.assert_allclose(ours.ref_to_pred, np.sort(brute["ref_to_pred"]), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours.pred_to_ref, np.sort(brute["pred_to_ref"]), rtol=1e-9, atol=1e-9)
    assert ours.ref_areas.sum() == pytest.approx(brute["ref_areas"].sum(), rel=1e-12)


def test_2d_matches_deepmind(rng):
    from scipy import ndimage

    ref = ndimage.gaussian_filter(rng.standard_normal((60, 50)), 3) > 0.05
    pred = np.roll(ref, (2, -1), axis=(0, 1))
    ours = surface_distances(ref, pred, (0.4, 1.7))
    theirs = sd_pkg.compute_surface_distances(ref, pred, (0.4, 1.7))
    assert surface_dice(ours, 1.0) == pytest.approx(sd_pkg.compute_surface_dice_at_tolerance(theirs, 1.0), abs=1e-12)
    assert hd95(ours) == pytest.approx(sd_pkg.compute_robust_hausdorff(theirs, 95), abs=1e-12)


def test_object_touching_the_array_border():
    ref = np.zeros((6, 7, 8), bool)
    ref[:3, :, 2:] = True
    pred = np.zeros_like(ref)
    pred[:4, :, 2:] = True
    ours = surface_distances(ref, pred, (1.5, 1.0, 1.0))
    theirs = sd_pkg.compute_surface_distances(ref, pred, (1.5, 1.0, 1.0))
    np.testing.assert_allclose(ours.ref_to_pred, theirs["distances_gt_to_pred"])
    assert hd95(ours) == pytest.approx(1.5)


# ------------------------------------------------------------------ known geometry
@pytest.mark.parametrize("k", [1, 2, 3])
def test_cube_shifted_along_finest_axis_hd95_is_shift_in_mm(k):
    """A cube shifted by k voxels along axis 0 (spacing s0 < s1, s2): every surface distance is <= k s0
    and the whole leading face (> 5 % of the area) is at k s0, so HD95 = HD = k s0."""
    spacing = (0.6, 1.1, 1.7)
    n = 12
    ref = np.zeros((n + 8, n + 4, n + 4), bool)
    ref[2 : 2 + n, 2 : 2 + n, 2 : 2 + n] = True
    pred = np.roll(ref, k, axis=0)
    sd = surface_distances(ref, pred, spacing)
    assert hd95(sd) == pytest.approx(k * spacing[0], abs=1e-12)
    assert robust_hausdorff(sd, 100) == pytest.approx(k * spacing[0], abs=1e-12)
    assert max(sd.ref_to_pred.max(), sd.pred_to_ref.max()) == pytest.approx(k * spacing[0])
    # surface Dice: full at tolerance k s0, partial just below it
    assert surface_dice(sd, k * spacing[0]) == 1.0
    assert 0 < surface_dice(sd, k * spacing[0] - 1e-6) < 1


def test_cube_shift_by_one_assd_is_area_fraction_times_spacing():
    """Shift by one voxel along the finest axis: each surfel's distance is 0 or s0, so
    ASSD = s0 * (area at distance s0) / (total area) and SDD = s0 * sqrt(f (1 - f))."""
    spacing = (0.5, 1.2, 2.0)
    ref = np.zeros((16, 14, 14), bool)
    ref[3:13, 2:12, 2:12] = True
    pred = np.roll(ref, 1, axis=0)
    sd = surface_distances(ref, pred, spacing)
    d = np.concatenate([sd.ref_to_pred, sd.pred_to_ref])
    a = np.concatenate([sd.ref_areas, sd.pred_areas])
    assert set(np.round(d, 12)) == {0.0, 0.5}
    f = a[d > 0].sum() / a.sum()
    assert assd(sd) == pytest.approx(0.5 * f, rel=1e-12)
    assert sdd(sd) == pytest.approx(0.5 * np.sqrt(f * (1 - f)), rel=1e-12)


def _shifted_sphere_expectation(radius: float, d: float) -> tuple[float, float, float]:
    """Continuous answer for two spheres of radius R whose centres are d apart.

    A point of sphere A at polar angle theta (cos theta = u, uniform in [-1, 1] over the area)
    lies at w = sqrt(R^2 + d^2 - 2 R d u) from the other centre, hence at |w - R| from the other
    sphere.  Returns the mean (ASSD), the 95th percentile (HD95) and the standard deviation (SDD)
    of that distance, by quadrature over u (both directions have the same distribution)."""
    u = np.linspace(-1.0, 1.0, 400001)
    dist = np.abs(np.sqrt(radius**2 + d**2 - 2 * radius * d * u) - radius)
    return float(dist.mean()), float(np.percentile(dist, 95)), float(dist.std())


def test_sphere_shifted_assd_hd95_sdd_follow_the_continuous_answer():
    """Spheres (in mm, so ellipsoids in the anisotropic voxel grid) shifted by k voxels along
    axis 0 give the continuous ASSD, HD95 and SDD within discretisation error: DeepMind's surface
    is the band of voxel corners with a mixed 2x2x2 neighbourhood, which biases distances low by up
    to half a voxel (here about 0.24 mm), so the tolerance is half the largest voxel size."""
    spacing = (0.5, 0.4, 0.6)
    radius, k = 14.0, 8  # mm, voxels along axis 0 -> d = 4 mm
    d = k * spacing[0]
    shape = tuple(int(np.ceil((2 * radius + d + 4) / s)) for s in spacing)
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    centre = [2 + radius, shape[1] * spacing[1] / 2, shape[2] * spacing[2] / 2]
    ref = sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius**2
    pred = np.roll(ref, k, axis=0)
    sd = surface_distances(ref, pred, spacing)
    mean, p95, std = _shifted_sphere_expectation(radius, d)
    tol = 0.5 * max(spacing)
    assert assd(sd) == pytest.approx(mean, abs=tol)
    assert hd95(sd) == pytest.approx(p95, abs=tol)
    assert sdd(sd) == pytest.approx(std, abs=tol)
    assert mean == pytest.approx(d / 2, rel=1e-4)  # the continuous mean is exactly d / 2


def test_empty_sides():
    ref = np.zeros((5, 5, 5), bool)
    ref[1:3, 1:3, 1:3] = True
    empty = np.zeros_like(ref)
    sd = surface_distances(ref, empty, (1, 1, 1))
    assert sd.pred_empty and not sd.ref_empty and np.all(np.isinf(sd.ref_to_pred))
    assert surface_dice(sd, 1.0) == 0.0
    assert np.isnan(hd95(sd)) and np.isnan(assd(sd)) and np.isnan(sdd(sd))
    both = surface_distances(empty, empty, (1, 1, 1))
    assert surface_dice(both, 1.0) == 1.0 and np.isnan(hd95(both))


def test_bad_spacing_and_shapes_raise():
    a = np.zeros((4, 4, 4), bool)
    with pytest.raises(GeometryError, match="spacing"):
        surface_distances(a, a, (1.0, 0.0, 1.0))
    with pytest.raises(GeometryError, match="spacing"):
        surface_distances(a, a, (1.0, 1.0))
    with pytest.raises(GeometryError, match="shapes"):
        surface_distances(a, np.zeros((4, 4, 5), bool), (1, 1, 1))


def test_hd95_and_assd_are_surfel_area_weighted():
    """HD95 is the area-weighted percentile (DeepMind), not the plain percentile of surfel distances."""
    from kidneyseg.evaluation import SurfaceDistances

    def sd(areas):
        return SurfaceDistances(np.array([0.0, 1.0, 5.0]), np.array([0.0]), np.array(areas), np.array([1.0]))

    assert hd95(sd([0.5, 0.47, 0.03])) == 1.0  # 97 % of the area within 1 mm
    assert hd95(sd([0.5, 0.44, 0.06])) == 5.0  # only 94 % within 1 mm
    assert np.percentile([0.0, 1.0, 5.0, 0.0], 95) != 1.0  # a per-voxel percentile would differ
    assert assd(sd([0.5, 0.47, 0.03])) == pytest.approx((0.47 * 1 + 0.03 * 5) / 2.0)


FIELDS = ("ref_to_pred", "pred_to_ref", "ref_areas", "pred_areas")


def test_label_values_count_as_the_region():
    """Masks given as label maps (tumour = 2): any nonzero voxel is in the region, as with booleans."""
    ref = np.zeros((8, 8, 8), np.uint8)
    ref[2:5, 2:5, 2:5] = 2
    pred = np.zeros_like(ref)
    pred[3:6, 2:5, 2:6] = 2
    as_labels = surface_distances(ref, pred, (1.0, 2.0, 1.5))
    as_bool = surface_distances(ref > 0, pred > 0, (1.0, 2.0, 1.5))
    assert as_bool.ref_to_pred.size and as_bool.pred_to_ref.size
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(as_labels, f), getattr(as_bool, f))


def test_both_empty_gives_empty_arrays():
    e = np.zeros((4, 4, 4), bool)
    sd = surface_distances(e, e, (1, 1, 1))
    assert all(isinstance(getattr(sd, f), np.ndarray) and getattr(sd, f).size == 0 for f in FIELDS)


def test_robust_hausdorff_defaults_to_95_percent():
    from kidneyseg.evaluation import SurfaceDistances

    # 95.5 % of the area within 1 mm: the 95 % distance is 1 mm, the 96 % distance 5 mm
    sd = SurfaceDistances(np.array([0.0, 1.0, 5.0]), np.array([0.0]), np.array([0.5, 0.455, 0.045]), np.array([1.0]))
    assert robust_hausdorff(sd) == hd95(sd) == 1.0
    assert robust_hausdorff(sd, 96.0) == 5.0


def test_refusals_give_their_whole_message():
    a = np.zeros((4, 4, 4), bool)
    cases = [
        ((np.zeros(4, bool), np.zeros(4, bool), (1,)),
         "surface distances need 2D or 3D masks; found shape (4,); expected 2 or 3 axes"),
        ((a, np.zeros((4, 4, 5), bool), (1, 1, 1)),
         "prediction and reference have different shapes; found prediction (4, 4, 5), reference (4, 4, 4); expected "
         "the same shape. Fix: resample the prediction onto the reference grid (nearest neighbour)"),
        ((a, a, (1, 1)),
         "spacing does not fit the masks; found spacing (1.0, 1.0) for shape (4, 4, 4); expected 3 positive values "
         "in mm. Fix: pass the reference's voxel size in mm, one value per array axis"),
    ]
    for args, message in cases:
        with pytest.raises(Exception) as exc:
            surface_distances(*args)
        assert str(exc.value) == message
