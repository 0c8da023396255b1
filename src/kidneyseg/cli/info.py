"""`kidneyseg info PATH`: what a file (or DICOM folder) holds, and its geometry."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

NAME = "info"
HELP = "show shape, spacing (mm), orientation, intensities or labels of an image, label map or DICOM folder"
DESCRIPTION = (
    "Show what an image, label map or DICOM series folder holds: shape, voxel spacing (mm), "
    "orientation codes (RAS+), dtype, intensity range; slices and series UID for DICOM; "
    "label values with their names for a label map (--label)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="image or label file, or a folder of DICOM slices")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--label", action="store_true", help="the file is a label map: list label values and names")
    parser.add_argument(
        "--label-of",
        metavar="IMAGE",
        default=None,
        help="the file is the label map of IMAGE: also check that it lies on IMAGE's grid",
    )
    parser.add_argument(
        "--task", default=None, help="label names to use (kits19, kits23, chaos-mr, ...; default: guess, kits23)"
    )
    parser.add_argument(
        "--spacing", nargs=2, type=float, metavar=("ROW", "COL"), default=None,
        help="pixel spacing (mm) of a 2D image (positive; ignored, with a warning, for volumes and DICOM)",
    )
    parser.add_argument("--series", default=None, metavar="UID", help="DICOM SeriesInstanceUID to read from a folder")


def guess_task(values: list[int]) -> str:
    """Label convention for a set of label values: kits23 unless a value exceeds 3 (then chaos-mr up to 4)."""
    top = max(values) if values else 0
    if top <= 3:
        return "kits23"
    if top == 4:
        return "chaos-mr"
    return "kits23"


def describe(case: Any, *, task: str | None = None) -> dict[str, Any]:
    """JSON-ready summary of a case: geometry, intensities or labels, DICOM facts."""
    import numpy as np

    from kidneyseg.labels import get_task

    info: dict[str, Any] = {
        "path": str(case.source),
        "format": case.meta.get("format"),
        "shape": list(case.shape),
        "spacing_mm": [round(s, 6) for s in case.spacing],
        "orientation": "".join(case.orientation) if case.ndim == 3 else None,
        "dtype": case.meta.get("dtype"),
        "modality": case.modality,
        "affine": np.round(case.affine, 6).tolist(),
    }
    if case.ndim == 2:
        info["spacing_source"] = case.meta.get("spacing_source")
    if case.meta.get("format") == "dicom":
        info["n_slices"] = case.meta.get("n_slices")
        info["series_uid"] = case.meta.get("series_uid")
        info["series_key"] = case.meta.get("series_key")
        info["series_description"] = case.meta.get("series_description")
        info["series_in_folder"] = [{"series": k, "slices": n} for k, n in case.meta.get("series_available", [])]
    if case.image is not None:
        img = case.image
        info["intensity_range"] = [float(np.min(img)), float(np.max(img))] if img.size else None
        if case.modality == "ct":
            info["intensity_unit"] = "HU"
    if case.label is not None:
        values, counts = np.unique(case.label, return_counts=True)
        present = [int(v) for v in values]
        chosen = task or guess_task(present)
        t = get_task(chosen)
        seg_names = case.meta.get("segments") or {}
        vox_ml = case.voxel_volume_ml
        info["task"] = chosen
        info["task_guessed"] = task is None
        info["labels"] = [
            {
                "value": v,
                "name": t.label_name(v),
                **({"segment_name": seg_names[v]} if v in seg_names else {}),
                "voxels": int(c),
                ("area_mm2" if case.ndim == 2 else "volume_ml"): round(float(c) * vox_ml * (1000 if case.ndim == 2 else 1), 4),
            }
            for v, c in zip(present, counts)
        ]
    return info


def _text(info: dict[str, Any]) -> str:
    lines = []
    for key, value in info.items():
        if key == "labels":
            lines.append("labels:")
            for lab in value:
                size = f"{lab['volume_ml']} mL" if "volume_ml" in lab else f"{lab['area_mm2']} mm^2"
                lines.append(f"  {lab['value']:>3}  {lab['name']:<22} {lab['voxels']:>10} voxels  {size}")
        elif key == "affine":
            lines.append("affine (voxel -> RAS mm):")
            lines.extend("  " + "  ".join(f"{x:>11.5f}" for x in row) for row in value)
        elif key == "series_in_folder":
            lines.append("series in folder: " + ", ".join(f"{s['series']} ({s['slices']} slices)" for s in value))
        elif value is not None:
            if isinstance(value, list):
                value = " x ".join(f"{v:g}" for v in value) if key in ("shape", "spacing_mm") else value
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from kidneyseg import io
    from kidneyseg.labels import get_task

    if args.task is not None:
        get_task(args.task)  # unknown names fail before reading
    spacing = tuple(args.spacing) if args.spacing else None
    if args.label_of:
        image = io.read(args.label_of, spacing=spacing, series_uid=args.series)
        case = io.read_label(args.path, like=image, spacing=spacing)
    else:
        case = io.read(args.path, is_label=args.label, spacing=spacing, series_uid=args.series)
    info = describe(case, task=args.task)
    if args.label_of:
        info["label_of"] = str(args.label_of)
        info["grid_matches_image"] = True
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(_text(info))
    return 0
