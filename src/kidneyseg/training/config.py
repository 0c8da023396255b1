"""Training configuration: a dataclass, read from JSON, overridden by command-line flags."""

from __future__ import annotations

import json
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Union

from kidneyseg.errors import InputError

#: Keys of one ``extra_train`` entry.
EXTRA_KEYS = frozenset({"data", "format", "options", "split", "classes", "max_slices", "max_background_slices",
                        "repeat"})

#: Learning-rate schedules of :class:`TrainConfig` (``lr_schedule``).
LR_SCHEDULES = ("poly", "constant")


def _whole_or_none(value: Any, minimum: int) -> bool:
    """``value`` is absent (``None``) or a whole number (not a bool) >= ``minimum``: an ``extra_train`` count."""
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= minimum)


def lr_at(base_lr: float, epoch: int, epochs: int, schedule: str) -> float:
    """Learning rate of epoch ``epoch`` (0-based) of ``epochs``: ``poly`` decays as nnU-Net does."""
    if schedule == "constant":
        return float(base_lr)
    return float(base_lr) * (1.0 - min(epoch, epochs) / max(epochs, 1)) ** 0.9


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved in ``model.json["training"]["config"]``).

    Attributes
    ----------
    epochs, batch_size, lr:
        Epochs per stage, samples per step, Adam learning rate (at the first epoch).
    lr_schedule:
        ``poly`` (nnU-Net's ``lr * (1 - epoch / epochs) ** 0.9``, per epoch) or ``constant``.
    seed:
        Seeds python, numpy, torch, the split, the sample order and augmentation.
    fold, folds:
        Which of ``folds`` case-level splits (``kidneyseg.data.splits``) is validated on;
        ``fold = -1`` trains on every case without validation.
    val_every:
        Validate every N epochs (and after the last).
    threads:
        torch intra-op threads (``torch.set_num_threads``).
    loss:
        Loss name for every stage, or ``None`` for each stage's default.
    init:
        ``default`` (library initialisation) or ``kaiming``.
    augmentation:
        ``none``, ``light`` or ``default`` (``kidneyseg.augmentation``).
    fg_ratio:
        Fraction of patches centred on foreground.
    mirror:
        Flips in augmentation (and so the axes ``--tta`` mirrors): ``all`` (every
        axis and 90-degree rotations), ``left-right`` (the patient's left-right
        axis of the plan orientation only: front stays front) or ``none``.
    contrast_phase_prob:
        CT stages with a ``window`` intensity plan: probability of simulating an
        unenhanced scan (:mod:`kidneyseg.augmentation.contrast_phase`); 0 = off.
    samples_per_case:
        3D stages: patches drawn per training sample per epoch.
    max_background_slices:
        2D stages on volumes: background-only slices kept per case (all foreground slices are kept).
    ensemble_training:
        ``members-then-fusion`` (members first, then the fusion with members frozen)
        or ``end-to-end`` (concat ensembles only).
    fusion_epochs:
        Epochs of the fusion phase in ``members-then-fusion`` (default ``max(1, epochs // 3)``).
    patch_size:
        Overrides every stage's plan patch size (per stage: ``stage_plans``).
    stage_plans:
        Per stage plan overrides, e.g. ``{"coarse": {"target_spacing": [5, 5, 5]}}``.
    plan:
        A plan's JSON form (``train --plan FILE``: the file ``kidneyseg data check --plan`` writes) used
        instead of the one derived from the data set's fingerprint, for every stage with its
        ``spatial_dims``; the pipeline's fixed stage keys, ``patch_size`` and ``stage_plans`` still apply
        on top, and ``labels`` are the stage's.  ``None``: derived (:meth:`Plan.from_fingerprint`).
    stage_arch_kwargs:
        Per stage architecture overrides, e.g. ``{"main": {"channels": [8, 16, 32]}}``.
    stage_facts:
        Per stage overrides of the pipeline's stage facts (saved in ``<stage>/model.json["stage"]`` and read by
        training and prediction), e.g. ``{"fine": {"resize_to_patch": true}}`` (the crop is resampled to the
        patch size) or ``{"segmenter": {"train_on": "detector"}}`` (``ct-detect-vnet``: the V-Net trains on the
        trained detector's boxes instead of the ground-truth ones).
    recipe:
        Name of the recipe (:mod:`kidneyseg.training.recipes`, ``train --recipe``) whose values this
        configuration started from, or ``None``; recorded only (the values are already in the fields).
    labels:
        Data set adapter options (``label_map``, ``task``...): passed to ``load_dataset``.
    encoder_weights:
        Local encoder state dict files (one per ensemble member, ``None`` to skip).
    progress:
        Show tqdm progress bars.
    max_cases:
        Use at most this many cases (quick runs); ``None`` = all.
    extra_train:
        More data sets added to the training cases of every fold and never validated
        on, e.g. synthetic phantoms beside a small real set: a list of
        ``{"data": folder, "format": layout}`` (optional ``"options"``: adapter
        options).  They must have the main data set's modality, and its task unless
        ``classes`` is set; the plan (fingerprint) comes from the main data set only.
        More keys: ``"split": true`` splits the set by case into the same number of
        folds (its fold ``fold`` is validated on, like the main set's: several data
        sets cross-validated together); ``"classes"``: declarations of its merged
        labels, ``{"kidney": ["kidney", "tumor", "cyst"]}`` (partial labels, see
        :func:`kidneyseg.labels.partial_label_groups`); ``"max_slices"``: 2D stages
        on volumes keep at most this many labelled slices per case, evenly spaced;
        ``"max_background_slices"``: 2D stages on volumes add this many slices
        without foreground per case, instead of ``max_background_slices`` (labels
        declared background are not foreground): kidney-free negatives from
        whole-body volumes; ``"repeat"``: N >= 1, the set's training samples are
        drawn N times per epoch (instead of ``repeat``): weighs a small set against
        larger ones.
    repeat:
        The main data set's training samples are drawn this many times per epoch
        (each ``extra_train`` set has its own ``"repeat"``, default 1); an epoch
        grows with it.
    classes:
        The model's output classes as label value -> name (``{"0": "background",
        "1": "kidney", "2": "tumor", "4": "liver"}``) when the data sets label
        different subsets of them (partial labels): every set's labels are mapped to
        groups of these classes and the stage trains with the marginal loss
        (``dice-ce`` with groups).  ``None``: the main data set's task labels.
    """

    epochs: int = 50
    batch_size: int = 2
    lr: float = 1e-3
    lr_schedule: str = "poly"
    seed: int = 0
    fold: int = 0
    folds: int = 5
    val_every: int = 1
    threads: int | None = None
    loss: str | None = None
    init: str = "default"
    augmentation: str = "default"
    fg_ratio: float = 0.33
    mirror: str = "all"
    contrast_phase_prob: float = 0.0
    samples_per_case: int = 1
    max_background_slices: int = 4
    repeat: int = 1
    ensemble_training: str = "members-then-fusion"
    fusion_epochs: int | None = None
    patch_size: list[int] | None = None
    stage_plans: dict[str, dict[str, Any]] = field(default_factory=dict)
    plan: dict[str, Any] | None = None
    stage_arch_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    stage_facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    recipe: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    encoder_weights: list[str | None] | None = None
    progress: bool = True
    max_cases: int | None = None
    extra_train: list[dict[str, Any]] = field(default_factory=list)
    classes: dict[str, str] | None = None

    def check(self, path: str | os.PathLike[str] | None = None) -> TrainConfig:
        """Validate types and values; raises :class:`InputError` naming the bad field (and ``path``, the config file)."""
        def bad(name: str, found: Any, expected: str) -> InputError:
            return InputError(f"training option '{name}' is invalid", path=path, found=found, expected=expected,
                              fix=f"fix {name} in the config file or on the command line")

        check_types(asdict(self), path)
        if self.epochs < 1:
            raise bad("epochs", self.epochs, ">= 1")
        if self.plan is not None:
            from kidneyseg.preprocessing.plan import Plan

            Plan.from_json(self.plan, path="the training option 'plan'")
        if self.batch_size < 1:
            raise bad("batch_size", self.batch_size, ">= 1")
        if not self.lr > 0:
            raise bad("lr", self.lr, "> 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise bad("lr_schedule", self.lr_schedule, " or ".join(LR_SCHEDULES))
        from kidneyseg.augmentation.transforms import MIRRORS, STRENGTHS

        if self.mirror not in MIRRORS:
            raise bad("mirror", self.mirror, " or ".join(MIRRORS))
        if self.augmentation not in STRENGTHS:
            raise bad("augmentation", self.augmentation, " or ".join(STRENGTHS))
        if self.recipe is not None:
            from kidneyseg.training.recipes import recipe_names

            if self.recipe not in recipe_names():
                raise bad("recipe", self.recipe, " or ".join(recipe_names()))
        if not 0.0 <= self.contrast_phase_prob <= 1.0:
            raise bad("contrast_phase_prob", self.contrast_phase_prob, "0..1")
        if self.val_every < 1:
            raise bad("val_every", self.val_every, ">= 1")
        if self.repeat < 1:  # its type is checked above (check_types)
            raise bad("repeat", self.repeat, ">= 1")
        if self.init not in ("default", "kaiming"):
            raise bad("init", self.init, "default or kaiming")
        if self.ensemble_training not in ("members-then-fusion", "end-to-end"):
            raise bad("ensemble_training", self.ensemble_training, "members-then-fusion or end-to-end")
        if self.fold >= self.folds or self.fold < -1:
            raise bad("fold", self.fold, f"-1 (no validation) or 0..{self.folds - 1}")
        if self.threads is not None and self.threads < 1:
            raise bad("threads", self.threads, ">= 1")
        for i, extra in enumerate(self.extra_train):
            if (not isinstance(extra, dict) or not isinstance(extra.get("data"), str)
                    or not isinstance(extra.get("format"), str) or set(extra) - EXTRA_KEYS
                    or not isinstance(extra.get("split", False), bool)
                    or not isinstance(extra.get("classes", {}), dict)
                    or not (extra.get("max_slices") is None or (isinstance(extra["max_slices"], int)
                                                                 and extra["max_slices"] > 0))
                    or not _whole_or_none(extra.get("max_background_slices"), 0)
                    or not _whole_or_none(extra.get("repeat"), 1)):
                raise bad(f"extra_train[{i}]", extra, '{"data": "FOLDER", "format": "LAYOUT"} (optional "options", '
                          '"split": true/false, "classes": {"label": ["class", ...]}, "max_slices": N > 0, '
                          '"max_background_slices": N >= 0, "repeat": N >= 1)')
        if self.classes is not None:
            try:
                values = sorted(int(v) for v in self.classes)
            except (TypeError, ValueError):
                raise bad("classes", self.classes, 'label value -> name, e.g. {"0": "background", "1": "kidney"}') from None
            if not values or values[0] != 0 or len(set(self.classes.values())) != len(self.classes):
                raise bad("classes", self.classes, "value 0 (background) and distinct names")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str] | None, *, base: dict[str, Any] | None = None,
                  **overrides: Any) -> TrainConfig:
        """Read a JSON file (keys = field names), then apply non-``None`` overrides.

        ``base``: values under the file's (a recipe's, :mod:`kidneyseg.training.recipes`): the file's values
        and then the overrides go on top, the per-stage dictionaries (``stage_plans``, ``stage_arch_kwargs``,
        ``stage_facts``) merged per stage, key by key (:func:`kidneyseg.training.recipes.layer`).
        """
        from kidneyseg.training.recipes import layer

        values: dict[str, Any] = {}
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise InputError("config file not found", path=p, expected="a JSON file", fix="check --config")
            try:
                values = json.loads(p.read_text(encoding="utf-8"))
            except UnicodeDecodeError as exc:
                raise InputError("config file is not JSON text (not UTF-8)", path=p,
                                 found=f"byte 0x{exc.object[exc.start]:02x} at offset {exc.start}",
                                 expected='a UTF-8 JSON object such as {"epochs": 10}',
                                 fix="pass the training options JSON file to --config, not a binary file") from exc
            except json.JSONDecodeError as exc:
                raise InputError("config file is not valid JSON", path=p, found=str(exc),
                                 expected='a JSON object such as {"epochs": 10}',
                                 fix="repair the JSON (quotes around keys, no trailing commas)") from exc
            if not isinstance(values, dict):
                raise InputError("config file does not hold a JSON object", path=p,
                                 found=f"a JSON {_json_kind(values)}",
                                 expected='an object of training options such as {"epochs": 10}',
                                 fix="write the options as keys of one JSON object")
            names = {f.name for f in fields(cls)}
            unknown = sorted(set(values) - names)
            if unknown:
                raise InputError("unknown keys in the config file", path=p, found=", ".join(unknown),
                                 expected="one of: " + ", ".join(sorted(names)), fix="remove or rename them")
            check_types(values, p)
        values = layer(base or {}, values)
        values = layer(values, {k: v for k, v in overrides.items() if v is not None})
        return cls(**values).check(path)


def _json_kind(value: Any) -> str:
    """The JSON name of a parsed value's type (object, array, string, number, true/false, null)."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "null" if value is None else type(value).__name__


