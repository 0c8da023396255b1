"""Case-level (patient-grouped) cross-validation splits.

Every case of one patient (every slice of one volume) lands in the same fold,
so no patient is in both the training and the validation part of a fold.  The
output is nnU-Net's ``splits_final.json`` format: a list with one
``{"train": [names], "val": [names]}`` per fold.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.data.adapters import Dataset
from kidneyseg.errors import InputError


def make_splits(dataset: Dataset, folds: int = 5, seed: int = 0) -> list[dict[str, list[str]]]:
    """``folds`` train/val splits of ``dataset``'s case names, grouped by ``CaseRef.patient``.

    Patients are shuffled with ``seed`` and assigned greedily, largest group
    first, to the fold with the fewest cases, so folds are balanced in cases.
    Deterministic for a given data set and seed.
    """
    groups: dict[str, list[str]] = {}
    for c in dataset.cases:
        groups.setdefault(c.patient, []).append(c.name)
    if folds < 2:
        raise InputError("number of folds", found=folds, expected=">= 2", fix="use --folds 2 or more")
    if len(groups) < folds:
        raise InputError(
            "fewer patients than folds", path=dataset.root, found=f"{len(groups)} patients", expected=f">= {folds}",
            fix="lower --folds or add cases",
        )
    rng = np.random.default_rng(seed)
    patients = sorted(groups)
    rng.shuffle(patients)
    patients.sort(key=lambda p: -len(groups[p]))  # stable: ties keep the shuffled order
    fold_of: dict[str, int] = {}
    sizes = [0] * folds
    for p in patients:
        f = int(np.argmin(sizes))
        fold_of[p] = f
        sizes[f] += len(groups[p])
    out = []
    for f in range(folds):
        val = sorted(n for p, names in groups.items() if fold_of[p] == f for n in names)
        train = sorted(n for p, names in groups.items() if fold_of[p] != f for n in names)
        out.append({"train": train, "val": val})
    return out


def save_splits(splits: list[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write splits as JSON (nnU-Net ``splits_final.json`` format), atomically."""
    from kidneyseg.io import atomic_path

    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.write_text(json.dumps(splits, indent=1) + "\n")
    return p


def load_splits(path: str | os.PathLike[str]) -> list[dict[str, list[str]]]:
    """Read a splits JSON file written by :func:`save_splits` (or by nnU-Net)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError("cannot read splits JSON", path=p, found=str(exc), fix="pass a splits .json file") from exc
    if not isinstance(data, list) or not all(isinstance(f, dict) and "train" in f and "val" in f for f in data):
        raise InputError("not a splits file", path=p, expected='[{"train": [...], "val": [...]}, ...]')
    return data
