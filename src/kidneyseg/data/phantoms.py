"""Synthetic CT, MR and ultrasound phantoms, deterministic by seed, written in the adapters' layouts.

CT (:func:`ct_phantom`)
    An abdomen on an LAS grid (array axis 0 -> patient Left, 1 -> Anterior,
    2 -> Superior, as in CHAOS; so the *right* kidney lies at low ``i``): skin,
    subcutaneous fat, muscle wall, spine (cortical bone, marrow, discs, canal),
    paraspinal and psoas muscles, ribs, aorta, IVC, liver (patient right),
    spleen (patient left), lung bases, bowel-like texture with gas and fluid, and
    two kidneys in perirenal fat: enhancing cortex (~175 HU), medulla (~110 HU),
    renal sinus fat and pelvis, with a heterogeneous tumour (30-120 HU, necrotic
    core) and a cyst (~8 HU).  Noise (correlated, ~12 HU) and partial-volume blur.
    Labels (kits23): 0 background, 1 kidney, 2 tumour, 3 cyst.
MR (:func:`mr_phantom`)
    The same anatomy with T2 fat-suppressed (CHAOS T2-SPIR-like) contrast, a
    smooth coil bias field and Rician noise; labels in the chaos-mr convention
    (1 liver, 2 right kidney, 3 left kidney, 4 spleen; masses count as kidney).
US (:func:`us_phantom`)
    A 2D fan-shaped B-mode image: tissue echogenicity sampled on beams, Rayleigh
    speckle (complex Gaussian scatterers convolved with the pulse), specular
    capsule echo, depth attenuation with partial TGC, a rib with its acoustic
    shadow, 50 dB log compression and scan conversion.  Labels: capsule 1, and
    regions (1 central echo complex, 2 medulla, 3 cortex).

Real shapes
    With ``shapes_root`` (the shared data folder: ``kits23_masks/`` and
    ``kidneyus_masks/``) kidney, tumour and cyst shapes come from real KiTS23
    masks and kidney outlines from the Open Kidney capsule masks; otherwise the
    shapes are parametric.  :func:`find_shapes_root` looks for ``../shared/data``
    from the current folder.  Nothing is downloaded.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from kidneyseg.errors import InputError, unknown_name
from kidneyseg.labels import (
    CYST,
    KIDNEY,
    MR_KIDNEY_LEFT,
    MR_KIDNEY_RIGHT,
    MR_LIVER,
    MR_SPLEEN,
    TUMOR,
    US_CENTRAL_ECHO_COMPLEX,
    US_CORTEX,
    US_MEDULLA,
    get_task,
)

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- tissues

TISSUES = (
    "air", "skin", "fat", "muscle", "cortical_bone", "marrow", "canal", "disc", "liver", "spleen", "aorta", "ivc",
    "bowel_wall", "bowel_fluid", "gas", "cortex", "medulla", "sinus_fat", "pelvis", "tumor", "necrosis", "cyst",
    "lung", "table",
)
T = {name: i for i, name in enumerate(TISSUES)}

# mean HU (portal-venous / late corticomedullary phase) and texture amplitude (HU)
CT_HU = {
    "air": (-1000, 0), "skin": (40, 5), "fat": (-100, 8), "muscle": (50, 6), "cortical_bone": (750, 60),
    "marrow": (230, 50), "canal": (20, 4), "disc": (85, 8), "liver": (110, 6), "spleen": (120, 6),
    "aorta": (190, 4), "ivc": (140, 6), "bowel_wall": (70, 10), "bowel_fluid": (18, 8), "gas": (-880, 40),
    "cortex": (175, 8), "medulla": (105, 10), "sinus_fat": (-75, 10), "pelvis": (12, 4), "tumor": (80, 30),
    "necrosis": (32, 8), "cyst": (8, 3), "lung": (-850, 25), "table": (120, 10),
}
# T2 fat-suppressed (CHAOS T2-SPIR-like) signal, arbitrary units ~0..1000
MR_T2 = {
    "air": (0, 0), "skin": (160, 20), "fat": (70, 15), "muscle": (95, 10), "cortical_bone": (15, 5),
    "marrow": (90, 20), "canal": (900, 30), "disc": (380, 40), "liver": (170, 15), "spleen": (360, 25),
    "aorta": (35, 10), "ivc": (60, 15), "bowel_wall": (220, 40), "bowel_fluid": (700, 80), "gas": (10, 5),
    "cortex": (340, 25), "medulla": (470, 30), "sinus_fat": (80, 15), "pelvis": (850, 30), "tumor": (420, 90),
    "necrosis": (650, 60), "cyst": (920, 30), "lung": (20, 8), "table": (0, 0),
}


@dataclass
class Phantom:
    """A generated case: image, label, affine (voxel -> RAS mm) and what it contains."""

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    modality: str
    task: str
    name: str
    info: dict[str, Any] = field(default_factory=dict)
    regions: np.ndarray | None = None  # US only: 1 central echo complex, 2 medulla, 3 cortex

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm per array axis."""
        sp = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return tuple(float(s) for s in sp[: self.image.ndim])


