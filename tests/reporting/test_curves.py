"""Training curves and confusion matrices read from a model folder."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from kidneyseg.case import Case
from kidneyseg.labels import get_task
from kidneyseg.reporting import curves
from kidneyseg.reporting.html import ReportInputs, build_report

PNG = b"\x89PNG\r\n\x1a\n"


def _trainer_like_folder(root: Path) -> Path:
    """The layout `kidneyseg train` writes: <stage>/log.csv and a copy under checkpoints/<stage>/."""
    log = "epoch,phase,train_loss,lr,dice_kidney,seconds\n1,warmup,0.9,0.001,0.2,3.1\n2,main,0.5,0.001,0.6,3.0\n3,main,0.3,0.001,0.7,2.9\n"
    for sub in ("main", "checkpoints/main"):
        (root / sub).mkdir(parents=True)
        (root / sub / "log.csv").write_text(log)
    (root / "notes.csv").write_text("a,b\n1,2\n")  # no epoch/step column: not a training log
    (root / "model.json").write_text(json.dumps({"pipeline": "us-triple-ensemble", "task": "openkidney-us",
                                                 "stages": ["main"]}))
    return root


def test_logs_found_once_and_read(tmp_path: Path) -> None:
    root = _trainer_like_folder(tmp_path / "m")
    logs = curves.find_training_logs(root)
    assert logs == [root / "main" / "log.csv"]
    cols = curves.read_log(logs[0])
    assert cols["train_loss"].tolist() == [0.9, 0.5, 0.3]
    assert "phase" not in cols  # not numeric
    png = curves.curves_png(logs)
    assert png is not None and png.startswith(PNG)


def test_confusion_from_model_folder_in_us_report(tmp_path: Path) -> None:
    root = _trainer_like_folder(tmp_path / "m")
    (root / "confusion_val.json").write_text(json.dumps({"matrix": [[900, 20], [10, 70]]}))
    assert curves.find_confusion(root).tolist() == [[900, 20], [10, 70]]
    img = np.zeros((40, 50), np.float32)
    lab = np.zeros((40, 50), np.uint8)
    lab[10:30, 15:35] = 1
    case = Case(image=img + 50 * lab, affine=np.diag([0.5, 0.5, 1.0, 1.0]), name="us", modality="us")
    text = build_report(ReportInputs(case, lab, get_task("openkidney-us"), model_dir=root))
    assert "Summed confusion matrix" in text and "Training curves" in text
    m = curves.confusion_png(np.array([[900, 20], [10, 70]]), ["background", "kidney"])
    assert Image.open(io.BytesIO(m)).size[0] > 100
