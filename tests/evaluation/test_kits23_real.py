"""Real KiTS23 masks (shared data), perturbed in known ways: Dice and surface Dice as KiTS23 defines them.

KiTS23's definitions: per region (kidney+masses {1,2,3}, masses {2,3}, tumour {2}; and the cyst {3}
that KiTS does not score, at the masses tolerance), Dice from
voxel counts and surface Dice from DeepMind's ``compute_surface_distances`` +
``compute_surface_dice_at_tolerance`` at the region tolerances; both empty -> 1, exactly one
empty -> 0.  The references here are the ``surface-distance`` package itself and a brute-force
k-d tree computation (tests/evaluation/_reference.py), on masks cropped around the kidneys.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from kidneyseg.evaluation import evaluate_case
from kidneyseg.labels import get_task

from ._reference import brute_surface_dice, kits_dice

pytestmark = pytest.mark.shared

CASES = ("case_00110", "case_00470")  # small (34 and 44 slices of 5 mm), with tumour and cyst


def _load(shared_data, name):
    """The label map cropped around the kidney that holds the tumour (3-voxel margin), and its spacing."""
    from kidneyseg.io import read

    case = read(shared_data / "kits23_masks" / f"{name}.nii.gz", is_label=True)
    lab = case.label
    comps, _ = ndimage.label(lab > 0)
    keep = np.bincount(comps[lab == 2]).argmax()
    nz = np.nonzero(comps == keep)
    box = tuple(slice(max(int(i.min()) - 3, 0), int(i.max()) + 4) for i in nz)
    return np.ascontiguousarray(lab[box]), case.spacing


def _per_label(ref, op):
    out = np.zeros_like(ref)
    for v in (1, 2, 3):
        out[op(ref == v)] = v
    return out


def _perturbations(ref):
    dropped = ref.copy()
    dropped[ref == 2] = 1
    swapped = ref.copy()
    swapped[ref == 2], swapped[ref == 3] = 3, 2
    return {
        "shift0": np.roll(ref, 1, axis=0),
        "shift1": np.roll(ref, 1, axis=1),
        "shift2": np.roll(ref, -1, axis=2),
        "erosion": _per_label(ref, ndimage.binary_erosion),
        "dilation": ndimage.grey_dilation(ref, size=(3, 3, 3)),
        "dropped_tumour": dropped,
        "swapped_labels": swapped,
        "empty": np.zeros_like(ref),
    }


@pytest.fixture(scope="module", params=CASES)
def scored(request, shared_data):
    """(reference, spacing, {perturbation: (prediction, rows)}) of one real case, scored once."""
    ref, spacing = _load(shared_data, request.param)
    out = {}
    for name, pred in _perturbations(ref).items():
        out[name] = (pred, evaluate_case(pred, ref, spacing, "kits23", case=name))
    return ref, spacing, out


def test_dice_equals_voxel_count_definition(scored):
    ref, _, results = scored
    for name, (pred, rows) in results.items():
        for region, row in zip(get_task("kits23").regions, rows):
            assert row["dice"] == pytest.approx(kits_dice(region.mask(pred), region.mask(ref)), abs=1e-6), (name, region.name)


def test_surface_dice_equals_deepmind_package(scored):
    sd_pkg = pytest.importorskip("surface_distance", reason="dev oracle 'surface-distance' not installed")
    ref, spacing, results = scored
    assert len(set(spacing)) > 1  # anisotropic
    for name, (pred, rows) in results.items():
        for region, row in zip(get_task("kits23").regions, rows):
            r, p = region.mask(ref), region.mask(pred)
            if r.any() and p.any():
                dm = sd_pkg.compute_surface_dice_at_tolerance(
                    sd_pkg.compute_surface_distances(r, p, spacing), region.tolerance_mm
                )
            else:  # the package gives nan/inf here; KiTS sets 1 (both empty) or 0 (one empty)
                dm = 1.0 if not (r.any() or p.any()) else 0.0
            assert row["surface_dice"] == pytest.approx(dm, abs=1e-6), (name, region.name)


def test_surface_dice_equals_brute_force_reference(scored):
    pytest.importorskip("surface_distance", reason="dev oracle 'surface-distance' not installed")
    ref, spacing, results = scored
    for name in ("shift0", "dilation", "empty"):
        pred, rows = results[name]
        for region, row in zip(get_task("kits23").regions, rows):
            expected = brute_surface_dice(region.mask(ref), region.mask(pred), spacing, region.tolerance_mm)
            assert row["surface_dice"] == pytest.approx(expected, abs=1e-6), (name, region.name)


def test_known_outcomes_of_the_perturbations(scored):
    _ref, spacing, results = scored
    rows = {n: r for n, (_, r) in results.items()}
    assert [r["region"] for r in rows["empty"]] == ["kidney_and_masses", "masses", "tumor", "cyst"]
    assert [r["dice"] for r in rows["empty"]] == [0.0, 0.0, 0.0, 0.0]  # both crops hold a cyst
    assert [r["surface_dice"] for r in rows["empty"]] == [0.0, 0.0, 0.0, 0.0]
    assert rows["dropped_tumour"][0]["dice"] == 1.0 and rows["dropped_tumour"][2]["dice"] == 0.0
    assert rows["dropped_tumour"][3]["dice"] == 1.0 and rows["dropped_tumour"][3]["assd_mm"] == 0.0
    assert rows["swapped_labels"][1]["dice"] == 1.0 and rows["swapped_labels"][2]["dice"] == 0.0
    assert rows["swapped_labels"][3]["dice"] == 0.0
    assert rows["shift0"][3]["hd95_mm"] <= spacing[0] + 1e-9 and rows["shift0"][3]["sdd_mm"] > 0
    # a one-voxel shift along the 5 mm axis moves no surface point further than one slice
    assert rows["shift0"][0]["hd95_mm"] <= spacing[0] + 1e-9
    assert rows["erosion"][0]["recall"] < 1.0 and rows["erosion"][0]["precision"] == 1.0
    assert rows["dilation"][0]["precision"] < 1.0 and rows["dilation"][0]["recall"] == 1.0
