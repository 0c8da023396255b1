"""Data-set check and fingerprint: what is in the folder, and the statistics a plan is derived from.

:func:`check_dataset` reads every case once (image and label separately, so a
grid mismatch is reported instead of raised) and returns a JSON-serialisable
report: number of cases and patients, problems (missing/unmatched files,
unreadable files, grid mismatches, label values outside the task), label values
per case, spacing and size histograms, and the fingerprint:

``spacings`` / ``shapes``
    per case, in RAS axis order for volumes (so axis 2 is the axial direction
    whatever the file's voxel order), ``[row, col]`` for 2D images.
``intensity_foreground``
    mean, std, median, 0.5/99.5 percentiles of image values inside the label
    (sampled, at most ``samples_per_case`` voxels per case).
``class_volumes_ml``
    mean / median / min / max volume (mL; mm^2/1000 for 2D) of each label value.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kidneyseg.case import Case
from kidneyseg.data.adapters import Dataset
from kidneyseg.errors import KidneysegError
from kidneyseg.labels import get_task

#: Foreground intensity samples taken per case (a fixed number, so big volumes do not outweigh small ones).
SAMPLES_PER_CASE = 20000


def _ras_order(affine: np.ndarray) -> list[int]:
    """For each RAS axis, the array axis that points along it."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    order = [0, 0, 0]
    for arr_ax, (world_ax, _) in enumerate(ornt):
        order[int(world_ax)] = arr_ax
    return order


def ras_spacing_shape(case: Case) -> tuple[list[float], list[int]]:
    """Spacing (mm) and shape (voxels) of ``case`` in RAS axis order for volumes, ``[row, col]`` for images."""
    order = _ras_order(case.affine) if case.ndim == 3 else [0, 1]
    return ([round(float(case.spacing[a]), 4) for a in order], [int(case.shape[a]) for a in order])


@dataclass(frozen=True)
class Fingerprint:
    """What a plan is derived from: a data set's geometry and foreground intensities (nnU-Net's fingerprint).

    ``spacings`` / ``shapes`` hold one entry per case, in RAS axis order for volumes (axis 2 is
    axial whatever the file's voxel order) and ``[row, col]`` for 2D images, in mm and voxels.
    ``intensity_foreground`` holds mean, std, median, ``p00_5``, ``p99_5``, min, max and
    ``n_samples`` of image values inside the label (at most :data:`SAMPLES_PER_CASE` per case,
    drawn with a seed of the case's name, so the statistics do not depend on the order cases are read
    in); empty where the data set has no labelled images.  ``labels`` is ``{"value": name}`` of the task.
    """

    task: str
    modality: str | None
    spatial_dims: int
    spacings: tuple[tuple[float, ...], ...]
    shapes: tuple[tuple[int, ...], ...]
    intensity_foreground: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_cases(cls, cases: Iterable[Case], task: str, modality: str | None, *,
                   samples_per_case: int = SAMPLES_PER_CASE, seed: int = 0) -> Fingerprint:
        """The fingerprint of loaded cases (image + label on one grid, as read): what ``train`` uses."""
        b = FingerprintBuilder(task, modality, samples_per_case=samples_per_case, seed=seed)
        for c in cases:
            b.add(c.name, c, c.image, c.label)
        return b.build()

    @classmethod
    def from_json(cls, data: Mapping[str, Any], path: Any = None) -> Fingerprint:
        """Read the JSON form (``to_json``, or the report of :func:`check_dataset`, which holds its keys)."""
        try:
            spacings = tuple(tuple(float(v) for v in s) for s in data.get("spacings") or [])
            shapes = tuple(tuple(int(v) for v in s) for s in data.get("shapes") or [])
        except (TypeError, ValueError) as exc:
            raise KidneysegError("fingerprint spacings/shapes", path=path, found=str(exc),
                                 expected="one list of numbers per case") from exc
        dims = data.get("spatial_dims")
        if dims is None:
            dims = len(spacings[0]) if spacings else 3
        if int(dims) not in (2, 3):
            raise KidneysegError("fingerprint spatial_dims", path=path, found=dims, expected="2 or 3")
        return cls(task=str(data.get("task") or "binary"), modality=data.get("modality"), spatial_dims=int(dims),
                   spacings=spacings, shapes=shapes,
                   intensity_foreground={str(k): float(v) for k, v in (data.get("intensity_foreground") or {}).items()},
                   labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()})

    def to_json(self) -> dict[str, Any]:
        """JSON form (lists)."""
        return {"task": self.task, "modality": self.modality, "spatial_dims": self.spatial_dims,
                "spacings": [list(s) for s in self.spacings], "shapes": [list(s) for s in self.shapes],
                "intensity_foreground": dict(self.intensity_foreground), "labels": dict(self.labels)}


