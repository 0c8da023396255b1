"""Which label values a stage learns, and the label map -> channel index mapping.

Targets (``StageDef.target``):

``all``           every label value of the task; channel ``c`` = ``c``-th value.
``kidney``        kidney and its masses merged into one foreground (label value 1, "kidney").
``lesion``        the task's lesion values (tumour 2, cyst 3 where defined); the rest is background.
``kidney_tumor``  kidney-related values of the task (KiTS: 1, 2[, 3]; others: kidney merged to 1).
``boxes``         detector: kidney foreground (boxes derived from it).
"""

from __future__ import annotations

import numpy as np

from kidneyseg.errors import unknown_name
from kidneyseg.labels import BACKGROUND, CYST, KIDNEY, MR_KIDNEY_LEFT, MR_KIDNEY_RIGHT, TUMOR, get_task

TARGETS = ("all", "kidney", "lesion", "kidney_tumor", "boxes")


def kidney_values(task: str) -> tuple[int, ...]:
    """Label values that are kidney or inside the kidney (kidney + masses)."""
    if task == "chaos-mr":
        return (MR_KIDNEY_RIGHT, MR_KIDNEY_LEFT)
    if task in ("kits19", "kits23"):
        return tuple(v for v in (KIDNEY, TUMOR, CYST) if v in get_task(task).labels)
    return get_task(task).foreground_labels


def lesion_values(task: str) -> tuple[int, ...]:
    """Lesion (mass) label values of the task: tumour and cyst for KiTS, none elsewhere."""
    if task in ("kits19", "kits23"):
        return tuple(v for v in (TUMOR, CYST) if v in get_task(task).labels)
    return ()


def target_mapping(target: str, task: str) -> tuple[dict[int, int], list[int], dict[str, str]]:
    """``(value -> channel, channel_to_label, output labels)`` for a stage target.

    Values not in the mapping become channel 0 (background).
    """
    if target not in TARGETS:
        raise unknown_name("stage target", target, TARGETS)
    t = get_task(task)
    if target == "all":
        values = [BACKGROUND, *t.foreground_labels]
        return {v: i for i, v in enumerate(values)}, values, {str(v): t.labels[v] for v in values}
    if target in ("kidney", "boxes") or (target == "kidney_tumor" and task not in ("kits19", "kits23")):
        return ({v: 1 for v in kidney_values(task)}, [BACKGROUND, KIDNEY],
                {str(BACKGROUND): "background", str(KIDNEY): "kidney"})
    if target == "kidney_tumor":
        values = [BACKGROUND, *kidney_values(task)]
        return {v: i for i, v in enumerate(values)}, values, {str(v): t.labels[v] for v in values}
    les = lesion_values(task)
    values = [BACKGROUND, *les]
    return {v: i for i, v in enumerate(les, start=1)}, values, {str(v): t.labels[v] for v in values}


def to_channels(label: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Map label values to channel indices (uint8, same shape); unmapped values -> 0."""
    lut = np.zeros(max(256, int(label.max(initial=0)) + 1), dtype=np.uint8)
    for v, c in mapping.items():
        if 0 <= v < len(lut):
            lut[v] = c
    return lut[label.astype(np.int64)]


def partial_targets(set_labels: dict[int, str], classes: dict[int, str], unions: dict[str, list[str]] | None = None,
                    *, where: str = "data set") -> tuple[dict[int, int], np.ndarray, list[str]]:
    """Targets of a data set that labels only some of the model's classes (partial labels).

    ``set_labels``: the data set's value -> name; ``classes``: the model's label
    value -> name (channel ``c`` is the ``c``-th value in ascending order);
    ``unions``: declarations of merged labels (:func:`kidneyseg.labels.partial_label_groups`).

    Returns ``(value -> group index, groups, group names)``: ``groups`` is a
    ``(G, C)`` uint8 matrix whose row ``g`` marks the model channels that label
    group ``g`` covers (group 0: the set's background and every class it does not
    annotate).  A sample's label holds group indices; the marginal loss
    (:class:`kidneyseg.training.losses.DiceCE` with ``groups``) sums the channel
    probabilities of each group.
    """
    from kidneyseg.labels import partial_label_groups

    values = sorted(int(v) for v in classes)
    names = [classes[v] for v in values]
    groups = partial_label_groups(set_labels, names, unions, where=where)
    mat = np.zeros((len(groups), len(values)), np.uint8)
    mapping: dict[int, int] = {}
    for g, (_, vals, chans) in enumerate(groups):
        mat[g, list(chans)] = 1
        for v in vals:
            mapping[int(v)] = g
    mapping.pop(0, None)  # unmapped values (background) -> group 0
    return mapping, mat, [name for name, _, _ in groups]
