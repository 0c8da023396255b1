"""Label values and evaluation regions per task.

This module is the one place where label values are declared.  It imports
without torch or any other heavy dependency (TotalSegmentator's lesson).

A *task* names a label convention:

============== ======================================================== =====================
task           labels                                                   evaluation regions
============== ======================================================== =====================
kits19         0 background, 1 kidney, 2 tumour                          kidney_and_masses {1,2}, tumor {2}
kits23         0 background, 1 kidney, 2 tumour, 3 cyst                  kidney_and_masses {1,2,3}, masses {2,3}, tumor {2}
chaos-mr       0 background, 1 liver, 2 right kidney, 3 left kidney,     kidney {2,3}, kidney_right {2}, kidney_left {3}
               4 spleen
openkidney-us  0 background, 1 kidney (capsule)                          capsule {1}
openkidney-us-regions  1 central echo complex, 2 medulla, 3 cortex       central_echo_complex {1}, medulla {2},
                                                                         cortex {3}, capsule {1,2,3}
binary         0 background, anything else foreground                    foreground {!= 0}
============== ======================================================== =====================

The KiTS surface-Dice tolerances (mm) are those of the official KiTS23
evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kidneyseg.errors import unknown_name

BACKGROUND = 0
KIDNEY = 1
TUMOR = 2
CYST = 3

# Label values of the chaos-mr convention (also TotalSegmentator's kidney values).
MR_LIVER = 1
MR_KIDNEY_RIGHT = 2
MR_KIDNEY_LEFT = 3
MR_SPLEEN = 4

#: Spellings of label names (lower case, spaces and hyphens as underscores) -> the names used here.
LABEL_NAME_ALIASES = {
    "tumour": "tumor", "tumor": "tumor", "mass": "tumor", "kidney": "kidney", "cyst": "cyst",
    "background": "background", "liver": "liver", "spleen": "spleen",
    "kidney_right": "kidney_right", "right_kidney": "kidney_right", "kidney_left": "kidney_left",
    "left_kidney": "kidney_left", "foreground": "foreground",
}


def canonical_label_name(name: object) -> str:
    """The name this package uses for a label called ``name``.

    Case, spaces and hyphens do not matter, and common spellings are mapped:
    ``"Right kidney"`` and ``"right-kidney"`` -> ``"kidney_right"``, ``"Tumour"`` -> ``"tumor"``.
    Unknown names come back lower case with underscores (``"Renal vein"`` -> ``"renal_vein"``).
    """
    key = "_".join(str(name).strip().lower().replace("-", " ").split())
    return LABEL_NAME_ALIASES.get(key, key)


#: Label names (canonical) that count as kidney tissue in post-processing and volume reports.
KIDNEY_NAMES = ("kidney", "kidney_right", "kidney_left", "capsule", "foreground")
#: Canonical tumour and cyst names ("tumour", "mass" are spellings of "tumor"), and both as lesions.
TUMOR_NAMES = ("tumor",)
CYST_NAMES = ("cyst",)
LESION_NAMES = TUMOR_NAMES + CYST_NAMES


def values_named(labels: Mapping[Any, str], names: Iterable[str]) -> tuple[int, ...]:
    """Sorted non-zero label values whose name is one of ``names`` (any spelling, see
    :func:`canonical_label_name`: ``"right kidney"`` is ``kidney_right``)."""
    wanted = set(names)
    return tuple(sorted(int(v) for v, n in labels.items() if int(v) != 0 and canonical_label_name(n) in wanted))


KITS_TOLERANCES_MM = {
    "kidney_and_masses": 1.0330772532390826,
    "masses": 1.1328796488598762,
    "tumor": 1.1498198361434828,
}

DEFAULT_TOLERANCE_MM = 1.0


@dataclass(frozen=True)
class Region:
    """An evaluation region: the union of some label values.

    ``labels`` is ``None`` for "every non-zero value" (the ``binary`` task).
    ``tolerance_mm`` is the surface-Dice tolerance used for this region.
    """

    name: str
    labels: tuple[int, ...] | None
    tolerance_mm: float = DEFAULT_TOLERANCE_MM

    def mask(self, label_map):  # type: ignore[no-untyped-def]
        """Boolean mask of this region for a numpy label map (any shape)."""
        import numpy as np

        arr = np.asarray(label_map)
        if self.labels is None:
            return arr != 0
        return np.isin(arr, self.labels)


@dataclass(frozen=True)
class Task:
    """A label convention: value -> name, evaluation regions, and what colours reports use."""

    name: str
    labels: dict[int, str]
    regions: tuple[Region, ...]
    description: str = ""
    colors: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    @property
    def foreground_labels(self) -> tuple[int, ...]:
        """All non-background label values, ascending."""
        return tuple(sorted(v for v in self.labels if v != BACKGROUND))

    def label_name(self, value: int) -> str:
        """Name of a label value, or ``"label <v>"`` when the task does not define it."""
        return self.labels.get(int(value), f"label {int(value)}")

    def region(self, name: str) -> Region:
        """The region called ``name``; the error lists the valid names."""
        for r in self.regions:
            if r.name == name:
                return r
        raise unknown_name(f"region of task {self.name}", name, [r.name for r in self.regions])


# Fixed report colours (RGB), one per meaning, the same in every picture.
COLOR_KIDNEY = (46, 160, 67)
COLOR_TUMOR = (220, 50, 47)
COLOR_CYST = (38, 139, 210)
COLOR_KIDNEY_RIGHT = (46, 160, 67)
COLOR_KIDNEY_LEFT = (181, 137, 0)

TASKS: dict[str, Task] = {
    "kits19": Task(
        name="kits19",
        labels={0: "background", 1: "kidney", 2: "tumor"},
        regions=(
            Region("kidney_and_masses", (1, 2), KITS_TOLERANCES_MM["kidney_and_masses"]),
            Region("tumor", (2,), KITS_TOLERANCES_MM["tumor"]),
        ),
        description="KiTS19: kidney and tumour in contrast CT",
        colors={1: COLOR_KIDNEY, 2: COLOR_TUMOR},
    ),
    "kits23": Task(
        name="kits23",
        labels={0: "background", 1: "kidney", 2: "tumor", 3: "cyst"},
        regions=(
            Region("kidney_and_masses", (1, 2, 3), KITS_TOLERANCES_MM["kidney_and_masses"]),
            Region("masses", (2, 3), KITS_TOLERANCES_MM["masses"]),
            Region("tumor", (2,), KITS_TOLERANCES_MM["tumor"]),
        ),
        description="KiTS21/23: kidney, tumour and cyst in contrast CT",
        colors={1: COLOR_KIDNEY, 2: COLOR_TUMOR, 3: COLOR_CYST},
    ),
    "chaos-mr": Task(
        name="chaos-mr",
        labels={0: "background", 1: "liver", 2: "kidney_right", 3: "kidney_left", 4: "spleen"},
        regions=(
            Region("kidney", (2, 3)),
            Region("kidney_right", (2,)),
            Region("kidney_left", (3,)),
        ),
        description="CHAOS T2-SPIR MR: right kidney 2, left kidney 3",
        colors={2: COLOR_KIDNEY_RIGHT, 3: COLOR_KIDNEY_LEFT, 1: (133, 153, 0), 4: (108, 113, 196)},
    ),
    "openkidney-us": Task(
        name="openkidney-us",
        labels={0: "background", 1: "kidney"},
        regions=(Region("capsule", (1,)),),
        description="Open Kidney Ultrasound, capsule masks: 1 kidney",
        colors={1: COLOR_KIDNEY},
    ),
    "openkidney-us-regions": Task(
        name="openkidney-us-regions",
        labels={0: "background", 1: "central_echo_complex", 2: "medulla", 3: "cortex"},
        regions=(
            Region("capsule", (1, 2, 3)),
            Region("central_echo_complex", (1,)),
            Region("medulla", (2,)),
            Region("cortex", (3,)),
        ),
        description="Open Kidney Ultrasound, region masks",
        colors={1: (203, 75, 22), 2: (108, 113, 196), 3: COLOR_KIDNEY},
    ),
    "binary": Task(
        name="binary",
        labels={0: "background", 1: "foreground"},
        regions=(Region("foreground", None),),
        description="Any non-zero value is foreground",
        colors={1: COLOR_KIDNEY},
    ),
}


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name raises an error listing the valid ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise unknown_name("task", name, list(TASKS)) from None


def task_names() -> list[str]:
    """Names of all registered tasks."""
    return list(TASKS)
