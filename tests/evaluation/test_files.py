"""Pairing and reading of evaluated files: nnU-Net channel suffixes, 2D references against the toolkit's outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from kidneyseg.evaluation.files import evaluate_paths, match_cases

AFFINE = np.diag([2.0, 0.8, 0.8, 1.0])


def _label3d(shift: int = 0) -> np.ndarray:
    a = np.zeros((8, 16, 16), np.uint8)
    a[2:6, 4:12, 4:12] = 1
    a[3:5, 6:9, 6:9] = 2
    return np.roll(a, shift, axis=2)


def _label2d() -> np.ndarray:
    a = np.zeros((32, 24), np.uint8)
    a[8:20, 6:18] = 1
    return a


def _png(path: Path, arr: np.ndarray, spacing=(0.5, 0.4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    path.with_suffix(".json").write_text(json.dumps({"spacing": list(spacing)}))
    return path


def test_channel_suffix_of_a_prediction_pairs_with_its_reference(tmp_path: Path) -> None:
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    for i in range(2):
        nib.save(nib.Nifti1Image(_label3d(), AFFINE), str(ref / f"case_{i:05d}.nii.gz"))
        nib.save(nib.Nifti1Image(_label3d(i), AFFINE), str(pred / f"case_{i:05d}_0000.nii.gz"))
    pairs = match_cases(pred, ref)
    assert [(n, p.name, r.name) for n, p, r in pairs] == [
        ("case_00000", "case_00000_0000.nii.gz", "case_00000.nii.gz"),
        ("case_00001", "case_00001_0000.nii.gz", "case_00001.nii.gz"),
    ]
    res = evaluate_paths(pred, ref, "kits19")
    dice = {(r["case"], r["region"]): r["dice"] for r in res.rows}
    assert dice[("case_00000", "tumor")] == 1.0 and dice[("case_00001", "tumor")] < 1.0


def test_case_name_is_the_one_helper() -> None:
    from kidneyseg.io import case_name

    assert case_name("x/case_00000_0000.nii.gz") == "case_00000"
    assert case_name("case_00000.nii.gz") == "case_00000"
    assert case_name("us_0000.png") == "us"
    assert case_name("case_00001_0001.nii.gz") == "case_00001_0001"  # a second channel is not the case image


def test_singleton_third_axis_against_a_2d_reference(tmp_path: Path) -> None:
    """A (rows, cols, 1) NIfTI written by the toolkit for a 2D image is scored against the 2D PNG."""
    from kidneyseg import io

    ref = _png(tmp_path / "ref" / "us1.png", _label2d())
    like = io.read(ref, is_label=True)
    out = io.write(_label2d(), tmp_path / "pred" / "us1.nii.gz", like)
    assert nib.load(str(out)).shape == (32, 24, 1)
    res = evaluate_paths(out, ref, "openkidney-us")
    assert [r["dice"] for r in res.rows] == [1.0]
    # reporting reads the segmentation with read_label(like=image): the same file is accepted in 2D
    lab = io.read_label(out, like=io.read(_png(tmp_path / "img" / "us1.png", np.full((32, 24), 90, np.uint8))))
    assert lab.shape == (32, 24) and lab.spacing == pytest.approx((0.5, 0.4))


def test_singleton_axis_on_another_pixel_grid_is_still_refused(tmp_path: Path) -> None:
    from kidneyseg import io
    from kidneyseg.errors import GeometryError

    ref = _png(tmp_path / "ref" / "us1.png", _label2d())
    nib.save(nib.Nifti1Image(_label2d()[:, :, None], np.diag([0.5, 0.5, 1.0, 1.0])), str(tmp_path / "p.nii.gz"))
    with pytest.raises(GeometryError, match="not on the reference grid"):
        evaluate_paths(tmp_path / "p.nii.gz", ref, "openkidney-us")
    with pytest.raises(GeometryError, match="grid differs"):
        io.read_label(tmp_path / "p.nii.gz", like=io.read(ref))


def test_predict_png_then_evaluate(tmp_path: Path, capsys) -> None:
    """predict names nnU-Net inputs after the case and writes PNG for PNG input; evaluate takes it."""
    pytest.importorskip("torch")
    pytest.importorskip("monai")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
    import predict_kit as kit

    from kidneyseg.cli import main

    model = kit.us_model(tmp_path / "model")
    img = _png(tmp_path / "in" / "us1_0000.png", (np.arange(32 * 24).reshape(32, 24) % 200).astype(np.uint8))
    ref = _png(tmp_path / "ref" / "us1.png", _label2d())
    assert main(["predict", str(img), "-o", str(tmp_path / "out"), "--model", str(model), "--threads", "1"]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["us1.png", "us1_volumes.json"]
    with Image.open(tmp_path / "out" / "us1.png") as im:
        assert im.mode == "L" and im.size == (24, 32)
        assert set(np.unique(np.asarray(im))) <= {0, 1}  # pixel value = label value
    capsys.readouterr()
    rc = main(["evaluate", "--pred", str(tmp_path / "out" / "us1.png"), "--ref", str(ref), "--task",
               "openkidney-us", "--out", str(tmp_path / "scores.csv")])
    assert rc == 0, capsys.readouterr().err
