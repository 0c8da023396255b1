"""A 3D Slicer ``.seg.nrrd`` reference cropped to its extent, scored by ``evaluate`` against a prediction.

Slicer saves a segmentation cropped to the segments' extent: the voxels of the extent only, the
``space origin`` moved to the extent's first voxel and ``Segmentation_ReferenceImageExtentOffset``
naming that voxel in the image.  The reference must land on the prediction's grid through the two
affines (world coordinates), exactly, and be refused with both files named when it cannot.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kidneyseg import io
from kidneyseg.errors import GeometryError
from kidneyseg.evaluation.files import evaluate_paths

nrrd = pytest.importorskip("nrrd")
pytest.importorskip("slicerio")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))

from io_factories import write_nrrd_lps  # noqa: E402

# LPS index -> world of the image, oblique and anisotropic as Slicer saves a CT (rows: directions of i, j, k)
DIRS_LPS = np.array([[0.0, 0.8, 0.0], [-0.7, 0.0, 0.0], [0.0, 0.0, 2.5]])
ORIGIN_LPS = np.array([-60.5, 14.25, -310.0])
SHAPE = (24, 20, 12)
BOX = ((6, 15), (5, 13), (3, 9))  # the segments' extent (half-open) in image voxels


def _truth() -> np.ndarray:
    """Kidney with a tumour inside, on the image grid; asymmetric so that any shift changes the overlap."""
    full = np.zeros(SHAPE, np.uint8)
    full[7:14, 6:12, 4:8] = 1
    full[9:12, 7:9, 5:7] = 2
    full[13, 11, 7] = 1
    return full


def _image(tmp_path: Path) -> io.Case:
    return io.read(write_nrrd_lps(tmp_path / "ct.nrrd", SHAPE, DIRS_LPS, ORIGIN_LPS))


def _write_cropped(path: Path, full: np.ndarray, box=BOX, *, origin_shift_vox=(0.0, 0.0, 0.0),
                   directions=DIRS_LPS) -> Path:
    """``full`` saved the way Slicer saves a segmentation cropped to its extent (single layer, LPS, gzip)."""
    sl = tuple(slice(a, b) for a, b in box)
    lo = np.array([a for a, _ in box], float)
    origin = ORIGIN_LPS + DIRS_LPS.T @ (lo + np.asarray(origin_shift_vox, float))
    path.parent.mkdir(parents=True, exist_ok=True)
    crop = full[sl]
    header = {"space": "left-posterior-superior", "space directions": directions, "space origin": origin,
              "kinds": ["domain"] * 3, "encoding": "gzip",
              "Segmentation_MasterRepresentation": "Binary labelmap",
              "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
              "Segmentation_ReferenceImageExtentOffset": " ".join(str(int(a)) for a, _ in box)}
    for n, (name, value) in enumerate((("Kidney", 1), ("Tumor", 2))):
        idx = np.argwhere(crop == value)
        extent = " ".join(f"{a} {b}" for a, b in zip(idx.min(0), idx.max(0))) if len(idx) else "0 -1 0 -1 0 -1"
        header.update({f"Segment{n}_ID": f"Segment_{n + 1}", f"Segment{n}_Name": name,
                       f"Segment{n}_LabelValue": str(value), f"Segment{n}_Layer": "0",
                       f"Segment{n}_Color": "0.5 0.5 0.5", f"Segment{n}_Extent": extent})
    nrrd.write(str(path), crop.astype(np.uint8), header, index_order="F")
    return path


@pytest.fixture()
def pair(tmp_path):
    image = _image(tmp_path)
    full = _truth()
    pred = io.write(full, tmp_path / "pred" / "case.nii.gz", image)
    ref = _write_cropped(tmp_path / "ref" / "case.seg.nrrd", full)
    return image, full, pred, ref


def test_cropped_reference_lands_on_the_prediction_grid(pair):
    _, _, pred, ref = pair
    assert io.read(ref, is_label=True).shape == (9, 8, 6)  # the file holds the extent only
    res = evaluate_paths(pred, ref, "kits19")
    assert {r["region"]: r["dice"] for r in res.rows} == {"kidney_and_masses": 1.0, "tumor": 1.0}
    assert all(r["hd95_mm"] == 0.0 for r in res.rows)
    # the folders form of `kidneyseg evaluate --pred DIR --ref DIR` too
    res = evaluate_paths(pred.parent, ref.parent, "kits19")
    assert [r["dice"] for r in res.rows] == [1.0, 1.0]


def test_placement_follows_the_origin_not_the_array(tmp_path, pair):
    """A reference whose origin is one voxel off is scored where it lies: Dice drops (a shifted placement fails)."""
    _, full, pred, _ = pair
    for shift in ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)):
        ref = _write_cropped(tmp_path / "shifted.seg.nrrd", full, origin_shift_vox=shift)
        dice = {r["region"]: r["dice"] for r in evaluate_paths(pred, ref, "kits19").rows}
        assert dice["kidney_and_masses"] < 0.95 and dice["tumor"] < 0.9, shift


def test_both_cropped_segmentations_meet_on_the_box_holding_both(tmp_path):
    _image(tmp_path)
    full = _truth()
    ref = _write_cropped(tmp_path / "ref.seg.nrrd", full)
    pred = _write_cropped(tmp_path / "pred.seg.nrrd", full, box=((7, 14), (6, 12), (4, 8)))  # a tighter extent
    assert [r["dice"] for r in evaluate_paths(pred, ref, "kits19").rows] == [1.0, 1.0]
    wider = _write_cropped(tmp_path / "wide.seg.nrrd", full, box=((2, 20), (5, 13), (1, 11)))
    assert [r["dice"] for r in evaluate_paths(wider, ref, "kits19").rows] == [1.0, 1.0]


def test_fractional_shift_or_other_spacing_is_refused_naming_both_files(tmp_path, pair):
    _, full, pred, _ = pair
    half = _write_cropped(tmp_path / "half.seg.nrrd", full, origin_shift_vox=(0.5, 0.0, 0.0))
    with pytest.raises(GeometryError, match="not on the prediction's voxel grid") as err:
        evaluate_paths(pred, half, "kits19")
    text = str(err.value)
    assert "half.seg.nrrd" in text and "case.nii.gz" in text and "Fix:" in text
    coarse = _write_cropped(tmp_path / "coarse.seg.nrrd", full, directions=DIRS_LPS * np.array([[1.0], [1.0], [2.0]]))
    with pytest.raises(GeometryError, match="not on the prediction's voxel grid") as err:
        evaluate_paths(pred, coarse, "kits19")
    assert "coarse.seg.nrrd" in str(err.value) and "case.nii.gz" in str(err.value)


def test_reference_outside_the_prediction_grid_is_refused(tmp_path, pair):
    image, full, _, ref = pair
    small = tmp_path / "small.nii.gz"  # a prediction on the image's first 10 voxels in i only
    nib.save(nib.Nifti1Image(full[:10], image.affine), str(small))
    with pytest.raises(GeometryError, match="outside the prediction's grid") as err:
        evaluate_paths(small, ref, "kits19")
    assert "case.seg.nrrd" in str(err.value) and "small.nii.gz" in str(err.value)
