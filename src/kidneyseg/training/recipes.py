"""Training recipes: named sets of training options per pipeline (``kidneyseg train --recipe NAME``).

A recipe is a layer of :class:`~kidneyseg.training.config.TrainConfig` values between the
defaults and the user's own options::

    TrainConfig defaults  <  recipe  <  --config FILE.json  <  command-line flags

so every option a user gives explicitly wins, and the per-stage dictionaries
(``stage_plans``, ``stage_arch_kwargs``, ``stage_facts``) are merged key by key (a
``--config`` that sets only the segmenter's ``patch_size`` keeps the recipe's other
segmenter keys).  Without ``--recipe`` nothing changes.

``paper``
    Each of the five published pipelines as its paper describes it, as far as this
    code base and a CPU allow; :attr:`Recipe.differences` lists what stays different
    and why (also the table in docs/CONTRACTS.md, "Paper recipes").  The name of the
    recipe is saved as ``training.config.recipe`` and ``training.recipe`` (with the
    differences) in the model folder's ``model.json``.

This module only describes recipes (it imports without torch).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kidneyseg.errors import InputError, unknown_name

if TYPE_CHECKING:  # pragma: no cover
    from kidneyseg.training.config import TrainConfig

#: Per-stage dictionaries of :class:`TrainConfig` merged key by key when layered.
STAGE_DICTS = ("stage_plans", "stage_arch_kwargs", "stage_facts")


@dataclass(frozen=True)
class Recipe:
    """Training options of one pipeline under one recipe name.

    Attributes
    ----------
    name, pipeline:
        Recipe name (``paper``) and the pipeline it is for.
    config:
        :class:`~kidneyseg.training.config.TrainConfig` field values (JSON types), e.g.
        ``{"epochs": 100, "stage_plans": {"main": {"patch_size": [512, 512]}}}``.
    encoder_weights:
        Encoders whose local ImageNet state dicts the recipe needs (``--encoder-weights``,
        one per entry, in member order), as torchvision model names; empty when none is needed.
        Nothing is downloaded: without them the run is refused (:func:`check_encoder_weights`).
    paper:
        The paper's values that the recipe follows, as ``(what, value)`` rows.
    differences:
        What remains different from the paper, and why.
    """

    name: str
    pipeline: str
    config: dict[str, Any]
    encoder_weights: tuple[str, ...] = ()
    paper: tuple[tuple[str, str], ...] = ()
    differences: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> dict[str, Any]:
        """What ``model.json["training"]["recipe"]`` records."""
        return {"name": self.name, "pipeline": self.pipeline, "config": json.loads(json.dumps(self.config)),
                "encoder_weights": list(self.encoder_weights), "differences": list(self.differences)}


_SLICE_UNET_UNKNOWN = (
    "the encoder variant, the loss, the input size and the schedule of the slice U-Nets paper are not in issue "
    "23's summary and the paper's text was not at hand: the recipe keeps the pipeline's encoder (SqueezeNet 1.1, "
    "ResNet-34) and its Dice + cross-entropy loss and records them explicitly; correct them here when the paper "
    "is checked",
)

# --------------------------------------------------------------------------------------------------- paper
# Values and their sources are in docs/CONTRACTS.md ("Paper recipes"); each ``differences`` entry is one row's
# "why" there.
_PAPER: dict[str, Recipe] = {
    "us-triple-ensemble": Recipe(
        "paper", "us-triple-ensemble",
        {
            "epochs": 100,
            "lr_schedule": "constant",
            # one network: the three members' outputs concatenated into the final convolution, trained together
            "ensemble_training": "end-to-end",
            "stage_arch_kwargs": {"main": {"members": [
                {"arch": "deeplabv3plus-resnet18", "arch_kwargs": {}},
                {"arch": "deeplabv3plus-resnet152", "arch_kwargs": {}},
                # LinkNet as published (Chaurasia & Culurciello 2017): a ResNet-18 encoder
                {"arch": "linknet-resnet18", "arch_kwargs": {}},
            ], "fusion_kernel": 3}},
        },
        paper=(("members", "DeepLabV3+ ResNet-18, DeepLabV3+ ResNet-152, LinkNet"),
               ("fusion", "outputs concatenated, fused by a final convolution"),
               ("epochs", "100"), ("learning rate", "constant")),
        differences=(
            "100 epochs of the three members take about 19 h per 100 images on 2 CPU cores (benchmarks/train.py: "
            "0.15 samples/s): the recipe keeps 100, shorten it with --epochs",
            "LinkNet's encoder: ResNet-18, LinkNet as published (Chaurasia and Culurciello 2017), read from "
            "the paper naming LinkNet without another encoder; the paper's text was not at hand to confirm it",
            "training order: one network, members and fusion trained together (end-to-end), read from the "
            "paper's single model whose concatenated outputs feed the final convolution; not confirmed against "
            "its text (--ensemble-training members-then-fusion trains the members first)",
            "the learning rate value and the fusion kernel size are not in the issue's summary of the paper: "
            "1e-3 (Adam) and 3x3 are kept",
        ),
    ),
    "ct2d-ensemble": Recipe(
        "paper", "ct2d-ensemble",
        {
            "batch_size": 16,
            "loss": "bce-dice",
            "augmentation": "rot90-elastic",
            "stage_arch_kwargs": {"main": {"members": [
                {"arch": "unet-resnet50", "arch_kwargs": {"dropout": 0.5}},
                {"arch": "unet-vgg16", "arch_kwargs": {"dropout": 0.5}},
                {"arch": "unet-inceptionv3", "arch_kwargs": {"dropout": 0.5}},
            ]}},
            # denoising and artefact (table, air) removal before the network
            "stage_plans": {"main": {"patch_size": [512, 512], "crop": "body",
                                     "denoise": {"method": "median", "size": 3, "slicewise": True}}},
        },
        encoder_weights=("resnet50", "vgg16", "inception_v3"),
        paper=(("encoders", "ResNet-50, VGG16, InceptionV3, ImageNet weights"), ("fusion", "masks averaged"),
               ("dropout", "yes"), ("batch", "16"),
               ("loss", "BCE + Dice"), ("augmentation", "rotations by 90/180/270 degrees, elastic deformation"),
               ("preprocessing", "denoising, artefact removal")),
        differences=(
            "input size: 512 x 512, the whole KiTS axial slice, which every member takes (InceptionV3 needs at "
            "least 128); the paper's own size is not in the issue's summary",
            "the dropout rate is not in the issue's summary of the paper: 0.5 before each member's final "
            "convolution",
            "denoising: the median filter (3x3, per slice) of the methods the paper compares; artefact removal: "
            "the crop to the body (kidneyseg.preprocessing.body), which drops the table and the air",
            "the ImageNet encoders are not shipped (no download ever): pass the three torchvision state dicts with "
            "--encoder-weights; the recipe refuses to train without them",
        ),
    ),
    "ct-detect-vnet": Recipe(
        "paper", "ct-detect-vnet",
        {
            "loss": "dice",
            "stage_arch_kwargs": {"detector": {
                "backbone": "resnet50-c4",
                "rpn_pre_nms_top_n_train": 6000, "rpn_pre_nms_top_n_test": 6000,
                "rpn_post_nms_top_n_train": 300, "rpn_post_nms_top_n_test": 300,
                "rpn_positive_fraction": 0.5, "box_positive_fraction": 0.5,
            }},
            "stage_plans": {"segmenter": {"patch_size": [64, 64, 32]}},
            "stage_facts": {"segmenter": {"train_on": "detector"}},
        },
        paper=(("detector", "Faster R-CNN, ResNet-50 C4 features (no FPN)"), ("proposals", "300"),
               ("sampling", "1:1 positive/negative RoIs"),
               ("V-Net input", "64x64x32 per kidney box"), ("V-Net loss", "Dice"),
               ("V-Net training crops", "the detector's boxes")),
        differences=(
            "V-Net crops: the trained detector's boxes on the training cases, plus the ground-truth box of a kidney "
            "the detector misses (so every kidney is seen)",
            "the detector's ImageNet ResNet-50 is optional (--encoder-weights resnet50.pth); nothing is downloaded",
        ),
    ),
    "ct2d-unet-squeezenet": Recipe(
        "paper", "ct2d-unet-squeezenet",
        {"loss": "dice-ce"},
        paper=(("encoder", "SqueezeNet (torchvision); the variant: not in the issue's summary"),
               ("decoder", "U-Net"), ("loss", "not in the issue's summary")),
        differences=_SLICE_UNET_UNKNOWN,
    ),
    "ct2d-unet-resnet": Recipe(
        "paper", "ct2d-unet-resnet",
        {"loss": "dice-ce"},
        paper=(("encoder", "ResNet (torchvision); the depth: not in the issue's summary"),
               ("decoder", "U-Net"), ("loss", "not in the issue's summary")),
        differences=_SLICE_UNET_UNKNOWN,
    ),
    "ct3d-cascade": Recipe(
        "paper", "ct3d-cascade",
        {
            "loss": "weighted-ce-dice",
            "stage_plans": {
                # the paper: 3.41 x 1.71 x 1.71 mm (z, y, x), a 128 x 248 x 248 crop scaled to 96 x 128 x 128; the
                # same field of view resampled in one step (RAS axes: x, y, z): 1.71 * 248 / 128, 3.41 * 128 / 96
                "coarse": {"target_spacing": [3.3131, 3.3131, 4.5467], "patch_size": [128, 128, 96]},
                # per-kidney crop scaled to 80 x 128 x 128 (z, y, x)
                "fine": {"patch_size": [128, 128, 80]},
                "lesion": {"patch_size": [128, 128, 80]},
            },
            "stage_facts": {"fine": {"resize_to_patch": True}, "lesion": {"resize_to_patch": True}},
        },
        paper=(("coarse", "3.41 x 1.71 x 1.71 mm, crop 128 x 248 x 248 scaled to 96 x 128 x 128 (z, y, x)"),
               ("fine", "per-kidney crop scaled to 80 x 128 x 128"),
               ("lesion", "tumour and cyst, inside the kidney"), ("loss", "Dice + weighted cross-entropy")),
        differences=(
            "coarse: resampled in one step to the crop's scaled spacing (3.31 x 3.31 x 4.55 mm, RAS x, y, z) and "
            "128 x 128 x 96 patches cut from it, instead of resampling to 1.71/3.41 mm, cropping 248 x 248 x 128 "
            "and scaling the crop: the same field of view and resolution, one interpolation instead of two",
        ),
    ),
}

RECIPES: dict[str, dict[str, Recipe]] = {"paper": _PAPER}


def recipe_names() -> list[str]:
    """Names accepted by ``kidneyseg train --recipe``."""
    return list(RECIPES)


def get_recipe(name: str, pipeline: str) -> Recipe:
    """The recipe ``name`` of ``pipeline``.

    Raises :class:`~kidneyseg.errors.RegistryError` for an unknown name (listing the valid ones) and
    :class:`InputError` when the pipeline has no such recipe (listing the pipelines that do).
    """
    if name not in RECIPES:
        raise unknown_name("recipe", name, recipe_names())
    by_pipe = RECIPES[name]
    if pipeline not in by_pipe:
        raise InputError(f"pipeline {pipeline} has no '{name}' recipe", found=pipeline,
                         expected="one of: " + ", ".join(sorted(by_pipe)),
                         fix=f"drop --recipe {name}, or train one of the listed pipelines")
    return by_pipe[pipeline]


def layer(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``top``'s values on top; the per-stage dictionaries (:data:`STAGE_DICTS`) merged per stage,
    key by key.  Neither argument is changed."""
    out = json.loads(json.dumps(base))
    for key, value in top.items():
        if key in STAGE_DICTS and isinstance(value, dict) and isinstance(out.get(key), dict):
            merged = out[key]
            for stage, vals in value.items():
                if isinstance(vals, dict) and isinstance(merged.get(stage), dict):
                    merged[stage] = {**merged[stage], **json.loads(json.dumps(vals))}
                else:
                    merged[stage] = json.loads(json.dumps(vals))
        else:
            out[key] = json.loads(json.dumps(value))
    return out