def find_shapes_root(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The shared data folder with real masks (``../shared/data`` from ``start``/cwd, or $KIDNEYSEG_SHARED_DATA)."""
    env = os.environ.get("KIDNEYSEG_SHARED_DATA")
    cands = [Path(env)] if env else []
    base = Path(start) if start else Path.cwd()
    cands += [base / "shared" / "data", base.parent / "shared" / "data", base / ".." / ".." / "shared" / "data"]
    for c in cands:
        if (c / "kits23_masks").is_dir() or (c / "kidneyus_masks").is_dir():
            return c.resolve()
    return None


# ----------------------------------------------------------------------------- helpers


def _grid(shape: tuple[int, ...], spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Centred LAS affine and per-axis coordinates (mm) of voxel centres.

    Array axis 0 runs towards the patient's Left (NIfTI RAS+ world x runs towards
    the patient's Right, so the affine's x column is negative), axis 1 towards
    Anterior, axis 2 towards Superior.  The returned coordinates follow the array
    axes: ``x`` grows towards the patient's left.
    """
    affine = np.eye(4)
    for a, (n, s) in enumerate(zip(shape, spacing)):
        sign = -1.0 if a == 0 else 1.0
        affine[a, a] = sign * s
        affine[a, 3] = -sign * (n - 1) / 2.0 * s
    coords = [((np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * s) for n, s in zip(shape, spacing)]
    return affine, coords  # type: ignore[return-value]


def _upsample_linear(f: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Separable linear interpolation of ``f`` onto ``shape`` (corner-aligned), one axis at a time."""
    out = f.astype(np.float32, copy=False)
    for ax, n in enumerate(shape):
        m = out.shape[ax]
        pos = np.linspace(0, m - 1, n, dtype=np.float32)
        i0 = np.minimum(pos.astype(np.int64), m - 2)
        w = (pos - i0).astype(np.float32).reshape([-1 if a == ax else 1 for a in range(out.ndim)])
        lo = np.take(out, i0, axis=ax)
        hi = np.take(out, i0 + 1, axis=ax)
        hi -= lo
        hi *= w
        hi += lo
        out = hi
    return out.astype(np.float32, copy=False)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], factor: int, sigma: float = 1.2) -> np.ndarray:
    """Smooth zero-mean unit-std random field at ``shape``, built at 1/``factor`` resolution."""
    from scipy import ndimage

    small = tuple(max(3, n // factor + 2) for n in shape)
    f = ndimage.gaussian_filter(rng.standard_normal(small).astype(np.float32), sigma)
    f /= f.std() + 1e-6
    return _upsample_linear(f, shape)


def _ell(x, y, z, c, semi, rot=None):
    """Ellipsoid restricted to its bounding box: ``(slices, boolean sub-mask)`` on the 1D coordinate axes."""
    r = max(semi)
    sl = []
    for coord, cc in zip((x, y, z), c):
        idx = np.flatnonzero(np.abs(coord - cc) <= r)
        sl.append(slice(int(idx[0]), int(idx[-1]) + 1) if len(idx) else slice(0, 0))
    sl = tuple(sl)
    X, Y, Z = x[sl[0]][:, None, None], y[sl[1]][None, :, None], z[sl[2]][None, None, :]
    return sl, _ellipsoid(X, Y, Z, c, semi, rot)


def _ellipsoid(X, Y, Z, c, semi, rot=None):
    """Boolean ellipsoid on broadcast coordinate arrays; ``rot`` a 3x3 world->local matrix."""
    dx, dy, dz = X - c[0], Y - c[1], Z - c[2]
    if rot is not None:
        lx = rot[0, 0] * dx + rot[0, 1] * dy + rot[0, 2] * dz
        ly = rot[1, 0] * dx + rot[1, 1] * dy + rot[1, 2] * dz
        lz = rot[2, 0] * dx + rot[2, 1] * dy + rot[2, 2] * dz
        dx, dy, dz = lx, ly, lz
    return (dx / semi[0]) ** 2 + (dy / semi[1]) ** 2 + (dz / semi[2]) ** 2 <= 1.0


def _rot(ax: str, deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    if ax == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if ax == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _box(center_vox, half, shape):
    return tuple(slice(max(0, int(c - h)), min(n, int(c + h) + 1)) for c, h, n in zip(center_vox, half, shape))


# ----------------------------------------------------------------------------- kidney shapes


@dataclass
class KidneyShape:
    """A kidney label crop on the phantom grid: 1 parenchyma, 2 tumour, 3 cyst (uint8, RAS axes)."""

    crop: np.ndarray
    source: str


def _parametric_kidney(spacing, rng, side: int) -> KidneyShape:
    """Bean-shaped kidney (semi-axes ~ 28 x 22 x 55 mm) with a medial hilum notch. ``side`` -1 right, +1 left."""
    a, b, c = rng.uniform(25, 30), rng.uniform(20, 24), rng.uniform(50, 58)
    half = [int(np.ceil(70 / s)) for s in spacing]
    xs = [(np.arange(-h, h + 1, dtype=np.float32) * s) for h, s in zip(half, spacing)]
    X, Y, Z = xs[0][:, None, None], xs[1][None, :, None], xs[2][None, None, :]
    # upper pole medial and posterior; hilum turned anteromedially
    rot = _rot("z", -side * rng.uniform(20, 35)) @ _rot("y", side * rng.uniform(8, 18)) @ _rot("x", rng.uniform(-12, -4))
    rot = rot.T
    kid = _ellipsoid(X, Y, Z, (0, 0, 0), (a, b, c), rot)
    lx = rot[0, 0] * X + rot[0, 1] * Y + rot[0, 2] * Z
    ly = rot[1, 0] * X + rot[1, 1] * Y + rot[1, 2] * Z
    lz = rot[2, 0] * X + rot[2, 1] * Y + rot[2, 2] * Z
    notch = (-side * lx > 0.35 * a) & ((lz / (0.42 * c)) ** 2 + (ly / (0.55 * b)) ** 2 < 1)
    crop = (kid & ~notch).astype(np.uint8)
    idx = [np.flatnonzero(crop.any(axis=tuple(b for b in range(3) if b != a))) for a in range(3)]
    crop = crop[tuple(slice(max(0, i[0] - 1), i[-1] + 2) for i in idx)]
    return KidneyShape(np.ascontiguousarray(crop), "parametric")


def _real_kidneys(root: Path, rng: np.random.Generator, spacing) -> list[KidneyShape] | None:
    """Right and left kidney crops (with masses) from one real KiTS23 mask, resampled to ``spacing``."""
    import nibabel as nib
    from scipy import ndimage

    files = sorted((root / "kits23_masks").glob("case_*.nii.gz"), key=lambda p: (p.stat().st_size, p.name))
    if not files:
        return None
    small = files[: max(1, int(len(files) * 0.4))]  # thick-slice cases load fastest
    path = small[int(rng.integers(len(small)))]
    img = cast(nib.Nifti1Image, nib.load(str(path)))  # KiTS23 masks are NIfTI-1; nib.load is typed as FileBasedImage
    arr = np.asanyarray(img.dataobj).astype(np.uint8)
    ornt = nib.orientations.io_orientation(img.affine)
    arr = nib.orientations.apply_orientation(arr, nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt("LAS")))
    src_sp = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))[ornt[:, 0].astype(int).argsort()]
    # decimate (nearest) to about the phantom spacing first: labelling a 512x512xN mask is slow
    step = [max(1, int(t // s)) for s, t in zip(src_sp, spacing)]
    arr = np.ascontiguousarray(arr[::step[0], ::step[1], ::step[2]])
    src_sp = src_sp * np.asarray(step)
    # components at a coarse level are enough to tell the two kidneys apart
    lab, n = ndimage.label(arr > 0)
    if n == 0:
        return None
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    order = np.argsort(sizes)[::-1][:2]
    objs = ndimage.find_objects(lab)
    shapes: list[tuple[float, KidneyShape]] = []
    for idx in order:
        if sizes[idx] == 0 or (shapes and sizes[idx] < 0.3 * sizes[order[0]]):
            continue
        sl = objs[idx - 1]
        crop = np.where(lab[sl] == idx, arr[sl], 0).astype(np.uint8)
        zoom = [s / t for s, t in zip(src_sp, spacing)]
        crop = ndimage.zoom(crop, zoom, order=0)
        cx = (sl[0].start + sl[0].stop) / 2.0
        shapes.append((cx, KidneyShape(np.ascontiguousarray(crop), f"{path.name} component {len(shapes) + 1}")))
    if not shapes:
        return None
    if len(shapes) == 1:  # single kidney (e.g. after nephrectomy): mirror it for the other side
        cx, s = shapes[0]
        mirrored = KidneyShape(np.ascontiguousarray(np.where(s.crop[::-1] == KIDNEY, KIDNEY, 0).astype(np.uint8)), s.source + " mirrored")
        shapes.append((arr.shape[0] - cx, mirrored))
    shapes.sort(key=lambda t: t[0])  # LAS: low i = patient right
    return [s for _, s in shapes]


def _add_sphere_mass(crop: np.ndarray, spacing, rng, value: int, radius_mm: float, avoid: np.ndarray | None = None) -> np.ndarray:
    """Put a spherical mass centred on the kidney surface (half exophytic); returns the grown crop."""
    from scipy import ndimage

    kid = crop > 0
    surface = kid & ~ndimage.binary_erosion(kid)
    if avoid is not None:
        surface &= ~ndimage.binary_dilation(avoid, iterations=3)
    pts = np.argwhere(surface)
    if len(pts) == 0:
        pts = np.argwhere(kid)
    centre = pts[int(rng.integers(len(pts)))]
    pad = [int(np.ceil(radius_mm / s)) + 1 for s in spacing]
    crop = np.pad(crop, [(p, p) for p in pad])
    centre = centre + np.asarray(pad)
    half = [int(np.ceil(radius_mm / s)) + 1 for s in spacing]
    sl = _box(centre, half, crop.shape)
    grids = np.meshgrid(*[(np.arange(s.start, s.stop) - c) * sp for s, c, sp in zip(sl, centre, spacing)], indexing="ij")
    r2 = sum(g.astype(np.float32) ** 2 for g in grids)
    ball = r2 <= radius_mm**2
    sub = crop[sl]
    other_mass = CYST if value == TUMOR else TUMOR
    sub[ball & (sub != other_mass)] = value  # a mass never overwrites the other mass kind (tumour vs cyst)
    return crop


def kidney_shapes(spacing, rng: np.random.Generator, shapes_root: Path | None, *, tumor: bool = True,
                  cyst: bool = True) -> tuple[list[KidneyShape], str]:
    """Right and left kidney crops (1 kidney, 2 tumour, 3 cyst); at least one tumour and one cyst when asked."""
    shapes = None
    if shapes_root is not None and (Path(shapes_root) / "kits23_masks").is_dir():
        shapes = _real_kidneys(Path(shapes_root), rng, spacing)
    source = "kits23 masks" if shapes else "parametric"
    log.debug("phantom kidney shapes: %s", shapes[0].source if shapes else "parametric")
    if not shapes:
        shapes = [_parametric_kidney(spacing, rng, -1), _parametric_kidney(spacing, rng, +1)]
    has = {v for s in shapes for v in np.unique(s.crop)}
    if tumor and TUMOR not in has:
        k = int(rng.integers(2))
        shapes[k].crop = _add_sphere_mass(shapes[k].crop, spacing, rng, TUMOR, float(rng.uniform(12, 20)))
    if cyst and CYST not in has:
        k = int(rng.integers(2))
        shapes[k].crop = _add_sphere_mass(shapes[k].crop, spacing, rng, CYST, float(rng.uniform(7, 12)),
                                          avoid=shapes[k].crop == TUMOR)
    return shapes, source


# ----------------------------------------------------------------------------- 3D anatomy


def _anatomy(shape, spacing, rng, shapes_root):
    """Tissue map (uint8 codes of :data:`TISSUES`), kidney label map (0..3 with side), texture field, affine."""
    from scipy import ndimage

    nx, ny, _nz = shape
    affine, (x, y, z) = _grid(shape, spacing)
    sx, sy, sz = spacing
    tis = np.zeros(shape, np.uint8)
    X2, Y2 = x[:, None], y[None, :]
    # ---- torso cross-section (constant along z), depth below the skin in mm
    a_body, b_body = rng.uniform(150, 170), rng.uniform(105, 120)
    body2 = (X2 / a_body) ** 2 + ((Y2 + 5) / b_body) ** 2 <= 1
    depth = ndimage.distance_transform_edt(body2, sampling=(sx, sy)).astype(np.float32)
    ang = np.arctan2(Y2 + 5, X2)
    fat_t = rng.uniform(12, 22) + 10 * np.abs(np.sin(ang)) * (Y2 > 0)  # thicker anteriorly
    layer = np.zeros((nx, ny), np.uint8)
    layer[body2] = T["fat"]
    wall = body2 & (depth > fat_t + 2.5) & (depth < fat_t + 14)
    layer[wall] = T["muscle"]
    inner = body2 & (depth >= fat_t + 14)
    layer[inner] = T["fat"]  # visceral fat by default
    layer[body2 & (depth <= 2.5)] = T["skin"]
    # spine and back muscles (2D, made 3D below)
    spine_y = -b_body + rng.uniform(42, 50)
    vb = ((X2 / 19) ** 2 + ((Y2 - spine_y) / 16) ** 2) <= 1
    vb_in = ((X2 / 15) ** 2 + ((Y2 - spine_y) / 12) ** 2) <= 1
    canal = ((X2 / 8) ** 2 + ((Y2 - spine_y + 26) / 7) ** 2) <= 1
    post = (np.abs(X2) < 6) & (Y2 < spine_y - 18) & (Y2 > spine_y - 48)
    lamina = ((X2 / 20) ** 2 + ((Y2 - spine_y + 28) / 11) ** 2 <= 1) & ~canal
    paraspinal = (((np.abs(X2) - 35) / 26) ** 2 + ((Y2 - spine_y + 35) / 20) ** 2 <= 1) & body2
    layer[paraspinal] = T["muscle"]
    tis[:] = layer[:, :, None]
    # table under the patient
    table = (Y2 < -b_body - 9) & (Y2 > -b_body - 19) & (np.abs(X2) < 200)
    tis[np.broadcast_to(table[:, :, None], shape)] = T["table"]
    Z3 = z[None, None, :]
    X3, Y3 = x[:, None, None], y[None, :, None]
    zphase = np.mod(z + rng.uniform(0, 32), 32.0)
    disc_z = zphase < 7
    bone2 = vb | post | lamina
    tis[np.broadcast_to(bone2[:, :, None], shape)] = T["cortical_bone"]
    marrow3 = np.broadcast_to((vb_in[:, :, None] & ~disc_z[None, None, :]), shape)
    tis[marrow3] = T["marrow"]
    tis[np.broadcast_to(vb[:, :, None] & disc_z[None, None, :], shape)] = T["disc"]
    tis[np.broadcast_to(canal[:, :, None], shape)] = T["canal"]
    # psoas: grows inferiorly
    psoas_r = np.clip(6 + (30 - z) * 0.12, 6, 22)[None, None, :]
    psoas = ((np.abs(X3) - 30) ** 2 + ((Y3 - spine_y - 8) * 1.2) ** 2 <= psoas_r**2)
    tis[psoas] = T["muscle"]
    # ribs: posterolateral arcs in the muscle wall above the lower pole level
    rib_band = body2 & (depth > fat_t + 3) & (depth < fat_t + 12) & (Y2 < 20)
    rib_z = (np.mod(z + rng.uniform(0, 28), 28.0) < 9) & (z > -20)
    tis[np.broadcast_to(rib_band[:, :, None] & rib_z[None, None, :], shape)] = T["cortical_bone"]
    visceral = np.broadcast_to(inner[:, :, None], shape)
    # vessels
    ao = ((X3 - 14) ** 2 + (Y3 - spine_y - 24) ** 2 <= 11**2) & visceral
    ivc = (((X3 + 22) / 13) ** 2 + ((Y3 - spine_y - 30) / 10) ** 2 <= 1) & visceral
    # organs
    tex = _smooth_field(rng, shape, 3)
    bowel_zone = visceral & (Y3 > spine_y + 35) & (Z3 < 40 + 20 * tex)
    # bowel loops: tubes along the zero level set of the texture field (wall, fluid lumen, gas
    # in anterior non-dependent loops), mesenteric fat between them
    loop = bowel_zone & (np.abs(tex) < 0.45)
    lumen = loop & (np.abs(tex) < 0.22)
    tis[loop] = T["bowel_wall"]
    tis[lumen] = T["bowel_fluid"]
    tis[lumen & (Y3 > rng.uniform(45, 65)) & (tex > 0.08)] = T["gas"]
    for tname, c, semi, rot in (("liver", (-55, 0, 75), (105, 95, 95), None),
                                ("spleen", (82, -40, 65), (32, 55, 48), _rot("z", 35).T),
                                ("lung", (-80, -30, 175), (60, 70, 85), None),
                                ("lung", (80, -30, 165), (60, 70, 85), None)):
        sl, m = _ell(x, y, z, c, semi, rot)
        m &= inner[sl[0], sl[1]][:, :, None]
        if tname == "liver":
            m &= (x[sl[0]] < 60)[:, None, None]
        tis[sl][m] = T[tname]
    tis[ao] = T["aorta"]
    tis[ivc] = T["ivc"]
    # ---- kidneys
    shapes, source = kidney_shapes(spacing, rng, shapes_root)
    kid_label = np.zeros(shape, np.uint8)  # 1 kidney, 2 tumour, 3 cyst
    side_map = np.zeros(shape, np.uint8)  # 2 right kidney, 3 left kidney (chaos-mr values)
    centres = []
    for side, ks in zip((-1, 1), shapes):
        cx = side * rng.uniform(62, 75)
        cy = spine_y + rng.uniform(18, 28)
        cz = rng.uniform(-25, -5) if side < 0 else rng.uniform(-8, 10)  # right kidney lower
        cvox = [(cx - x[0]) / sx, (cy - y[0]) / sy, (cz - z[0]) / sz]
        crop = ks.crop
        off = [int(round(c - n / 2.0)) for c, n in zip(cvox, crop.shape)]
        src = tuple(slice(max(0, -o), min(n, s - o)) for o, n, s in zip(off, crop.shape, shape))
        dst = tuple(slice(max(0, o), max(0, o) + (sl.stop - sl.start)) for o, sl in zip(off, src))
        if any(sl.stop <= sl.start for sl in src):
            continue
        c = crop[src]
        kmask = c > 0
        # perirenal fat (Gerota) and renal sinus from a morphological closing
        ball = max(2, int(round(7 / min(spacing))))
        closed = ndimage.binary_closing(np.pad(kmask, ball), iterations=ball)[tuple(slice(ball, -ball) for _ in range(3))]
        dist = ndimage.distance_transform_edt(kmask, sampling=spacing).astype(np.float32)
        sub_t = tis[dst]
        peri = ndimage.binary_dilation(closed, iterations=max(1, int(round(6 / min(spacing)))))
        sub_t[peri & ~np.isin(sub_t, [T["cortical_bone"], T["marrow"], T["aorta"], T["ivc"]])] = T["fat"]
        sinus = closed & ~kmask
        sub_t[sinus] = T["sinus_fat"]
        cen = np.array(ndimage.center_of_mass(kmask))
        sinus_idx = np.argwhere(sinus)
        if len(sinus_idx):
            d2 = (((sinus_idx - cen) * np.asarray(spacing)) ** 2).sum(1)
            near = sinus_idx[d2 < np.percentile(d2, 35)]
            sub_t[tuple(near.T)] = T["pelvis"]
        lob = tex[dst]
        par = c == KIDNEY
        sub_t[par] = T["cortex"]
        sub_t[par & (dist > rng.uniform(5, 7)) & (lob > -0.4)] = T["medulla"]
        tum = c == TUMOR
        if tum.any():
            tdist = ndimage.distance_transform_edt(tum, sampling=spacing)
            sub_t[tum] = T["tumor"]
            sub_t[tum & (tdist > 0.55 * tdist.max()) & (lob > -0.2)] = T["necrosis"]
        sub_t[c == CYST] = T["cyst"]
        tis[dst] = sub_t
        kl = kid_label[dst]
        kl[c > 0] = c[c > 0]
        sm = side_map[dst]
        sm[c > 0] = MR_KIDNEY_RIGHT if side < 0 else MR_KIDNEY_LEFT  # LAS: side -1 is the patient's right
        centres.append((side, (cx, cy, cz)))
    return tis, kid_label, side_map, tex, affine, {"kidney_shapes": source, "kidney_centres_mm": centres}


def _render(tis: np.ndarray, table: Mapping[str, tuple[float, float]], tex: np.ndarray) -> np.ndarray:
    mean = np.array([table[n][0] for n in TISSUES], np.float32)
    amp = np.array([table[n][1] for n in TISSUES], np.float32)
    return mean[tis] + amp[tis] * tex


DEFAULT_SIZE = {"ct": (256, 256, 128), "mr": (256, 256, 32), "us": (480, 640)}
FOV_MM = {"ct": (400.0, 400.0, 220.0), "mr": (380.0, 380.0, 250.0)}


def ct_phantom(size=(256, 256, 128), seed: int = 0, shapes_root: str | os.PathLike[str] | None = None,
               name: str = "case_00000") -> Phantom:
    """Contrast CT phantom in HU (int16 range), labels kits23 (0, 1 kidney, 2 tumour, 3 cyst), LAS affine."""
    from scipy import ndimage

    shape = tuple(int(s) for s in size)
    _check_size(shape, 3)
    spacing = tuple(f / n for f, n in zip(FOV_MM["ct"], shape))
    rng = np.random.default_rng(seed)
    tis, kid, _, tex, affine, info = _anatomy(shape, spacing, rng, Path(shapes_root) if shapes_root else None)
    img = _render(tis, CT_HU, tex)
    img += rng.standard_normal(shape, dtype=np.float32) * np.float32(22.0)
    # in-plane partial-volume blur, which also gives the noise its correlated CT texture
    sigma = [0.8 * min(spacing) / spacing[0], 0.8 * min(spacing) / spacing[1], 0.0]
    img = ndimage.gaussian_filter(img, sigma, truncate=2.5)
    np.clip(img, -1024, 3071, out=img)
    return Phantom(np.round(img).astype(np.int16), kid, affine, "ct", "kits23", name, dict(info, seed=seed))


def mr_phantom(size=(256, 256, 32), seed: int = 0, shapes_root: str | os.PathLike[str] | None = None,
               name: str = "case_01") -> Phantom:
    """T2 fat-suppressed MR phantom; labels chaos-mr (1 liver, 2 right kidney, 3 left kidney, 4 spleen)."""
    from scipy import ndimage

    shape = tuple(int(s) for s in size)
    _check_size(shape, 3)
    spacing = tuple(f / n for f, n in zip(FOV_MM["mr"], shape))
    rng = np.random.default_rng(seed)
    tis, _kid, side, tex, affine, info = _anatomy(shape, spacing, rng, Path(shapes_root) if shapes_root else None)
    img = _render(tis, MR_T2, tex)
    img = ndimage.gaussian_filter(img, [0.6, 0.6, 0.3])
    _, (x, y, _z) = _grid(shape, spacing)
    bias = 1.0 + 0.35 * (np.abs(y[None, :, None]) / 200.0) ** 2 + 0.1 * np.cos(x[:, None, None] / 90.0)
    img = img * bias.astype(np.float32)
    sig = np.float32(12.0)
    n1 = rng.standard_normal(shape, dtype=np.float32) * sig
    n2 = rng.standard_normal(shape, dtype=np.float32) * sig
    img = np.sqrt((img + n1) ** 2 + n2**2)  # Rician magnitude noise
    label = np.zeros(shape, np.uint8)
    label[tis == T["liver"]] = MR_LIVER
    label[tis == T["spleen"]] = MR_SPLEEN
    label[side > 0] = side[side > 0]
    return Phantom(img.astype(np.float32), label, affine, "mr", "chaos-mr", name, dict(info, seed=seed))


def _check_size(shape: tuple[int, ...], ndim: int) -> None:
    if len(shape) != ndim or any(s < 8 or s > 1024 for s in shape):
        raise InputError("phantom size", found=shape, expected=f"{ndim} sizes between 8 and 1024 voxels",
                         fix="pass --size with " + ("X Y Z" if ndim == 3 else "ROWS COLS"))


# ----------------------------------------------------------------------------- ultrasound


def _us_masks(shapes_root: Path | None, rng: np.random.Generator, hw: tuple[int, int]):
    """Capsule mask and regions map (1 CEC, 2 medulla, 3 cortex) at ``hw``; real outlines when available."""
    from PIL import Image

    H, W = hw
    root = shapes_root / "kidneyus_masks" / "labels" if shapes_root else None
    if root is not None and (root / "reviewed_masks_1" / "capsule").is_dir():
        files = sorted((root / "reviewed_masks_1" / "capsule").glob("*.png"))
        for _ in range(20):
            f = files[int(rng.integers(len(files)))]
            cap = np.asarray(Image.open(f).convert("L").resize((W, H), Image.Resampling.NEAREST)) > 0
            frac = cap.mean()
            if 0.04 < frac < 0.45:
                reg_path = root / "reviewed_masks_1" / "regions" / f.name
                reg = (np.asarray(Image.open(reg_path).convert("L").resize((W, H), Image.Resampling.NEAREST))
                       if reg_path.exists() else None)
                return cap, reg, f"openkidney-us {f.name}"
    # parametric: a rotated ellipse (longitudinal view), centre at mid depth
    rr, cc = np.mgrid[0:H, 0:W].astype(np.float32)
    cy, cx = H * rng.uniform(0.45, 0.6), W * rng.uniform(0.4, 0.6)
    a, b = W * rng.uniform(0.2, 0.28), H * rng.uniform(0.14, 0.2)
    t = np.deg2rad(rng.uniform(-25, 25))
    u = ((cc - cx) * np.cos(t) + (rr - cy) * np.sin(t)) / a
    v = (-(cc - cx) * np.sin(t) + (rr - cy) * np.cos(t)) / b
    wob = 1 + 0.05 * np.sin(3 * np.arctan2(v, u) + rng.uniform(0, 6))
    cap = u**2 + v**2 <= wob**2
    return cap, None, "parametric"


def _regions_from_capsule(cap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1 central echo complex (core), 2 medullary pyramids (ring of blobs), 3 cortex."""
    from scipy import ndimage

    d = ndimage.distance_transform_edt(cap)
    dm = d.max() if cap.any() else 1.0
    reg = np.where(cap, US_CORTEX, 0).astype(np.uint8)
    ring = cap & (d > 0.3 * dm) & (d < 0.6 * dm)
    blobs = _smooth_field(rng, cap.shape, 12, sigma=1.0) > -0.1
    reg[ring & blobs] = US_MEDULLA
    reg[cap & (d >= 0.6 * dm)] = US_CENTRAL_ECHO_COMPLEX
    return reg


def us_phantom(size=(480, 640), seed: int = 0, shapes_root: str | os.PathLike[str] | None = None,
               name: str = "000_phantom") -> Phantom:
    """Fan-shaped B-mode phantom (uint8, rows = depth), capsule label 1 and a regions map.

    Pixel spacing is ``depth_mm / rows`` on both axes (150 mm depth).
    """
    from scipy import ndimage

    H, W = (int(size[0]), int(size[1]))
    _check_size((H, W), 2)
    rng = np.random.default_rng(seed)
    cap, reg, source = _us_masks(Path(shapes_root) if shapes_root else None, rng, (H, W))
    if reg is None or not reg.any():
        reg = _regions_from_capsule(cap, rng)
    reg = np.where(cap, np.where(reg > 0, reg, 3), 0).astype(np.uint8)
    # --- sector geometry (pixels): apex above the image, half-angle 35 deg
    apex_r, apex_c = -0.18 * H, W / 2.0
    half = np.deg2rad(rng.uniform(32, 38))
    r0, r1 = -apex_r + 0.02 * H, -apex_r + 0.98 * H
    rr, cc = np.mgrid[0:H, 0:W].astype(np.float32)
    R = np.hypot(rr - apex_r, cc - apex_c)
    TH = np.arctan2(cc - apex_c, rr - apex_r)
    fan = (R >= r0) & (R <= r1) & (np.abs(TH) <= half)
    # --- echogenicity (cartesian), 0..~1
    tex = _smooth_field(rng, (H, W), 16, sigma=1.0)
    # backscatter in dB relative to liver parenchyma; converted to power below
    db_map = np.zeros((H, W), np.float32) + 1.5 * tex
    skin = R < r0 + 0.04 * H
    db_map[skin] = 10.0
    fat = (R >= r0 + 0.04 * H) & (R < r0 + 0.11 * H)
    db_map[fat] = -8.0 + 10.0 * (np.abs(tex[fat]) < 0.25)  # subcutaneous fat with bright septa
    muscle = (R >= r0 + 0.11 * H) & (R < r0 + 0.16 * H)
    db_map[muscle] = -5.0
    deep = R > r0 + 0.86 * (r1 - r0)
    db_map[deep & ~cap] = -6.0  # posterior muscle (quadratus lumborum / psoas)
    peri = ndimage.binary_dilation(cap, iterations=max(2, H // 50)) & ~cap
    db_map[peri] = 7.0  # echogenic perirenal fat
    db_map[reg == US_CORTEX] = -5.0  # cortex: slightly hypoechoic to liver
    db_map[reg == US_MEDULLA] = -16.0  # medullary pyramids: hypoechoic
    cec = reg == US_CENTRAL_ECHO_COMPLEX
    db_map[cec] = 9.0 + 2.0 * tex[cec]  # central echo complex (sinus fat): hyperechoic
    ech = (10.0 ** (db_map / 10.0)).astype(np.float32)
    edge = cap & ~ndimage.binary_erosion(cap, iterations=2)
    spec = np.zeros((H, W), np.float32)
    spec[edge] = 2.5  # specular capsule echo
    # a rib near the surface at one side, with a shadow below
    rib_th = rng.choice([-1, 1]) * rng.uniform(0.55, 0.8) * half
    rib_r = r0 + rng.uniform(0.12, 0.2) * H
    rib = ((R - rib_r) / (0.018 * H)) ** 2 + ((TH - rib_th) / 0.07) ** 2 <= 1
    spec[rib] = 3.0
    att = np.full((H, W), 1.0, np.float32)
    att[rib] = 60.0
    att[cap & (reg == US_CENTRAL_ECHO_COMPLEX)] = 1.3
    att[cap & (reg == US_MEDULLA)] = 0.7  # fluid-rich pyramids: less attenuation
    # --- to polar (beams x samples)
    nr, nth = H, max(192, W // 2)
    rs = np.linspace(r0, r1, nr, dtype=np.float32)
    ths = np.linspace(-half, half, nth, dtype=np.float32)
    Rp, Tp = np.meshgrid(rs, ths, indexing="ij")
    rows = apex_r + Rp * np.cos(Tp)
    cols = apex_c + Rp * np.sin(Tp)
    coords = np.stack([rows, cols])
    e_p = ndimage.map_coordinates(ech, coords, order=1, mode="nearest")
    s_p = ndimage.map_coordinates(spec, coords, order=1, mode="constant")
    a_p = ndimage.map_coordinates(att, coords, order=1, mode="nearest")
    dr = (r1 - r0) / nr
    alpha = 3.0 / (r1 - r0)
    atten = np.exp(-alpha * np.cumsum(a_p, axis=0) * dr + 0.75 * alpha * (Rp - r0))  # partial TGC
    scat = (rng.standard_normal((nr, nth)) + 1j * rng.standard_normal((nr, nth))).astype(np.complex64)
    scat *= np.sqrt(np.maximum(e_p, 1e-4)).astype(np.float32)
    psf = (1.0, 1.6)  # axial, lateral (samples)
    field_ = ndimage.gaussian_filter(scat.real, psf) + 1j * ndimage.gaussian_filter(scat.imag, psf)
    field_ = field_ / np.sqrt(np.mean(np.abs(field_) ** 2) + 1e-12)
    env = np.abs(field_ + ndimage.gaussian_filter(s_p, psf)) * atten
    db = 20 * np.log10(env / np.percentile(env, 99.5) + 1e-6)
    dyn = 50.0
    bmode_p = np.clip((db + dyn) / dyn, 0, 1) * 255
    # --- scan conversion back to the cartesian image
    ri = (R - r0) / (r1 - r0) * (nr - 1)
    ti = (TH + half) / (2 * half) * (nth - 1)
    img = ndimage.map_coordinates(bmode_p, np.stack([ri, ti]), order=1, mode="constant")
    img[~fan] = 0
    img = np.clip(img, 0, 255).astype(np.uint8)
    label = (cap & fan).astype(np.uint8)
    regions = np.where(fan, reg, 0).astype(np.uint8)
    spacing = 150.0 / H
    affine = np.diag([spacing, spacing, 1.0, 1.0])
    return Phantom(img, label, affine, "us", "openkidney-us", name, {"kidney_shape": source, "seed": seed},
                   regions=regions)


# ----------------------------------------------------------------------------- writing layouts

LAYOUTS = ("kits23", "nnunet", "chaos-mr", "openkidney-us", "slices", "folder")
LAYOUTS_OF = {"ct": ("kits23", "nnunet", "slices", "folder"), "mr": ("chaos-mr", "nnunet", "folder"),
              "us": ("openkidney-us", "folder")}
DEFAULT_LAYOUT = {"ct": "kits23", "mr": "chaos-mr", "us": "openkidney-us"}


def _save_nifti(arr: np.ndarray, affine: np.ndarray, path: Path, dtype) -> None:
    import nibabel as nib

    from kidneyseg.io import atomic_path

    img = nib.Nifti1Image(arr.astype(dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def _save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)


def _axial_png(ph: Phantom, k: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Axial slice ``k`` in display orientation: rows anterior -> posterior, cols patient right -> left."""
    img = ph.image[:, ::-1, k].T
    lab = ph.label[:, ::-1, k].T
    sx, sy = ph.spacing[0], ph.spacing[1]
    return img, lab, (sy, sx)


def generate(modality: str, index: int, size=None, seed: int = 0, shapes_root=None) -> Phantom:
    """Phantom number ``index`` of a set (its seed is ``seed * 100003 + index``)."""
    if modality not in DEFAULT_SIZE:
        raise unknown_name("phantom modality", modality, list(DEFAULT_SIZE))
    s = int(seed) * 100003 + int(index)
    if modality == "ct":
        return ct_phantom(size or DEFAULT_SIZE["ct"], s, shapes_root, name=f"case_{index:05d}")
    if modality == "mr":
        return mr_phantom(size or DEFAULT_SIZE["mr"], s, shapes_root, name=f"case_{index + 1:02d}")
    hw = tuple(size[:2]) if size else DEFAULT_SIZE["us"]
    return us_phantom(hw, s, shapes_root, name=f"{index:03d}_phantom")


def write_phantom_set(out: str | os.PathLike[str], modality: str, n: int, *, size=None, seed: int = 0,
                      layout: str | None = None, shapes_root=None, progress: bool = True) -> list[Path]:
    """Generate ``n`` phantoms and write them in ``layout`` (default: kits23 / chaos-mr / openkidney-us).

    Returns the written files.  The set reads back with
    ``load_dataset(out, layout)`` (``slices``: three axial kidney slices per CT
    phantom, PNG value = clip(HU, 0, 255) as in kits19_slices, cysts labelled
    kidney as in KiTS19).
    """
    from tqdm import tqdm

    layout = layout or DEFAULT_LAYOUT.get(modality, "")
    if modality not in LAYOUTS_OF:
        raise unknown_name("phantom modality", modality, list(LAYOUTS_OF))
    if layout not in LAYOUTS_OF[modality]:
        raise unknown_name(f"layout for {modality} phantoms", layout, list(LAYOUTS_OF[modality]))
    if n < 1:
        raise InputError("number of phantoms", found=n, expected=">= 1")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    index_rows = ["stem,case,z,spacing_mm,slice_thickness_mm,source_format,kidney_px,tumour_px"]
    names = []
    for i in tqdm(range(n), desc=f"{modality} phantoms", disable=not progress or n < 2):
        ph = generate(modality, i, size, seed, shapes_root)
        names.append(ph.name)
        if modality in ("ct", "mr"):
            dt = np.int16 if modality == "ct" else np.float32
            if layout == "kits23":
                pairs = [(root / ph.name / "imaging.nii.gz", root / ph.name / "segmentation.nii.gz")]
            elif layout == "nnunet":
                pairs = [(root / "imagesTr" / f"{ph.name}_0000.nii.gz", root / "labelsTr" / f"{ph.name}.nii.gz")]
            elif layout == "chaos-mr":
                pairs = [(root / f"{ph.name}_image.nii.gz", root / f"{ph.name}_label.nii.gz")]
            elif layout == "folder":
                pairs = [(root / "images" / f"{ph.name}.nii.gz", root / "labels" / f"{ph.name}.nii.gz")]
            else:  # slices
                pairs = []
                kid_per_z = (ph.label > 0).sum(axis=(0, 1))
                tum_per_z = (ph.label == TUMOR).sum(axis=(0, 1))
                ks = sorted({int(np.argmax(kid_per_z)), int(np.argmax(tum_per_z)),
                             int(np.flatnonzero(kid_per_z)[len(np.flatnonzero(kid_per_z)) // 4])})
                for k in ks:
                    img, lab, sp = _axial_png(ph, k)
                    stem = f"{ph.name}_z{k:03d}"
                    lab19 = np.where(lab == CYST, KIDNEY, lab)  # KiTS19 labelled cysts as kidney
                    _save_png(np.clip(img, 0, 255), root / f"{stem}_image.png")
                    _save_png(lab19, root / f"{stem}_label.png")
                    written += [root / f"{stem}_image.png", root / f"{stem}_label.png"]
                    index_rows.append(f"{stem},{ph.name},{k},{sp[0]:.4f}x{sp[1]:.4f},{ph.spacing[2]:.3f},png,"
                                      f"{int((lab19 == KIDNEY).sum())},{int((lab19 == TUMOR).sum())}")
            for ip, lp in pairs:
                _save_nifti(ph.image, ph.affine, ip, dt)
                _save_nifti(ph.label, ph.affine, lp, np.uint8)
                written += [ip, lp]
        else:
            if layout == "openkidney-us":
                ip = root / "images" / f"{ph.name}.png"
                _save_png(ph.image, ip)
                written.append(ip)
                rng = np.random.default_rng(seed * 7919 + i)
                for son in (1, 2):
                    cap, reg = ph.label, ph.regions
                    assert reg is not None  # us_phantom always makes the regions map
                    if son == 2:  # the second sonographer traces a slightly different outline
                        cap, reg = _perturb(cap, reg, rng)
                    for kind, arr in (("capsule", cap), ("regions", reg)):
                        p = root / "labels" / f"reviewed_masks_{son}" / kind / f"{ph.name}.png"
                        _save_png(arr, p)
                        written.append(p)
            else:
                ip, lp = root / "images" / f"{ph.name}.png", root / "labels" / f"{ph.name}.png"
                _save_png(ph.image, ip)
                _save_png(ph.label, lp)
                (root / "images" / f"{ph.name}.json").write_text(json.dumps({"spacing": list(ph.spacing)}))
                written += [ip, lp]
    if layout == "slices":
        (root / "index.csv").write_text("\n".join(index_rows) + "\n")
        written.append(root / "index.csv")
    if layout == "folder":
        task = {"ct": "kits23", "mr": "chaos-mr", "us": "openkidney-us"}[modality]
        (root / "dataset.json").write_text(json.dumps({"task": task, "modality": modality}) + "\n")
        written.append(root / "dataset.json")
    if layout == "nnunet":
        task_labels = {name: v for v, name in get_task("kits23" if modality == "ct" else "chaos-mr").labels.items()}
        meta = {"channel_names": {"0": "CT" if modality == "ct" else "T2"}, "labels": task_labels,
                "numTraining": n, "file_ending": ".nii.gz", "name": f"kidneyseg {modality} phantoms",
                "description": f"synthetic phantoms, seed {seed}"}
        (root / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
        written.append(root / "dataset.json")
    return written


def _perturb(cap: np.ndarray, reg: np.ndarray | None, rng: np.random.Generator):
    from scipy import ndimage

    it = int(rng.integers(1, 4))
    grow = bool(rng.integers(2))
    op = ndimage.binary_dilation if grow else ndimage.binary_erosion
    cap2 = op(cap > 0, iterations=it).astype(np.uint8)
    reg2 = None
    if reg is not None:
        reg2 = np.where(cap2 > 0, np.where(reg > 0, reg, US_CORTEX), 0).astype(np.uint8)
    return cap2, reg2
