"""Dataset adapters: one function per on-disk layout, all returning a :class:`Dataset`.

A :class:`Dataset` is a list of :class:`CaseRef` (paths, names and the patient
each case belongs to) plus the label *task* its labels are mapped to
(:mod:`kidneyseg.labels`).  Nothing is read until :meth:`CaseRef.load` is
called, so listing a large data set is cheap.

Formats (``fmt``)
-----------------
=============== ============================================================== ==============
format          layout                                                         task
=============== ============================================================== ==============
kits19          ``case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz``          kits19
kits21          ``case_XXXXX/imaging.nii.gz`` + ``aggregated_MAJ_seg.nii.gz``    kits23
kits23          ``case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz`` (or a   kits23
                flat folder of ``case_XXXXX.nii.gz`` masks: labels only)
nnunet          ``imagesTr/NAME_0000.nii.gz`` + ``labelsTr/NAME.nii.gz`` +       from dataset.json
                ``dataset.json``
openkidney-us   ``[images/]NAME.png`` + ``[labels/]reviewed_masks_{1,2}/          openkidney-us(-regions)
                {capsule,regions}/NAME.png``; labels only when images are absent
chaos-mr        ``case_NN_image.nii.gz`` + ``case_NN_label.nii.gz``              chaos-mr
slices          ``STEM_image.png`` + ``STEM_label.png`` + ``index.csv``          kits19
                (``stem,case,...,spacing_mm``)
folder          ``images/NAME.*`` + ``labels/NAME.*``, ``NAME_image.*`` +        option ``task``
                ``NAME_label.*``, or a CSV list (``image,label[,patient]``)
=============== ============================================================== ==============

Every adapter accepts ``label_map={source_value: task_value}`` to override the
mapping of source label values to the task's values, and ``task=`` where the
layout does not fix it.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.case import Case
from kidneyseg.data.slices import SLICE_IMAGE_SUFFIX, SLICE_LABEL_SUFFIX, SLICES_INDEX, parse_spacing_mm
from kidneyseg.errors import InputError, unknown_name
from kidneyseg.io import CASE_FILE_SUFFIXES, IMAGE_2D_SUFFIXES, case_name, image_suffix, stem_of
from kidneyseg.labels import canonical_label_name, get_task, match_regions

log = logging.getLogger(__name__)



# ----------------------------------------------------------------------------- types


@dataclass
class CaseRef:
    """One case of a data set, not yet read.

    Attributes
    ----------
    name:
        Case identifier, unique within the data set (e.g. ``case_00012``,
        ``case_00028_z027`` for a slice).
    patient:
        Group identifier for splits: every case of one patient (every slice of
        one volume) shares it, so they always land in the same fold.
    image_path:
        Image file, or ``None`` for a label-only case.
    label_path:
        Label file, or ``None`` (unlabelled / test case).
    modality:
        ``"ct"``, ``"mr"`` or ``"us"``.
    task:
        Label task name the label values are mapped to on :meth:`load`.
    spacing:
        Pixel spacing ``(row, col)`` in mm for 2D images (``None`` for volumes
        or unknown).
    label_map:
        Source value -> task value; values absent from it are kept.
    extra:
        Format-specific facts (e.g. the second sonographer's mask, slice index).
    """

    name: str
    patient: str
    image_path: Path | None
    label_path: Path | None
    modality: str | None = None
    task: str = "binary"
    spacing: tuple[float, float] | None = None
    label_map: dict[int, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def load(self, *, image: bool = True, label: bool = True) -> Case:
        """Read the case: image (float32), label (uint8, mapped to the task's values), geometry.

        2D images (PNG) get the affine ``diag(row_spacing, col_spacing, 1)``;
        volumes keep the file's affine (voxel -> RAS+ mm).  With
        ``image=False`` only the label is read (``case.image`` is None).
        """
        img_case: Case | None = None
        if image and self.image_path is not None:
            img_case = _read_any(self.image_path, is_label=False, spacing=self.spacing)
        lab_arr: np.ndarray | None = None
        lab_case: Case | None = None
        if label and self.label_path is not None:
            reader: Callable[[CaseRef], Case] = self.extra.get("label_reader", _default_label_reader)
            ref = self
            if self.spacing is None and img_case is not None and img_case.ndim == 2:
                # a 2D label carries no spacing of its own: it lies on its image's pixel grid
                from dataclasses import replace

                ref = replace(self, spacing=tuple(img_case.spacing))  # type: ignore[arg-type]
            lab_case = reader(ref)
            if img_case is not None:
                from kidneyseg.io import fit_to_grid

                lab_case = fit_to_grid(lab_case, img_case)  # Slicer .seg.nrrd cropped to its extent
            lab_arr = lab_case.label
            if img_case is not None and lab_arr is not None:
                if lab_arr.shape != img_case.shape or not np.allclose(
                    lab_case.affine, img_case.affine, atol=1e-3
                ):
                    raise InputError(
                        "label map grid differs from its image",
                        path=self.label_path,
                        found=f"shape {lab_arr.shape}, spacing {_fmt(lab_case.spacing)}, "
                        f"origin {_fmt(lab_case.affine[:3, 3])}",
                        expected=f"shape {img_case.shape}, spacing {_fmt(img_case.spacing)}, "
                        f"origin {_fmt(img_case.affine[:3, 3])} (the grid of {self.image_path})",
                        fix="resample the label onto the image grid (nearest neighbour) or pair the right files; "
                        "`kidneyseg data check` lists every mismatch",
                    )
            if lab_arr is not None:
                lab_arr = map_labels(lab_arr, self.label_map)
        if img_case is None and lab_case is None:
            raise InputError(
                "case has neither an image nor a label to read",
                path=self.image_path or self.label_path,
                found=f"case {self.name}",
                expected="an image file, a label file or both",
                fix="check the data set folder layout (kidneyseg data check)",
            )
        base: Case = img_case if img_case is not None else lab_case  # type: ignore[assignment]
        case = Case(
            image=None if img_case is None else img_case.image,
            affine=base.affine,
            label=lab_arr,
            name=self.name,
            modality=self.modality,
            source=self.image_path or self.label_path,
            meta=dict(base.meta),
        )
        case.meta.update({"task": self.task, "patient": self.patient})
        if self.label_path is not None:
            case.meta["label_source"] = str(self.label_path)
        return case


@dataclass
class Dataset:
    """A listed data set: its cases, label task, modality and what was odd about the folder.

    ``problems`` lists files that could not be paired (image without label,
    label without image, names that match no pattern); ``data check`` reports
    them, loading ignores them.
    """

    root: Path
    format: str
    task: str
    modality: str | None
    cases: list[CaseRef]
    problems: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self):
        return iter(self.cases)

    @property
    def patients(self) -> list[str]:
        """Distinct patient (group) ids, in first-seen order."""
        return list(dict.fromkeys(c.patient for c in self.cases))

    @property
    def spatial_dims(self) -> int:
        """2 for PNG images, 3 for volumes (judged from the first case's files)."""
        for c in self.cases:
            p = c.image_path or c.label_path
            if p is not None:
                return 2 if _is_2d_file(p) else 3
        return 3

    def case(self, name: str) -> CaseRef:
        """The case called ``name``; the error lists a few valid names."""
        for c in self.cases:
            if c.name == name:
                return c
        raise InputError(
            "no such case in the data set",
            path=self.root,
            found=name,
            expected="one of " + ", ".join(c.name for c in self.cases[:5]) + (" ..." if len(self.cases) > 5 else ""),
        )


# ----------------------------------------------------------------------------- reading helpers


def _is_2d_file(path: Path) -> bool:
    return image_suffix(path) in IMAGE_2D_SUFFIXES


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def read_png(path: Path, *, is_label: bool, spacing: tuple[float, float] | None) -> Case:
    """Read a 2D image (PNG/JPEG/...) as ``[row, col]`` through :func:`kidneyseg.io.read`.

    Spacing comes from ``spacing`` (e.g. the ``index.csv`` of a slices folder), else the
    file's sidecar JSON, else 1 mm with a warning; labels must be integer values 0..255.
    """
    from kidneyseg.io import read

    return read(path, is_label=is_label, spacing=spacing)


def _read_any(path: Path, *, is_label: bool, spacing: tuple[float, float] | None) -> Case:
    if _is_2d_file(path):
        return read_png(path, is_label=is_label, spacing=spacing)
    from kidneyseg.io import read

    return read(path, is_label=is_label)


def _default_label_reader(ref: CaseRef) -> Case:
    return _read_any(ref.label_path, is_label=True, spacing=ref.spacing)  # type: ignore[arg-type]


def map_labels(label: np.ndarray, label_map: dict[int, int]) -> np.ndarray:
    """Apply ``{source value: task value}`` with a lookup table (values not listed are kept)."""
    if not label_map:
        return label
    lut = np.arange(256, dtype=np.uint8)
    for src, dst in label_map.items():
        lut[int(src)] = int(dst)
    return lut[label]


def _need_dir(root: Path, fmt: str) -> Path:
    root = Path(root)
    if not root.exists():
        raise InputError("no such data set folder", path=root, fix="check the path")
    if not root.is_dir() and not (fmt == "folder" and root.suffix.lower() == ".csv"):
        raise InputError("data set path is not a folder", path=root, expected="a folder", fix="pass the folder")
    return root


def _no_cases(root: Path, fmt: str, expected: str) -> InputError:
    return InputError(
        f"no cases found for format '{fmt}'",
        path=root,
        found="nothing matching the layout",
        expected=expected,
        fix="check --format (kidneyseg data check DIR --format F lists the valid formats) and the folder",
    )


def _int_keys(d: dict[Any, Any] | None) -> dict[int, int]:
    return {int(k): int(v) for k, v in (d or {}).items()}


# ----------------------------------------------------------------------------- KiTS


def _kits(root: Path, fmt: str, label_name: str, task: str, label_map: dict[int, int]) -> Dataset:
    root = _need_dir(root, fmt)
    cases: list[CaseRef] = []
    problems: list[str] = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("case_")):
        img = d / "imaging.nii.gz"
        lab = d / label_name
        if not img.exists():
            problems.append(f"{d.name}: imaging.nii.gz missing")
        if not lab.exists():
            problems.append(f"{d.name}: {label_name} missing")
        if not img.exists() and not lab.exists():
            continue
        cases.append(CaseRef(d.name, d.name, img if img.exists() else None, lab if lab.exists() else None,
                             "ct", task, label_map=label_map))
    if not cases and fmt in ("kits23", "kits19", "kits21"):
        # flat folder of masks (kits23_masks): labels only
        for f in sorted(root.glob("case_*.nii*")):
            name = stem_of(f)
            cases.append(CaseRef(name, name, None, f, "ct", task, label_map=label_map))
    if not cases:
        raise _no_cases(root, fmt, f"case_XXXXX/imaging.nii.gz + case_XXXXX/{label_name}")
    return Dataset(root, fmt, task, "ct", cases, problems)


def load_kits19(root: Path, *, label_map: dict | None = None) -> Dataset:
    """KiTS19: ``case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz`` (0, 1 kidney, 2 tumour)."""
    return _kits(root, "kits19", "segmentation.nii.gz", "kits19", _int_keys(label_map))


def load_kits21(root: Path, *, label_map: dict | None = None, label_file: str = "aggregated_MAJ_seg.nii.gz") -> Dataset:
    """KiTS21: ``case_XXXXX/imaging.nii.gz`` + ``aggregated_MAJ_seg.nii.gz`` (0..3)."""
    return _kits(root, "kits21", label_file, "kits23", _int_keys(label_map))


def load_kits23(root: Path, *, label_map: dict | None = None) -> Dataset:
    """KiTS23: ``case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz`` (0, 1 kidney, 2 tumour, 3 cyst).

    A flat folder of ``case_XXXXX.nii.gz`` masks (as ``kits23_masks``) is read
    as a label-only data set.
    """
    return _kits(root, "kits23", "segmentation.nii.gz", "kits23", _int_keys(label_map))


# ----------------------------------------------------------------------------- nnU-Net

def _nnunet_labels(meta: dict[str, Any]) -> dict[int, str]:
    labels = meta.get("labels", {})
    out: dict[int, str] = {}
    for k, v in labels.items():
        if isinstance(v, (int, float)) or (isinstance(v, str) and v.isdigit() and not str(k).isdigit()):
            out[int(v)] = str(k)  # v2: {"background": 0, "kidney": 1}
        elif isinstance(v, list):
            continue  # region-based entries ({"kidney_and_masses": [1, 2, 3]}) are not labels
        else:
            out[int(k)] = str(v)  # v1: {"0": "background"}
    return out


def _nnunet_regions(meta: dict[str, Any], path: Path) -> dict[str, list[int]]:
    """Region-based ``labels`` of an nnU-Net v2 dataset.json (any entry a list), background left out.

    ``{"background": 0, "kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2}`` ->
    ``{"kidney": [1, 2, 3], "masses": [2, 3], "tumor": [2]}`` (declaration order kept: it is the
    order of ``regions_class_order``); ``{}`` for plain labels.
    """
    labels = meta.get("labels", {})
    if not isinstance(labels, dict) or not any(isinstance(v, (list, tuple)) for v in labels.values()):
        return {}
    out: dict[str, list[int]] = {}
    for name, v in labels.items():
        vals = list(v) if isinstance(v, (list, tuple)) else [v]
        try:
            ints = [int(x) for x in vals]
        except (TypeError, ValueError):
            raise InputError("region of dataset.json is not a list of label values", path=path,
                             found=f'"{name}": {v!r}', expected='integers, e.g. "masses": [2, 3]',
                             fix="repair the labels entry") from None
        if canonical_label_name(name) != "background":
            out[str(name)] = ints
    return out


def _regions_class_order_problems(meta: dict[str, Any], regions: dict[str, list[int]]) -> list[str]:
    """What is wrong with ``regions_class_order`` against the regions (nnU-Net paints region ``i`` with
    value ``regions_class_order[i]``, later regions over earlier ones, when it writes a prediction)."""
    names = list(regions)
    expected: list[int | None] = []
    for i, n in enumerate(names):
        later = set().union(*(set(regions[m]) for m in names[i + 1:]))
        own = sorted(set(regions[n]) - later)
        expected.append(own[0] if len(own) == 1 else None)
    order = meta.get("regions_class_order")
    if order is None:
        return ["dataset.json: region-based labels without regions_class_order (nnU-Net needs it to write "
                f"label maps; expected {expected})"]
    if not isinstance(order, (list, tuple)) or list(order) != expected:
        return [f"dataset.json: regions_class_order {order} does not give each region its own label value "
                f"(nnU-Net would write predictions with other values than its labels use); expected {expected} "
                f"for the regions {', '.join(f'{n} {regions[n]}' for n in names)}; labels are read by the regions"]
    return []


def load_nnunet(root: Path, *, task: str | None = None, label_map: dict | None = None, split: str = "Tr") -> Dataset:
    """nnU-Net raw data set: ``imagesTr/NAME_0000.nii.gz``, ``labelsTr/NAME.nii.gz``, ``dataset.json``.

    The label values of ``dataset.json`` are mapped by name (kidney, tumor/
    tumour, cyst, kidney_right, kidney_left ...) onto the task: ``task`` if
    given, else the first of kits19, kits23, chaos-mr, openkidney-us whose names
    cover them all, else ``binary``.  Region-based labels (nnU-Net v2: ``"kidney":
    [1, 2, 3], "masses": [2, 3], "tumor": 2`` with ``regions_class_order``) are
    matched to a task's evaluation regions (:func:`kidneyseg.labels.match_regions`:
    a value's meaning is the set of regions holding it, so KiTS23 is kits23 with
    kidney 1, tumour 2, cyst 3); a ``regions_class_order`` that does not give each
    region its own value is listed in ``problems``.  The modality comes from ``channel_names``
    (``CT`` -> ct, anything with ``MR``/``T1``/``T2`` -> mr, ``US`` -> us).
    """
    root = _need_dir(root, "nnunet")
    meta_path = root / "dataset.json"
    problems: list[str] = []
    meta: dict[str, Any] = {}
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError("dataset.json is not valid JSON", path=meta_path, found=str(exc),
                             fix="repair the file") from exc
    else:
        problems.append("dataset.json missing")
    src_labels = _nnunet_labels(meta)
    lmap = _int_keys(label_map)
    regions = _nnunet_regions(meta, meta_path)
    if regions:  # nnU-Net v2 region-based (KiTS23: kidney [1, 2, 3], masses [2, 3], tumor 2)
        region_task, region_map = match_regions(regions, candidates=[task] if task else None,
                                                where=str(meta_path))
        task = task or region_task
        if not label_map:
            lmap = {v: t for v, t in region_map.items() if v != t}
        problems += _regions_class_order_problems(meta, regions)
    elif task is None:
        names = {v: canonical_label_name(n) for v, n in src_labels.items()}
        task = "binary"
        for cand in ("kits19", "kits23", "chaos-mr", "openkidney-us"):
            tl = {n: v for v, n in get_task(cand).labels.items()}
            if names and all(n in tl for n in names.values()):
                task = cand
                if not label_map:
                    lmap = {v: tl[n] for v, n in names.items() if v != tl[n]}
                break
    get_task(task)
    channels = meta.get("channel_names", meta.get("modality", {}))
    ch0 = str(next(iter(channels.values()), "")) if isinstance(channels, dict) else ""
    modality = "ct" if ch0.upper() == "CT" else "us" if ch0.upper() in ("US", "ULTRASOUND") else (
        "mr" if ch0 and any(t in ch0.upper() for t in ("MR", "T1", "T2", "ADC", "FLAIR")) else None)
    ending = meta.get("file_ending", ".nii.gz")
    img_dir, lab_dir = root / f"images{split}", root / f"labels{split}"
    if not img_dir.is_dir() and not lab_dir.is_dir():
        raise _no_cases(root, "nnunet", f"images{split}/NAME_0000{ending} and labels{split}/NAME{ending}")
    images: dict[str, Path] = {}
    for f in sorted(img_dir.glob(f"*{ending}")) if img_dir.is_dir() else []:
        m = re.match(r"(.+)_(\d{4})$", f.name[: -len(ending)])
        if not m:
            problems.append(f"images{split}/{f.name}: no _XXXX channel suffix")
            continue
        if m.group(2) == "0000":
            images[m.group(1)] = f
    labels = {f.name[: -len(ending)]: f for f in sorted(lab_dir.glob(f"*{ending}"))} if lab_dir.is_dir() else {}
    cases = []
    for name in sorted(set(images) | set(labels)):
        if name not in images:
            problems.append(f"labels{split}/{name}{ending}: no image {name}_0000{ending}")
        if name not in labels and split == "Tr":
            problems.append(f"images{split}/{name}_0000{ending}: no label {name}{ending}")
        cases.append(CaseRef(name, _patient_of(name), images.get(name), labels.get(name), modality, task,
                             label_map=lmap))
    if not cases:
        raise _no_cases(root, "nnunet", f"images{split}/NAME_0000{ending}")
    return Dataset(root, "nnunet", task, modality, cases, problems,
                   {"dataset_json": meta, **({"regions": regions} if regions else {})})


def _patient_of(name: str) -> str:
    """Patient id from a case name: a trailing ``_zNNN`` / ``_sliceNNN`` slice suffix is dropped."""
    return re.sub(r"_(z|slice)\d+$", "", name)


# ----------------------------------------------------------------------------- CHAOS MR


def load_chaos_mr(root: Path, *, label_map: dict | None = None) -> Dataset:
    """CHAOS T2 as in ``chaos_t2``: ``case_NN_image.nii.gz`` + ``case_NN_label.nii.gz``.

    Labels: 0 background, 1 liver, 2 right kidney, 3 left kidney, 4 spleen.
    """
    root = _need_dir(root, "chaos-mr")
    lmap = _int_keys(label_map)
    images = {f.name[: -len("_image.nii.gz")]: f for f in root.glob("*_image.nii.gz")}
    labels = {f.name[: -len("_label.nii.gz")]: f for f in root.glob("*_label.nii.gz")}
    problems = [f"{n}_label.nii.gz: no image" for n in sorted(set(labels) - set(images))]
    problems += [f"{n}_image.nii.gz: no label" for n in sorted(set(images) - set(labels))]
    cases = [CaseRef(n, n, images.get(n), labels.get(n), "mr", "chaos-mr", label_map=lmap)
             for n in sorted(set(images) | set(labels))]
    if not cases:
        raise _no_cases(root, "chaos-mr", "case_NN_image.nii.gz + case_NN_label.nii.gz")
    return Dataset(root, "chaos-mr", "chaos-mr", "mr", cases, problems)


# ----------------------------------------------------------------------------- Open Kidney US

SONOGRAPHER_CHOICES = ("1", "2", "union", "intersection")


def _us_label_reader(ref: CaseRef) -> Case:
    paths: list[Path] = ref.extra["label_paths"]
    how: str = ref.extra["combine"]
    regions: bool = ref.extra["regions"]
    cases = [read_png(p, is_label=True, spacing=ref.spacing) for p in paths]
    arrs = [c.require_label() for c in cases]
    if not regions:
        arrs = [(a > 0).astype(np.uint8) for a in arrs]  # capsule masks: any non-zero is kidney
    if len(arrs) == 1:
        out = arrs[0]
    elif how == "union":
        out = np.where(arrs[0] > 0, arrs[0], arrs[1]).astype(np.uint8)
    else:  # intersection: where both sonographers gave the same non-zero value
        out = np.where((arrs[0] == arrs[1]) & (arrs[0] > 0), arrs[0], 0).astype(np.uint8)
    base = cases[0]
    base.label = out
    return base


def load_openkidney_us(
    root: Path,
    *,
    sonographer: str | int = 1,
    masks: str = "capsule",
    images: str | os.PathLike[str] | None = None,
    spacing: tuple[float, float] | None = None,
    label_map: dict | None = None,
) -> Dataset:
    """Open Kidney Ultrasound: images plus ``reviewed_masks_{1,2}/{capsule,regions}/NAME.png``.

    Parameters
    ----------
    root:
        Folder holding ``reviewed_masks_1`` (directly or under ``labels/``) and,
        when available, the images (``images/`` or ``root`` itself).
    sonographer:
        ``1``, ``2``, ``"union"`` or ``"intersection"`` of both reviewers' masks.
    masks:
        ``"capsule"`` (task openkidney-us, 1 kidney) or ``"regions"`` (task
        openkidney-us-regions: 1 central echo complex, 2 medulla, 3 cortex).
    images:
        Image folder if it is elsewhere.  When no images are found the data set
        is label-only (real masks without the access-controlled images).
    spacing:
        Pixel spacing in mm if known (the data set does not give one).
    """
    root = _need_dir(root, "openkidney-us")
    son = str(sonographer)
    if son not in SONOGRAPHER_CHOICES:
        raise unknown_name("sonographer choice", son, SONOGRAPHER_CHOICES)
    if masks not in ("capsule", "regions"):
        raise unknown_name("Open Kidney mask kind", masks, ("capsule", "regions"))
    lab_root = root / "labels" if (root / "labels" / "reviewed_masks_1").is_dir() else root
    need = ["1", "2"] if son in ("union", "intersection") else [son]
    dirs = [lab_root / f"reviewed_masks_{s}" / masks for s in need]
    for d in dirs:
        if not d.is_dir():
            raise _no_cases(root, "openkidney-us", f"{d.relative_to(root)}/NAME.png")
    img_dir = Path(images) if images is not None else (root / "images" if (root / "images").is_dir() else None)
    img_files = {stem_of(f): f for f in img_dir.iterdir() if _is_2d_file(f)} if img_dir else {}
    masks_by_son = [{stem_of(f): f for f in d.iterdir() if _is_2d_file(f)} for d in dirs]
    names = set(masks_by_son[0])
    problems: list[str] = []
    if len(masks_by_son) == 2:
        for n in sorted(names ^ set(masks_by_son[1])):
            problems.append(f"{n}: mask from only one sonographer")
        names &= set(masks_by_son[1])
    if img_files:
        problems += [f"{n}: mask without image" for n in sorted(names - set(img_files))]
        problems += [f"{n}: image without mask" for n in sorted(set(img_files) - names)]
    task = "openkidney-us" if masks == "capsule" else "openkidney-us-regions"
    cases = []
    for n in sorted(names | set(img_files)):
        lps = [m[n] for m in masks_by_son] if n in names else []
        cases.append(CaseRef(
            n, n.split("_")[0], img_files.get(n), lps[0] if lps else None, "us", task,
            spacing=tuple(spacing) if spacing else None, label_map=_int_keys(label_map),  # type: ignore[arg-type]
            extra={"label_paths": lps, "combine": son, "regions": masks == "regions",
                   "label_reader": _us_label_reader},
        ))
    if not cases:
        raise _no_cases(root, "openkidney-us", "reviewed_masks_1/capsule/NAME.png")
    return Dataset(root, "openkidney-us", task, "us", cases, problems,
                   {"sonographer": son, "masks": masks, "labels_only": not img_files})


# ----------------------------------------------------------------------------- slices




def load_slices(root: Path, *, task: str = "kits19", modality: str = "ct", label_map: dict | None = None,
                spacing_mm: float | str | None = None) -> Dataset:
    """A folder of 2D slices ``STEM_image.png`` / ``STEM_label.png`` with ``index.csv``.

    ``index.csv`` columns: ``stem`` and ``case`` (the volume a slice came from:
    the patient for splits), optional ``z`` and ``spacing_mm`` (``"0.84x0.84"``,
    row x col).  Without ``index.csv`` the case is the stem minus a trailing
    ``_zNNN`` and the spacing is unknown (1 mm, recorded in ``case.meta``).
    Image values are as stored (``kits19_slices``: clip(HU, 0, 255)).
    ``spacing_mm``: pixel spacing (mm, one number or ``"RxC"``) of the slices whose
    ``index.csv`` row gives none (``curvas_slices``: not published, about 0.8 mm).
    """
    root = _need_dir(root, "slices")
    get_task(task)
    default_spacing = None if spacing_mm is None else parse_spacing_mm(str(spacing_mm))
    if spacing_mm is not None and default_spacing is None:
        raise InputError("slices option spacing_mm is not a spacing", path=root, found=spacing_mm,
                         expected="a positive number of mm, or ROWxCOL", fix='e.g. "spacing_mm": 0.8')
    images = {f.name[: -len(SLICE_IMAGE_SUFFIX)]: f for f in root.glob("*" + SLICE_IMAGE_SUFFIX)}
    labels = {f.name[: -len(SLICE_LABEL_SUFFIX)]: f for f in root.glob("*" + SLICE_LABEL_SUFFIX)}
    problems = [f"{n}{SLICE_LABEL_SUFFIX}: no image" for n in sorted(set(labels) - set(images))]
    problems += [f"{n}{SLICE_IMAGE_SUFFIX}: no label" for n in sorted(set(images) - set(labels))]
    index: dict[str, dict[str, str]] = {}
    idx_path = root / SLICES_INDEX
    if idx_path.exists():
        with idx_path.open(newline="") as fh:
            for entry in csv.DictReader(fh):
                if "stem" not in entry:
                    raise InputError("index.csv has no 'stem' column", path=idx_path, found=list(entry),
                                     expected="columns stem, case, spacing_mm", fix="add the header row")
                index[entry["stem"]] = entry
    else:
        problems.append("index.csv missing: pixel spacing unknown (1 mm assumed), case from the file name")
        log.warning("%s: no index.csv, pixel spacing unknown (1 mm assumed)", root)
    cases = []
    for n in sorted(set(images) | set(labels)):
        row = index.get(n)
        if idx_path.exists() and row is None:
            problems.append(f"{n}: not listed in index.csv")
        patient = (row or {}).get("case") or _patient_of(n)
        spacing = parse_spacing_mm(row["spacing_mm"]) if row and row.get("spacing_mm") else default_spacing
        extra: dict[str, Any] = {}
        if row and row.get("z", "").strip().lstrip("-").isdigit():
            extra["z"] = int(row["z"])
        cases.append(CaseRef(n, patient, images.get(n), labels.get(n), modality, task, spacing,
                             _int_keys(label_map), extra))
    if not cases:
        raise _no_cases(root, "slices", "STEM_image.png + STEM_label.png (+ index.csv)")
    return Dataset(root, "slices", task, modality, cases, problems)


# ----------------------------------------------------------------------------- folder


def load_folder(
    root: Path,
    *,
    task: str | None = None,
    modality: str | None = None,
    csv_file: str | os.PathLike[str] | None = None,
    label_map: dict | None = None,
) -> Dataset:
    """Image/label pairs matched by name, or listed in a CSV.

    Layouts tried in order: a CSV (``root`` itself, ``csv_file``, or
    ``root/list.csv``) with columns ``image,label`` and optional ``name``,
    ``patient``, ``spacing_mm`` (paths relative to the CSV); ``images/`` +
    ``labels/`` (or ``imagesTr``/``labelsTr``) with the same file names (a
    ``_0000`` channel suffix on images is ignored); ``NAME_image.*`` (or ``NAME_ct``, ``NAME_mr``) +
    ``NAME_label.*`` (or ``NAME_seg``/``NAME_mask``) side by side.  ``task``
    and ``modality`` default to those of an optional ``dataset.json``
    (``{"task": "chaos-mr", "modality": "mr"}``), else kits23 / unknown.  2D
    images take their spacing from a ``NAME.json`` sidecar (``{"spacing": [r, c]}``).
    """
    root = _need_dir(root, "folder")
    info_path = (root if root.is_dir() else root.parent) / "dataset.json"
    if info_path.exists():  # optional {"task": ..., "modality": ...} written e.g. by `data synth`
        try:
            info = json.loads(info_path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError("dataset.json is not valid JSON", path=info_path, found=str(exc)) from exc
        task = task or info.get("task")
        modality = modality or info.get("modality")
    task = task or "kits23"
    get_task(task)
    lmap = _int_keys(label_map)
    problems: list[str] = []
    csv_path = Path(root) if Path(root).is_file() else Path(csv_file) if csv_file else root / "list.csv"
    if not csv_path.is_absolute() and csv_file and not csv_path.exists():
        csv_path = root / csv_path
    if csv_path.is_file():
        base = csv_path.parent
        cases = []
        with csv_path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        if rows and "image" not in rows[0] and "label" not in rows[0]:
            raise InputError("CSV list has no 'image' or 'label' column", path=csv_path, found=list(rows[0]),
                             expected="columns image,label[,name,patient,spacing_mm]", fix="add a header row")
        for i, row in enumerate(rows):
            img = base / row["image"] if row.get("image") else None
            lab = base / row["label"] if row.get("label") else None
            for p in (img, lab):
                if p is not None and not p.exists():
                    problems.append(f"row {i + 2}: {p} missing")
            img = img if img is not None and img.exists() else None
            lab = lab if lab is not None and lab.exists() else None
            if img is None and lab is None:
                continue
            name = row.get("name") or stem_of(img or lab)  # type: ignore[arg-type]
            sp = parse_spacing_mm(row["spacing_mm"]) if row.get("spacing_mm") else None
            cases.append(CaseRef(name, row.get("patient") or _patient_of(name), img, lab, modality, task, sp, lmap))
        if not cases:
            raise _no_cases(csv_path, "folder", "rows image,label naming existing files")
        return Dataset(base, "folder", task, modality, cases, problems)

    def files(d: Path) -> list[Path]:
        return sorted(f for f in d.iterdir() if f.is_file() and image_suffix(f) in CASE_FILE_SUFFIXES)

    pairs: dict[str, list[Path | None]] = {}
    for idir, ldir in (("images", "labels"), ("imagesTr", "labelsTr"), ("image", "label")):
        if (root / idir).is_dir() or (root / ldir).is_dir():
            for f in files(root / idir) if (root / idir).is_dir() else []:
                pairs.setdefault(case_name(f), [None, None])[0] = f
            for f in files(root / ldir) if (root / ldir).is_dir() else []:
                pairs.setdefault(stem_of(f), [None, None])[1] = f
            break
    else:
        for f in files(root):
            m = re.match(r"(.+?)[_-](image|img|ct|mr|label|seg|mask|segmentation)$", stem_of(f), re.IGNORECASE)
            if not m:
                problems.append(f"{f.name}: name matches no NAME_image / NAME_label pattern")
                continue
            slot = 0 if m.group(2).lower() in ("image", "img", "ct", "mr") else 1
            pairs.setdefault(m.group(1), [None, None])[slot] = f
    cases = []
    for name, (img, lab) in sorted(pairs.items()):
        if img is None:
            problems.append(f"{name}: label without image")
        if lab is None:
            problems.append(f"{name}: image without label")
        cases.append(CaseRef(name, _patient_of(name), img, lab, modality, task, None, lmap))
    if not cases:
        raise _no_cases(root, "folder", "images/NAME.* + labels/NAME.*, NAME_image.* + NAME_label.*, or list.csv")
    return Dataset(root, "folder", task, modality, cases, problems)


# ----------------------------------------------------------------------------- registry

FORMATS: dict[str, Callable[..., Dataset]] = {
    "kits19": load_kits19,
    "kits21": load_kits21,
    "kits23": load_kits23,
    "nnunet": load_nnunet,
    "openkidney-us": load_openkidney_us,
    "chaos-mr": load_chaos_mr,
    "slices": load_slices,
    "folder": load_folder,
}


def format_names() -> list[str]:
    """Names accepted by :func:`load_dataset` (``--format``)."""
    return list(FORMATS)


def load_dataset(root: str | os.PathLike[str], fmt: str, **options: Any) -> Dataset:
    """List the data set at ``root`` in layout ``fmt``; options go to the format's adapter.

    An unknown ``fmt`` raises an error listing the valid names; an unknown
    option raises an error listing the options of that format.
    """
    if fmt not in FORMATS:
        raise unknown_name("data set format", fmt, list(FORMATS))
    fn = FORMATS[fmt]
    import inspect

    params = [p for p in inspect.signature(fn).parameters if p != "root"]
    bad = [k for k in options if k not in params]
    if bad:
        raise InputError(
            f"unknown option for format '{fmt}'",
            found=", ".join(bad),
            expected="one of " + ", ".join(params),
            fix="drop the option or pick another format",
        )
    return fn(Path(root), **options)
