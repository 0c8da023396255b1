"""3D surface renderings of label maps (marching cubes + matplotlib 3D, Agg).

Surfaces are extracted with :func:`skimage.measure.marching_cubes` on the RAS
reoriented label map, in mm, so the picture has the patient's true
proportions.  Axes: x to the patient's right, y anterior, z superior.
The "anterior" view looks at the patient's front, so the patient's right is
on the viewer's left, as in the axial and coronal mosaics.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np

from kidneyseg.case import Case
from kidneyseg.labels import Task
from kidneyseg.reporting.overlay import colour_table, ras_arrays

# (title, elevation deg, azimuth deg) in matplotlib's convention.
VIEWS: tuple[tuple[str, float, float], ...] = (
    ("anterior view", 10.0, 90.0),
    ("right lateral view", 10.0, 0.0),
)

MAX_VOXELS_PER_SURFACE = 300_000


def surfaces(label_ras: np.ndarray, spacing: Sequence[float], values: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Triangle meshes ``{label: (vertices (V, 3) mm, faces (F, 3))}`` of a RAS label map.

    Each label is cropped to its bounding box and, when large, sampled with a
    coarser marching-cubes step so that about :data:`MAX_VOXELS_PER_SURFACE`
    voxels are visited.
    """
    from kidneyseg._optional import require

    measure = require("skimage.measure", "3D surface rendering")
    from kidneyseg.preprocessing.geometry import box_slices, nonzero_box
    from kidneyseg.reporting.overlay import bounding_box

    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    sp = np.asarray(spacing, dtype=float)
    box = bounding_box(label_ras != 0)
    origin = np.array([b.start for b in box])
    label_ras = label_ras[box]
    for v in values:
        m = label_ras == v
        vbox = nonzero_box(m) if m.sum() >= 2 else None
        if vbox is None:
            continue
        lo = np.array([b[0] for b in vbox])
        sub = np.pad(m[box_slices(vbox)], 1).astype(np.float32)
        step = max(1, math.ceil((sub.size / MAX_VOXELS_PER_SURFACE) ** (1 / 3)))
        try:
            verts, faces, _, _ = measure.marching_cubes(sub, 0.5, spacing=tuple(sp), step_size=step)
        except (ValueError, RuntimeError):
            continue
        verts = verts + (origin + lo - 1) * sp
        out[int(v)] = (verts, faces)
    return out


def render_surfaces_png(
    case: Case,
    label: np.ndarray,
    task: Task,
    *,
    views: Sequence[tuple[str, float, float]] = VIEWS,
    size_in: tuple[float, float] = (9.0, 4.2),
    dpi: int = 90,
) -> bytes | None:
    """PNG bytes of the label surfaces seen from ``views`` side by side, or ``None`` if nothing is labelled.

    ``label`` lies on ``case``'s grid (3D); it is reoriented to RAS first.
    Kidney surfaces are translucent so that tumours and cysts inside show.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    _, (lab,), spacing = ras_arrays(case, label)
    assert lab is not None  # label is an array, so is its RAS copy
    from kidneyseg.reporting.overlay import labels_present

    values = [v for v in labels_present(lab) if v != 0]
    meshes = surfaces(lab, spacing, values)
    if not meshes:
        return None
    colours = colour_table(task, values)
    allv = np.concatenate([v for v, _ in meshes.values()])
    lo, hi = allv.min(axis=0), allv.max(axis=0)
    centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1.0)
    fig = plt.figure(figsize=size_in, dpi=dpi)
    for n, (title, elev, azim) in enumerate(views):
        ax = fig.add_subplot(1, len(views), n + 1, projection="3d")
        for v, (verts, faces) in meshes.items():
            rgb = np.asarray(colours.get(v, (200, 200, 200))) / 255.0
            alpha = 0.22 if task.label_name(v).startswith("kidney") else 1.0
            coll = Poly3DCollection(verts[faces], facecolor=(*rgb, alpha), edgecolor="none")
            coll.set_facecolor((*rgb, alpha))
            ax.add_collection3d(coll)
        for set_lim, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre):
            set_lim(c - half, c + half)
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=elev, azim=azim)
        ax.set_xlabel("x mm (+ = R)", fontsize=7)
        ax.set_ylabel("y mm (+ = A)", fontsize=7)
        ax.set_zlabel("z mm (+ = S)", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
