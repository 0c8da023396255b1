"""`kidneyseg evaluate` end to end on small generated NIfTI folders."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from kidneyseg.cli import main

COLUMNS = "case,region,dice,jaccard,precision,recall,accuracy,f1,assd_mm,sdd_mm,hd95_mm,surface_dice,tp,fp,fn,tn"
AFFINE = np.diag([2.0, 0.8, 0.8, 1.0])


def _label(shift: int = 0, tumour: bool = True) -> np.ndarray:
    a = np.zeros((12, 24, 24), np.uint8)
    a[3:9, 5:17, 5:17] = 1
    if tumour:
        a[4:7, 7:11, 7:11] = 2
    a[5:7, 12:15, 12:15] = 3
    return np.roll(a, shift, axis=2)


def _save(arr: np.ndarray, path, affine=AFFINE) -> None:
    nib.save(nib.Nifti1Image(arr, affine), str(path))


@pytest.fixture
def folders(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    for i, (shift, tumour) in enumerate([(0, True), (1, True), (0, False)]):
        _save(_label(), ref / f"case_{i:05d}.nii.gz")
        _save(_label(shift, tumour), pred / f"case_{i:05d}.nii.gz")
    return pred, ref


def test_end_to_end(folders, tmp_path, capsys):
    pred, ref = folders
    out, summary, plots = tmp_path / "o" / "results.csv", tmp_path / "summary.json", tmp_path / "plots"
    code = main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--task", "kits23",
                 "--out", str(out), "--summary", str(summary), "--plots", str(plots)])
    assert code == 0
    lines = out.read_text().splitlines()
    assert lines[0] == COLUMNS
    rows = list(csv.DictReader(lines))
    assert len(rows) == 3 * 4
    assert [r["region"] for r in rows[:4]] == ["kidney_and_masses", "masses", "tumor", "cyst"]
    assert rows[0]["case"] == "case_00000" and float(rows[0]["dice"]) == 1.0
    shifted = rows[4]
    assert float(shifted["dice"]) == pytest.approx((12 - 1) / 12)
    assert float(shifted["hd95_mm"]) == pytest.approx(0.8)
    shifted_cyst = rows[7]  # 3 voxels along axis 2 shifted by one: Dice 2/3, every distance 0 or 0.8 mm
    assert shifted_cyst["region"] == "cyst" and float(shifted_cyst["dice"]) == pytest.approx(2 / 3)
    assert float(shifted_cyst["hd95_mm"]) == pytest.approx(0.8)
    assert 0 < float(shifted_cyst["assd_mm"]) < 0.8 and 0 < float(shifted_cyst["sdd_mm"]) < 0.8
    no_tumour = rows[10]
    assert no_tumour["case"] == "case_00002" and no_tumour["region"] == "tumor" and float(no_tumour["dice"]) == 0.0
    s = json.loads(summary.read_text())
    assert s["task"] == "kits23" and s["n_cases"] == 3
    assert s["regions"]["tumor"]["metrics"]["dice"]["mean"] == pytest.approx((1 + 3 / 4 + 0) / 3)  # 4-voxel tumour shifted by 1
    assert s["regions"]["tumor"]["nan_distances"] == 1
    assert s["regions"]["cyst"]["metrics"]["dice"]["mean"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert s["regions"]["cyst"]["ref_empty"] == 0
    assert s["confusion_matrix"]["labels"] == [0, 1, 2, 3]
    assert np.asarray(s["confusion_matrix"]["matrix"]).sum() == 3 * 12 * 24 * 24
    assert (plots / "dice.png").is_file() and (plots / "confusion_matrix.png").is_file()
    assert (plots / "hd95_mm.png").is_file()
    stdout = capsys.readouterr().out
    assert stdout.startswith("| region | dice |") and "| tumor |" in stdout and "| cyst |" in stdout


def test_missing_prediction_is_an_error_listing_names(folders, capsys, tmp_path):
    pred, ref = folders
    (pred / "case_00001.nii.gz").unlink()
    (pred / "case_00002.nii.gz").unlink()
    code = main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--task", "kits23"])
    err = capsys.readouterr().err
    assert code == 2
    assert "case_00001, case_00002" in err and "--allow-missing" in err
    out = tmp_path / "r.csv"
    code = main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--task", "kits23",
                 "--allow-missing", "--out", str(out)])
    assert code == 0
    rows = list(csv.DictReader(out.read_text().splitlines()))
    missing = [r for r in rows if r["case"] == "case_00001"]
    assert [float(r["dice"]) for r in missing] == [0.0, 0.0, 0.0, 0.0]
    assert all(r["hd95_mm"] == "nan" for r in missing)


def test_extra_prediction_and_grid_mismatch(folders, capsys):
    pred, ref = folders
    _save(_label(), pred / "case_00099.nii.gz")
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--task", "kits23"]) == 2
    assert "case_00099" in capsys.readouterr().err
    (pred / "case_00099.nii.gz").unlink()
    _save(_label(), pred / "case_00001.nii.gz", affine=np.diag([2.0, 0.8, 0.9, 1.0]))
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--task", "kits23"]) == 2
    err = capsys.readouterr().err
    assert "not on the reference grid" in err and "case_00001" in err


def test_single_files_and_binary_task(folders, capsys):
    pred, ref = folders
    code = main(["evaluate", "--pred", str(pred / "case_00001.nii.gz"), "--ref", str(ref / "case_00001.nii.gz"),
                 "--task", "binary"])
    assert code == 0
    assert "| foreground |" in capsys.readouterr().out
