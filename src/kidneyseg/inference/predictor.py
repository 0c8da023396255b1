"""The Predictor: a model folder applied to a case, the result on the input grid.

>>> from kidneyseg.inference import Predictor            # doctest: +SKIP
>>> pred = Predictor("models/ct3d", tta=False, threads=2)  # doctest: +SKIP
>>> result = pred.predict_case(kidneyseg.io.read("ct.nii.gz"))  # doctest: +SKIP
>>> result.label.shape == result.case.shape                # doctest: +SKIP

Flow per case: each stage's saved plan is applied (:func:`apply_plan`:
reorient, resample, normalise; every grid step recorded in ``history``), the
stage network runs (3D: MONAI Gaussian sliding window; 2D model on a volume:
batched slice-wise; 2D image: whole image; optional mirroring TTA), the
pipeline combines stages (cascade crops, detector boxes), every preprocessing
step is undone (:func:`~kidneyseg.preprocessing.geometry.undo`) so the label
map lies on the grid of the case as read, and post-processing cleans it.

Several model folders given together form an ensemble: their probabilities
on the input grid are averaged (they must declare the same labels).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.case import Case
from kidneyseg.default_models import MODALITIES, default_model_dir
from kidneyseg.errors import InputError, KidneysegError
from kidneyseg.labels import BACKGROUND, KIDNEY, KIDNEY_NAMES, LESION_NAMES, has_sided_kidneys, values_named

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """What :meth:`Predictor.predict_case` returns.

    Attributes
    ----------
    label:
        uint8 label map on the grid of ``case`` (the input as read):
        ``[i, j, k]`` or ``[row, col]``, values from ``labels``.
    probabilities:
        ``None`` unless asked for; else float16 ``(C, *case.shape)`` where
        channel ``c`` is the probability of label value ``label_values[c]``.
    labels:
        ``{value: name}`` of the model.
    case:
        The input case (its ``affine``, ``meta`` and ``source`` are what
        writers need).
    pipeline:
        Pipeline name(s) that produced it.
    timings:
        Seconds per step (``preprocess+network`` per stage, ``postprocess``, ``total``).
    warnings:
        Things a reader of the result must know (also logged), e.g. that
        post-processing removed most of what the network labelled
        (:func:`postprocess_warning`) or that a detector found no kidney box
        (:func:`~kidneyseg.inference.cascades.no_detection_warning`); written to ``volumes.json``.
    uncertainty:
        ``None`` unless asked for (``predict_case(uncertainty=True)``); else the
        :class:`~kidneyseg.inference.uncertainty.Uncertainty` of the result (normalised entropy, and
        mutual information for an ensemble of model folders, inside the foreground's box).
    detections:
        The kidney boxes of each ``ct-detect-vnet`` model that ran, in model order (empty for other
        pipelines): one :class:`~kidneyseg.models.boxes.CaseDetections` each, on its detector's grid
        (``kidneyseg predict --save-detections`` writes it, :func:`kidneyseg.models.boxes.write_detections`).
    """

    label: np.ndarray
    probabilities: np.ndarray | None
    labels: dict[int, str]
    case: Case
    pipeline: str
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    uncertainty: Any = None
    detections: list[Any] = field(default_factory=list)

    @property
    def label_values(self) -> list[int]:
        """Label value of each probability channel (sorted)."""
        return sorted(self.labels)

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel-to-RAS+ (mm) matrix of ``label``."""
        return self.case.affine


class Predictor:
    """Apply one model folder (or several, as an ensemble) to cases.

    Parameters
    ----------
    model:
        Model folder path (``model.json`` + stage folders), a
        :class:`~kidneyseg.models.folder.LoadedModel`, or a list of either
        (an ensemble: probabilities averaged on the input grid).
    tta:
        Mirroring test-time augmentation (8 flips in 3D, 4 in 2D).
    threads:
        CPU threads for torch (``torch.set_num_threads``); ``None`` keeps the default.
    overlap:
        Sliding-window overlap fraction (3D); 0.25 (MONAI's default) keeps CPU
        prediction fast, 0.5 (nnU-Net) is smoother and about 2x slower.
    slice_batch_size:
        Slices per forward pass for 2D models on volumes.
    postprocess:
        Run :func:`kidneyseg.postprocessing.postprocess_label` on the result.
    min_volume_ml:
        Small-blob threshold for post-processing (mL).  2D images: the area of the disc through the centre of
        a sphere of that volume (:func:`kidneyseg.postprocessing.area_floor_ml`; 0.5 mL -> 76 mm^2).
    min_confidence_2d:
        On 2D images, kidney-region components whose mean probability (kidney + lesion classes) is below this
        are removed before the other post-processing steps
        (:func:`kidneyseg.postprocessing.drop_hesitant_components`); ``None``: the first model folder's
        ``postprocess.min_mean_confidence_2d`` (model.json; the CT default sets it), else off.  Volumes are
        never filtered so: there the two largest components at one level decide.
    device:
        ``"cpu"`` or a torch device string.
    runtime:
        ``"auto"`` (segmentation networks on ONNX Runtime where it is installed and the device is the CPU,
        exported once per weights file into the user cache; the rest on torch), ``"onnx"`` (required) or
        ``"torch"``; ``None``: ``$KIDNEYSEG_RUNTIME``, else ``"auto"`` (:mod:`kidneyseg.models.onnx`).
    """

    def __init__(
        self,
        model: Any,
        *,
        tta: bool = False,
        threads: int | None = None,
        overlap: float = 0.25,
        sw_batch_size: int = 1,
        slice_batch_size: int = 8,
        postprocess: bool = True,
        min_volume_ml: float = 0.5,
        device: str = "cpu",
        runtime: str | None = None,
        min_confidence_2d: float | None = None,
    ) -> None:
        from kidneyseg._optional import require
        from kidneyseg.models import onnx as onnx_rt
        from kidneyseg.models.folder import LoadedModel, load_model_folder

        if threads is not None and int(threads) < 1:
            raise KidneysegError("threads must be at least 1", found=threads, fix="pass --threads 1 or more")
        onnx_rt.set_threads(None if threads is None else int(threads))
        self.runtime = onnx_rt.check_runtime(runtime) if runtime is not None else onnx_rt.default_runtime()
        items = list(model) if isinstance(model, (list, tuple)) else [model]
        if not items:
            raise InputError("no model given", fix="pass --model DIR")
        self.models = [m if isinstance(m, LoadedModel) else load_model_folder(m, device=device, runtime=self.runtime)
                       for m in items]
        # torch (and MONAI's sliding window) only where a stage runs on torch, imported once here, not in a case
        torch_stages = [st for m in self.models for st in m.stages.values()
                        if not getattr(st.module, "runs_on_numpy", False)]
        volume_stages = [st for m in self.models for st in m.stages.values() if st.plan.spatial_dims == 3]
        if torch_stages or volume_stages:  # MONAI's sliding window runs on torch tensors, whatever the network
            torch = require("torch", "prediction")
            if volume_stages:
                require("monai.inferers", "sliding-window prediction")
            if threads is not None:
                torch.set_num_threads(int(threads))
        labels = self.models[0].labels or {BACKGROUND: "background", KIDNEY: "kidney"}
        for m in self.models[1:]:
            if m.labels != labels:
                raise InputError("ensemble members declare different labels", path=m.dir, found=m.labels,
                                 expected=labels, fix="ensemble only models trained for the same task")
        self.labels = {int(k): str(v) for k, v in labels.items()}
        self.tta = bool(tta)
        # mirroring TTA uses only the axes each stage was trained to see flipped
        self._mirror: dict[int, list[int]] = {id(st): stage_mirror_axes(m, st) for m in self.models
                                              for st in m.stages.values()}
        if self.tta and not any(self._mirror.values()):
            raise InputError(
                "this model cannot use mirroring test-time augmentation", path=self.models[0].dir,
                found="trained without flips" + (" (its labels name left and right: a mirror would swap them)"
                                                  if _sided(self.models[0]) else ""),
                expected="a model trained with flips (mirror_axes in its stage model.json)",
                fix="predict without --tta")
        self.overlap = float(overlap)
        self.sw_batch_size = int(sw_batch_size)
        self.slice_batch_size = int(slice_batch_size)
        self.postprocess = bool(postprocess)
        self.min_volume_ml = float(min_volume_ml)
        self.device = device
        self.modality = str(self.models[0].spec.get("modality") or "")
        self.min_confidence_2d = (min_confidence_2d if min_confidence_2d is not None
                                  else model_min_confidence_2d(self.models[0].spec, self.models[0].dir))

    # ------------------------------------------------------------------ public
    @property
    def pipeline(self) -> str:
        """Pipeline name, ``+``-joined for ensembles."""
        return "+".join(m.pipeline for m in self.models)

    def predict_path(self, path: str | os.PathLike[str], *, spacing: Sequence[float] | None = None,
                     probabilities: bool = False) -> Prediction:
        """Read ``path`` with :func:`kidneyseg.io.read` and predict it (a ``slices`` layout PNG without
        ``spacing`` or sidecar JSON: the spacing of its ``index.csv``, :func:`kidneyseg.data.slices.read_image`)."""
        from kidneyseg.data.slices import read_image

        sp = (float(spacing[0]), float(spacing[1])) if spacing else None  # 2D images: (row, col) mm
        case = read_image(path, spacing=sp, modality=self.modality or None)
        return self.predict_case(case, probabilities=probabilities)

    def predict_case(self, case: Case, *, probabilities: bool = False, uncertainty: bool | str = False) -> Prediction:
        """Predict ``case`` (as read, any orientation); the label map lands on its grid.

        ``probabilities=True`` also returns float16 ``(C, *case.shape)``
        probabilities (channel order: sorted label values); ``uncertainty=True`` (or ``"map"``) the
        :class:`~kidneyseg.inference.uncertainty.Uncertainty` (``Prediction.uncertainty``) over every
        hesitant voxel of the grid; ``uncertainty="structures"`` only around the labelled structures (what
        the QC scores of :mod:`kidneyseg.reporting.qc` read): for one single-stage model, the probabilities
        are then brought back to the input grid in that box only (:func:`undo_probabilities_box`), not on
        the whole grid, which on a 512x512x200 CT saves about 10 s.
        """
        if uncertainty not in (False, True, "map", "structures", None):
            raise InputError("unknown uncertainty mode", found=uncertainty, expected="False, True, 'map', 'structures'",
                             fix="pass uncertainty='map' or 'structures'")
        if case.image is None:
            raise InputError("case has no image", path=case.source, fix="pass an image, not a label map")
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        values = sorted(self.labels)
        kid = values_named(self.labels, KIDNEY_NAMES)
        # side labels (MR right/left) rank their components by confident voxels: needs the probabilities
        side_labels = self.postprocess and has_sided_kidneys(self.labels)
        # QC around the structures of one single-stage model: probabilities back in a box only (below)
        in_box = (uncertainty == "structures" and not probabilities and len(self.models) == 1 and not side_labels
                  and len(self.models[0].stages) == 1 and _inference_mode(self.models[0]) not in
                  ("cascade3d", "detect-segment"))
        # 2D images of a model with a confidence floor: the kidney region's mean probability per component
        hesitant_rule = self.postprocess and case.ndim == 2 and self.min_confidence_2d is not None and bool(kid)
        need_probs = (probabilities or bool(uncertainty and not in_box) or len(self.models) > 1 or side_labels
                      or hesitant_rule)
        self._network_grid: list[tuple[Case, np.ndarray]] | None = [] if in_box else None
        warnings: list[str] = []  # the pipelines' own (a detector that found nothing), then post-processing's
        detections: list[Any] = []  # the kidney boxes of each ct-detect-vnet model
        results = [self._run_model(m, case, need_probs, timings, warnings=warnings, detections=detections)
                   for m in self.models]
        where = f"{case.source}: " if case.source is not None else f"{case.name}: "
        for note in warnings:
            log.warning("%s%s", where, note)
        acc: np.ndarray | None = None
        if len(results) == 1:
            label, acc = results[0]
        else:
            probs = [r[1] for r in results if r[1] is not None]  # ensembles always ask for probabilities
            acc = np.sum(probs, axis=0) / len(results)
            label = np.asarray(values, dtype=np.uint8)[np.argmax(acc, axis=0)]
        t1 = time.perf_counter()
        if self.postprocess:
            from kidneyseg.postprocessing import area_floor_ml, postprocess_label

            les = values_named(self.labels, LESION_NAMES)
            if kid:
                if hesitant_rule and acc is not None and self.min_confidence_2d is not None:
                    from kidneyseg.postprocessing import drop_hesitant_components

                    region_p = np.sum([acc[values.index(v)] for v in (*kid, *les) if v in values], axis=0)
                    label = drop_hesitant_components(label, region_p, self.min_confidence_2d, kid, les)
                # the warning speaks of the geometric rules below (a hesitant blob on a kidney-free slice is
                # removed on purpose, as specks are)
                raw = label
                side_probs = ({v: acc[values.index(v)] for v in kid if v in values}
                              if side_labels and acc is not None else None)
                floor = self.min_volume_ml if case.ndim == 3 else area_floor_ml(self.min_volume_ml)
                label = postprocess_label(
                    label, case.spacing, kidney_labels=kid, lesion_labels=les,
                    max_kidneys=1 if case.ndim == 2 and (case.modality or self.modality) == "us" else 2,
                    min_volume_ml=floor, affine=case.affine, probabilities=side_probs,
                )
                msg = postprocess_warning(raw, label, case.spacing, kid, les,
                                          modality=case.modality or self.modality, floor_ml=floor)
                if msg:
                    log.warning("%s%s", where, msg)
                    warnings.append(msg)
        timings["postprocess"] = time.perf_counter() - t1
        unc = None
        if in_box and self._network_grid:
            t2 = time.perf_counter()
            unc = self._structure_uncertainty(label, values)
            timings["uncertainty"] = time.perf_counter() - t2
        elif uncertainty and acc is not None:
            from kidneyseg.inference.uncertainty import compute_uncertainty, describe_sources

            t2 = time.perf_counter()
            passes = max((2 ** len(a) for a in self._mirror.values()), default=1) if self.tta else 1
            members = [r[1] for r in results if r[1] is not None] if len(results) > 1 else None
            unc = compute_uncertainty(acc, label, values, members=members,
                                      sources=describe_sources(self.models, passes))
            timings["uncertainty"] = time.perf_counter() - t2
        timings["total"] = time.perf_counter() - t0
        probs16 = acc.astype(np.float16) if (probabilities and acc is not None) else None
        return Prediction(label=label.astype(np.uint8, copy=False), probabilities=probs16, labels=dict(self.labels),
                          case=case, pipeline=self.pipeline, timings=timings, warnings=warnings, uncertainty=unc,
                          detections=detections)

    # ------------------------------------------------------------------ dispatch
    def _run_model(self, model: Any, case: Case, need_probs: bool, timings: dict[str, float],
                   warnings: list[str] | None = None,
                   detections: list[Any] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Label map and (if ``need_probs``) probabilities of one model on ``case``'s grid; what the reader
        of the result must know (an empty result the pipeline explains) is appended to ``warnings``, a
        ``ct-detect-vnet`` model's kidney boxes to ``detections``."""
        from kidneyseg.inference import cascades

        names = list(model.stages)
        mode = _inference_mode(model)
        if mode == "cascade3d":
            return cascades.run_cascade(self, model, case, need_probs, timings)
        if mode == "detect-segment":
            return cascades.run_detect_segment(self, model, case, need_probs, timings, warnings, detections)
        if len(names) != 1:
            raise InputError("cannot tell how to run this model", path=model.dir, found=names,
                             expected="one stage, coarse/fine[/lesion] or detector/segmenter",
                             fix="check the model folder's model.json")
        return self._run_single(model.stages[names[0]], case, need_probs, timings)

    def _run_single(self, stage: Any, case: Case, need_probs: bool,
                    timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray | None]:
        from kidneyseg.preprocessing.geometry import memory_order, undo, undo_argmax
        from kidneyseg.preprocessing.plan import apply_plan

        t = time.perf_counter()
        pre = apply_plan(case, stage.plan)
        probs = self.stage_probabilities(stage, pre)
        full = self.to_label_channels(probs, stage.channel_to_label)
        timings[f"{stage.name}"] = timings.get(stage.name, 0.0) + time.perf_counter() - t
        t = time.perf_counter()
        values = np.asarray(sorted(self.labels), dtype=np.uint8)
        # the label map is the argmax of the probabilities brought back linearly (nnU-Net), whether or not
        # probabilities are asked for (so both calls give the same labels)
        out = undo_argmax(pre, full, values, order=memory_order(case.image))
        if getattr(self, "_network_grid", None) is not None:
            self._network_grid.append((pre, full))  # type: ignore[union-attr]
        back = None
        if need_probs:
            back = undo(pre, full, is_label=False, channel_axis=True)
            back /= np.clip(back.sum(axis=0, keepdims=True), 1e-6, None)
        timings["undo"] = time.perf_counter() - t
        return out, back

    def _structure_uncertainty(self, label: np.ndarray, values: Sequence[int]) -> Any:
        """Uncertainty in the box of the labelled structures (+ the QC margin) of the single model run last."""
        from dataclasses import replace

        from kidneyseg.inference.uncertainty import BOX_MARGIN, compute_uncertainty, describe_sources
        from kidneyseg.preprocessing.geometry import box_slices, nonzero_box, undo_probabilities_box

        pre, full = (self._network_grid or [])[-1]
        self._network_grid = None
        box = nonzero_box(label, margin=BOX_MARGIN + 1) or tuple((0, 1) for _ in label.shape)
        sub = undo_probabilities_box(pre, full, box)
        sub /= np.clip(sub.sum(axis=0, keepdims=True), 1e-6, None)
        passes = max((2 ** len(a) for a in self._mirror.values()), default=1) if self.tta else 1
        sources = describe_sources(self.models, passes)
        sources["extent"] = ("the box of the labelled structures (grown by a few voxels): QC only; "
                             "--save-uncertainty computes the map over every hesitant voxel")
        unc = compute_uncertainty(sub, label[box_slices(box)], values, sources=sources)
        starts = [lo for lo, _ in box]
        return replace(unc, box=tuple(slice(b.start + o, b.stop + o) for b, o in zip(unc.box, starts)),
                       shape=tuple(int(n) for n in label.shape))

    # ------------------------------------------------------------------ helpers used by cascades
    def stage_probabilities(self, stage: Any, pre: Case, extra: list[np.ndarray] | None = None,
                            progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Probabilities ``(C_out, *pre.shape)`` of one stage on its preprocessed case.

        ``extra`` are additional input channels on ``pre``'s grid (e.g. the
        kidney mask of the lesion stage).  A stage expecting more channels
        than given gets the image repeated (RGB-trained 2D models on grey images).
        """
        from kidneyseg.inference.engines import predict_2d, predict_slicewise, sliding_window_3d
        from kidneyseg.preprocessing.plan import slice_context

        image = np.asarray(pre.image, dtype=np.float32)
        ctx = stage.plan.context_slices
        # 2.5D stages see each slice with its neighbours as channels (clamped at the ends)
        lead = list(slice_context(image, ctx)) if ctx else [image]
        chans = lead + [np.asarray(e, dtype=np.float32) for e in (extra or [])]
        want = int(stage.spec.get("in_channels", len(chans)))
        while len(chans) < want:
            chans.insert(1, image)
        x = np.stack(chans[:want])
        dims = stage.plan.spatial_dims
        axes = self._mirror.get(id(stage), [])
        tta = self.tta and bool(axes)
        if dims == 3:
            if pre.ndim != 3:
                raise InputError("a 3D model cannot segment a 2D image", path=pre.source, found=f"shape {pre.shape}",
                                 fix="use a 2D model for 2D images")
            patch = list(stage.plan.patch_size)
            return sliding_window_3d(stage.module, x, patch, overlap=self.overlap, sw_batch_size=self.sw_batch_size,
                                     tta=tta, mirror_axes=axes, device=self.device)
        # slices and images smaller than the network's smallest input (a small PNG at the plan spacing) are padded
        min_size = stage_min_size(stage)
        if pre.ndim == 3:
            return predict_slicewise(stage.module, x, batch_size=self.slice_batch_size, tta=tta, mirror_axes=axes,
                                     device=self.device, progress=progress, min_size=min_size)
        return predict_2d(stage.module, x, tta=tta, mirror_axes=axes, device=self.device, min_size=min_size)

    def to_label_channels(self, probs: np.ndarray, channel_to_label: Sequence[int]) -> np.ndarray:
        """Re-index stage channels ``(C_stage, ...)`` to the model's sorted label values ``(C, ...)``.

        Channels mapping to the same label are summed; labels the stage does
        not predict get probability 0.
        """
        values = sorted(self.labels)
        out = np.zeros((len(values),) + probs.shape[1:], dtype=np.float32)
        for c, v in enumerate(channel_to_label):
            if int(v) not in values:
                raise InputError("stage predicts a label the model does not declare", found=v, expected=values,
                                 fix="check channel_to_label in the stage model.json")
            out[values.index(int(v))] += probs[c]
        return out


#: :func:`postprocess_warning` speaks when post-processing keeps less than this share of the kidney region.
KEPT_SHARE_WARNING = 0.5


def model_min_confidence_2d(spec: Mapping[str, Any], model_dir: Any = None) -> float | None:
    """The 2D confidence floor a model folder asks for: ``model.json``'s ``postprocess.min_mean_confidence_2d``
    (a number in 0..1), else ``None`` (off)."""
    block = spec.get("postprocess")
    if block is None:
        return None
    value = block.get("min_mean_confidence_2d") if isinstance(block, Mapping) else block
    if value is None:
        return None
    if not isinstance(block, Mapping) or isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise InputError("bad post-processing setting in model.json",
                         path=(Path(model_dir) / "model.json") if model_dir is not None else None,
                         found=block, expected='{"min_mean_confidence_2d": a number in 0..1}',
                         fix="correct or remove the model.json's postprocess block")
    return float(value)


def postprocess_warning(raw: np.ndarray, clean: np.ndarray, spacing: Sequence[float], kidney_labels: Sequence[int],
                        lesion_labels: Sequence[int], *, modality: str | None = None,
                        floor_ml: float = 0.0) -> str | None:
    """A warning when post-processing removed most of the *kidney region* the network labelled.

    ``raw``/``clean``: label maps before and after
    :func:`~kidneyseg.postprocessing.postprocess_label` (same shape, ``[i, j, k]``
    or ``[row, col]``); ``spacing`` in mm per axis; the kidney region is every
    voxel of ``kidney_labels`` or ``lesion_labels``.  Returns ``None`` when
    nothing was labelled, when all of it together is smaller than ``floor_ml`` (the post-processing floor,
    same unit: specks on a kidney-free slice, whose removal is the point), or at least
    :data:`KEPT_SHARE_WARNING` of it was kept; else one sentence with both volumes (mL; mm^2 for 2D images), e.g. a CT
    model trained on contrast-enhanced scans that paints unenhanced kidneys as
    tumour, which the "a lesion must touch kidney" rule then removes.
    """
    region = tuple(int(v) for v in kidney_labels) + tuple(int(v) for v in lesion_labels)
    from kidneyseg.preprocessing.components import values_mask
    from kidneyseg.preprocessing.geometry import box_slices, nonzero_box

    # post-processing only removes labels and fills holes enclosed by them: all of it lies in the box of
    # what the network labelled, so both label maps are counted there only (a small part of a CT)
    box = nonzero_box(raw)
    if box is None:
        return None
    raw, clean = raw[box_slices(box)], clean[box_slices(box)]
    raw_region = values_mask(raw, region)
    n_raw = int(raw_region.sum())
    voxel_mm = float(np.prod([float(s) for s in spacing[: raw.ndim]]))  # mm^3, or mm^2 for 2D images
    if n_raw == 0 or n_raw * voxel_mm / 1000.0 < floor_ml:
        return None
    n_kept = int(values_mask(clean, region).sum())
    if n_kept >= KEPT_SHARE_WARNING * n_raw:
        return None
    unit, name = (voxel_mm / 1000.0, "mL") if raw.ndim == 3 else (voxel_mm, "mm^2")
    n_kid = int(values_mask(raw, tuple(int(v) for v in kidney_labels)).sum())
    msg = (f"post-processing kept {n_kept * unit:.1f} of the {n_raw * unit:.1f} {name} the network labelled as "
           f"kidney or lesion (kidney {n_kid * unit:.1f}, lesions {(n_raw - n_kid) * unit:.1f} {name}): "
           "most of it was stray blobs or lesions with no kidney next to them, so the result is probably wrong "
           "for this scan")
    if modality == "ct" and n_kid < n_raw - n_kid:
        msg += ("; a model trained on contrast-enhanced CT takes unenhanced kidneys for tumour: check the scan's "
                "contrast phase against the model card")
    return msg + ". Rerun with --no-postprocess to see the network's own labels."


def _sided(model: Any, stage: Any | None = None) -> bool:
    """Labels name left and right (CHAOS right 2 / left 3): flips were never part of training."""
    target = str((stage.spec.get("stage") or {}).get("target", "all")) if stage is not None else "all"
    if target != "all":  # a merged-kidney stage (target "kidney") has no sides
        return False
    return has_sided_kidneys(model.labels or {})


def stage_mirror_axes(model: Any, stage: Any) -> list[int]:
    """Spatial axes mirroring TTA may flip for ``stage``: those its training flipped.

    Read from the stage's ``mirror_axes`` (written by training); for folders
    written before that key, derived from the model's training config with
    :func:`kidneyseg.augmentation.flip_axes` (none for left/right labels or
    ``augmentation: none``, the columns only for ultrasound, all axes otherwise).
    Ultrasound is never mirrored up-down (the probe is at the top row): the row
    axis is dropped even where an older folder lists it.
    """
    from kidneyseg.augmentation import US_FLIP_AXIS, flip_axes

    modality = str(model.spec.get("modality") or stage.plan.modality)
    if "mirror_axes" in stage.spec:
        axes = [int(a) for a in stage.spec["mirror_axes"]]
        if modality == "us" or stage.plan.modality == "us":
            axes = [a for a in axes if a == US_FLIP_AXIS]
        return axes
    cfg = ((model.spec.get("training") or {}).get("config") or {})
    return flip_axes(modality, stage.plan.spatial_dims, str(cfg.get("augmentation") or "default"), _sided(model, stage),
                     str(cfg.get("mirror") or "all"), stage.plan.orientation)


def stage_min_size(stage: Any) -> int:
    """Smallest spatial size per axis the stage's 2D network runs on: the registry's ``min_size`` of its
    ``arch``, for an ensemble its largest member's (:func:`kidneyseg.models.registry.members_min_size`);
    1 for an architecture the registry does not know."""
    from kidneyseg.errors import RegistryError
    from kidneyseg.models.registry import members_min_size, model_info

    arch = str(stage.spec.get("arch", ""))
    members = (stage.spec.get("arch_kwargs") or {}).get("members")
    if arch.startswith("ensemble-") and isinstance(members, list) and members:
        try:
            return members_min_size(members)
        except RegistryError:
            return 1
    try:
        return int(model_info(arch).min_size)
    except RegistryError:
        return 1


def _inference_mode(model: Any) -> str:
    from kidneyseg.models.pipelines import PIPELINES

    p = PIPELINES.get(model.pipeline)
    if p is not None:
        return p.inference
    names = set(model.stages)
    if {"coarse", "fine"} <= names:
        return "cascade3d"
    if {"detector", "segmenter"} <= names:
        return "detect-segment"
    return "single"


def resolve_model(model: str | os.PathLike[str] | None, modality: str | None) -> Path:
    """The model folder for ``--model`` (a folder, or a default model name) and ``--modality``.

    Without ``model`` the embedded default for the modality is used
    (:func:`kidneyseg.default_models.default_model_dir`); where none is
    embedded, an error says to pass ``--model DIR``.  ``model`` may also name
    an embedded default (``ct``, ``mr``, ``us``).
    """
    if model is not None:
        p = Path(model)
        if (p / "model.json").is_file():
            return p
        if str(model) in MODALITIES:  # the name of an embedded default
            with contextlib.suppress(InputError):  # none embedded: the error below
                return default_model_dir(str(model))
        raise InputError("no model folder here", path=p, found="no model.json",
                         expected="a folder written by `kidneyseg train` (model.json + stage folders) "
                                  "or the name of an embedded default model (" + ", ".join(MODALITIES) + ")",
                         fix="pass --model DIR pointing at a trained model folder")
    return default_model_dir(modality or "ct")  # its error says to pass --model DIR where none is embedded
