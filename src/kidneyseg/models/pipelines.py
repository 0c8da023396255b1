"""The named pipelines (docs/CONTRACTS.md, "Pipelines").

A pipeline is an ordered list of stages; each stage is one registry network
with its own plan.  This module only describes them (it imports without
torch); ``kidneyseg.training`` trains them stage by stage and
``kidneyseg.inference`` runs them.

Inference modes
---------------
``slice2d``        2D network on every axial slice ``[:, :, k]`` of the RAS volume, stacked back.
``image2d``        2D network on a 2D image (ultrasound).
``sliding3d``      3D sliding window over the volume.
``cascade3d``      coarse 3D kidney → per-kidney crops, fine 3D kidney(/tumour/cyst) → lesion inside kidney.
``detect-segment`` 2D kidney detector on axial slices → per-kidney 3D boxes → 3D segmenter per box.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kidneyseg.errors import unknown_name


@dataclass(frozen=True)
class StageDef:
    """One stage of a pipeline.

    Attributes
    ----------
    name:
        Sub-folder name in the model folder (``main``, ``coarse``, ...).
    arch, arch_kwargs:
        Registry name and constructor arguments.
    spatial_dims:
        2 or 3: how the stage sees the data (slices or volumes).
    role:
        What the stage does: ``segment``, ``coarse``, ``fine``, ``lesion``,
        ``detector``, ``segmenter``.
    loss:
        Default loss name (``kidneyseg.training.losses``).
    target:
        Which labels the stage learns: ``all`` (every task label), ``kidney``
        (kidney+masses merged into one foreground class), ``lesion`` (the
        task's lesion labels, inside the kidney), ``kidney_tumor`` (kidney and,
        where present, tumour), ``boxes`` (kidney boxes for the detector).
    plan:
        Plan overrides applied on top of the data fingerprint's plan
        (``target_spacing``, ``patch_size``, ``intensity``...).  Crop stages
        without a ``patch_size`` here get one covering the median kidney crop.
    extra_inputs:
        Extra input channels besides the image (``["kidney_mask"]`` for the
        lesion stage).
    optional:
        Skipped when the data has no labels for it (the lesion stage).
    facts:
        Stage facts saved in ``<stage>/model.json["stage"]`` (crop margin...).
    """

    name: str
    arch: str
    spatial_dims: int
    role: str
    loss: str = "dice-ce"
    target: str = "all"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    extra_inputs: tuple[str, ...] = ()
    optional: bool = False
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return 1 + len(self.extra_inputs)


@dataclass(frozen=True)
class Pipeline:
    """A named method: stages in training/inference order plus the inference mode."""

    name: str
    description: str
    inference: str
    modalities: tuple[str, ...]
    stages: tuple[StageDef, ...]
    reference: str = ""

    def stage(self, name: str) -> StageDef:
        for s in self.stages:
            if s.name == name:
                return s
        raise unknown_name(f"stage of pipeline {self.name}", name, [s.name for s in self.stages])


_CT_WINDOW = {"kind": "window", "low": -60, "high": 300}

PIPELINES: dict[str, Pipeline] = {
    "ct2d-unet-resnet": Pipeline(
        "ct2d-unet-resnet",
        "U-Net with ResNet-34 encoder on axial slices",
        "slice2d",
        ("ct", "mr"),
        (StageDef("main", "unet-resnet34", 2, "segment", plan={"patch_size": [256, 256]}),),
        "slice U-Nets (torchvision encoders)",
    ),
    "ct2d-unet-squeezenet": Pipeline(
        "ct2d-unet-squeezenet",
        "U-Net with SqueezeNet 1.1 encoder on axial slices",
        "slice2d",
        ("ct", "mr"),
        (StageDef("main", "unet-squeezenet", 2, "segment", plan={"patch_size": [256, 256]}),),
        "slice U-Nets (torchvision encoders)",
    ),
    "ct2d-ensemble": Pipeline(
        "ct2d-ensemble",
        "mean of U-Nets with ResNet-50, VGG16 and InceptionV3 encoders on axial slices",
        "slice2d",
        ("ct",),
        (
            StageDef(
                "main", "ensemble-mean", 2, "segment", loss="bce-dice",
                arch_kwargs={"members": [{"arch": "unet-resnet50", "arch_kwargs": {}},
                                         {"arch": "unet-vgg16", "arch_kwargs": {}},
                                         {"arch": "unet-inceptionv3", "arch_kwargs": {}}]},
                plan={"patch_size": [256, 256]},
            ),
        ),
        "CT ensemble transfer learning",
    ),
    "us-triple-ensemble": Pipeline(
        "us-triple-ensemble",
        "DeepLabV3+ R18, DeepLabV3+ R152 and LinkNet R34, logits concatenated and fused by a 3x3 convolution",
        "image2d",
        ("us",),
        (
            StageDef(
                "main", "ensemble-concat", 2, "segment",
                arch_kwargs={"members": [{"arch": "deeplabv3plus-resnet18", "arch_kwargs": {}},
                                         {"arch": "deeplabv3plus-resnet152", "arch_kwargs": {}},
                                         {"arch": "linknet-resnet34", "arch_kwargs": {}}],
                             "fusion_kernel": 3},
                plan={"patch_size": [256, 256]},
                facts={"ensemble_training": "members-then-fusion"},
            ),
        ),
        "ultrasound triple ensemble",
    ),
    "unet3d": Pipeline(
        "unet3d",
        "3D U-Net with sliding-window inference",
        "sliding3d",
        ("ct", "mr"),
        (StageDef("main", "unet3d", 3, "segment", plan={"patch_size": [96, 96, 96]}),),
    ),
    "ct3d-cascade": Pipeline(
        "ct3d-cascade",
        "coarse 3D U-Net (kidney, 4 mm) -> fine 3D U-Net per kidney crop -> lesion 3D U-Net inside the kidney",
        "cascade3d",
        ("ct", "mr"),
        (
            StageDef("coarse", "unet3d", 3, "coarse", target="kidney", loss="weighted-ce-dice",
                     arch_kwargs={"channels": [16, 32, 64, 128], "strides": [2, 2, 2]},
                     plan={"target_spacing": [4.0, 4.0, 4.0], "patch_size": [64, 64, 64]}),
            StageDef("fine", "unet3d", 3, "fine", target="kidney", loss="weighted-ce-dice",
                     facts={"crop_margin_mm": 10.0}),
            StageDef("lesion", "unet3d", 3, "lesion", target="lesion", loss="weighted-ce-dice",
                     extra_inputs=("kidney_mask",), optional=True,
                     facts={"crop_margin_mm": 10.0, "inside_kidney": True}),
        ),
        "3-step 3D cascade",
    ),
    "ct-detect-vnet": Pipeline(
        "ct-detect-vnet",
        "Faster R-CNN kidney boxes on axial slices -> per-kidney 3D boxes -> V-Net per box",
        "detect-segment",
        ("ct",),
        (
            StageDef("detector", "fasterrcnn-resnet50", 2, "detector", loss="detection", target="boxes",
                     arch_kwargs={"min_size": 512, "max_size": 512},
                     plan={"intensity": _CT_WINDOW, "patch_size": [512, 512]}),
            StageDef("segmenter", "vnet", 3, "segmenter", target="kidney_tumor",
                     plan={"intensity": _CT_WINDOW, "patch_size": [64, 64, 64]},
                     facts={"crop_margin_mm": 10.0, "resize_to_patch": True}),
        ),
        "detection cascade",
    ),
}


def pipeline_names() -> list[str]:
    """Names of all pipelines."""
    return list(PIPELINES)


def get_pipeline(name: str) -> Pipeline:
    """The pipeline ``name``; an unknown name raises an error listing the valid ones."""
    try:
        return PIPELINES[name]
    except KeyError:
        raise unknown_name("pipeline", name, list(PIPELINES)) from None
