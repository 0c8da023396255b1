"""End-to-end: `kidneyseg report` on phantom files (3D with reference and model folder, 2D, batch)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from kidneyseg.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reporting"))
from phantom_case import TUMOR, phantom


def _write_case(folder: Path) -> tuple[Path, Path, Path]:
    case, ref = phantom()
    pred = ref.copy()
    pred[TUMOR[0] - 2 : TUMOR[0] + 2, TUMOR[1] - 2 : TUMOR[1] + 2, TUMOR[2]] = 1  # a wrong-class patch
    pred[40:44, 10:13, 18:21] = 1  # a false positive
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, arr, dtype in (("img", case.image, np.float32), ("pred", pred, np.uint8), ("ref", ref, np.uint8)):
        p = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(arr.astype(dtype), case.affine), p)
        paths.append(p)
    return paths[0], paths[1], paths[2]


def _model_dir(folder: Path) -> Path:
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps({"format_version": 1, "pipeline": "unet3d", "task": "kits23",
                                                   "stages": ["main"]}))
    rows = ["epoch,train_loss,val_loss,val_dice,lr"] + [
        f"{e},{1.0 / (e + 1):.4f},{1.2 / (e + 1):.4f},{0.5 + 0.04 * e:.4f},0.001" for e in range(10)
    ]
    (folder / "main").mkdir()
    (folder / "main" / "log.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_report_3d_with_reference_and_model(tmp_path: Path) -> None:
    img, pred, ref = _write_case(tmp_path / "in")
    model = _model_dir(tmp_path / "model")
    out = tmp_path / "out" / "report.html"
    rc = main(["report", "--image", str(img), "--seg", str(pred), "--ref", str(ref), "--model", str(model),
               "-o", str(out)])
    assert rc == 0
    text = out.read_text()
    assert out.stat().st_size < 10 * 1024 * 1024
    for needle in ('data-plane="axial"', 'data-plane="coronal"', 'data-plane="sagittal"', "3D surface rendering",
                   "Volumes", "right kidney", "Metrics against the reference", "kidney_and_masses",
                   'data-plane="agreement"', "wrong class", "false positive", "Training curves"):
        assert needle in text, needle
    # self-contained: no external resources
    assert "http://" not in text and "https://" not in text and "src=\"data:image/png;base64," in text


def test_report_rejects_seg_on_other_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img, _, _ = _write_case(tmp_path / "in")
    bad = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)), bad)
    rc = main(["report", "--image", str(img), "--seg", str(bad), "-o", str(tmp_path / "r.html")])
    assert rc == 2
    assert "grid" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_report_2d_png(tmp_path: Path) -> None:
    img = np.zeros((80, 100), np.uint8) + 60
    lab = np.zeros((80, 100), np.uint8)
    lab[20:60, 30:80] = 1
    img[lab == 1] = 140
    Image.fromarray(img).save(tmp_path / "us.png")
    Image.fromarray(lab).save(tmp_path / "us_label.png")
    out = tmp_path / "r.html"
    rc = main(["report", "--image", str(tmp_path / "us.png"), "--seg", str(tmp_path / "us_label.png"),
               "--ref", str(tmp_path / "us_label.png"), "--modality", "us", "--spacing", "0.5", "0.5",
               "-o", str(out)])
    assert rc == 0
    text = out.read_text()
    assert 'data-plane="image"' in text and "mm²" in text and 'data-plane="agreement"' in text
    assert "capsule" in text  # openkidney-us region in the metrics table


def test_report_batch(tmp_path: Path) -> None:
    img, pred, ref = _write_case(tmp_path / "in")
    for sub, src in (("images", img), ("preds", pred), ("refs", ref)):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "case_00001.nii.gz").write_bytes(src.read_bytes())
    rc = main(["report", "--batch", str(tmp_path / "preds"), "--images", str(tmp_path / "images"),
               "--refs", str(tmp_path / "refs"), "-o", str(tmp_path / "reports")])
    assert rc == 0
    assert (tmp_path / "reports" / "case_00001.html").is_file()
    assert "case_00001.html" in (tmp_path / "reports" / "index.html").read_text()
