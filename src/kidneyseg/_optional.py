"""Import helper for optional dependencies with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

from kidneyseg.errors import MissingDependencyError

_EXTRA_OF = {
    "torch": "ml",
    "torchvision": "ml",
    "monai": "ml",
    "segmentation_models_pytorch": "ml",
    "timm": "ml",
    "cc3d": "ml",
    "onnxruntime": "ml",
    "onnx": "ml",
    "skimage": "report",
    "matplotlib": "report",
    "pydicom": "dicom",
    "highdicom": "dicom",
    "fastapi": "serve",
    "uvicorn": "serve",
    "ray": "distributed",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise an error telling which extra installs it.

    Parameters
    ----------
    module:
        Importable module name, e.g. ``"pydicom"``.
    purpose:
        What it is needed for, used in the message ("reading DICOM").
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        extra = _EXTRA_OF.get(module.split(".")[0], "all")
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{module}', which is not installed",
            found=str(exc),
            fix=f"pip install 'kidneyseg[{extra}]'",
        ) from exc