class FingerprintBuilder:
    """Accumulates a :class:`Fingerprint` case by case (``check_dataset`` reads one case at a time)."""

    def __init__(self, task: str, modality: str | None, *, samples_per_case: int = SAMPLES_PER_CASE,
                 seed: int = 0) -> None:
        self.task, self.modality = task, modality
        self.samples_per_case, self.seed = int(samples_per_case), int(seed)
        self._geom: dict[str, tuple[list[float], list[int]]] = {}
        self._samples: dict[str, np.ndarray] = {}
        self._dims: int | None = None

    def add(self, name: str, grid: Case, image: np.ndarray | None, label: np.ndarray | None) -> None:
        """Add one case: ``grid`` gives its geometry; ``image`` and ``label`` (same grid) its foreground values."""
        self._geom[name] = ras_spacing_shape(grid)
        self._dims = self._dims or grid.ndim
        if image is not None and label is not None:
            fg = np.asarray(image)[np.asarray(label) > 0]
            if fg.size:
                rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
                take = min(self.samples_per_case, fg.size)
                self._samples[name] = rng.choice(fg, take, replace=False) if take < fg.size else fg

    def build(self) -> Fingerprint:
        names = sorted(self._geom)
        stats: dict[str, float] = {}
        if self._samples:
            allv = np.concatenate([self._samples[n] for n in sorted(self._samples)]).astype(np.float64)
            p = np.percentile(allv, [0.5, 50, 99.5])
            stats = {"mean": float(allv.mean()), "std": float(allv.std()), "median": float(p[1]),
                     "p00_5": float(p[0]), "p99_5": float(p[2]), "min": float(allv.min()), "max": float(allv.max()),
                     "n_samples": int(allv.size)}
        labels = {str(k): v for k, v in get_task(self.task).labels.items()}
        return Fingerprint(task=self.task, modality=self.modality, spatial_dims=int(self._dims or 3),
                           spacings=tuple(tuple(self._geom[n][0]) for n in names),
                           shapes=tuple(tuple(self._geom[n][1]) for n in names),
                           intensity_foreground=stats, labels=labels)


def _fmt_tuple(v) -> str:
    return "x".join(f"{float(x):.4g}" for x in v)


