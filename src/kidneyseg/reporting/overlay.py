"""Label overlays on image slices, laid out as mosaics, in radiological convention.

Display convention
------------------
Volumes are first reoriented to RAS (:func:`kidneyseg.preprocessing.geometry.reorient`),
so array axis 0 points to the patient's right, axis 1 to anterior and axis 2 to
superior.  Slices are then shown as a radiologist reads them:

========== ============================ ============================
plane      image rows (top -> bottom)    image columns (left -> right)
========== ============================ ============================
axial      anterior -> posterior         patient right -> patient left
coronal    superior -> inferior          patient right -> patient left
sagittal   superior -> inferior          anterior -> posterior
========== ============================ ============================

so the patient's right kidney appears on the *left* of axial and coronal
tiles, marked "R".  Every tile is resampled (nearest neighbour, the same
index map for image and label) to square display pixels of ``pixel_mm`` mm,
so anatomy keeps its true proportions whatever the voxel spacing.

2D images (``[row, col]``) are shown as they are stored.

Colours are the fixed per-label colours of :mod:`kidneyseg.labels`: inside a
label the pixel is ``(1 - alpha) * grey + alpha * colour``; the one-pixel
outline of each label is drawn in the pure colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from kidneyseg.case import Case
from kidneyseg.errors import GeometryError, InputError
from kidneyseg.labels import Task
from kidneyseg.preprocessing.geometry import box_slices, nonzero_box

PLANES = ("axial", "coronal", "sagittal")

# Axis of the RAS volume that each plane slices through.
PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}

# Direction letters at the (left, right, top, bottom) edges of a displayed tile.
PLANE_EDGES = {
    "axial": ("R", "L", "A", "P"),
    "coronal": ("R", "L", "S", "I"),
    "sagittal": ("A", "P", "S", "I"),
}

DEFAULT_ALPHA = 0.45


# ----------------------------------------------------------------------------- intensities


def display_window(image: np.ndarray, modality: str | None) -> tuple[float, float]:
    """Intensity window ``(low, high)`` used to show ``image`` in grey.

    CT (HU), or an image of unknown modality whose minimum is at most -500 and
    maximum at least 100 (air in HU): the soft-tissue window W400/L40, i.e.
    -160..240 HU.  MR, US and other images: the 1st..99th percentile of the non-constant image.
    """
    arr = np.asarray(image, dtype=np.float32)
    if modality == "ct" or (modality is None and arr.size and float(arr.min()) <= -500.0 and float(arr.max()) >= 100.0):
        # CT, or an unlabelled image whose air is at HU values
        return -160.0, 240.0
    if arr.size > 2_000_000:
        arr = arr.ravel()[:: arr.size // 2_000_000 + 1]
    lo, hi = np.percentile(arr, [1.0, 99.0])
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def shown_modality(case: Case) -> str | None:
    """The modality a case is shown as: its own (file header, DICOM, ``--modality``), else guessed.

    The guess is :func:`kidneyseg.default_models.guess_default_modality` (the rule ``kidneyseg predict``
    uses): a 2D image is ultrasound, a volume whose low intensities reach air in HU is CT; else None.
    """
    if case.modality:
        return str(case.modality)
    if case.image is None:
        return None
    from kidneyseg.default_models import guess_default_modality

    return guess_default_modality(case).modality


def window_text(window: tuple[float, float], modality: str | None) -> str:
    """``"-160..240 HU (W400/L40)"``: a display window as the report and the viewer state it."""
    lo, hi = window
    unit = " HU" if modality == "ct" else ""
    kind = "" if modality == "ct" else ", 1st..99th percentile"
    return f"{lo:.4g}..{hi:.4g}{unit} (W{hi - lo:.4g}/L{(hi + lo) / 2:.4g}{kind})"


def to_grey(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip ``image`` to ``window`` and scale to uint8 grey (any shape)."""
    lo, hi = window
    g = (np.asarray(image, dtype=np.float32) - lo) / max(hi - lo, 1e-6)
    return (np.clip(g, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------- geometry


def ras_arrays(case: Case, *others: np.ndarray | None) -> tuple[np.ndarray | None, list[np.ndarray | None], tuple[float, ...]]:
    """Reorient a 3D case (and label maps on its grid) to RAS.

    Parameters
    ----------
    case:
        The case as read; its ``image`` (or ``label``) sets the grid.
    others:
        Label maps ``(I, J, K)`` on the case's grid (``None`` entries pass through).

    Returns
    -------
    image_ras, [other_ras, ...], spacing_ras
        Arrays indexed ``[x (R), y (A), z (S)]`` and the voxel size in mm per axis.
    """
    moved, outs = _ras(case, *others)
    return moved.image, outs, moved.spacing


def _ras(case: Case, *others: np.ndarray | None) -> tuple[Case, list[np.ndarray | None]]:
    """:func:`ras_arrays` with the reoriented case itself (its ``affine`` maps RAS indices to mm)."""
    from kidneyseg.preprocessing.geometry import reorient

    for o in others:
        if o is not None and tuple(o.shape) != case.shape:
            raise GeometryError(
                "label map does not lie on the image grid",
                path=case.source,
                found=f"shape {tuple(o.shape)}",
                expected=f"shape {case.shape}",
                fix="pass the label map written for this image (same grid)",
            )
    moved = reorient(case, "RAS")
    op = moved.history[-1]
    outs: list[np.ndarray | None] = []
    for o in others:
        if o is None:
            outs.append(None)
            continue
        if op.params.get("transform") is None:
            outs.append(np.asarray(o))
        else:
            import nibabel as nib

            t = np.asarray(op.params["transform"], dtype=float)
            outs.append(np.ascontiguousarray(nib.orientations.apply_orientation(np.asarray(o), t)))
    return moved, outs


def slice_position_mm(affine_ras: np.ndarray, shape: Sequence[int], plane: str, index: int) -> float:
    """World coordinate (RAS mm) along the plane's axis of slice ``index`` of a RAS grid (at its centre voxel)."""
    ax = PLANE_AXIS[plane]
    v = (np.asarray(shape[:3], dtype=float) - 1) / 2
    v[ax] = index
    return float(np.asarray(affine_ras)[ax, :3] @ v + np.asarray(affine_ras)[ax, 3])


def scale_bar_mm(width_px: int, pixel_mm: float) -> float:
    """Length (mm) of a tile's scale bar: the longest of 1, 2, 5, 10 cm that fits in a third of the tile (1 cm at least)."""
    fits = [mm for mm in (10.0, 20.0, 50.0, 100.0) if mm / pixel_mm <= width_px / 3]
    return fits[-1] if fits else 10.0


def display_slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """Slice ``index`` of a RAS volume ``[x, y, z]`` as a 2D array in radiological display order.

    See the module docstring for the row/column directions per plane.
    """
    if plane not in PLANE_AXIS:
        raise InputError("unknown plane", found=plane, expected=" or ".join(PLANES))
    ax = PLANE_AXIS[plane]
    sl = volume[(slice(None),) * ax + (int(index),)]  # a view (np.take copies, slowly, along strided axes)
    # sl is [first remaining axis, second remaining axis]; both are displayed reversed and transposed:
    # axial [x, y] -> rows = -y (A at top), cols = -x (R at left); coronal [x, z]; sagittal [y, z].
    return sl[::-1, ::-1].T


def slice_spacing(spacing: Sequence[float], plane: str) -> tuple[float, float]:
    """(row mm, column mm) of a displayed slice of a RAS volume with voxel size ``spacing``."""
    ax = PLANE_AXIS[plane]
    rest = [s for i, s in enumerate(spacing) if i != ax]
    return float(rest[1]), float(rest[0])


def display_index_map(shape: tuple[int, int], spacing_rc: tuple[float, float], pixel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Source row and column indices that fill a tile with square ``pixel_mm`` display pixels.

    Returns ``(rows, cols)`` integer index vectors; ``tile = slice2d[np.ix_(rows, cols)]``.
    """
    out = []
    for n, s in zip(shape, spacing_rc):
        m = max(1, int(round(n * s / pixel_mm)))
        idx = np.floor((np.arange(m) + 0.5) * n / m).astype(np.int64)
        out.append(np.clip(idx, 0, n - 1))
    return out[0], out[1]


def grey_tile(grey: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Resample a uint8 grey slice to the tile given by the index vectors of :func:`display_index_map`.

    Where the tile has fewer pixels than the slice along an axis, pixels are
    box-averaged (Pillow ``BOX``) so that fine texture does not alias into
    speckle; otherwise the same nearest-neighbour index map as the labels is used.
    """
    h, w = len(rows), len(cols)
    if h >= grey.shape[0] and w >= grey.shape[1]:
        return grey[np.ix_(rows, cols)]
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(grey)).resize((w, h), Image.Resampling.BOX))


def choose_slices(mask: np.ndarray, axis: int, n: int) -> list[int]:
    """``n`` slice indices along ``axis`` spread evenly through the foreground of ``mask``.

    Slices are taken at the centres of ``n`` equal parts of the foreground's
    extent; with no foreground they spread over the whole axis.
    """
    size = mask.shape[axis]
    other = tuple(a for a in range(mask.ndim) if a != axis)
    present = np.flatnonzero(mask.any(axis=other)) if mask.any() else np.arange(size)
    n = max(1, min(n, len(present)))
    # quantiles of the slices that hold foreground, so gaps (between two kidneys) are skipped
    picks = [int(present[int((i + 0.5) * len(present) / n)]) for i in range(n)]
    return sorted(set(picks))


# ----------------------------------------------------------------------------- colouring


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """Slices of the smallest box holding every True voxel of ``mask``, grown by ``margin`` voxels
    (:func:`kidneyseg.preprocessing.geometry.nonzero_box`); the whole array if none."""
    box = nonzero_box(mask, margin)
    return box_slices(box) if box is not None else tuple(slice(0, n) for n in mask.shape)


def labels_present(label: np.ndarray | None) -> list[int]:
    """Sorted label values occurring in ``label`` (fast for uint8 maps: one bincount, no sort)."""
    if label is None:
        return []
    arr = np.asarray(label)
    if arr.dtype == np.uint8:
        # order="K": no copy for Fortran-ordered arrays (nibabel's)
        return [int(v) for v in np.flatnonzero(np.bincount(arr.ravel(order="K"), minlength=256))]
    return [int(v) for v in np.unique(arr)]


def colour_table(task: Task, labels_present: Sequence[int] = ()) -> dict[int, tuple[int, int, int]]:
    """RGB colour per label value: the task's fixed colours, grey-free fallbacks for the rest."""
    fallback = [(255, 127, 14), (148, 103, 189), (140, 86, 75), (227, 119, 194), (23, 190, 207)]
    table = dict(task.colors)
    extra = [int(v) for v in labels_present if int(v) != 0 and int(v) not in table]
    for i, v in enumerate(sorted(extra)):
        table[v] = fallback[i % len(fallback)]
    return table


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with at least one 4-neighbour outside it."""
    pad = np.pad(mask, 1, constant_values=False)
    inner = pad[1:-1, 1:-1] & pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    return mask & ~inner


def blend(
    grey: np.ndarray,
    label: np.ndarray | None,
    colours: dict[int, tuple[int, int, int]],
    *,
    alpha: float = DEFAULT_ALPHA,
    outline: bool = True,
) -> np.ndarray:
    """Colour a grey tile ``(rows, cols)`` uint8 with a label tile of the same shape.

    Returns RGB uint8 ``(rows, cols, 3)``: ``(1 - alpha) * grey + alpha * colour``
    inside each label, the pure colour on its outline (when ``outline``).
    """
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    if label is not None:
        for value, colour in colours.items():
            m = label == value
            if not m.any():
                continue
            c = np.asarray(colour, dtype=np.float32)
            rgb[m] = (1.0 - alpha) * rgb[m] + alpha * c
            if outline:
                rgb[_outline(m)] = c
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- mosaics


@dataclass
class Tile:
    """Where one slice lies in a mosaic (pixel box) and what it shows."""

    plane: str
    index: int  # slice index along the plane's RAS axis (or 0 for 2D)
    top: int
    left: int
    rows: np.ndarray  # source row index per tile row, in the cropped display slice
    cols: np.ndarray  # source column index per tile column, in the cropped display slice
    row0: int = 0  # row of the full display slice where the crop starts
    col0: int = 0  # column of the full display slice where the crop starts

    @property
    def height(self) -> int:
        return int(len(self.rows))

    @property
    def width(self) -> int:
        return int(len(self.cols))


@dataclass
class Mosaic:
    """An RGB mosaic ``(H, W, 3)`` uint8 and the tiles it holds."""

    plane: str
    rgb: np.ndarray
    tiles: list[Tile] = field(default_factory=list)
    pixel_mm: float = 0.0  # display pixel size of the tiles
    window: tuple[float, float] | None = None  # grey window of the image (its units: HU for CT)


TITLE_H = 17  # pixel rows above each tile for "z = 12" style captions and edge letters
GAP = 8


def _draw_text(rgb: np.ndarray, texts: list[tuple[int, int, str, tuple[int, int, int]]]) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    im = Image.fromarray(rgb)
    d = ImageDraw.Draw(im)
    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        font = ImageFont.load_default()
    for x, y, text, colour in texts:
        d.text((x, y), text, fill=colour, font=font)
    return np.asarray(im).copy()


def mosaic(
    grey_slices: Sequence[np.ndarray],
    label_slices: Sequence[np.ndarray | None],
    spacing_rc: tuple[float, float],
    colours: dict[int, tuple[int, int, int]],
    *,
    plane: str,
    indices: Sequence[int],
    pixel_mm: float,
    columns: int = 4,
    alpha: float = DEFAULT_ALPHA,
    edges: tuple[str, str, str, str] | None = None,
    captions: Sequence[str] | None = None,
    origin: tuple[int, int] = (0, 0),
    scale_bar: bool = False,
) -> Mosaic:
    """Lay out coloured display slices in a grid.

    Parameters
    ----------
    grey_slices, label_slices:
        2D display-order slices (uint8 grey, integer labels), all the same shape.
    spacing_rc:
        (row mm, column mm) of those slices.
    pixel_mm:
        Display pixel size in mm; tiles are resampled to it (nearest neighbour).
    edges:
        Letters (left, right, top, bottom) written at the tile edges, e.g. ("R", "L", "A", "P").
    origin:
        (row, column) of the full display slice where the given (cropped) slices start.
    scale_bar:
        Draw a white bar of :func:`scale_bar_mm` (1, 2, 5 or 10 cm) with its length at the bottom left of each tile.
    """
    if not grey_slices:
        raise InputError("no slices to show", expected="at least one slice")
    rows, cols = display_index_map(grey_slices[0].shape, spacing_rc, pixel_mm)
    h, w = len(rows), len(cols)
    n = len(grey_slices)
    ncol = max(1, min(columns, n))
    nrow = (n + ncol - 1) // ncol
    H = nrow * (h + TITLE_H) + (nrow - 1) * GAP
    W = ncol * w + (ncol - 1) * GAP
    canvas = np.zeros((H, W, 3), dtype=np.uint8)
    tiles: list[Tile] = []
    texts: list[tuple[int, int, str, tuple[int, int, int]]] = []
    for t, (g, lab) in enumerate(zip(grey_slices, label_slices)):
        r, c = divmod(t, ncol)
        top = r * (h + TITLE_H + GAP) + TITLE_H
        left = c * (w + GAP)
        gt = grey_tile(g, rows, cols)
        lt = None if lab is None else lab[np.ix_(rows, cols)]
        canvas[top : top + h, left : left + w] = blend(gt, lt, colours, alpha=alpha)
        tiles.append(Tile(plane, int(indices[t]), top, left, rows, cols, int(origin[0]), int(origin[1])))
        cap = captions[t] if captions is not None else f"{plane} {indices[t]}"
        texts.append((left + 2, top - TITLE_H + 2, cap, (220, 220, 220)))
        if edges is not None:
            le, ri, to, bo = edges
            texts.append((left + 3, top + h // 2 - 7, le, (255, 255, 0)))
            texts.append((left + w - 11, top + h // 2 - 7, ri, (255, 255, 0)))
            texts.append((left + w // 2 - 4, top + 1, to, (255, 255, 0)))
            texts.append((left + w // 2 - 4, top + h - 15, bo, (255, 255, 0)))
        if scale_bar:
            mm = scale_bar_mm(w, pixel_mm)
            n_px = max(2, int(round(mm / pixel_mm)))
            canvas[top + h - 5 : top + h - 3, left + 4 : min(left + w - 2, left + 4 + n_px)] = 255
            texts.append((left + 4, top + h - 19, f"{mm / 10:g} cm", (255, 255, 255)))
    canvas = _draw_text(canvas, texts)
    return Mosaic(plane, canvas, tiles, pixel_mm=float(pixel_mm))


def display_crop(volume_grey: np.ndarray, keep: np.ndarray | None, plane: str, margin: int = 3) -> tuple[slice, slice]:
    """Rows and columns of the display slices of ``plane`` that hold the body (and ``keep``).

    The body is every voxel brighter than near-black in the grey RAS volume
    (air and the field of view outside the patient are cut away); ``keep``
    (labels) is always inside.  ``margin`` voxels are added on each side.
    """
    mask = volume_grey > 8
    if keep is not None:
        mask = mask | keep
    box = bounding_box(mask, margin)
    ax = PLANE_AXIS[plane]
    a, b = [i for i in range(3) if i != ax]
    na, nb = mask.shape[a], mask.shape[b]
    # display rows run along axis b reversed, columns along axis a reversed (see display_slice)
    return slice(nb - box[b].stop, nb - box[b].start), slice(na - box[a].stop, na - box[a].start)


def auto_pixel_mm(shape_rc: tuple[int, int], spacing_rc: tuple[float, float], target_px: int = 220) -> float:
    """Display pixel size (mm) so that the longer side of a tile is about ``target_px`` pixels."""
    extent = max(shape_rc[0] * spacing_rc[0], shape_rc[1] * spacing_rc[1])
    return max(extent / target_px, 1e-3)


def volume_mosaics(
    case: Case,
    label: np.ndarray | None,
    task: Task,
    *,
    focus: np.ndarray | None = None,
    n_slices: dict[str, int] | None = None,
    alpha: float = DEFAULT_ALPHA,
    tile_px: int = 220,
) -> dict[str, Mosaic]:
    """Axial, coronal and sagittal overlay mosaics of a 3D case through the labelled region.

    Parameters
    ----------
    case:
        The image as read (``case.image`` shape ``(I, J, K)``, any orientation).
    label:
        Label map on the case's grid, or ``None`` for the image alone.
    focus:
        Mask on the case's grid whose extent picks the slices (default: ``label != 0``).
    n_slices:
        Slices per plane, default ``{"axial": 8, "coronal": 4, "sagittal": 4}``.
    """
    if case.image is None or case.ndim != 3:
        raise InputError("volume_mosaics needs a 3D image", path=case.source, found=f"{case.ndim}D",
                         expected="3D", fix="use image_mosaic for 2D images")
    counts = {"axial": 8, "coronal": 4, "sagittal": 4, **(n_slices or {})}
    if focus is None and label is not None:
        focus = label != 0
    moved, (lab, foc) = _ras(case, label, focus)
    image, spacing = moved.image, moved.spacing
    if image is None:  # pragma: no cover - case.image checked above
        raise InputError("case has no image", path=case.source)
    window = display_window(image, shown_modality(case))
    grey = to_grey(image, window)
    foc_mask = np.zeros(grey.shape, bool) if foc is None else foc.astype(bool)
    present = labels_present(lab)
    colours = colour_table(task, present)
    out: dict[str, Mosaic] = {}
    for plane in PLANES:
        ax = PLANE_AXIS[plane]
        idx = choose_slices(foc_mask, ax, counts[plane])
        rr, cc = display_crop(grey, foc_mask, plane)
        gs = [display_slice(grey, plane, i)[rr, cc] for i in idx]
        ls = [None if lab is None else display_slice(lab, plane, i)[rr, cc] for i in idx]
        sp = slice_spacing(spacing, plane)
        px = auto_pixel_mm(gs[0].shape, sp, tile_px)
        pos = [slice_position_mm(moved.affine, grey.shape, plane, i) for i in idx]
        out[plane] = mosaic(gs, ls, sp, colours, plane=plane, indices=idx, pixel_mm=px, origin=(rr.start, cc.start),
                            columns=4, alpha=alpha, edges=PLANE_EDGES[plane], scale_bar=True,
                            captions=[f"{'xyz'[ax]}={i}  {p:+.1f} mm" for i, p in zip(idx, pos)])
        out[plane].window = window
    return out


def image_mosaic(case: Case, label: np.ndarray | None, task: Task, *, alpha: float = DEFAULT_ALPHA,
                 tile_px: int = 360) -> Mosaic:
    """The 2D equivalent: one tile of a ``[row, col]`` image with its overlay, as stored."""
    if case.image is None or case.ndim != 2:
        raise InputError("image_mosaic needs a 2D image", path=case.source, found=f"{case.ndim}D", expected="2D")
    grey = to_grey(case.image, display_window(case.image, case.modality))
    sp = (float(case.spacing[0]), float(case.spacing[1]))
    px = auto_pixel_mm(grey.shape, sp, max(tile_px, min(512, max(grey.shape))))
    colours = colour_table(task, labels_present(label))
    return mosaic([grey], [label], sp, colours, plane="image", indices=[0], pixel_mm=px, columns=1,
                  alpha=alpha, captions=["image (as stored)"])


# ----------------------------------------------------------------------------- agreement

AGREE, FALSE_POSITIVE, FALSE_NEGATIVE, WRONG_CLASS = 1, 2, 3, 4
AGREEMENT_NAMES = {
    AGREE: "agreement (same label)",
    FALSE_POSITIVE: "false positive (prediction only)",
    FALSE_NEGATIVE: "false negative (reference only)",
    WRONG_CLASS: "wrong class (both labelled, different labels)",
}
AGREEMENT_COLOURS = {
    AGREE: (0, 200, 0),
    FALSE_POSITIVE: (255, 150, 0),
    FALSE_NEGATIVE: (0, 160, 255),
    WRONG_CLASS: (255, 0, 255),
}


def agreement_map(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-voxel agreement code of two label maps of the same shape (uint8, same shape).

    0 both background; 1 same non-zero label; 2 false positive (pred only);
    3 false negative (reference only); 4 wrong class (both non-zero, different).
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise GeometryError("prediction and reference shapes differ", found=pred.shape, expected=ref.shape,
                            fix="compare label maps on the same grid")
    out = np.zeros(pred.shape, dtype=np.uint8)
    p, r = pred != 0, ref != 0
    out[p & r & (pred == ref)] = AGREE
    out[p & ~r] = FALSE_POSITIVE
    out[~p & r] = FALSE_NEGATIVE
    out[p & r & (pred != ref)] = WRONG_CLASS
    return out


def agreement_mosaic(case: Case, pred: np.ndarray, ref: np.ndarray, task: Task, *, n: int = 4,
                     alpha: float = 0.6, tile_px: int = 220) -> Mosaic:
    """Rows of (reference, prediction, agreement) tiles on the slices with the most disagreement.

    3D cases use axial slices of the RAS volume (radiological display); 2D images
    one row.  Agreement colours are :data:`AGREEMENT_COLOURS`.
    """
    colours = colour_table(task, sorted(set(labels_present(pred)) | set(labels_present(ref))))
    case_image = case.require_image()
    if case.ndim == 2:
        grey = to_grey(case_image, display_window(case_image, case.modality))
        sp = (float(case.spacing[0]), float(case.spacing[1]))
        idx = [0]
        origin = (0, 0)
        gs, rs, ps = [grey], [np.asarray(ref)], [np.asarray(pred)]
        edges = None
    else:
        image, (p3, r3), spacing = ras_arrays(case, pred, ref)
        # the case has an image and pred, ref are arrays, so their RAS copies are arrays too
        assert image is not None and p3 is not None and r3 is not None
        grey3 = to_grey(image, display_window(image, case.modality))
        box = bounding_box((p3 != 0) | (r3 != 0))
        disagree = np.zeros(p3.shape, np.uint8)
        disagree[box] = agreement_map(p3[box], r3[box])
        bad = ((disagree >= 2).sum(axis=(0, 1))).astype(float)
        # slices through the labelled extent, preferring the ones with most disagreement
        spread = choose_slices(disagree > 0, 2, n)
        worst = [int(k) for k in np.argsort(-bad, kind="stable") if bad[k] > 0][:n]
        # the worst slices first, then evenly spread labelled slices to fill up to n
        idx = sorted(set(worst + [k for k in spread if k not in worst][: max(0, n - len(worst))]))
        rr, cc = display_crop(grey3, (p3 != 0) | (r3 != 0), "axial")
        origin = (rr.start, cc.start)
        gs = [display_slice(grey3, "axial", k)[rr, cc] for k in idx]
        rs = [display_slice(r3, "axial", k)[rr, cc] for k in idx]
        ps = [display_slice(p3, "axial", k)[rr, cc] for k in idx]
        sp = slice_spacing(spacing, "axial")
        edges = PLANE_EDGES["axial"]
    px = auto_pixel_mm(gs[0].shape, sp, tile_px)
    rows, cols = display_index_map(gs[0].shape, sp, px)
    tiles_rgb: list[np.ndarray] = []
    for g, r, p in zip(gs, rs, ps):
        gt = grey_tile(g, rows, cols)
        tiles_rgb.append(blend(gt, r[np.ix_(rows, cols)], colours, alpha=0.45))
        tiles_rgb.append(blend(gt, p[np.ix_(rows, cols)], colours, alpha=0.45))
        tiles_rgb.append(blend(gt, agreement_map(p, r)[np.ix_(rows, cols)], AGREEMENT_COLOURS,
                               alpha=alpha, outline=False))
    h, w = len(rows), len(cols)
    nrow = len(idx)
    H = nrow * (h + TITLE_H) + (nrow - 1) * GAP
    W = 3 * w + 2 * GAP
    canvas = np.zeros((H, W, 3), dtype=np.uint8)
    texts = []
    tiles = []
    for t, rgb in enumerate(tiles_rgb):
        row, c = divmod(t, 3)
        top = row * (h + TITLE_H + GAP) + TITLE_H
        left = c * (w + GAP)
        canvas[top : top + h, left : left + w] = rgb
        tiles.append(Tile("agreement", idx[row], top, left, rows, cols, int(origin[0]), int(origin[1])))
        name = ("reference", "prediction", "agreement")[c]
        cap = name if case.ndim == 2 else f"{name} z={idx[row]}"
        texts.append((left + 2, top - TITLE_H + 2, cap, (220, 220, 220)))
        if edges is not None:
            texts.append((left + 3, top + h // 2 - 7, edges[0], (255, 255, 0)))
            texts.append((left + w - 11, top + h // 2 - 7, edges[1], (255, 255, 0)))
    return Mosaic("agreement", _draw_text(canvas, texts), tiles)
