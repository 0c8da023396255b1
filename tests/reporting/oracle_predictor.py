"""Predictors for the viewer's tests whose label map is known: the phantom's own, or a real model's plus the
phantom's tumour (so the structures panel has a tumour with its RENAL parts and a QC flag)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np


class OraclePredictor:
    """``predict_case`` gives ``label`` and an :class:`~kidneyseg.inference.uncertainty.Uncertainty` of soft
    one-hot probabilities (0.97 on the label): every structure passes QC."""

    def __init__(self, label: np.ndarray, values: tuple[int, ...] = (0, 1, 2, 3)) -> None:
        self.label = np.asarray(label, np.uint8)
        self.values = values

    def predict_case(self, case: Any, uncertainty: bool | str = False) -> SimpleNamespace:
        from kidneyseg.inference.uncertainty import compute_uncertainty

        probs = np.full((len(self.values), *self.label.shape), 0.01, np.float32)
        for c, v in enumerate(self.values):
            probs[c][self.label == v] = 0.97
        unc = compute_uncertainty(probs, self.label, self.values) if uncertainty else None
        return SimpleNamespace(label=self.label.copy(), warnings=[], uncertainty=unc)


class WithPhantomTumour:
    """A real predictor whose label map gets the phantom's tumour voxels (label 2) added; its own uncertainty
    (the real network's probabilities) scores every structure, the added tumour included."""

    def __init__(self, predictor: Any, truth: np.ndarray) -> None:
        self.predictor = predictor
        self.tumour = np.asarray(truth) == 2

    def predict_case(self, case: Any, uncertainty: bool | str = False) -> Any:
        result = self.predictor.predict_case(case, uncertainty=uncertainty)
        result.label = np.where(self.tumour, np.uint8(2), result.label).astype(np.uint8)
        return result
