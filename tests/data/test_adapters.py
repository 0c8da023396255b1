"""Every adapter on a tiny layout written by the test itself."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from kidneyseg.data.adapters import format_names, load_dataset
from kidneyseg.errors import InputError, RegistryError


def _vol(path: Path, arr: np.ndarray, spacing=(0.8, 0.8, 2.5), dtype=np.float32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr.astype(dtype), np.diag([*spacing, 1.0])), str(path))


def _pair(img: Path, lab: Path, values=(0, 1, 2, 3), shape=(12, 10, 6), spacing=(0.8, 0.8, 2.5)) -> None:
    rng = np.random.default_rng(0)
    _vol(img, rng.normal(0, 100, shape), spacing)
    lab_arr = np.zeros(shape, np.uint8)
    for i, v in enumerate(values):
        lab_arr[i, :, :] = v
    _vol(lab, lab_arr, spacing, np.uint8)


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)


@pytest.mark.parametrize("fmt,label_file,task", [
    ("kits19", "segmentation.nii.gz", "kits19"),
    ("kits21", "aggregated_MAJ_seg.nii.gz", "kits23"),
    ("kits23", "segmentation.nii.gz", "kits23"),
])
def test_kits_layouts(tmp_path: Path, fmt: str, label_file: str, task: str) -> None:
    values = (0, 1, 2) if fmt == "kits19" else (0, 1, 2, 3)
    for i in range(3):
        _pair(tmp_path / f"case_{i:05d}" / "imaging.nii.gz", tmp_path / f"case_{i:05d}" / label_file, values)
    (tmp_path / "case_00009").mkdir()
    _vol(tmp_path / "case_00009" / "imaging.nii.gz", np.zeros((4, 4, 4)))
    ds = load_dataset(tmp_path, fmt)
    assert ds.task == task and len(ds.cases) == 4
    assert any("case_00009" in p for p in ds.problems)
    c = ds.cases[0].load()
    assert c.modality == "ct" and c.image.dtype == np.float32 and c.label.dtype == np.uint8
    assert sorted(np.unique(c.label)) == list(values)
    assert c.spacing == pytest.approx((0.8, 0.8, 2.5))
    assert ds.cases[3].label_path is None and ds.cases[3].patient == "case_00009"


def test_kits23_label_only_masks(tmp_path: Path) -> None:
    _vol(tmp_path / "case_00005.nii.gz", np.ones((4, 4, 4)), dtype=np.uint8)
    ds = load_dataset(tmp_path, "kits23")
    c = ds.cases[0].load()
    assert c.image is None and c.label.shape == (4, 4, 4)


def test_nnunet_maps_labels_by_name(tmp_path: Path) -> None:
    # source order: tumour 1, kidney 2 -> must become kits19 tumour 2, kidney 1
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "tumor": 1, "kidney": 2},
        "numTraining": 2, "file_ending": ".nii.gz"}))
    for n in ("kid_001", "kid_002"):
        _pair(tmp_path / "imagesTr" / f"{n}_0000.nii.gz", tmp_path / "labelsTr" / f"{n}.nii.gz", (0, 1, 2))
    ds = load_dataset(tmp_path, "nnunet")
    assert ds.task == "kits19" and ds.modality == "ct" and [c.name for c in ds.cases] == ["kid_001", "kid_002"]
    lab = ds.cases[0].load().label
    assert lab[1].max() == 2 and lab[2].max() == 1  # tumour rows and kidney rows swapped to task values


def test_chaos_mr(tmp_path: Path) -> None:
    for n in ("case_01", "case_02"):
        _pair(tmp_path / f"{n}_image.nii.gz", tmp_path / f"{n}_label.nii.gz", (0, 1, 2, 3, 4), spacing=(1.25, 1.25, 7.7))
    _vol(tmp_path / "case_03_label.nii.gz", np.zeros((3, 3, 3)), dtype=np.uint8)
    ds = load_dataset(tmp_path, "chaos-mr")
    assert ds.task == "chaos-mr" and len(ds.cases) == 3 and ds.problems == ["case_03_label.nii.gz: no image"]
    c = ds.cases[1].load()
    assert c.modality == "mr" and sorted(np.unique(c.label)) == [0, 1, 2, 3, 4]


def test_slices_with_index(tmp_path: Path) -> None:
    rows = ["stem,case,z,spacing_mm,slice_thickness_mm"]
    for case, zs in (("case_00001", (3, 7)), ("case_00002", (5,))):
        for z in zs:
            stem = f"{case}_z{z:03d}"
            _png(tmp_path / f"{stem}_image.png", np.full((8, 6), 100))
            lab = np.zeros((8, 6))
            lab[2:4, 2:4] = 1
            lab[5, 5] = 2
            _png(tmp_path / f"{stem}_label.png", lab)
            rows.append(f"{stem},{case},{z},0.7x0.6,5.0")
    (tmp_path / "index.csv").write_text("\n".join(rows) + "\n")
    ds = load_dataset(tmp_path, "slices")
    assert ds.task == "kits19" and len(ds.cases) == 3 and ds.patients == ["case_00001", "case_00002"]
    c = ds.cases[0].load()
    assert c.shape == (8, 6) and c.spacing == pytest.approx((0.7, 0.6)) and sorted(np.unique(c.label)) == [0, 1, 2]
    assert ds.cases[1].extra["z"] == 7


def test_openkidney_us_union_intersection_and_labels_only(tmp_path: Path) -> None:
    a = np.zeros((10, 12))
    a[2:6, 2:6] = 255  # masks may be 0/255
    b = np.zeros((10, 12))
    b[4:8, 4:8] = 1
    for son, m in (("1", a), ("2", b)):
        _png(tmp_path / "labels" / f"reviewed_masks_{son}" / "capsule" / "7_IM-0001-0001_anon.png", m)
        _png(tmp_path / "labels" / f"reviewed_masks_{son}" / "regions" / "7_IM-0001-0001_anon.png", (m > 0) * 3)
    ds = load_dataset(tmp_path, "openkidney-us")
    assert ds.options["labels_only"] and ds.cases[0].patient == "7" and ds.task == "openkidney-us"
    one = ds.cases[0].load()
    assert one.image is None and one.label.max() == 1 and one.label.sum() == 16
    union = load_dataset(tmp_path, "openkidney-us", sonographer="union").cases[0].load().label
    inter = load_dataset(tmp_path, "openkidney-us", sonographer="intersection").cases[0].load().label
    assert union.sum() == 28 and inter.sum() == 4
    reg = load_dataset(tmp_path, "openkidney-us", masks="regions", sonographer=2)
    assert reg.task == "openkidney-us-regions" and reg.cases[0].load().label.max() == 3
    _png(tmp_path / "images" / "7_IM-0001-0001_anon.png", np.full((10, 12), 80))
    with_img = load_dataset(tmp_path, "openkidney-us").cases[0].load()
    assert with_img.image.shape == (10, 12) and with_img.modality == "us"


def test_folder_pairs_and_csv(tmp_path: Path) -> None:
    _pair(tmp_path / "images" / "a_0000.nii.gz", tmp_path / "labels" / "a.nii.gz")
    _pair(tmp_path / "images" / "b.nii.gz", tmp_path / "labels" / "b.nii.gz")
    ds = load_dataset(tmp_path, "folder", label_map={3: 1})
    assert [c.name for c in ds.cases] == ["a", "b"] and ds.cases[0].load().label.max() == 2
    side = tmp_path / "side"
    _pair(side / "x_image.nii.gz", side / "x_label.nii.gz")
    _vol(side / "y_image.nii.gz", np.zeros((3, 3, 3)))
    ds = load_dataset(side, "folder")
    assert [c.name for c in ds.cases] == ["x", "y"] and "y: image without label" in ds.problems
    (tmp_path / "list.csv").write_text("image,label,patient\nimages/b.nii.gz,labels/b.nii.gz,p7\n")
    ds = load_dataset(tmp_path / "list.csv", "folder")
    assert ds.cases[0].patient == "p7" and ds.cases[0].load().label is not None


def test_grid_mismatch_is_an_error(tmp_path: Path) -> None:
    _vol(tmp_path / "case_00000" / "imaging.nii.gz", np.zeros((6, 6, 4)))
    _vol(tmp_path / "case_00000" / "segmentation.nii.gz", np.zeros((6, 6, 5)), dtype=np.uint8)
    with pytest.raises(InputError, match="grid differs"):
        load_dataset(tmp_path, "kits23").cases[0].load()


def test_unknown_format_and_option(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="kits23"):
        load_dataset(tmp_path, "kits99")
    with pytest.raises(InputError, match="unknown option"):
        load_dataset(tmp_path, "kits23", colour="red")
    with pytest.raises(InputError, match="no cases"):
        load_dataset(tmp_path, "chaos-mr")
    assert "openkidney-us" in format_names()


@pytest.mark.shared
def test_real_layouts(shared_data: Path) -> None:
    chaos = load_dataset(shared_data / "chaos_t2", "chaos-mr")
    assert len(chaos.cases) == 15
    sl = load_dataset(shared_data / "kits19_slices", "slices")
    assert len(sl.cases) == 31 and len(sl.patients) == 22
    us = load_dataset(shared_data / "kidneyus_masks", "openkidney-us")
    assert len(us.cases) == 534 and us.options["labels_only"]


def test_slices_spacing_option_fills_rows_without_one(tmp_path: Path) -> None:
    rows = ["stem,case,z,spacing_mm"]
    for stem, sp in (("c1_z001", ""), ("c1_z002", "0.7x0.7")):
        _png(tmp_path / f"{stem}_image.png", np.full((8, 6), 100))
        _png(tmp_path / f"{stem}_label.png", np.zeros((8, 6)))
        rows.append(f"{stem},c1,{stem[-1]},{sp}")
    (tmp_path / "index.csv").write_text("\n".join(rows) + "\n")
    ds = load_dataset(tmp_path, "slices", spacing_mm=0.8, task="curvas-ct")
    assert [c.spacing for c in ds.cases] == [(0.8, 0.8), (0.7, 0.7)] and ds.task == "curvas-ct"
    assert ds.cases[0].load().spacing == pytest.approx((0.8, 0.8))
    with pytest.raises(InputError, match=r"spacing_mm.*-1"):
        load_dataset(tmp_path, "slices", spacing_mm=-1)


def test_folder_takes_name_ct_as_the_image(tmp_path: Path) -> None:
    _pair(tmp_path / "s0009_ct.nii.gz", tmp_path / "s0009_label.nii.gz")
    ds = load_dataset(tmp_path, "folder", task="totalseg-ct", modality="ct")
    assert [c.name for c in ds.cases] == ["s0009"] and ds.cases[0].image_path.name == "s0009_ct.nii.gz"
    assert not ds.problems


def test_real_ct_sets_of_the_ct_default(shared_data: Path) -> None:
    more = load_dataset(shared_data / "kits19_slices_more", "slices")
    assert len(more.cases) == 40 and len(more.patients) == 26
    curvas = load_dataset(shared_data / "curvas_slices", "slices", task="curvas-ct", spacing_mm=0.8)
    assert len(curvas.cases) == 85 and len(curvas.patients) == 10
    assert sorted(np.unique(curvas.cases[0].load().label)) <= [0, 1, 4, 5]
    ts = load_dataset(shared_data / "totalseg_subjects", "folder", task="totalseg-ct", modality="ct")
    assert [c.name for c in ts.cases] == ["s0002", "s0003", "s0009"]


def _nnunet_kits23(root: Path, labels: dict, order) -> None:
    """An nnU-Net v2 raw folder as nnU-Net's own KiTS23 conversion writes it (region-based dataset.json)."""
    meta = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 2, "file_ending": ".nii.gz",
            "overwrite_image_reader_writer": "NibabelIOWithReorient"}
    if order is not None:
        meta["regions_class_order"] = order
    (root / "dataset.json").write_text(json.dumps(meta))
    for n in ("case_00000", "case_00001"):
        _pair(root / "imagesTr" / f"{n}_0000.nii.gz", root / "labelsTr" / f"{n}.nii.gz", (0, 1, 2, 3))


