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


def test_compare_reads_each_image_once_when_guessing_the_modality(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --model and --modality the modality is guessed from the image being segmented, not a re-read."""
    from types import SimpleNamespace

    import kidneyseg.inference as inference
    from kidneyseg import io
    from kidneyseg.labels import get_task

    before, after = phantoms()
    paths = []
    for name, lab in (("t0", before), ("t1", after)):
        img = np.where(lab == 1, 160.0, np.where(lab == 2, 90.0, -1000.0)).astype(np.float32)  # CT in HU: air
        nib.save(nib.Nifti1Image(img, np.eye(4)), p := tmp_path / f"{name}.nii.gz")
        paths.append(p)
    reads: list[str] = []
    real_read = io.read

    def counting_read(path: object, *args: object, **kwargs: object) -> object:
        reads.append(Path(str(path)).name)
        return real_read(path, *args, **kwargs)  # type: ignore[arg-type]

    chosen: list[object] = []

    class FakePredictor:  # the label map from the phantom's intensities, no network
        labels = get_task("kits23").labels

        def __init__(self, model: object, **kwargs: object) -> None:
            pass

        def predict_case(self, case: object) -> SimpleNamespace:
            image = np.asarray(case.image)  # type: ignore[attr-defined]
            lab = np.where(image == 160, 1, np.where(image == 90, 2, 0)).astype(np.uint8)
            return SimpleNamespace(label=lab, labels=self.labels)

    monkeypatch.setattr(io, "read", counting_read)
    monkeypatch.setattr(inference, "Predictor", FakePredictor)
    monkeypatch.setattr(inference, "resolve_model", lambda model, modality: chosen.append(modality))
    assert main(["compare", str(paths[0]), str(paths[1]), "-o", str(tmp_path / "cmp")]) == 0
    assert sorted(reads) == ["t0.nii.gz", "t1.nii.gz"], reads
    assert chosen == ["ct"]
    res = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert res["tumours"][0]["tumour_volume_change_ml"] > 2.0
