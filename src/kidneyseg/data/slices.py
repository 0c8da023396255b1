"""Reading a slice cache written by :func:`kidneyseg.preprocessing.slices.extract_slices`.

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

from kidneyseg.errors import InputError


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