def check_dataset(dataset: Dataset, *, samples_per_case: int = SAMPLES_PER_CASE, seed: int = 0,
                  progress: bool = True) -> dict[str, Any]:
    """Read every case of ``dataset`` and return the check report with its fingerprint (see module doc)."""
    from tqdm import tqdm

    from kidneyseg.data.adapters import _read_any, map_labels

    task = get_task(dataset.task)
    problems = list(dataset.problems)
    per_case: list[dict[str, Any]] = []
    builder = FingerprintBuilder(dataset.task, dataset.modality, samples_per_case=samples_per_case, seed=seed)
    volumes: dict[int, list[float]] = {}
    for ref in tqdm(dataset.cases, desc="checking cases", disable=not progress or len(dataset.cases) < 5):
        entry: dict[str, Any] = {"name": ref.name, "patient": ref.patient}
        img = lab = None
        try:
            if ref.image_path is not None:
                img = _read_any(ref.image_path, is_label=False, spacing=ref.spacing)
            if ref.label_path is not None:
                lspacing = ref.spacing
                if lspacing is None and img is not None and img.ndim == 2:
                    lspacing = (img.spacing[0], img.spacing[1])  # 2D labels lie on their image's pixel grid
                lab = ref.load(image=False) if "label_reader" in ref.extra else _read_any(
                    ref.label_path, is_label=True, spacing=lspacing)
                lab.label = map_labels(lab.label, ref.label_map)  # type: ignore[arg-type]
        except KidneysegError as exc:
            problems.append(f"{ref.name}: {exc}")
            entry["error"] = str(exc)
            per_case.append(entry)
            continue
        base = img if img is not None else lab
        if base is None:
            continue
        ndim = base.ndim
        entry["spacing"], entry["shape"] = ras_spacing_shape(base)
        entry["file_shape"] = list(base.shape)
        entry["file_spacing"] = [round(float(s), 4) for s in base.spacing]
        if ndim == 3:
            entry["orientation"] = "".join(base.orientation)
        if img is not None and lab is not None:
            if img.shape != lab.shape or not np.allclose(img.affine, lab.affine, atol=1e-3):
                problems.append(
                    f"{ref.name}: label grid differs from image (label shape {lab.shape}, spacing "
                    f"{_fmt_tuple(lab.spacing)}; image shape {img.shape}, spacing {_fmt_tuple(img.spacing)})")
                entry["grid_mismatch"] = True
                lab = None
        if lab is not None and lab.label is not None:
            counts = np.bincount(lab.label.ravel(), minlength=1)
            values = [int(v) for v in np.flatnonzero(counts)]
            entry["label_values"] = values
            extra = [v for v in values if v not in task.labels]
            if extra and task.name != "binary":
                problems.append(f"{ref.name}: label values {extra} not in task {task.name} {sorted(task.labels)}")
            vox_ml = float(np.prod(lab.spacing)) / 1000.0
            entry["volumes_ml"] = {str(v): round(float(counts[v]) * vox_ml, 4) for v in values if v != 0}
            for v in values:
                if v != 0:
                    volumes.setdefault(v, []).append(float(counts[v]) * vox_ml)
        builder.add(ref.name, base, img.image if img is not None else None,
                    lab.label if lab is not None else None)
        if img is not None and img.image is not None:
            entry["intensity_range"] = [round(float(img.image.min()), 3), round(float(img.image.max()), 3)]
        per_case.append(entry)
    ok = [e for e in per_case if "shape" in e]
    fp = builder.build()
    report: dict[str, Any] = {
        "format_version": 1,
        "root": str(dataset.root),
        "format": dataset.format,
        "task": dataset.task,
        "modality": dataset.modality,
        "spatial_dims": dataset.spatial_dims,
        "n_cases": len(dataset.cases),
        "n_patients": len(dataset.patients),
        "n_images": sum(1 for c in dataset.cases if c.image_path is not None),
        "n_labels": sum(1 for c in dataset.cases if c.label_path is not None),
        "labels": {str(k): v for k, v in task.labels.items()},
        "label_values_found": sorted({v for e in ok for v in e.get("label_values", [])}),
        "spacing_histogram": dict(Counter(_fmt_tuple(e["file_spacing"]) for e in ok).most_common()),
        "size_histogram": dict(Counter(_fmt_tuple(e["file_shape"]) for e in ok).most_common()),
        # the fingerprint (Fingerprint.from_json(report) reads it back): per case in name order
        "spacings": [list(x) for x in fp.spacings],
        "shapes": [list(x) for x in fp.shapes],
        "intensity_foreground": fp.intensity_foreground,
        "class_volumes_ml": {
            str(v): {"n": len(vs), "mean": round(float(np.mean(vs)), 4), "median": round(float(np.median(vs)), 4),
                     "min": round(float(np.min(vs)), 4), "max": round(float(np.max(vs)), 4)}
            for v, vs in sorted(volumes.items())
        },
        "problems": problems,
        "per_case": per_case,
    }
    return report


def format_report(report: dict[str, Any], max_cases: int = 40) -> str:
    """Human-readable summary of :func:`check_dataset`'s report."""
    lines = [
        f"{report['root']}  (format {report['format']}, task {report['task']}, modality {report['modality']})",
        f"cases: {report['n_cases']} from {report['n_patients']} patients/volumes "
        f"({report['n_images']} images, {report['n_labels']} labels)",
        f"label values found: {report['label_values_found']}  (task: "
        + ", ".join(f"{k} {v}" for k, v in report["labels"].items()) + ")",
        "spacing (mm, file axis order):",
    ]
    lines += [f"  {k:>24}  {v} case(s)" for k, v in list(report["spacing_histogram"].items())[:12]]
    lines.append("size (voxels, file axis order):")
    lines += [f"  {k:>24}  {v} case(s)" for k, v in list(report["size_histogram"].items())[:12]]
    fg = report.get("intensity_foreground") or {}
    if fg:
        lines.append(f"foreground intensity: mean {fg['mean']:.1f}, std {fg['std']:.1f}, "
                     f"0.5-99.5% {fg['p00_5']:.1f}..{fg['p99_5']:.1f}")
    for v, s in report["class_volumes_ml"].items():
        name = report["labels"].get(v, f"label {v}")
        unit = "mL" if report["spatial_dims"] == 3 else "cm^2/10"
        lines.append(f"label {v} ({name}): in {s['n']} case(s), median {s['median']:.3g} {unit}")
    lines.append("per case (label values):")
    for e in report["per_case"][:max_cases]:
        lines.append(f"  {e['name']:<28} {e.get('label_values', '-')}  {'x'.join(map(str, e.get('file_shape', [])))}")
    if len(report["per_case"]) > max_cases:
        lines.append(f"  ... {len(report['per_case']) - max_cases} more (use --json)")
    probs = report["problems"]
    lines.append(f"problems: {len(probs)}" + ("" if probs else " (none)"))
    lines += [f"  - {p}" for p in probs[:50]]
    if len(probs) > 50:
        lines.append(f"  ... {len(probs) - 50} more (use --json)")
    return "\n".join(lines)
