"""Picture tests: a phantom with known labels has the right colours at known pixels of the mosaics."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from phantom_case import CYST, LEFT_KIDNEY, RIGHT_KIDNEY, TUMOR, phantom

from kidneyseg.labels import COLOR_CYST, COLOR_KIDNEY, COLOR_TUMOR, get_task
from kidneyseg.reporting import overlay
from kidneyseg.reporting.html import ReportInputs, build_report

TASK = get_task("kits23")
PALETTE = {"kidney": COLOR_KIDNEY, "tumor": COLOR_TUMOR, "cyst": COLOR_CYST, "grey": None}


def _classify(rgb: np.ndarray) -> str:
    """Nearest label colour of a pixel, or 'grey' when the pixel is uncoloured."""
    r, g, b = (int(x) for x in rgb)
    if max(r, g, b) - min(r, g, b) < 12:
        return "grey"
    dists = {}
    for name, c in PALETTE.items():
        if c is None:
            continue
        # compare the hue direction: subtract the grey component
        v = np.array([r, g, b], float) - min(r, g, b)
        w = np.array(c, float) - min(c)
        dists[name] = float(np.linalg.norm(v / np.linalg.norm(v) - w / np.linalg.norm(w)))
    return min(dists, key=dists.get)


def _display_pixel(case, voxel, plane, tile):  # type: ignore[no-untyped-def]
    """Pixel (row, col) in the mosaic where file voxel ``voxel`` is displayed in ``tile``."""
    from kidneyseg.preprocessing.geometry import reorient

    marker = np.zeros(case.shape, np.uint8)
    marker[voxel] = 1
    _, (m,), _ = overlay.ras_arrays(case, marker)
    ras = tuple(int(a[0]) for a in np.nonzero(m))
    assert ras[overlay.PLANE_AXIS[plane]] == tile.index
    d = overlay.display_slice(m, plane, tile.index)
    r, c = (int(a[0]) for a in np.nonzero(d))
    # nearest display row/col that samples that source pixel (several may; take the middle one)
    rows = np.flatnonzero(tile.rows + tile.row0 == r)
    cols = np.flatnonzero(tile.cols + tile.col0 == c)
    assert rows.size and cols.size
    assert reorient(case, "RAS").orientation == ("R", "A", "S")
    return tile.top + int(rows[rows.size // 2]), tile.left + int(cols[cols.size // 2])


def test_display_orientation_is_radiological() -> None:
    vol = np.zeros((4, 5, 6))  # RAS [x, y, z]
    vol[3, 4, 0] = 1  # most right, most anterior, most inferior
    ax = overlay.display_slice(vol, "axial", 0)
    assert ax.shape == (5, 4)
    assert ax[0, 0] == 1  # anterior at the top, patient right on the image left
    co = overlay.display_slice(vol, "coronal", 4)
    assert co.shape == (6, 4) and co[5, 0] == 1  # inferior at the bottom, right on the left
    sa = overlay.display_slice(vol, "sagittal", 3)
    assert sa.shape == (6, 5) and sa[5, 0] == 1  # anterior on the left


def test_mosaic_colours_at_known_voxels() -> None:
    case, lab = phantom()
    mos = overlay.volume_mosaics(case, lab, TASK)
    expect = {TUMOR: "tumor", CYST: "cyst", (RIGHT_KIDNEY[0] + 4, *RIGHT_KIDNEY[1:]): "kidney",
              (LEFT_KIDNEY[0] - 4, *LEFT_KIDNEY[1:]): "kidney", (32, 30, 20): "grey"}
    for plane in ("axial", "coronal"):
        m = mos[plane]
        # the phantom's file axes 1 and 2 are RAS y and z: move each voxel onto the shown slice
        # nearest the tumour centre (all objects are at least 2 voxels thicker than that shift)
        ax = overlay.PLANE_AXIS[plane]
        tile = min(m.tiles, key=lambda t: abs(t.index - TUMOR[ax]))
        assert abs(tile.index - TUMOR[ax]) <= 2

        def on_tile(v, ax=ax, tile=tile):  # type: ignore[no-untyped-def]
            v = list(v)
            v[ax] = tile.index
            return tuple(v)

        for voxel, want in expect.items():
            r, c = _display_pixel(case, on_tile(voxel), plane, tile)
            assert _classify(m.rgb[r, c]) == want, (plane, voxel, m.rgb[r, c])
        # patient right (tumour kidney) on the image left, left kidney (cyst) on the image right
        _, ct = _display_pixel(case, on_tile(TUMOR), plane, tile)
        _, cc = _display_pixel(case, on_tile(CYST), plane, tile)
        assert ct < tile.left + tile.width // 2 < cc
    # sagittal: the tile through the right kidney (RAS x = 63 - i) shows the tumour
    m = mos["sagittal"]
    x_t = case.shape[0] - 1 - TUMOR[0]
    tile = min(m.tiles, key=lambda t: abs(t.index - x_t))
    assert abs(tile.index - x_t) <= 2
    v = (case.shape[0] - 1 - tile.index, TUMOR[1], TUMOR[2])
    r, c = _display_pixel(case, v, "sagittal", tile)
    assert _classify(m.rgb[r, c]) == "tumor"
    # exact blend inside the tumour: (1 - a) * grey + a * colour, grey from the image window
    m = mos["axial"]
    tile = min(m.tiles, key=lambda t: abs(t.index - TUMOR[2]))
    v = (TUMOR[0], TUMOR[1], tile.index)
    r, c = _display_pixel(case, v, "axial", tile)
    grey = overlay.to_grey(case.image[v], (-160.0, 240.0))
    want = (1 - overlay.DEFAULT_ALPHA) * float(grey) + overlay.DEFAULT_ALPHA * np.array(COLOR_TUMOR)
    assert np.abs(m.rgb[r, c].astype(float) - want).max() <= 1.0


def test_report_embeds_the_mosaics_exactly() -> None:
    from PIL import Image

    case, lab = phantom()
    text = build_report(ReportInputs(case, lab, TASK))
    mos = overlay.volume_mosaics(case, lab, TASK)
    for plane in overlay.PLANES:
        m = re.search(rf'data-plane="{plane}" src="data:image/png;base64,([^"]+)"', text)
        assert m, plane
        img = np.asarray(Image.open(io.BytesIO(base64.b64decode(m.group(1)))).convert("RGB"))
        assert np.array_equal(img, mos[plane].rgb)
        # legend colours are the fixed label colours
    for colour in (COLOR_KIDNEY, COLOR_TUMOR, COLOR_CYST):
        assert f"rgb{colour}" in text


def test_agreement_map_codes() -> None:
    ref = np.array([[0, 1, 1, 2, 0]])
    pred = np.array([[1, 1, 2, 0, 0]])
    assert overlay.agreement_map(pred, ref).tolist() == [[2, 1, 4, 3, 0]]


def test_agreement_figure_colours() -> None:
    case, ref = phantom()
    pred = ref.copy()
    pred[TUMOR] = 1  # wrong class at the tumour centre: kidney instead of tumour
    sl = (slice(TUMOR[0] - 1, TUMOR[0] + 2), slice(TUMOR[1] - 1, TUMOR[1] + 2), TUMOR[2])
    pred[sl] = 1
    mos = overlay.agreement_mosaic(case, pred, ref, TASK, n=2)
    # third tile of the row through the tumour slice is the agreement map
    tiles = [t for t in mos.tiles if t.index == _ras_k(case, TUMOR)]
    assert len(tiles) == 3
    r, c = _display_pixel(case, TUMOR, "axial", tiles[2])
    px = mos.rgb[r, c].astype(int)
    assert px[0] > px[1] + 60 and px[2] > px[1] + 60, px  # magenta: wrong class
    r, c = _display_pixel(case, (RIGHT_KIDNEY[0] + 4, *RIGHT_KIDNEY[1:]), "axial", tiles[2])
    px = mos.rgb[r, c].astype(int)
    assert px[1] > px[0] + 60 and px[1] > px[2] + 60, px  # green agreement


def _ras_k(case, voxel) -> int:  # type: ignore[no-untyped-def]
    marker = np.zeros(case.shape, np.uint8)
    marker[voxel] = 1
    _, (m,), _ = overlay.ras_arrays(case, marker)
    return int(np.nonzero(m)[2][0])


def test_choose_slices_skip_gaps() -> None:
    mask = np.zeros((40, 4, 4), bool)
    mask[2:8] = True
    mask[30:36] = True
    picks = overlay.choose_slices(mask, 0, 4)
    assert all(mask[p].any() for p in picks) and len(picks) == 4
