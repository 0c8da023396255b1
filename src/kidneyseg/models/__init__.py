"""models stage: registry of networks, model folders and the named pipelines.

Importing this package does not import torch; the functions do.
"""

from kidneyseg.models.pipelines import PIPELINES, Pipeline, StageDef, get_pipeline, pipeline_names
from kidneyseg.models.registry import ModelInfo, create_model, model_info, model_names

__all__ = [
    "PIPELINES",
    "ModelInfo",
    "Pipeline",
    "StageDef",
    "create_model",
    "get_pipeline",
    "model_info",
    "model_names",
    "pipeline_names",
]
