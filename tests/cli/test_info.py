"""`kidneyseg info`: text and JSON summaries of images, label maps, 2D images and DICOM folders."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from kidneyseg.cli import main


def _info(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(["-q", "info", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_info_image_json(tmp_path, capsys):
    aff = np.array([[0, 0, -2.5, 10], [0, -0.8, 0, 20], [-0.7, 0, 0, 30], [0, 0, 0, 1.0]])
    data = np.arange(-100, 20, dtype=np.int16).reshape(4, 5, 6)
    nib.save(nib.Nifti1Image(data, aff), str(tmp_path / "ct.nii.gz"))
    info = _info(capsys, str(tmp_path / "ct.nii.gz"))
    assert info["shape"] == [4, 5, 6]
    assert info["spacing_mm"] == [0.7, 0.8, 2.5]
    assert info["orientation"] == "IPL"
    assert info["dtype"] == "int16"
    assert info["intensity_range"] == [-100.0, 19.0]
    np.testing.assert_allclose(info["affine"], aff)


def test_info_label_names_and_task(tmp_path, capsys):
    lab = np.zeros((4, 4, 4), np.uint8)
    lab[0, 0, :2] = 2
    lab[1, 1, 1] = 3
    nib.save(nib.Nifti1Image(lab, np.diag([2.0, 2.0, 2.0, 1.0])), str(tmp_path / "lab.nii.gz"))
    info = _info(capsys, str(tmp_path / "lab.nii.gz"), "--label")
    assert info["task"] == "kits23"
    assert [(x["value"], x["name"], x["voxels"]) for x in info["labels"]] == [
        (0, "background", 61), (2, "tumor", 2), (3, "cyst", 1)]
    assert info["labels"][1]["volume_ml"] == pytest.approx(0.016)
    info = _info(capsys, str(tmp_path / "lab.nii.gz"), "--label", "--task", "chaos-mr")
    assert [x["name"] for x in info["labels"]] == ["background", "kidney_right", "kidney_left"]
    assert info["task_guessed"] is False


def test_info_label_of_matching_image(tmp_path, capsys):
    aff = np.diag([0.8, 0.8, 2.5, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 3), np.float32), aff), str(tmp_path / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones((5, 5, 3), np.uint8), aff), str(tmp_path / "lab.nii.gz"))
    info = _info(capsys, str(tmp_path / "lab.nii.gz"), "--label-of", str(tmp_path / "ct.nii.gz"))
    assert info["grid_matches_image"] is True
    assert info["labels"][0]["name"] == "kidney"


def test_info_2d_with_spacing_and_text_output(tmp_path, capsys):
    Image.fromarray(np.full((10, 12), 7, np.uint8)).save(tmp_path / "us.png")
    info = _info(capsys, str(tmp_path / "us.png"), "--spacing", "0.3", "0.2")
    assert info["shape"] == [10, 12] and info["spacing_mm"] == [0.3, 0.2]
    assert info["orientation"] is None and info["spacing_source"] == "argument"
    capsys.readouterr()
    assert main(["-q", "info", str(tmp_path / "us.png"), "--spacing", "0.3", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "shape: 10 x 12" in out and "spacing_mm: 0.3 x 0.2" in out


def test_info_unknown_task_lists_valid_names(tmp_path, capsys):
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)), str(tmp_path / "l.nii.gz"))
    assert main(["-q", "info", str(tmp_path / "l.nii.gz"), "--label", "--task", "kits99"]) == 2
    err = capsys.readouterr().err
    assert "kits23" in err and "kits99" in err
