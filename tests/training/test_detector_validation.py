"""The detector's validation counts kidney boxes one-to-one (the paper's recall), as ``evaluate --detections`` does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")


class _FixedDetector(torch.nn.Module):
    """Returns the same detections for every image: a stand-in for a trained Faster R-CNN in eval mode."""

    def __init__(self, boxes: list[list[float]], scores: list[float]) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))  # the trainer builds an optimiser over the parameters
        self.boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        self.scores = torch.tensor(scores, dtype=torch.float32)

    def forward(self, images: list[Any], targets: Any = None) -> list[dict[str, Any]]:
        return [{"boxes": self.boxes, "scores": self.scores, "labels": torch.ones(len(self.scores), dtype=torch.int64)}
                for _ in images]


def _trainer(tmp_path: Path, det: torch.nn.Module) -> Any:
    from kidneyseg.preprocessing.plan import Plan
    from kidneyseg.training.config import TrainConfig
    from kidneyseg.training.detector_trainer import DetectorTrainer

    plan = Plan.from_json({"modality": "ct", "spatial_dims": 2, "orientation": None, "target_spacing": None,
                           "patch_size": [32, 32], "intensity": {"kind": "window", "low": -60, "high": 300},
                           "denoise": None, "labels": {"0": "background", "1": "kidney"}}, path="test")
    return DetectorTrainer(det, None, TrainConfig(epochs=1), tmp_path, plan, channel_names=["background", "kidney"])


# two kidneys side by side, 10x10 pixels each; one detection covers both: IoU 100/200 = 0.5 with each
KIDNEYS = [[0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0]]
SPANNING = [[0.0, 0.0, 20.0, 10.0]]


def test_one_box_over_two_kidneys_is_one_true_positive_and_one_miss(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, _FixedDetector(SPANNING, [0.9]))
    sample = {"image": np.zeros((1, 32, 32), np.float32), "boxes": np.asarray(KIDNEYS, np.float32)}
    out = trainer.validate([sample])
    # the old rule (each ground-truth box found if any detection reaches IoU 0.5) gave recall 1.0 (2 of 2)
    assert (out["tp_50"], out["fp_50"], out["fn_50"]) == (1, 0, 1)
    assert out["recall_50"] == 0.5 and out["precision_50"] == 1.0
    assert trainer.score_key == "recall_50"


def test_background_slices_count_false_positives_and_low_scores_are_dropped(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, _FixedDetector([KIDNEYS[0], KIDNEYS[1], [20.0, 20.0, 30.0, 30.0]], [0.9, 0.8, 0.3]))
    kidney_slice = {"image": np.zeros((1, 32, 32), np.float32), "boxes": np.asarray(KIDNEYS, np.float32)}
    background = {"image": np.zeros((1, 32, 32), np.float32), "boxes": np.zeros((0, 4), np.float32)}
    out = trainer.validate([kidney_slice, background])
    # score 0.3 < 0.5 dropped; on the background slice both kept boxes are false positives
    assert (out["tp_50"], out["fp_50"], out["fn_50"]) == (2, 2, 0)
    assert out["recall_50"] == 1.0 and out["precision_50"] == 0.5 and out["f1_50"] == pytest.approx(2 / 3)


def test_evaluation_reexports_the_models_box_functions() -> None:
    from kidneyseg.evaluation import detection as ev
    from kidneyseg.models import boxes

    assert ev.match_boxes is boxes.match_boxes and ev.box_iou is boxes.box_iou
    assert ev.write_detections is boxes.write_detections and ev.CaseDetections is boxes.CaseDetections
