"""Slices on disk: the pixel spacing of a ``slices`` layout image, and the slice cache.

:func:`read_image` reads an image as :func:`kidneyseg.io.read` does, and for a
``STEM_image.png`` of the ``slices`` layout (``kidneyseg.data.adapters.load_slices``)
with no spacing given and no sidecar JSON takes the spacing of its ``index.csv`` row
(:func:`slices_index_spacing`), so ``kidneyseg predict`` sees the pixels at the size
training saw them.

Reading a slice cache written by :func:`kidneyseg.preprocessing.slices.extract_slices`:

:class:`SliceCache` is a map-style data set (numpy only, no torch): item ``i``
is a dict with ``image`` float32 ``(1, H, W)``, ``label`` uint8 ``(H, W)``,
``case``, ``patient``, ``z`` and ``spacing`` (mm, row/col).  Wrap it in a
``torch.utils.data.Dataset`` or use it directly; :meth:`SliceCache.subset`
keeps the slices of some cases (e.g. one fold of :func:`make_splits`).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from kidneyseg.case import Case
from kidneyseg.errors import InputError

#: File name ending of a ``slices`` layout image (``STEM_image.png``) and of its label (``STEM_label.png``).
SLICE_IMAGE_SUFFIX = "_image.png"
SLICE_LABEL_SUFFIX = "_label.png"
#: The ``slices`` layout's table of slices (columns ``stem``, ``case``, optional ``z``, ``spacing_mm``).
SLICES_INDEX = "index.csv"


def parse_spacing_mm(text: str) -> tuple[float, float] | None:
    """``"0.84x0.84"`` (row x col mm) or one number for both; ``None`` when it is not two positive numbers."""
    parts = [p for p in str(text).replace(",", " ").replace("x", " ").split() if p]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        return None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or not all(np.isfinite(v) and v > 0 for v in vals):
        return None
    return (vals[0], vals[1])


def slices_index_spacing(path: str | os.PathLike[str]) -> tuple[tuple[float, float], Path] | None:
    """Pixel spacing ``(row, col)`` mm of a ``slices`` layout image from the ``index.csv`` beside it.

    Returns ``(spacing, index path)``, or ``None`` when ``path`` is no ``STEM_image.png``, the folder has
    no ``index.csv``, the stem is not listed or its row gives no spacing.  A spacing that cannot be read
    raises :class:`InputError` naming the file and the row.
    """
    p = Path(path)
    idx = p.parent / SLICES_INDEX
    if not p.name.endswith(SLICE_IMAGE_SUFFIX) or not idx.is_file():
        return None
    stem = p.name[: -len(SLICE_IMAGE_SUFFIX)]
    with idx.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("stem") != stem:
                continue
            text = (row.get("spacing_mm") or "").strip()
            if not text:
                return None
            sp = parse_spacing_mm(text)
            if sp is None:
                raise InputError("index.csv gives a pixel spacing that cannot be read", path=idx,
                                 found=f"spacing_mm {text!r} for stem {stem}",
                                 expected="positive ROWxCOL millimetres, e.g. 0.84x0.84",
                                 fix="repair the index.csv row, or pass --spacing ROW COL")
            return sp, idx
    return None


def read_image(path: str | os.PathLike[str], *, spacing: tuple[float, float] | None = None,
               modality: str | None = None) -> Case:
    """:func:`kidneyseg.io.read` an image, with the ``slices`` layout's ``index.csv`` as a spacing source.

    Pixel spacing of a 2D image, first found wins: ``spacing`` (row, col mm), the sidecar
    ``STEM.json``, the image's ``index.csv`` row (:func:`slices_index_spacing`; recorded as
    ``case.meta["spacing_source"]``), else 1 mm with a warning.  Volumes and DICOM read as ever.
    """
    from kidneyseg import io
    from kidneyseg.io.png import sidecar_path

    p = Path(path)
    if spacing is None and p.is_file() and not sidecar_path(p).is_file():
        found = slices_index_spacing(p)
        if found is not None:
            case = io.read(p, spacing=found[0], modality=modality)
            case.meta["spacing_source"] = str(found[1])
            return case
    return io.read(p, spacing=spacing, modality=modality)


class SliceCache:
    """The slices of a cache folder (``index.csv`` + ``CASE/zKKKK.npz``)."""

    def __init__(self, root: str | os.PathLike[str], cases: list[str] | None = None) -> None:
        self.root = Path(root)
        idx = self.root / "index.csv"
        if not idx.exists():
            raise InputError("not a slice cache", path=self.root, found="no index.csv",
                             fix="create it with `kidneyseg data slice DIR --format F -o OUT`")
        with idx.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        if cases is not None:
            keep = set(cases)
            rows = [r for r in rows if r["case"] in keep]
        self.rows = rows
        plan_path = self.root / "plan.json"
        self.plan: dict[str, Any] | None = json.loads(plan_path.read_text()) if plan_path.exists() else None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def cases(self) -> list[str]:
        """Case names in the cache, in first-seen order."""
        return list(dict.fromkeys(r["case"] for r in self.rows))

    @property
    def patients(self) -> list[str]:
        """Patient ids in the cache, in first-seen order."""
        return list(dict.fromkeys(r["patient"] for r in self.rows))

    def subset(self, cases: list[str]) -> SliceCache:
        """A cache view holding only the slices of ``cases``."""
        return SliceCache(self.root, cases)

    def __getitem__(self, i: int) -> dict[str, Any]:
        r = self.rows[i]
        with np.load(self.root / r["file"]) as z:
            image = z["image"].astype(np.float32)[None]
            label = z["label"]
            spacing = tuple(float(s) for s in z["spacing"])
        return {"image": image, "label": label, "case": r["case"], "patient": r["patient"], "z": int(r["z"]),
                "spacing": spacing}
