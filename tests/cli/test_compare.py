"""End-to-end: `kidneyseg compare` with --seg and --dates, and on two predict output folders."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kidneyseg.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reporting"))
from followup_phantom import R1, R2, phantoms


def _write(folder: Path, name: str, lab: np.ndarray, affine: np.ndarray) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    img = np.where(lab == 1, 160.0, np.where(lab == 2, 90.0, -100.0)).astype(np.float32)
    ip, sp = folder / f"{name}.nii.gz", folder / f"{name}_seg.nii.gz"
    nib.save(nib.Nifti1Image(img, affine), ip)
    nib.save(nib.Nifti1Image(lab.astype(np.uint8), affine), sp)
    return ip, sp


def test_compare_with_seg_and_dates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before, after = phantoms()
    shifted = np.eye(4)
    shifted[:3, 3] = (0.0, 7.0, 25.0)
    ib, sb = _write(tmp_path / "in", "t0", before, np.eye(4))
    ia, sa = _write(tmp_path / "in", "t1", after, shifted)
    out = tmp_path / "cmp"
    rc = main(["compare", str(ib), str(ia), "--seg", str(sb), str(sa), "--dates", "2023-01-01", "2024-07-02",
               "-o", str(out)])
    assert rc == 0
    res = json.loads((out / "compare.json").read_text())
    known = 4.0 / 3.0 * math.pi * (R2**3 - R1**3) / 1000
    (t,) = res["tumours"]
    assert abs(t["tumour_volume_change_ml"] - known) / known < 0.05
    assert t["tumour_volume_growth_ml_per_year"] is not None and res["interval_days"] == 548
    assert res["before"]["study_date_from"] == "--dates"
    assert len(res["new_tumours"]) == 1 and len(res["vanished_tumours"]) == 1
    text = (out / "compare.html").read_text()
    assert text.count('data-plane="axial"') == 2 and "http://" not in text
    stdout = capsys.readouterr().out
    assert "right tumour 1->1" in stdout and "mL/year" in stdout and "new right tumour" in stdout


def test_compare_two_predict_output_folders(tmp_path: Path) -> None:
    """The folders `kidneyseg predict` writes: NAME.nii.gz + NAME_volumes.json naming the source image."""
    before, after = phantoms()
    folders = []
    for name, lab in (("t0", before), ("t1", after)):
        ip, sp = _write(tmp_path / "img", name, lab, np.eye(4))
        f = tmp_path / f"pred_{name}"
        f.mkdir()
        sp.rename(f / f"{name}.nii.gz")
        (f / f"{name}_volumes.json").write_text(json.dumps({"case": name, "source": str(ip)}))
        folders.append(f)
    out = tmp_path / "cmp"
    assert main(["compare", str(folders[0]), str(folders[1]), "-o", str(out)]) == 0
    res = json.loads((out / "compare.json").read_text())
    assert res["tumours"][0]["tumour_volume_change_ml"] > 2.0 and res["interval_days"] is None
    assert res["before"]["segmentation"].endswith("t0.nii.gz")


def test_compare_refuses_bad_dates_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before, after = phantoms()
    ib, sb = _write(tmp_path, "t0", before, np.eye(4))
    ia, sa = _write(tmp_path, "t1", after, np.eye(4))
    rc = main(["compare", str(ib), str(ia), "--seg", str(sb), str(sa), "--dates", "2023-01-01", "July",
               "-o", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "AFTER_DATE is not a date" in err and "YYYY-MM-DD" in err
