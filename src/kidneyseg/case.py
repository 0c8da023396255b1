"""The one object that flows through the pipeline: image + label + geometry + history.

Axis conventions
----------------
* 3D arrays are indexed ``[i, j, k]`` in the voxel order of the file, exactly as
  nibabel returns them; ``affine`` maps ``(i, j, k, 1)`` to RAS+ world
  coordinates in mm (nibabel/NIfTI convention, *not* ITK's LPS).
* 2D arrays (PNG, ultrasound) are indexed ``[row, col]``; ``affine`` is still
  4x4 and maps ``(row, col, 0, 1)`` to world mm, so spacing is
  ``(row spacing, col spacing)``.
* CT intensities are in HU; MR and ultrasound are in the scanner's units.

Every preprocessing step that changes the grid appends an :class:`Operation` to
``history``; :func:`kidneyseg.preprocessing.geometry.undo` replays it backwards
so a prediction lands on the input's exact grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

MODALITIES = ("ct", "mr", "us")


@dataclass
class Operation:
    """One recorded step: its name and everything needed to undo it.

    ``params`` must be JSON-serialisable apart from numpy arrays (affines,
    shapes), so a history can be saved next to a prediction.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Case:
    """An image (and optionally its label map) with its geometry.

    Attributes
    ----------
    image:
        Intensities, shape ``(I, J, K)`` for volumes or ``(rows, cols)`` for 2D
        images; ``None`` for a label-only case.
    affine:
        4x4 voxel-to-world (RAS+, mm) matrix of ``image`` / ``label``.
    label:
        Integer label map on the same grid as ``image`` (uint8), or ``None``.
    name:
        Case identifier (file stem, KiTS case id, ...).
    modality:
        ``"ct"``, ``"mr"``, ``"us"`` or ``None`` when unknown.
    source:
        Path the image was read from, if any.
    meta:
        Format-specific facts kept for writing back: NIfTI header, DICOM series
        UID and datasets, qform/sform codes, PNG mode...
    history:
        Grid-changing operations applied since reading, oldest first.
    """

    image: np.ndarray | None
    affine: np.ndarray
    label: np.ndarray | None = None
    name: str = "case"
    modality: str | None = None
    source: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    history: list[Operation] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            from kidneyseg.errors import GeometryError

            raise GeometryError(
                "affine is not a 4x4 matrix", path=self.source, found=self.affine.shape, expected="(4, 4)"
            )

    # ------------------------------------------------------------------ geometry
    @property
    def array(self) -> np.ndarray:
        """The image if present, else the label map (for label-only cases)."""
        if self.image is not None:
            return self.image
        if self.label is not None:
            return self.label
        raise ValueError(f"case {self.name} has neither image nor label")

    def require_image(self) -> np.ndarray:
        """The image; an :class:`~kidneyseg.errors.InputError` naming the case's file where it has none."""
        if self.image is None:
            from kidneyseg.errors import InputError

            raise InputError(f"case {self.name} has no image", path=self.source, found="a label map only",
                             expected="an image (CT in HU, MR, ultrasound)", fix="pass the image file, not a label map")
        return self.image

    def require_label(self) -> np.ndarray:
        """The label map; an :class:`~kidneyseg.errors.InputError` naming the case's file where it has none."""
        if self.label is None:
            from kidneyseg.errors import InputError

            raise InputError(f"case {self.name} has no label map", path=self.source, found="an image only",
                             expected="a reference label map beside the image",
                             fix="give the labels (a labelsTr folder, *_label files or --label)")
        return self.label

    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape (voxels), ``(I, J, K)`` or ``(rows, cols)``."""
        return tuple(int(s) for s in self.array.shape)

    @property
    def ndim(self) -> int:
        """2 for images, 3 for volumes."""
        return self.array.ndim

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each array axis (length ``ndim``)."""
        sp = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return tuple(float(s) for s in sp[: self.ndim])

    @property
    def orientation(self) -> tuple[str, ...]:
        """Anatomical direction codes of the array axes, e.g. ``('R', 'A', 'S')``."""
        import nibabel as nib

        codes = nib.orientations.aff2axcodes(self.affine)
        return tuple(str(c) for c in codes[: self.ndim])

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (mm^3 / 1000); for 2D, the pixel area in mm^2 / 1000."""
        return float(np.prod(self.spacing)) / 1000.0

    def copy(self, **changes: Any) -> Case:
        """Shallow copy with some fields replaced; history and meta are copied lists/dicts."""
        new = replace(self, **changes)
        if "history" not in changes:
            new.history = list(self.history)
        if "meta" not in changes:
            new.meta = dict(self.meta)
        return new

    def record(self, name: str, **params: Any) -> None:
        """Append an operation to ``history``."""
        self.history.append(Operation(name, dict(params)))