def test_nnunet_region_based_kits23_is_kits23(tmp_path: Path) -> None:
    from kidneyseg.data.fingerprint import check_dataset

    _nnunet_kits23(tmp_path, {"background": 0, "kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2}, [1, 3, 2])
    ds = load_dataset(tmp_path, "nnunet")
    assert ds.task == "kits23" and ds.problems == []
    assert ds.cases[0].label_map == {}  # KiTS23 values are the toolkit's: kidney 1, tumour 2, cyst 3
    assert ds.options["regions"] == {"kidney": [1, 2, 3], "masses": [2, 3], "tumor": [2]}
    lab = ds.cases[0].load().label
    assert [int(lab[i].max()) for i in range(4)] == [0, 1, 2, 3]
    report = check_dataset(ds, progress=False)
    assert not [p for p in report["problems"] if "not in task" in p]


def test_nnunet_regions_map_values_by_meaning(tmp_path: Path) -> None:
    # tumour 3, cyst 2 in the source: the value in every region is the tumour, the one in kidney+masses the cyst
    _nnunet_kits23(tmp_path, {"background": 0, "kidney": [1, 2, 3], "masses": [2, 3], "tumor": 3}, [1, 2, 3])
    ds = load_dataset(tmp_path, "nnunet")
    assert ds.task == "kits23" and ds.problems == []
    lab = ds.cases[0].load().label
    assert [int(lab[i].max()) for i in range(4)] == [0, 1, 3, 2]  # source cyst 2 -> 3, source tumour 3 -> 2


def test_nnunet_inconsistent_regions_class_order_is_a_problem(tmp_path: Path) -> None:
    # tumor 2 with order [1, 2, 3] would make nnU-Net write tumour as 3: listed, labels still read by the regions
    _nnunet_kits23(tmp_path, {"background": 0, "kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2}, [1, 2, 3])
    ds = load_dataset(tmp_path, "nnunet")
    assert ds.task == "kits23" and ds.cases[0].label_map == {}
    assert len(ds.problems) == 1 and "regions_class_order [1, 2, 3]" in ds.problems[0]
    assert "[1, 3, 2]" in ds.problems[0]


def test_nnunet_regions_of_no_task_are_refused(tmp_path: Path) -> None:
    from kidneyseg.errors import KidneysegError

    _nnunet_kits23(tmp_path, {"background": 0, "organs": [1, 2], "liver": 1}, [2, 1])
    with pytest.raises(KidneysegError, match="match no task") as err:
        load_dataset(tmp_path, "nnunet")
    assert "organs [1, 2]" in str(err.value) and "kits23: kidney_and_masses [1, 2, 3]" in str(err.value)
