"""The default models embedded in the package, and the recipes that train them.

``default_model_dir(modality)`` is the folder ``kidneyseg predict`` uses when no
``--model`` is given (``ct``, ``mr`` or ``us``).  Each folder is an ordinary model
folder (docs/CONTRACTS.md): ``model.json`` (with a ``card``), one stage folder with
``weights.pt`` (state dict, float16, loaded with ``torch.load(weights_only=True)``)
and ``MODEL_CARD.md``.

The recipes (:data:`RECIPES`) are what ``scripts/train_defaults.py`` (``make
models``) trains and ``benchmarks/accuracy.py`` cross-validates.  CT and MR
defaults are the mean ensemble of the case-level cross-validation fold models
(nnU-Net's practice): the validation score of every member is the
cross-validation score, and no member saw its validation cases.

This module imports without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kidneyseg.errors import InputError, unknown_name

MODALITIES = ("ct", "mr", "us")
#: Total size budget of all embedded defaults (bytes, 60 MB): they ship in the wheel.
SIZE_BUDGET_BYTES = 60_000_000


def default_model_dir(modality: str) -> Path:
    """Folder of the embedded default model for ``modality`` (``ct``, ``mr`` or ``us``).

    Raises :class:`~kidneyseg.errors.InputError` for an unknown modality or a
    folder without ``model.json`` (an installation without trained defaults).
    """
    if modality not in MODALITIES:
        raise unknown_name("modality", modality, MODALITIES)
    d = Path(__file__).resolve().parent / modality
    if not (d / "model.json").is_file():
        raise InputError(f"no embedded default model for modality '{modality}' in this installation", path=d,
                         found="no model.json", expected="model.json + stage folder + weights.pt",
                         fix="run `make models` (needs ../shared/data) or pass --model DIR")
    return d


def default_models_size() -> int:
    """Bytes taken by every file under the embedded default folders."""
    root = Path(__file__).resolve().parent
    return sum(p.stat().st_size for m in MODALITIES for p in (root / m).rglob("*") if p.is_file())


@dataclass(frozen=True)
class Recipe:
    """How one default model is trained.

    ``data``/``fmt``: data set (relative to the shared data root) and adapter
    format; ``synth``: phantom generation instead (``kidneyseg data synth`` options);
    ``pipeline``: a pipeline name of :mod:`kidneyseg.models.pipelines`, or ``custom``
    with ``stage`` describing a one-stage slice-wise pipeline; ``config``:
    :class:`~kidneyseg.training.config.TrainConfig` fields; ``folds``: number of
    case-level folds (0 = one model on every case); ``extra_synth``: phantoms
    (``kidneyseg data synth`` options, with ``layout``) added to the training cases of
    every fold and never validated on (``TrainConfig.extra_train``); their real kidney
    shapes never come from a case of ``data``.
    """

    modality: str
    pipeline: str
    config: dict[str, Any]
    data: str | None = None
    fmt: str | None = None
    synth: dict[str, Any] | None = None
    extra_synth: dict[str, Any] | None = None
    stage: dict[str, Any] | None = None
    folds: int = 5
    output_labels: dict[str, str] = field(default_factory=dict)
    license: str = ""


#: Small MONAI residual U-Net (2D): cheap enough to train on two CPU cores.
_UNET_SMALL = {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 1}

RECIPES: dict[str, Recipe] = {
    "ct": Recipe(
        modality="ct",
        pipeline="custom",
        stage={"name": "main", "arch": "unet2d", "arch_kwargs": _UNET_SMALL, "loss": "dice-ce",
               "description": "small 2D residual U-Net (MONAI) on axial slices, 2.0 mm in plane, HU window 0..255",
               # the slices hold clip(HU, 0, 255): the window maps any CT in HU to the same range
               # 2 mm in plane (about 200x200 per slice), 128x128 patches (192x192 patches, nearly the whole
               # body, gave fold-1 Dice 0.36 against 0.54: fewer distinct crops of only 24 training slices)
               "plan": {"target_spacing": [2.0, 2.0], "patch_size": [128, 128],
                        "intensity": {"kind": "window", "low": 0, "high": 255}}},
        # ~2100 steps with a poly-decaying learning rate (about 13 min per fold on 2 cores)
        # 400 epochs (all 5 folds, --jobs 5: 39.4 min wall) moved kidney+masses 0.700 -> 0.688 and tumour
        #   0.520 -> 0.555 (fold 1 kidney+masses 0.556 -> 0.481): mixed, not adopted
        # no contrast_phase_prob: simulating unenhanced scans erased the kidney/tumour contrast and cut the
        # fold-0 Dice from 0.72 to 0.47 (192x192 patches), without finding the kidneys of the unenhanced example
        # mirror "left-right" (flips along the patient's left-right axis only; no front-back flips or 90-degree
        #   rotations, so the kidneys stay behind, beside the spine; slices in display order, orientation PLS):
        #   0.690 / 0.547 (folds 0.686 / 0.561 / 0.777 / 0.686 / 0.740 and 0.326 / 0.509 / 0.680 / 0.651 / 0.569)
        #   against 0.700 / 0.520 with every flip and 90-degree rotations: equal within the spread between runs;
        #   kept, as the anatomy's front and back are never mirrored in real scans (MR: front-back flips cost 0.05)
        # + contrast_phase_prob 0.3 (all 5 folds, left-right mirror): 0.695 / 0.549, and the unenhanced
        #   TotalSegmentator example still gets no kidney (its kidneys are painted as tumour): not adopted
        # + 192x192 patches (whole slice, left-right mirror; all 5 folds, 42.9 min wall): 0.622 / 0.408, not adopted
        # + training-only CT phantoms (extra_synth, kits23 shapes of cases outside kits19_slices; epochs cut so the
        #   steps stay ~1800; all 5 folds each, left-right mirror): 12 phantoms (35 slices, 120 epochs) 0.718 / 0.581
        #   with phantom seed 11 but 0.678 / 0.511 with seed 12; 24 phantoms (70 slices, 80 epochs) 0.681 / 0.501;
        #   HD95 57-70 mm against 62: no gain beyond the spread between runs, and the unenhanced TotalSegmentator
        #   example still got no kidney: not adopted (rerun: extra_synth={"modality": "ct", "n": 12, "seed": 11,
        #   "layout": "slices"}, epochs 120)
        config={"epochs": 300, "batch_size": 4, "lr": 2e-3, "lr_schedule": "poly", "val_every": 300,
                "augmentation": "default", "fg_ratio": 0.67, "mirror": "left-right"},
        data="kits19_slices",
        fmt="slices",
        folds=5,
        output_labels={"0": "background", "1": "kidney", "2": "tumor"},
        license="CC BY-NC-SA 4.0 (KiTS19)",
    ),
    "mr": Recipe(
        modality="mr",
        pipeline="custom",
        stage={"name": "main", "arch": "unet2d", "arch_kwargs": _UNET_SMALL, "loss": "dice-ce",
               "description": "small 2D residual U-Net (MONAI) on axial T2 slices, 2.5 mm in plane, "
                              "right (2) and left (3) kidney predicted directly (no flips in augmentation)",
               "plan": {"target_spacing": [2.5, 2.5], "patch_size": [128, 128],
                        "intensity": {"kind": "percentile_zscore", "low_pct": 0.5, "high_pct": 99.5}}},
        # liver (1) and spleen (4) are learned as extra classes (reported as background by the shipped
        # model): the spleen-side false positives of a kidneys-only model fell away (CV left kidney
        # 0.844 -> 0.890 with the same post-processing); every slice with an organ is a training sample
        # ~2800 steps (60 epochs of ~47) with a poly-decaying learning rate; 128x128 at 2.5 mm is the whole slice.
        # 40 epochs (training loss still falling at the end) gave CV right 0.901, left 0.893, HD95 6.2 / 8.2 mm;
        # 60 epochs: right 0.910, left 0.897, HD95 5.9 / 6.8 mm (all 5 folds, same split and seed)
        # tried with 40 epochs on folds 0 and 4, not adopted (mean of right and left; 40-epoch folds 0.899 / 0.872):
        #   2.0 mm with 160x160 slices -> 0.915 / 0.834; 2.5D (context_slices 1) -> 0.907 / 0.604 (the
        #   giant-cyst case_36 lost both kidneys). Single runs on 3 validation cases each: noisy.
        # front-back flips (side-preserving, so --tta could mirror that axis), all 5 folds, 40 epochs: right 0.844,
        #   left 0.847 (0.849 / 0.851 with --tta) against 0.901 / 0.893: a spine in front hurts; no flips
        config={"epochs": 60, "batch_size": 8, "lr": 2e-3, "lr_schedule": "poly", "val_every": 60,
                "augmentation": "default", "max_background_slices": 4},
        data="chaos_t2",
        fmt="chaos-mr",
        folds=5,
        output_labels={"0": "background", "2": "kidney_right", "3": "kidney_left"},
        license="CC BY-SA 4.0 (CHAOS)",
    ),
    "us": Recipe(
        modality="us",
        pipeline="us-triple-ensemble",
        config={"epochs": 9, "batch_size": 4, "lr": 1e-3, "fold": -1, "fusion_epochs": 2, "augmentation": "default",
                "patch_size": [128, 128],
                # ResNet-152 and LinkNet-ResNet-34 do not fit the 60 MB budget: smaller members ship
                "stage_arch_kwargs": {"main": {"members": [
                    {"arch": "deeplabv3plus-resnet18", "arch_kwargs": {}},
                    {"arch": "deeplabv3plus-mobilenetv2", "arch_kwargs": {}},
                    {"arch": "linknet-mobilenetv2", "arch_kwargs": {}}], "fusion_kernel": 3}},
                },
        synth={"modality": "us", "n": 48, "size": [128, 128], "seed": 7},
        folds=0,
        output_labels={"0": "background", "1": "kidney"},
        license="CC BY-NC-SA 4.0 (kidney outlines of the Open Kidney Ultrasound masks)",
    ),
}


def get_recipe(modality: str) -> Recipe:
    """The training recipe of the default model for ``modality``."""
    try:
        return RECIPES[modality]
    except KeyError:
        raise unknown_name("default model", modality, list(RECIPES)) from None
