"""Train a named pipeline stage by stage and write the model folder.

``train_pipeline(pipeline, data, fmt, out, config, resume=False)``:

1. list the data set (``kidneyseg.data.adapters.load_dataset``), keep labelled cases,
   split them by patient (``kidneyseg.data.splits.make_splits``, fold ``config.fold``);
2. for every stage of the pipeline (``kidneyseg.models.pipelines``): derive its
   :class:`~kidneyseg.preprocessing.plan.Plan` from the data set's
   :class:`~kidneyseg.data.fingerprint.Fingerprint` (``Plan.from_fingerprint``, or the
   ``--plan`` file) plus the stage's overrides, preprocess (``apply_plan``), build samples (slices, volumes, per-kidney
   crops, detector boxes), train with :class:`~kidneyseg.training.trainer.StageTrainer`
   and save the stage (``kidneyseg.models.folder.save_stage``);
3. write the top ``model.json``.

Layout of ``out``::

    out/model.json, out/<stage>/{model.json, weights.pt, log.csv, curves.png}
    out/checkpoints/config.json, out/checkpoints/<stage>/{last.pt, best.pt, log.csv, curves.png, done}

``checkpoints/`` is what ``--resume`` reads; the model folder works without it.

Under ``torchrun`` (several processes, :mod:`kidneyseg.training.distributed`) every process lists,
reads and preprocesses the data and trains its share of each batch; only rank 0 writes ``out``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.augmentation import flip_axes
from kidneyseg.case import Case
from kidneyseg.data.fingerprint import Fingerprint
from kidneyseg.errors import InputError, KidneysegError, OutputError
from kidneyseg.labels import has_sided_kidneys
from kidneyseg.models.pipelines import Pipeline, StageDef, get_pipeline
from kidneyseg.preprocessing.plan import Plan
from kidneyseg.training.config import TrainConfig
from kidneyseg.training.distributed import DistContext, from_environment
from kidneyseg.training.targets import lesion_values, target_mapping

log = logging.getLogger(__name__)

CKPT = "checkpoints"
# Config fields that may change between an interrupted run and its resumption.
_RESUME_FREE = {"threads", "progress"}
_NO_ENCODER = ("unet2d", "unet3d", "vnet")


def _check_out(out: Path, resume: bool, cfg: TrainConfig) -> None:
    cfg_path = out / CKPT / "config.json"
    if resume:
        if cfg_path.is_file():
            # an option the interrupted run's config.json predates had its default value then
            old = {**json.loads(json.dumps(TrainConfig().to_dict())), **json.loads(cfg_path.read_text())}
            new = json.loads(json.dumps(cfg.to_dict()))
            diff = sorted(k for k in set(old) | set(new) if k not in _RESUME_FREE and old.get(k) != new.get(k))
            if diff:
                raise InputError(
                    "--resume with different training options", path=cfg_path,
                    found=", ".join(f"{k}={new.get(k)!r}" for k in diff),
                    expected=", ".join(f"{k}={old.get(k)!r}" for k in diff),
                    fix="repeat the interrupted command's options (only --threads may change)",
                )
        return
    if (out / "model.json").exists():
        raise OutputError("output folder already holds a model", path=out, fix="choose another -o folder")
    if (out / CKPT).exists():
        raise OutputError("output folder holds an unfinished training run", path=out,
                          fix="add --resume to continue it, or choose another -o folder")


def _stage_plan(stage: StageDef, fp: Fingerprint, modality: str, cfg: TrainConfig, labels: dict[str, str]) -> Plan:
    """The plan of ``stage``: derived from the data set's fingerprint (or ``cfg.plan``, ``train --plan``), then
    the pipeline's fixed keys for the stage, ``cfg.patch_size``, ``cfg.stage_plans[stage]`` and the stage's labels."""
    if cfg.plan is not None and int(cfg.plan.get("spatial_dims", 0)) == stage.spatial_dims:
        base = Plan.from_json(cfg.plan, path="--plan")
    else:
        base = Plan.from_fingerprint(fp, stage.spatial_dims, modality)
    changes: dict[str, Any] = json.loads(json.dumps(stage.plan))
    if cfg.patch_size is not None:
        if len(cfg.patch_size) != stage.spatial_dims:
            raise InputError("patch_size does not fit the stage", found=cfg.patch_size,
                             expected=f"{stage.spatial_dims} sizes for stage {stage.name}",
                             fix="set per-stage sizes in stage_plans of the config file")
        changes["patch_size"] = list(cfg.patch_size)
    changes.update(cfg.stage_plans.get(stage.name, {}))
    changes["labels"] = labels
    return base.updated(changes, path=f"the plan of stage {stage.name}")


def _extra_refs(extra: dict[str, Any], index: int, task: str, modality: str, data_dims: int, cfg: TrainConfig,
                ) -> tuple[Any, list[Any]]:
    """The data set of one ``extra_train`` entry and its labelled cases (``CaseRef``, not read yet), named
    ``extra<index>/<name>``; patient ids are kept, so a patient with cases in two sets (KiTS19 slices in two
    folders) stays in one fold.

    Raises :class:`InputError` when its modality or dimensionality differ from the main data set's, or its
    task does when the model has no ``classes`` to map different label sets to.
    """
    from kidneyseg.data.adapters import load_dataset

    ds = load_dataset(extra["data"], extra["format"], **extra.get("options", {}))
    where = f"extra_train[{index}]"
    if (ds.task != task and cfg.classes is None) or (ds.modality or "ct") != modality:
        raise InputError(f"{where} is not the same kind of data as --data", path=extra["data"],
                         found=f"task {ds.task}, modality {ds.modality}", expected=f"task {task}, modality {modality}",
                         fix="give a data set with the main data set's labels and modality (or map its labels "
                             "with \"options\", or give the model's classes (partial labels: TrainConfig.classes))")
    refs = _labelled(ds, "check its folder and format (`kidneyseg data check`)", who=where)
    # judged from the file names: nothing read yet; volumes may join 2D images (slice-wise stages cut them)
    if ds.spatial_dims != data_dims and not (data_dims == 2 and ds.spatial_dims == 3):
        raise InputError(f"{where} has {ds.spatial_dims}D images", path=extra["data"], found=f"{ds.spatial_dims}D",
                         expected=f"{data_dims}D like --data", fix="give slices with slices, volumes with volumes")
    return ds, [replace(c, name=f"extra{index}/{c.name}") for c in refs]


def _model_classes(cfg: TrainConfig) -> dict[int, str] | None:
    """``cfg.classes`` as value -> canonical name (partial labels), or ``None``."""
    if cfg.classes is None:
        return None
    from kidneyseg.labels import canonical_label_name

    return {int(v): canonical_label_name(n) for v, n in cfg.classes.items()}


def _labelled(ds: Any, fix: str, who: str | None = None) -> list[Any]:
    """The cases (``CaseRef``) of data set ``ds`` with both an image and a label.

    Raises :class:`InputError` with ``fix`` when there is none (``who``: which data set, for extra ones).
    """
    refs = [c for c in ds.cases if c.label_path is not None and c.image_path is not None]
    if not refs:
        msg = "no case with both image and label"
        raise InputError(f"{who} has {msg}" if who else msg, path=ds.root, expected="labelled images", fix=fix)
    return refs


def _recipe_record(cfg: TrainConfig, pipeline: str) -> dict[str, Any] | None:
    if cfg.recipe is None:
        return None
    from kidneyseg.training.recipes import get_recipe

    return get_recipe(cfg.recipe, pipeline).describe()


def _has_lesions(cases: list[Case], task: str) -> bool:
    vals = lesion_values(task)
    return bool(vals) and any(c.label is not None and np.isin(c.label, vals).any() for c in cases)


def _build_module(stage: StageDef, arch_kwargs: dict[str, Any], out_channels: int, cfg: TrainConfig,
                  encoder_weights: list[str | None] | None, in_channels: int | None = None) -> Any:
    from kidneyseg.models.encoders import load_encoder_weights
    from kidneyseg.models.modules import kaiming_init
    from kidneyseg.models.registry import create_model

    module = create_model(stage.arch, in_channels=in_channels or stage.in_channels, out_channels=out_channels,
                          **arch_kwargs)
    if cfg.init == "kaiming":
        kaiming_init(module)
    if encoder_weights:
        if hasattr(module, "members"):
            members: Any = module.members
            if len(encoder_weights) != len(members):
                raise InputError("wrong number of --encoder-weights for the ensemble", found=len(encoder_weights),
                                 expected=len(members),
                                 fix="give one file per member in member order ('none' to skip one)")
            for spec, member, w in zip(arch_kwargs["members"], members, encoder_weights):
                if w is not None:
                    load_encoder_weights(member, w, arch=spec["arch"])
        else:
            load_encoder_weights(module, encoder_weights[0], arch=stage.arch)
    return module


def _preprocess(cases: list[Case], plan: Plan, cache: dict[str, list[Case]]) -> list[Case]:
    from kidneyseg.preprocessing.plan import apply_plan

    key = plan.preprocessing_key()
    if key not in cache:
        cache[key] = [apply_plan(c, plan) for c in cases]
    return cache[key]


def _facts(stage: StageDef, cfg: TrainConfig) -> dict[str, Any]:
    """The stage's facts: the pipeline's, then ``cfg.stage_facts`` (a recipe's or the config file's)."""
    return json.loads(json.dumps({**stage.facts, **cfg.stage_facts.get(stage.name, {})}))


def _samples(stage: StageDef, cases: list[Case], task: str, mapping: dict[int, int], plan: Plan,
             cfg: TrainConfig, per_case: dict[str, dict[str, Any]] | None = None,
             detector: tuple[Any, list[Case], float] | None = None, *, training: bool = False) -> list[dict[str, Any]]:
    """Training or validation samples of ``cases``; ``per_case`` (case name -> ``{"mapping", "groups",
    "max_slices", "max_background_slices", "repeat"}``): partial labels, each case's value -> group mapping and
    ``(G, C)`` group matrix, attached to its samples as ``"groups"``.  ``detector``: ``(trained detector, cases
    preprocessed with its plan in the order of cases, score threshold)`` for a segmenter that trains on the
    detector's boxes (``train_on: detector``).  ``training``: each case's samples are listed ``repeat`` times (its
    set's ``"repeat"``, the main set's ``cfg.repeat``), so a set is drawn that many times as often per epoch."""
    from kidneyseg.training import samples as S

    facts = _facts(stage, cfg)
    out: list[dict[str, Any]] = []
    for i, c in enumerate(cases):
        own = (per_case or {}).get(c.name, {})
        got: list[dict[str, Any]]
        if stage.role == "detector":
            got = S.detector_samples(c, task, max_background=cfg.max_background_slices, seed=cfg.seed + i)
        elif stage.spatial_dims == 2:
            n_bg = own.get("max_background_slices")
            got = S.slice_samples(c, own.get("mapping", mapping),
                                  max_background=cfg.max_background_slices if n_bg is None else int(n_bg),
                                  seed=cfg.seed + i, context=plan.context_slices,
                                  max_slices=own.get("max_slices"))
            if "groups" in own:
                for smp in got:
                    smp["groups"] = own["groups"]
        elif stage.role == "segmenter" and detector is not None:
            got = S.detector_crop_samples(c, detector[1][i], detector[0], task, mapping,
                                          float(facts.get("crop_margin_mm", 10.0)), list(plan.patch_size),
                                          score_threshold=detector[2], every_mm=facts.get("detect_every_mm"))
        elif stage.role in ("fine", "lesion", "segmenter"):
            got = S.crop_samples(
                c, task, mapping, float(facts.get("crop_margin_mm", 10.0)), with_mask=stage.role == "lesion",
                resize_to=list(plan.patch_size) if facts.get("resize_to_patch") else None,
            )
        else:
            got = [S.volume_sample(c, mapping)]
        out += got * (int(own.get("repeat") or cfg.repeat) if training else 1)
    return out


def train_pipeline(
    pipeline: str | Pipeline,
    data: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str],
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    callbacks: dict[str, list[Any]] | None = None,
    dist: DistContext | None = None,
) -> Path:
    """Train every stage of ``pipeline`` on the data set ``data`` (layout ``fmt``); returns the model folder.

    ``callbacks`` maps a stage name to functions ``f(epoch, row)`` called after each epoch.  ``dist``: the
    processes training together; default :func:`~kidneyseg.training.distributed.from_environment` (the
    ``torchrun`` group when this process was started by ``torchrun``, else this process alone).
    """
    import torch

    from kidneyseg.data.adapters import load_dataset
    from kidneyseg.models.folder import library_versions, save_model_folder, save_stage, write_json
    from kidneyseg.training.detector_trainer import DetectorTrainer
    from kidneyseg.training.losses import class_weights_from_counts, create_loss
    from kidneyseg.training.trainer import DONE, StageTrainer, seed_everything

    cfg = (config or TrainConfig()).check()
    pipe = pipeline if isinstance(pipeline, Pipeline) else get_pipeline(pipeline)
    if cfg.encoder_weights and all(s.arch in _NO_ENCODER for s in pipe.stages):
        raise InputError(f"pipeline {pipe.name} has no pretrained encoder", found=cfg.encoder_weights,
                         expected="no --encoder-weights", fix="drop --encoder-weights (its networks are trained from scratch)")
    out = Path(out)
    dist = dist or from_environment()
    dist.local_batch_size(cfg.batch_size)  # a batch the processes cannot share is refused before any work
    _check_out(out, resume, cfg)
    dist.barrier()  # every process has checked the folder before rank 0 writes into it
    writer = dist.is_main  # rank 0: the one process that writes `out`
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    t0 = time.time()

    ds = load_dataset(data, fmt, **cfg.dataset_options)
    refs = _labelled(ds, "check --data and --format (`kidneyseg data check`)")
    if cfg.max_cases:
        refs = refs[: cfg.max_cases]
    ds = replace(ds, cases=refs)
    extra_sets = [_extra_refs(extra, i, ds.task, ds.modality or "ct", ds.spatial_dims, cfg)
                  for i, extra in enumerate(cfg.extra_train)]
    val_all: set[str] = set()
    if cfg.fold >= 0:
        from kidneyseg.data.splits import make_splits

        # the main set and every extra set with "split": true are split together, by patient
        joint = refs + [r for (_, rs), extra in zip(extra_sets, cfg.extra_train) if extra.get("split") for r in rs]
        split = make_splits(replace(ds, cases=joint), folds=cfg.folds, seed=cfg.seed)[cfg.fold]
        val_all = set(split["val"])
        main = {c.name for c in refs}
        train_names = [n for n in split["train"] if n in main]
        val_names = [n for n in split["val"] if n in main]
    else:
        train_names, val_names = [c.name for c in refs], []
    by_name = {c.name: c for c in refs}
    log.info("%s: %d training and %d validation cases", pipe.name, len(train_names), len(val_names))
    raw_train = [by_name[n].load() for n in train_names]
    raw_val = [by_name[n].load() for n in val_names]
    task, modality = ds.task, (ds.modality or "ct")
    if modality not in pipe.modalities:
        log.warning("pipeline %s is meant for %s, the data are %s", pipe.name, "/".join(pipe.modalities), modality)
    data_dims = raw_train[0].ndim
    # the data set's fingerprint (all its cases, as `kidneyseg data check` and nnU-Net compute it): so the plan
    # `data check --plan` prints is the plan trained with; extra data sets never change it
    fp = Fingerprint.from_cases(raw_train + raw_val, task, modality)  # order-free: the builder sorts by name
    per_case: dict[str, dict[str, Any]] = {}
    classes = _model_classes(cfg)
    if classes is not None:
        from kidneyseg.labels import get_task as _task
        from kidneyseg.training.targets import partial_targets

        m, g, names = partial_targets(_task(task).labels, classes, None, where=f"--data {data}")
        log.info("partial labels: %s (%s) -> groups %s", data, task, names)
        for c in raw_train + raw_val:
            per_case[c.name] = {"mapping": m, "groups": g}
    extra_names, extra_val = [], []
    for i, (extra, (ds_x, xrefs)) in enumerate(zip(cfg.extra_train, extra_sets)):
        cases = [r.load() for r in xrefs if r.name not in val_all]
        vcases = [r.load() for r in xrefs if r.name in val_all]
        raw_train += cases
        raw_val += vcases
        extra_names += [c.name for c in cases]
        extra_val += [c.name for c in vcases]
        own: dict[str, Any] = {"max_slices": extra.get("max_slices"),
                               "max_background_slices": extra.get("max_background_slices"),
                               "repeat": int(extra.get("repeat", 1))}
        if classes is not None:
            m, g, names = partial_targets(_task(ds_x.task).labels, classes, extra.get("classes"),
                                          where=f"extra_train[{i}] ({extra['data']})")
            log.info("partial labels: %s (%s) -> groups %s", extra["data"], ds_x.task, names)
            own.update({"mapping": m, "groups": g})
        for c in cases + vcases:
            per_case[c.name] = own
    if extra_names:
        log.info("%d more training and %d more validation cases from extra_train", len(extra_names), len(extra_val))

    if writer:
        out.mkdir(parents=True, exist_ok=True)
        (out / CKPT).mkdir(exist_ok=True)
        write_json(out / CKPT / "config.json", cfg.to_dict())

    cache_train: dict[str, list[Case]] = {}
    cache_val: dict[str, list[Case]] = {}
    done_stages: list[str] = []
    skipped: dict[str, str] = {}
    summaries: dict[str, Any] = {}
    top_labels: dict[str, str] = {"0": "background"}
    encoder_weights = cfg.encoder_weights
    # (module, plan, score threshold) of the detector trained in this run, for a segmenter trained on its boxes
    trained_detector: tuple[Any, Plan, float] | None = None
    for si, stage in enumerate(pipe.stages):
        if stage.spatial_dims == 3 and data_dims == 2:
            raise InputError(f"pipeline {pipe.name} needs volumes", path=data, found="2D images",
                             expected="3D volumes", fix="use a 2D pipeline (ct2d-*, us-triple-ensemble)")
        if stage.optional and stage.target == "lesion" and not _has_lesions(raw_train, task):
            skipped[stage.name] = f"no lesion labels ({task})"
            log.info("stage %s skipped: %s", stage.name, skipped[stage.name])
            continue
        if classes is not None:
            if stage.target != "all" or stage.role == "detector":
                raise InputError(f"partial labels (classes) for stage {stage.name}", found=f"target {stage.target}",
                                 expected="a one-stage segmentation pipeline with target 'all'",
                                 fix="train this pipeline on one data set, or drop classes")
            channel_to_label = sorted(classes)
            mapping = {v: i for i, v in enumerate(channel_to_label)}
            labels = {str(v): classes[v] for v in channel_to_label}
        else:
            mapping, channel_to_label, labels = target_mapping(stage.target, task)
        if stage.role != "detector":
            top_labels.update(labels)
        ckpt_dir = out / CKPT / stage.name
        arch_kwargs = json.loads(json.dumps({**stage.arch_kwargs, **cfg.stage_arch_kwargs.get(stage.name, {})}))
        if stage.role == "detector":
            arch_kwargs = {**arch_kwargs}
        plan = _stage_plan(stage, fp, modality, cfg, labels)
        facts = _facts(stage, cfg)
        tr = _preprocess(raw_train, plan, cache_train)
        va = _preprocess(raw_val, plan, cache_val)
        det_train = det_val = None
        if facts.get("train_on") == "detector":
            # the paper's V-Net crops: where the trained detector finds the kidneys, in training and validation
            if trained_detector is None:
                raise InputError(f"stage {stage.name} trains on the detector's boxes, but no detector was trained "
                                 "before it in this run", found=f"train_on: detector, pipeline {pipe.name}",
                                 expected="a detector stage trained earlier in the same run",
                                 fix="train the whole pipeline in one run (a resumed run retrains nothing), or "
                                     "drop train_on from stage_facts")
            det_module, det_plan, det_threshold = trained_detector
            det_train = (det_module, _preprocess(raw_train, det_plan, cache_train), det_threshold)
            det_val = (det_module, _preprocess(raw_val, det_plan, cache_val), det_threshold)
        train_samples = _samples(stage, tr, task, mapping, plan, cfg, per_case, det_train, training=True)
        val_samples = _samples(stage, va, task, mapping, plan, cfg, per_case, det_val)
        crop_stage = stage.role in ("fine", "lesion") and "patch_size" not in stage.plan
        if crop_stage and cfg.patch_size is None and "patch_size" not in cfg.stage_plans.get(stage.name, {}):
            from kidneyseg.training.samples import patch_for_crops

            plan = plan.updated({"patch_size": patch_for_crops(train_samples)})
        if resume and (ckpt_dir / DONE).is_file() and (out / stage.name / "weights.pt").is_file():
            log.info("stage %s already trained", stage.name)
            if stage.role == "detector":  # a later stage may train on its boxes
                from kidneyseg.models.folder import load_stage

                done = load_stage(out / stage.name)
                trained_detector = (done.module, done.plan, float(facts.get("score_threshold", 0.5)))
            done_stages.append(stage.name)
            summaries[stage.name] = json.loads((out / stage.name / "model.json").read_text())["stage"].get("training")
            continue
        seed_everything(cfg.seed + si)
        # 2.5D: the image and its context_slices neighbours on either side are input channels
        in_channels = stage.in_channels + 2 * plan.context_slices
        module = _build_module(stage, arch_kwargs, len(channel_to_label), cfg,
                               encoder_weights if stage.arch not in _NO_ENCODER else None, in_channels)
        loss: Any = None  # the detector computes its own losses
        if stage.role == "detector":
            loss_name = "faster-rcnn"
            trainer_cls: type[StageTrainer] = DetectorTrainer
        else:
            loss_name = cfg.loss or stage.loss
            if classes is not None and loss_name != "dice-ce":
                raise InputError("partial labels (classes) need the marginal dice-ce loss", found=loss_name,
                                 expected="dice-ce", fix="drop --loss or set it to dice-ce")
            loss_kwargs: dict[str, Any] = {}
            if loss_name == "weighted-ce-dice":
                counts = np.bincount(np.concatenate([s["label"].ravel() for s in train_samples]),
                                     minlength=len(channel_to_label))[: len(channel_to_label)]
                loss_kwargs["class_weights"] = class_weights_from_counts(counts.tolist())
            loss = create_loss(loss_name, **loss_kwargs)
            trainer_cls = StageTrainer
        # left/right labels: never flipped in training, so never mirrored at test time (mirror_axes below)
        sided = stage.target == "all" and has_sided_kidneys(labels)
        # checked before training: mirror "left-right" needs an orientation with a left-right axis
        mirror_axes = flip_axes(modality, stage.spatial_dims, cfg.augmentation, sided, cfg.mirror,
                                plan.orientation)
        trainer = trainer_cls(
            module, loss, cfg, ckpt_dir, plan, channel_names=[labels[str(v)] for v in channel_to_label],
            sided_labels=sided, name=stage.name, dist=dist,
        )
        trainer.on_epoch_end += (callbacks or {}).get(stage.name, [])
        log.info("stage %s: %s, %d training / %d validation samples, patch %s", stage.name, stage.arch,
                 len(train_samples), len(val_samples), list(plan.patch_size))
        summary = trainer.fit(train_samples, val_samples, resume=resume)
        summary.update({"train_samples": len(train_samples), "val_samples": len(val_samples), "loss": loss_name,
                        "loss_kwargs": loss_kwargs if stage.role != "detector" else {}})
        if dist.enabled:
            summary["distributed"] = dist.describe()
        done_stages.append(stage.name)
        summaries[stage.name] = summary
        if stage.role == "detector":  # every process: a later stage may train on its boxes (the shipped weights)
            module.load_state_dict(trainer.final_state())
            trained_detector = (module, plan, float(facts.get("score_threshold", 0.5)))
        if not writer:
            continue
        module.load_state_dict(trainer.final_state())
        spec = {
            "arch": stage.arch, "arch_kwargs": arch_kwargs, "in_channels": in_channels,
            "out_channels": len(channel_to_label), "channel_to_label": channel_to_label, "plan": plan.to_json(),
            # axes the training flipped: the only ones mirroring TTA may use
            "mirror_axes": mirror_axes,
            "stage": {"name": stage.name, "role": stage.role, "target": stage.target,
                      "inputs": ["image", *stage.extra_inputs], **facts,
                      "training": summary},
        }
        save_stage(out / stage.name, module, spec)
        for f in ("log.csv", "curves.png"):
            if (ckpt_dir / f).is_file():
                shutil.copyfile(ckpt_dir / f, out / stage.name / f)
    if not done_stages:
        raise KidneysegError("no stage was trained", found=skipped, fix="check the data set's labels")
    top = {
        "pipeline": pipe.name,
        "task": task,
        "modality": modality,
        "labels": dict(sorted(top_labels.items(), key=lambda kv: int(kv[0]))),
        "stages": done_stages,
        "inference": pipe.inference,
        "training": {
            "data": {"root": str(data), "format": fmt, "cases": len(refs), "train": train_names, "val": val_names,
                     "fold": cfg.fold, "folds": cfg.folds, "extra_train": extra_names, "extra_val": extra_val},
            "config": cfg.to_dict(),
            "stages": summaries,
            "skipped_stages": skipped,
            "seconds": round(time.time() - t0, 1),
            # the recipe the config started from (train --recipe), with what stays different from its paper
            "recipe": _recipe_record(cfg, pipe.name),
        },
        "versions": library_versions(),
        "card": {"description": pipe.description, "method": pipe.reference,
                 "intended_use": "research; not a medical device",
                 **({"recipe": cfg.recipe} if cfg.recipe else {})},
    }
    if writer:
        save_model_folder(out, top)
    dist.barrier()  # the model folder is whole before any process returns
    return out
