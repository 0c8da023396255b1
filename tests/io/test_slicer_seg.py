"""3D Slicer segmentations (.seg.nrrd): values from segment names, layers, and extent-cropped files placed on the image grid."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from io_factories import write_nrrd_lps

from kidneyseg import io
from kidneyseg.errors import GeometryError, InputError

nrrd = pytest.importorskip("nrrd")

# LPS index -> world of the image: oblique, anisotropic (as Slicer saves a CT)
DIRS_LPS = np.array([[0.8, 0.0, 0.0], [0.0, 0.0, 0.7], [0.0, -2.5, 0.0]])  # rows: directions of i, j, k
ORIGIN_LPS = np.array([120.5, -40.25, 310.0])
SHAPE = (20, 18, 10)


def _segment_fields(segments: list[tuple[str, int, int]]) -> dict[str, str]:
    """Slicer header keys for (name, label value, layer) segments."""
    fields = {"Segmentation_MasterRepresentation": "Binary labelmap",
              "Segmentation_ContainedRepresentationNames": "Binary labelmap|"}
    for n, (name, value, layer) in enumerate(segments):
        fields.update({f"Segment{n}_ID": f"Segment_{n + 1}", f"Segment{n}_Name": name,
                       f"Segment{n}_LabelValue": str(value), f"Segment{n}_Layer": str(layer),
                       f"Segment{n}_Color": "0.5 0.5 0.5", f"Segment{n}_Extent": "0 -1 0 -1 0 -1"})
    return fields


def _write_seg(path: Path, arr: np.ndarray, segments, origin=ORIGIN_LPS, offset=(0, 0, 0)) -> Path:
    header = {"space": "left-posterior-superior", "space directions": DIRS_LPS, "space origin": np.asarray(origin),
              "kinds": ["domain"] * 3, "encoding": "gzip",
              "Segmentation_ReferenceImageExtentOffset": " ".join(str(o) for o in offset), **_segment_fields(segments)}
    nrrd.write(str(path), arr.astype(np.uint8), header, index_order="F")
    return path


def _image(tmp_path: Path) -> io.Case:
    """The CT the segmentation was drawn on, as NRRD (LPS) like Slicer saves it."""
    return io.read(write_nrrd_lps(tmp_path / "ct.nrrd", SHAPE, DIRS_LPS, ORIGIN_LPS))


def test_values_come_from_segment_names(tmp_path):
    arr = np.zeros(SHAPE, np.uint8)
    arr[2:8, 2:8, 2:6] = 2  # "Kidney" stored as 2
    arr[4:6, 4:6, 3:5] = 1  # "Tumor" stored as 1
    case = io.read(_write_seg(tmp_path / "s.seg.nrrd", arr, [("Tumor", 1, 0), ("Kidney", 2, 0)]), is_label=True)
    lab = case.label
    assert lab[4, 4, 3] == 2 and lab[2, 2, 2] == 1  # tumour 2, kidney 1 as the toolkit numbers them
    assert int((lab == 2).sum()) == 8 and int((lab == 1).sum()) == 6 * 6 * 4 - 8
    assert case.meta["segments"] == {1: "Kidney", 2: "Tumor"} and case.meta["segment_task"] == "kits23"


@pytest.mark.parametrize("names,expected", [
    (("Tumour", "kidney"), {1: 2, 2: 1}),
    (("Mass", "Renal cyst"), {1: 2, 2: 3}),
    (("Right kidney", "Left Kidney"), {1: 2, 2: 3}),  # chaos-mr / TotalSegmentator values
    (("KIDNEY", "Cyst"), {1: 1, 2: 3}),
])
def test_synonyms_case_insensitive(tmp_path, names, expected):
    arr = np.zeros(SHAPE, np.uint8)
    arr[1, 1, 1], arr[3, 3, 3] = 1, 2
    lab = io.read(_write_seg(tmp_path / "s.seg.nrrd", arr, [(names[0], 1, 0), (names[1], 2, 0)]), is_label=True).label
    assert {1: int(lab[1, 1, 1]), 2: int(lab[3, 3, 3])} == expected


def test_layers_merged_by_name_lesion_over_kidney(tmp_path):
    slicerio = pytest.importorskip("slicerio")
    layers = np.zeros((2, *SHAPE), np.uint8)
    layers[0, 2:8, 2:8, 2:6] = 1  # Kidney drawn whole, tumour inside it, on another layer
    layers[1, 4:6, 4:6, 3:5] = 1
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = DIRS_LPS.T
    ijk_to_lps[:3, 3] = ORIGIN_LPS
    seg = {"voxels": layers, "ijkToLPS": ijk_to_lps, "encoding": "gzip",
           "segments": [{"id": "Segment_1", "name": "Tumor", "labelValue": 1, "layer": 1, "color": [1, 0, 0]},
                        {"id": "Segment_2", "name": "Kidney", "labelValue": 1, "layer": 0, "color": [0, 1, 0]}]}
    out = tmp_path / "layers.seg.nrrd"
    slicerio.write_segmentation(str(out), seg)
    case = io.read(out, is_label=True)
    assert case.shape == SHAPE
    assert case.label[4, 4, 3] == 2 and case.label[2, 2, 2] == 1 and int((case.label == 2).sum()) == 8
    np.testing.assert_allclose(case.affine, _image(tmp_path).affine, atol=1e-9)


def test_unknown_segment_keeps_its_value_with_a_warning(tmp_path, caplog):
    arr = np.zeros(SHAPE, np.uint8)
    arr[1, 1, 1], arr[3, 3, 3] = 1, 7
    with caplog.at_level(logging.WARNING, logger="kidneyseg.io.itk"):
        case = io.read(_write_seg(tmp_path / "s.seg.nrrd", arr, [("Kidney", 1, 0), ("Renal vein", 7, 0)]),
                       is_label=True)
    assert case.label[3, 3, 3] == 7 and case.meta["segments"] == {1: "Kidney", 7: "Renal vein"}
    assert "Renal vein" in caplog.text


def test_names_of_two_conventions_are_refused(tmp_path):
    arr = np.zeros(SHAPE, np.uint8)
    with pytest.raises(InputError, match="no single task") as err:
        io.read(_write_seg(tmp_path / "s.seg.nrrd", arr, [("Kidney", 1, 0), ("Right kidney", 2, 0)]), is_label=True)
    assert "s.seg.nrrd" in str(err.value) and "Fix:" in str(err.value)


def _cropped(tmp_path: Path, box=((5, 12), (4, 9), (2, 6)), shift=(0.0, 0.0, 0.0)):
    """Full-grid truth and the same segmentation saved cropped to ``box`` (Slicer's extent), origin moved there."""
    full = np.zeros(SHAPE, np.uint8)
    full[6:11, 5:8, 3:5] = 1
    full[7:9, 6, 4] = 2
    sl = tuple(slice(a, b) for a, b in box)
    lo = np.array([a for a, _ in box], float)
    origin = ORIGIN_LPS + DIRS_LPS.T @ lo + np.asarray(shift)
    seg = _write_seg(tmp_path / "crop.seg.nrrd", full[sl], [("Kidney", 1, 0), ("Tumor", 2, 0)], origin=origin,
                     offset=tuple(int(a) for a, _ in box))
    return full, seg


def test_extent_cropped_segmentation_is_placed_on_the_image_grid(tmp_path):
    image = _image(tmp_path)
    full, seg = _cropped(tmp_path)
    assert io.read(seg, is_label=True).shape == (7, 5, 4)
    lab = io.read_label(seg, like=image)
    assert lab.shape == SHAPE and lab.meta["placed"]["offset"] == [5, 4, 2]
    np.testing.assert_array_equal(lab.label, full)
    np.testing.assert_allclose(lab.affine, image.affine)
    # evaluate places it on the reference grid too
    from kidneyseg.evaluation.files import evaluate_paths

    ref = io.write(full, tmp_path / "ref.nii.gz", image)
    res = evaluate_paths(seg, ref, "kits19")
    assert [r["dice"] for r in res.rows] == [1.0, 1.0]


def test_cropped_segmentation_off_the_voxel_grid_or_outside_is_refused(tmp_path):
    image = _image(tmp_path)
    _, seg = _cropped(tmp_path, shift=(0.3, 0.0, 0.0))  # not at a voxel of the image
    with pytest.raises(GeometryError, match="grid differs"):
        io.read_label(seg, like=image)
    arr = np.zeros((7, 5, 4), np.uint8)  # at voxel offset (15, 4, 2): reaches 2 voxels past the image in i
    arr[1, 2, 1] = 1
    arr[6, 2, 1] = 1
    seg = _write_seg(tmp_path / "out.seg.nrrd", arr, [("Kidney", 1, 0)],
                     origin=ORIGIN_LPS + DIRS_LPS.T @ np.array([15.0, 4.0, 2.0]), offset=(15, 4, 2))
    with pytest.raises(GeometryError, match="outside its image") as err:
        io.read_label(seg, like=image)
    assert "1 labelled voxels outside" in str(err.value)


def test_toolkit_seg_nrrd_round_trip_keeps_values(tmp_path):
    """What the toolkit writes (names from the task) reads back to the same values, chaos-mr included."""
    image = _image(tmp_path)
    lab = np.zeros(SHAPE, np.uint8)
    for v in (1, 2, 3, 4):
        lab[v, v, v] = v
    for task in ("kits23", "chaos-mr"):
        out = io.write(lab if task == "chaos-mr" else np.minimum(lab, 3), tmp_path / f"{task}.seg.nrrd", image,
                       task=task)
        back = io.read(out, is_label=True)
        np.testing.assert_array_equal(back.label, lab if task == "chaos-mr" else np.minimum(lab, 3))