def check_encoder_weights(recipe: Recipe, given: list[str | None] | None) -> None:
    """Refuse a run of ``recipe`` without the local encoder files it needs (one per entry of
    :attr:`Recipe.encoder_weights`, none of them ``none``); the error tells how to make them."""
    need = recipe.encoder_weights
    if not need:
        return
    ok = given is not None and len(given) == len(need) and all(w is not None for w in given)
    if ok:
        return
    saves = "; ".join(f"torch.save(torchvision.models.{n}(weights='IMAGENET1K_V1').state_dict(), '{n}.pth')"
                      for n in need)
    raise InputError(
        f"the '{recipe.name}' recipe of {recipe.pipeline} trains from ImageNet encoders",
        found="no --encoder-weights" if not given else f"{len(given)} --encoder-weights "
              f"({', '.join(str(w) for w in given)})",
        expected=f"{len(need)} local state dicts, in member order: " + ", ".join(f"{n}.pth" for n in need),
        fix="kidneyseg never downloads weights; on a machine with internet run python -c \"import torch, "
            f"torchvision; {saves}\", then pass " + " ".join(f"--encoder-weights {n}.pth" for n in need),
    )


def recipe_config(name: str | None, pipeline: str, path: str | os.PathLike[str] | None = None,
                  **overrides: Any) -> TrainConfig:
    """The :class:`~kidneyseg.training.config.TrainConfig` of ``kidneyseg train --recipe NAME``: the recipe's
    values for ``pipeline`` (none when ``name`` is ``None``), then the ``--config`` file ``path``, then the
    non-``None`` ``overrides`` (the command-line flags); ``recipe`` records ``name``.

    Raises for an unknown recipe or pipeline (listing the valid names) and, for a recipe that trains from
    ImageNet encoders, when the ``encoder_weights`` it needs are missing (:func:`check_encoder_weights`).
    """
    from kidneyseg.models.pipelines import get_pipeline
    from kidneyseg.training.config import TrainConfig

    get_pipeline(pipeline)  # an unknown pipeline is named as such, before its recipes
    if name is None:
        return TrainConfig.from_json(path, **overrides)
    recipe = get_recipe(name, pipeline)
    base = {**json.loads(json.dumps(recipe.config)), "recipe": recipe.name}
    if TrainConfig.from_json(path, **overrides).patch_size is not None:
        # the user's patch size (--patch-size, or patch_size in --config) is every stage's: it wins over the
        # recipe's per-stage sizes (a per-stage size in the user's own stage_plans still wins over it)
        for stage_plan in base.get("stage_plans", {}).values():
            stage_plan.pop("patch_size", None)
    cfg = TrainConfig.from_json(path, base=base, **overrides)
    check_encoder_weights(recipe, cfg.encoder_weights)
    return cfg
