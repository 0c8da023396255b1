"""Label values and evaluation regions per task.

This module is the one place where label values are declared.  It imports
without torch or any other heavy dependency (TotalSegmentator's lesson).

A *task* names a label convention:

============== ======================================================== =====================
task           labels                                                   evaluation regions
============== ======================================================== =====================
kits19         0 background, 1 kidney, 2 tumour                          kidney_and_masses {1,2}, tumor {2}
kits23         0 background, 1 kidney, 2 tumour, 3 cyst                  kidney_and_masses {1,2,3}, masses {2,3}, tumor {2},
                                                                         cyst {3}
chaos-mr       0 background, 1 liver, 2 right kidney, 3 left kidney,     kidney {2,3}, kidney_right {2}, kidney_left {3}
               4 spleen
openkidney-us  0 background, 1 kidney (capsule)                          capsule {1}
openkidney-us-regions  1 central echo complex, 2 medulla, 3 cortex       central_echo_complex {1}, medulla {2},
                                                                         cortex {3}, capsule {1,2,3}
curvas-ct      0 background, 1 kidney (kidney + masses, both sides),      kidney {1}
               4 liver, 5 pancreas
totalseg-ct    0 background, 1 liver, 2 right kidney, 3 left kidney,      kidney {2,3}, kidney_right {2},
               4 spleen (TotalSegmentator subjects; kidneys with masses)  kidney_left {3}
ct-abdomen     0 background, 1 kidney, 2 tumour, 3 cyst, 4 liver,         as kits23
               5 pancreas, 6 spleen (classes of models trained on several
               CT data sets with different label sets)
binary         0 background, anything else foreground                    foreground {!= 0}
============== ======================================================== =====================

Partial labels: a data set that labels only some of a model's classes, or merges
several of them into one label, declares it with :func:`partial_label_groups`
(CURVAS "kidney" = kidney + tumour + cyst; KiTS19 has no liver label, so its
background is background + liver + pancreas + spleen).

The KiTS surface-Dice tolerances (mm) are those of the official KiTS23
evaluation.  KiTS scores no cyst region, so it defines no cyst tolerance; the
``cyst`` region (scored because the 3D cascade paper reports cyst Dice) uses the
``masses`` tolerance (:data:`CYST_TOLERANCE_MM`): cysts are masses, and the masses
tolerance lies between the kidney's and the tumour's.  The cyst region is
*optional* (:attr:`Region.optional`): a region-based label declaration (nnU-Net
``dataset.json``) of KiTS need not list it.
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

# Label values of the openkidney-us-regions convention (regions inside the capsule, which is openkidney-us' KIDNEY).
US_CENTRAL_ECHO_COMPLEX = 1
US_MEDULLA = 2
US_CORTEX = 3

#: Spellings of label names (lower case, spaces and hyphens as underscores) -> the names used here.
LABEL_NAME_ALIASES = {
    "tumour": "tumor", "tumor": "tumor", "mass": "tumor", "kidney": "kidney", "cyst": "cyst",
    "background": "background", "liver": "liver", "spleen": "spleen",
    "kidney_right": "kidney_right", "right_kidney": "kidney_right", "kidney_left": "kidney_left",
    "left_kidney": "kidney_left", "foreground": "foreground", "pancreas": "pancreas",
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


#: Names of kidney classes that carry a side (right and left kidney labelled apart, as CHAOS and TotalSegmentator).
SIDED_KIDNEY_NAMES = ("kidney_right", "kidney_left")


def has_sided_kidneys(labels: Mapping[Any, str]) -> bool:
    """True where ``labels`` (``{value: name}``) hold a right or a left kidney class of its own.

    The one rule for sided labels: training never flips such a model's inputs left-right (a flip would
    swap the sides), test-time mirroring skips that axis, and post-processing keeps one component
    per side.
    """
    return bool(values_named(labels, SIDED_KIDNEY_NAMES))


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

#: Surface-Dice tolerance (mm) of the cyst region.  KiTS21/23 score no cyst region and define none; cysts are
#: masses, so the masses tolerance is used (between the kidney's 1.03 and the tumour's 1.15 mm).
CYST_TOLERANCE_MM = KITS_TOLERANCES_MM["masses"]

DEFAULT_TOLERANCE_MM = 1.0


@dataclass(frozen=True)
class Region:
    """An evaluation region: the union of some label values.

    ``labels`` is ``None`` for "every non-zero value" (the ``binary`` task).
    ``tolerance_mm`` is the surface-Dice tolerance used for this region.
    ``optional``: a region that a region-based label declaration (nnU-Net
    ``dataset.json``, :func:`match_regions`) may leave out, because the other
    regions already tell its values apart (kits23's ``cyst`` = ``masses`` minus
    ``tumor``).  It is scored like every other region.
    """

    name: str
    labels: tuple[int, ...] | None
    tolerance_mm: float = DEFAULT_TOLERANCE_MM
    optional: bool = False

    def mask(self, label_map):
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
            Region("cyst", (3,), CYST_TOLERANCE_MM, optional=True),
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
    "curvas-ct": Task(
        name="curvas-ct",
        labels={0: "background", 1: "kidney", 4: "liver", 5: "pancreas"},
        regions=(Region("kidney", (1,)),),
        description="CURVAS contrast CT: kidney (with its masses, both sides) 1, liver 4, pancreas 5",
        colors={1: COLOR_KIDNEY, 4: (133, 153, 0), 5: (203, 75, 22)},
    ),
    "totalseg-ct": Task(
        name="totalseg-ct",
        labels={0: "background", 1: "liver", 2: "kidney_right", 3: "kidney_left", 4: "spleen"},
        regions=(Region("kidney", (2, 3)), Region("kidney_right", (2,)), Region("kidney_left", (3,))),
        description="TotalSegmentator subjects (CT): liver 1, right kidney 2, left kidney 3, spleen 4",
        colors={2: COLOR_KIDNEY_RIGHT, 3: COLOR_KIDNEY_LEFT, 1: (133, 153, 0), 4: (108, 113, 196)},
    ),
    "ct-abdomen": Task(
        name="ct-abdomen",
        labels={0: "background", 1: "kidney", 2: "tumor", 3: "cyst", 4: "liver", 5: "pancreas", 6: "spleen"},
        regions=(
            Region("kidney_and_masses", (1, 2, 3), KITS_TOLERANCES_MM["kidney_and_masses"]),
            Region("masses", (2, 3), KITS_TOLERANCES_MM["masses"]),
            Region("tumor", (2,), KITS_TOLERANCES_MM["tumor"]),
            Region("cyst", (3,), CYST_TOLERANCE_MM, optional=True),
        ),
        description="Model classes of CT trained on several data sets: kidney, tumour, cyst, liver, pancreas, spleen",
        colors={1: COLOR_KIDNEY, 2: COLOR_TUMOR, 3: COLOR_CYST, 4: (133, 153, 0), 5: (203, 75, 22),
                6: (108, 113, 196)},
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


def partial_label_groups(
    set_labels: Mapping[int, str],
    classes: Iterable[str],
    unions: Mapping[str, Iterable[str]] | None = None,
    *,
    where: str = "data set",
) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """How the labels of one data set relate to a model's classes (partial labels).

    Parameters
    ----------
    set_labels:
        The data set's label value -> name (its task's labels, any spelling).
    classes:
        The model's output classes by name, background first (``["background",
        "kidney", "tumor", "liver"]``); channel ``c`` is the ``c``-th name.
    unions:
        Optional declarations ``{set label name: [model class names]}`` for labels
        that merge model classes.  Without one the rule is: a kidney label
        (``kidney``, ``kidney_right``, ``kidney_left``) covers the model's kidney
        class *and* every lesion class (tumour, cyst) the data set does not label
        itself (CURVAS "kidney" = kidney + tumour + cyst; KiTS19 "kidney" = kidney,
        as KiTS19 labels tumour); a label named like a model class is that class.
        A label declared ``["background"]`` joins the set's background (an organ
        the data set labels and the model does not learn: CURVAS liver for a
        kidney-only model).
    where:
        Name of the data set, for errors.

    Returns
    -------
    list of ``(group name, set label values, model channels)``
        Group 0 is the data set's background: model background plus every model
        class the data set does not annotate (its pixels may be any of them).  The
        groups partition the model's channels.

    Raises
    ------
    KidneysegError
        A set label that names no model class (and has no declaration), or two
        labels claiming one model class.
    """
    from kidneyseg.errors import KidneysegError

    names = [canonical_label_name(c) for c in classes]
    if not names or names[0] != "background":
        raise KidneysegError("model classes must start with background", found=list(classes),
                             expected='["background", ...]', fix="put background first")
    index = {n: i for i, n in enumerate(names)}
    kidney_class = "kidney" if "kidney" in index else None
    labelled = {canonical_label_name(n) for v, n in set_labels.items() if int(v) != 0}
    declared = {canonical_label_name(k): [canonical_label_name(c) for c in v] for k, v in (unions or {}).items()}
    groups: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    taken: dict[int, str] = {}
    background: list[int] = [0]  # the set's values whose pixels are the background group's
    for v, raw in sorted(set_labels.items(), key=lambda kv: int(kv[0])):
        if int(v) == 0:
            continue
        n = canonical_label_name(raw)
        if declared.get(n) == ["background"]:
            background.append(int(v))
            continue
        if n in declared:
            members = declared[n]
        elif n in index:
            members = [n]
        elif n in ("kidney_right", "kidney_left") and kidney_class:
            members = [kidney_class]
        else:
            raise KidneysegError(f"label '{raw}' of {where} is not a model class", found=f"value {v} = {raw}",
                                 expected="one of " + ", ".join(names[1:]),
                                 fix=f'declare what it covers, e.g. "classes": {{"{raw}": ["kidney"]}} (or '
                                     f'{{"{raw}": ["background"]}} for an organ the model does not learn), '
                                     "or add it to the model's classes")
        if n in ("kidney", "kidney_right", "kidney_left") and n not in declared:
            members = members + [c for c in LESION_NAMES if c in index and c not in labelled]
        bad = [c for c in members if c not in index]
        if bad:
            raise KidneysegError(f"label '{raw}' of {where} is declared as unknown classes", found=bad,
                                 expected="model classes " + ", ".join(names[1:]), fix="fix the declaration")
        chans = tuple(sorted({index[c] for c in members}))
        same = [i for i, g in enumerate(groups) if g[2] == chans]
        if same:  # right and left kidney of a side-less model: one group of two values
            g = groups[same[0]]
            groups[same[0]] = (g[0], g[1] + (int(v),), g[2])
            continue
        for ch in chans:
            if ch in taken:
                raise KidneysegError(f"two labels of {where} claim the model class '{names[ch]}'",
                                     found=f"{taken[ch]} and {n}", expected="each model class in one label",
                                     fix="declare the merged labels explicitly")
            taken[ch] = n
        groups.append(("+".join(names[c] for c in chans), (int(v),), chans))
    bg = tuple(c for c in range(len(names)) if c not in taken)
    return [("+".join(names[c] for c in bg), tuple(background), bg), *groups]


#: Grey for labels no task colours (reports, DICOM-SEG, .seg.nrrd).
COLOR_UNKNOWN = (128, 128, 128)


def _colors_by_name() -> dict[str, tuple[int, int, int]]:
    out: dict[str, tuple[int, int, int]] = {}
    for task in TASKS.values():
        for value, rgb in task.colors.items():
            out.setdefault(canonical_label_name(task.labels.get(value, "")), rgb)
    return out


#: Canonical label name -> display colour (RGB 0..255), taken from the tasks' colours (first task naming it).
COLORS_BY_NAME: dict[str, tuple[int, int, int]] = _colors_by_name()


def color_of(name: object) -> tuple[int, int, int]:
    """Display colour (RGB 0..255) of a label called ``name`` (any spelling); grey when no task colours it."""
    return COLORS_BY_NAME.get(canonical_label_name(name), COLOR_UNKNOWN)


#: Spellings of evaluation-region names (canonical label names as keys) -> the region names of the tasks
#: they may stand for, in order of preference.  nnU-Net's KiTS "kidney" region is kidney + masses.
REGION_NAME_ALIASES: dict[str, tuple[str, ...]] = {
    "kidney": ("kidney_and_masses", "kidney", "capsule"),
    "kidney_and_masses": ("kidney_and_masses",),
    "kidney_and_mass": ("kidney_and_masses",),
    "kidney_and_tumor": ("kidney_and_masses",),
    "kidney_and_tumour": ("kidney_and_masses",),
    "masses": ("masses",),
    "tumor": ("tumor",),
    "cyst": ("cyst",),
    "foreground": ("foreground",),
}


def match_regions(regions: Mapping[str, Iterable[int]], *, candidates: Iterable[str] | None = None,
                  where: str = "data set") -> tuple[str, dict[int, int]]:
    """The task whose evaluation regions a region-based label declaration describes, and the value map.

    Parameters
    ----------
    regions:
        ``{region name: label values}`` as nnU-Net v2 region-based ``dataset.json`` declares them
        (``{"kidney": [1, 2, 3], "masses": [2, 3], "tumor": [2]}``; background left out).
    candidates:
        Task names to try, in order (default: every task of :data:`TASKS`).
    where:
        Name of the declaration, for errors.

    Returns
    -------
    ``(task name, {source value: task value})``
        The first candidate task whose regions are the declared ones (names through
        :data:`REGION_NAME_ALIASES`) and in which every source value has a task value lying in
        exactly the same regions: a value's meaning is the set of regions holding it (KiTS: in
        kidney only = kidney, in all three = tumour, in kidney and masses only = cyst).  A task's
        optional regions (:attr:`Region.optional`, kits23's ``cyst``) may be left out of the
        declaration; meanings are then read from the declared regions only.

    Raises
    ------
    KidneysegError
        No candidate task matches; the message lists the declaration and the tasks' regions.
    """
    from kidneyseg.errors import KidneysegError

    src = {canonical_label_name(n): frozenset(int(v) for v in vals) for n, vals in regions.items()}
    src.pop("background", None)
    values = sorted(set().union(*src.values())) if src else []
    names = list(TASKS) if candidates is None else list(candidates)
    for name in names:
        task = get_task(name)
        if not task.regions or any(r.labels is None for r in task.regions):
            continue
        tregions = {r.name: frozenset(r.labels or ()) for r in task.regions}
        required = {r.name for r in task.regions if not r.optional}
        rename: dict[str, str] = {}
        for n in src:
            options = [a for a in REGION_NAME_ALIASES.get(n, (n,)) if a in tregions and a not in rename.values()]
            if not options:
                break
            rename[n] = options[0]
        if len(rename) != len(src) or not required <= set(rename.values()):
            continue
        tregions = {r: v for r, v in tregions.items() if r in rename.values()}
        meaning: dict[frozenset[str], int] = {}
        for v in sorted(set().union(*tregions.values())):
            meaning.setdefault(frozenset(r for r, vals in tregions.items() if v in vals), v)
        lmap: dict[int, int] = {}
        for v in values:
            key = frozenset(rename[n] for n, vals in src.items() if v in vals)
            if key not in meaning:
                break
            lmap[v] = meaning[key]
        if len(lmap) == len(values) and len(set(lmap.values())) == len(lmap):
            return name, lmap
    declared = "; ".join(f"{n} {sorted(v)}" for n, v in src.items())
    known = "; ".join(f"{t}: " + ", ".join(f"{r.name} {list(r.labels or ())}" for r in get_task(t).regions)
                      for t in names if get_task(t).regions and all(r.labels is not None for r in get_task(t).regions))
    raise KidneysegError(f"the regions of {where} match no task's evaluation regions", found=declared,
                         expected=f"the regions of one of the tasks ({known})",
                         fix="pass the task (--task) and the value map (label_map) that fit the labels")


# More spellings of label names, as 3D Slicer segments and other tools name them (added to LABEL_NAME_ALIASES).
LABEL_NAME_ALIASES.update({
    "tumour_mass": "tumor", "renal_mass": "tumor", "kidney_mass": "tumor", "renal_tumor": "tumor",
    "renal_tumour": "tumor", "kidney_tumor": "tumor", "kidney_tumour": "tumor", "neoplasm": "tumor",
    "renal_neoplasm": "tumor",
    "renal_cyst": "cyst", "kidney_cyst": "cyst", "cysts": "cyst", "tumors": "tumor", "tumours": "tumor",
    "kidneys": "kidney", "kidney_r": "kidney_right", "kidney_l": "kidney_left",
    "r_kidney": "kidney_right", "l_kidney": "kidney_left",
})

#: Tasks tried, in order, for a label map known only by its label names (3D Slicer segment names).
NAME_TASK_ORDER = ("kits23", "chaos-mr", "ct-abdomen", "openkidney-us-regions", "binary")


def values_for_names(names: Iterable[str], *, candidates: Iterable[str] = NAME_TASK_ORDER,
                     where: str = "label map") -> tuple[str | None, dict[str, int]]:
    """The toolkit's label value of each label name that some task knows (any spelling).

    Returns ``(task, {name: value})``: the first of ``candidates`` whose labels hold every known
    name (``"Tumor"``, ``"Kidney"`` -> kits23 2 and 1; ``"Right kidney"`` -> chaos-mr 2).  Names
    no task knows (``"Segment_1"``, ``"Renal vein"``) are left out of the dict, and the task is
    ``None`` when no name is known.  Known names that no single task holds together raise
    :class:`~kidneyseg.errors.KidneysegError`.
    """
    from kidneyseg.errors import KidneysegError

    every = {canonical_label_name(n) for t in TASKS.values() for v, n in t.labels.items() if v != BACKGROUND}
    known = [n for n in names if canonical_label_name(n) in every]
    if not known:
        return None, {}
    tried = list(candidates)
    for name in tried:
        by_name = {canonical_label_name(n): v for v, n in get_task(name).labels.items() if v != BACKGROUND}
        if all(canonical_label_name(n) in by_name for n in known):
            return name, {n: by_name[canonical_label_name(n)] for n in known}
    raise KidneysegError(f"the label names of {where} belong to no single task", found=", ".join(known),
                         expected="the names of one of: " + "; ".join(
                             f"{t}: " + ", ".join(n for v, n in get_task(t).labels.items() if v != BACKGROUND)
                             for t in tried),
                         fix="rename the segments (3D Slicer: Segment Editor) after one label convention")