def _type_name(tp: Any) -> str:
    """A field type written as in the dataclass (``int``, ``list[int] | None``)."""
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any value"
    if isinstance(tp, type) and not typing.get_args(tp):
        return {"int": "integer", "float": "number", "str": "string", "bool": "true/false",
                "dict": "object", "list": "array"}.get(tp.__name__, tp.__name__)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is list:
        return "array" if args[0] is Any else f"array of ({_type_name(args[0])})"
    if origin is dict:
        return "object" if args[1] is Any else f"object of ({_type_name(args[1])})"
    return str(tp)  # pragma: no cover - every TrainConfig field type is handled above


def _type_problem(value: Any, tp: Any, name: str) -> tuple[str, Any, Any] | None:
    """``(name, value, type)`` of the first part of ``value`` that is not of type ``tp``, else ``None``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return None
    if origin in (Union, types.UnionType):
        problems = [_type_problem(value, a, name) for a in args]
        if any(p is None for p in problems):
            return None
        deeper = [p for p in problems if p is not None and p[0] != name]
        return deeper[0] if deeper else (name, value, tp)
    if tp is type(None):
        return None if value is None else (name, value, tp)
    if tp is bool:
        return None if isinstance(value, bool) else (name, value, tp)
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else (name, value, tp)
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else (name, value, tp)
    if tp is str:
        return None if isinstance(value, str) else (name, value, tp)
    if origin is list:
        if not isinstance(value, list):
            return (name, value, tp)
        for i, item in enumerate(value):
            p = _type_problem(item, args[0], f"{name}[{i}]")
            if p is not None:
                return p
        return None
    if origin is dict:
        if not isinstance(value, dict):
            return (name, value, tp)
        for key, item in value.items():
            p = _type_problem(item, args[1], f"{name}[{json.dumps(key)}]")
            if p is not None:
                return p
        return None
    return None  # pragma: no cover - every TrainConfig field type is handled above


def check_types(values: dict[str, Any], path: str | os.PathLike[str] | None = None) -> None:
    """Refuse a value whose JSON type is not the :class:`TrainConfig` field's (``{"epochs": "ten"}``).

    Raises :class:`InputError` naming the file, the option (``extra_train[0]``
    for a part of one), the value found with its JSON type, and the type expected.
    """
    hints = typing.get_type_hints(TrainConfig)
    for key, value in values.items():
        if key not in hints:
            continue
        problem = _type_problem(value, hints[key], key)
        if problem is None:
            continue
        where, found, tp = problem
        shown = json.dumps(found, default=repr)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise InputError(f"training option '{where}' has the wrong type", path=path,
                         found=f"{shown} (a JSON {_json_kind(found)})", expected=_type_name(tp),
                         fix=f"write {where} as {_type_name(tp)} in the config file"
                             + (" (numbers without quotes)" if isinstance(found, str) and _numeric(tp) else ""))


def _numeric(tp: Any) -> bool:
    return tp in (int, float) or any(_numeric(a) for a in typing.get_args(tp))
