"""Inference: engines (sliding window, slice-wise, TTA), the Predictor, cascades.

Public API::

    from kidneyseg.inference import Predictor, Prediction, resolve_model

Writing a prediction (label map, probabilities, volumes) is
:func:`kidneyseg.reporting.export.save_prediction`.

Heavy dependencies (torch, MONAI) are imported when a Predictor is built.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Prediction", "Predictor", "resolve_model"]


def __getattr__(name: str) -> Any:
    if name in ("Predictor", "Prediction", "resolve_model", "default_model_dir"):
        from kidneyseg.inference import predictor

        return getattr(predictor, name)
    raise AttributeError(name)
