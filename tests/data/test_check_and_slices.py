"""data check (report, fingerprint) and the slice cache on small written phantoms."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kidneyseg.data.adapters import load_dataset
from kidneyseg.data.fingerprint import check_dataset, format_report
from kidneyseg.data.phantoms import write_phantom_set
from kidneyseg.data.slices import SliceCache
from kidneyseg.preprocessing.plan import plan_from_fingerprint
from kidneyseg.preprocessing.slices import extract_slices, kidney_slices


@pytest.fixture(scope="module")
def ct_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ct")
    write_phantom_set(root, "ct", 3, size=[48, 48, 24], seed=0, layout="kits23", progress=False)
    return root


def test_check_report_and_fingerprint(ct_set: Path, tmp_path: Path) -> None:
    report = check_dataset(load_dataset(ct_set, "kits23"), progress=False)
    assert report["n_cases"] == 3 and report["label_values_found"] == [0, 1, 2, 3] and not report["problems"]
    assert report["spacing_histogram"] == {"8.333x8.333x9.167": 3}
    assert report["size_histogram"] == {"48x48x24": 3}
    fg = report["intensity_foreground"]
    assert 0 < fg["mean"] < 200 and fg["p00_5"] < fg["p99_5"]
    assert report["class_volumes_ml"]["1"]["n"] == 3
    plan = plan_from_fingerprint(report, 3)
    assert plan.target_spacing == (8.3333, 8.3333, 9.1667)
    assert plan.intensity is not None and plan.intensity["kind"] == "zscore"
    assert "cases: 3 from 3" in format_report(report)


def test_check_reports_grid_mismatch_and_missing(tmp_path: Path) -> None:
    d = tmp_path / "case_00000"
    d.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 4), np.float32), np.eye(4)), str(d / "imaging.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones((6, 6, 5), np.uint8), np.eye(4)), str(d / "segmentation.nii.gz"))
    (tmp_path / "case_00001").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 4), np.float32), np.eye(4)), str(tmp_path / "case_00001" / "imaging.nii.gz"))
    report = check_dataset(load_dataset(tmp_path, "kits23"), progress=False)
    text = "\n".join(report["problems"])
    assert "label grid differs" in text and "case_00001: segmentation.nii.gz missing" in text


def test_kidney_slices_margin() -> None:
    lab = np.zeros((4, 4, 20), np.uint8)
    lab[1, 1, 8:10] = 1
    assert kidney_slices(lab, 2) == [6, 7, 8, 9, 10, 11]
    assert kidney_slices(np.zeros((2, 2, 3), np.uint8), 2) == []


def test_extract_and_read_slice_cache(ct_set: Path, tmp_path: Path) -> None:
    ds = load_dataset(ct_set, "kits23")
    out = extract_slices(ds, tmp_path / "cache", only_kidney=True, margin=1, progress=False)
    cache = SliceCache(out)
    assert cache.cases == [c.name for c in ds.cases] and 0 < len(cache) < 3 * 24
    item = cache[0]
    assert item["image"].shape == (1, 48, 48) and item["image"].dtype == np.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0  # -60..300 HU window
    assert item["label"].dtype == np.uint8 and item["patient"] == item["case"]
    assert cache.plan["intensity"] == {"kind": "window", "low": -60.0, "high": 300.0}
    sub = cache.subset([ds.cases[1].name])
    assert set(sub[i]["case"] for i in range(len(sub))) == {ds.cases[1].name}


@pytest.mark.shared
def test_real_check_numbers(shared_data: Path) -> None:
    r = check_dataset(load_dataset(shared_data / "kits19_slices", "slices"), progress=False)
    assert r["n_cases"] == 31 and r["n_patients"] == 22 and r["label_values_found"] == [0, 1, 2]
