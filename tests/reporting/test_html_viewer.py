"""The report's embedded NiiVue viewer and the tiles' new facts (positions in mm, scale bar, window, modality)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from phantom_case import phantom

from kidneyseg.cli import main
from kidneyseg.reporting.html import STATIC, downsample_for_viewer


def test_downsample_majority_and_affine() -> None:
    """Factors grow on the finest axis first; labels by block majority (ties to foreground); centres in mm."""
    img = np.arange(8 * 8 * 4, dtype=np.float32).reshape(8, 8, 4)
    lab = np.zeros((8, 8, 4), np.uint8)
    lab[0:2, 0:2, 0:2] = 1  # a full block
    lab[2:4, 2, 0] = 2  # half of block (1, 1, 0): a tie with background goes to the label
    lab[4, 4, 0] = 3  # one voxel of 4: background wins
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    aff[:3, 3] = [10, 20, 30]
    small, slab, saff, f, _ = downsample_for_viewer(img, lab, aff, max_voxels=8 * 8 * 4 // 4)
    assert f == (2, 2, 1)  # the 1 mm axes shrink before the 2 mm one
    assert small.shape == slab.shape == (4, 4, 4)
    assert slab[0, 0, 0] == 1 and slab[1, 1, 0] == 2 and slab[2, 2, 0] == 0
    assert small[0, 0, 0] == pytest.approx(img[0:2, 0:2, 0].mean())
    # the block centre of voxel (0, 0, 0) lies between voxels 0 and 1 of the input
    assert np.allclose(saff @ [0, 0, 0, 1], [10.5, 20.5, 30, 1])
    assert np.allclose(saff[:3, :3], np.diag([2.0, 2.0, 2.0]))
    same = downsample_for_viewer(img, lab, aff, max_voxels=10**9)
    assert same[3] == (1, 1, 1) and np.array_equal(same[1], lab)


def _write(tmp_path: Path) -> tuple[Path, Path]:
    case, lab = phantom()
    nib.save(nib.Nifti1Image(case.image, case.affine), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(lab, case.affine), tmp_path / "pred.nii.gz")
    return tmp_path / "ct.nii.gz", tmp_path / "pred.nii.gz"


def test_report_with_viewer_embeds_niivue_and_volumes(tmp_path: Path) -> None:
    img, seg = _write(tmp_path)
    out = tmp_path / "r.html"
    assert main(["report", "--image", str(img), "--seg", str(seg), "--ref", str(seg), "--viewer", "-o", str(out)]) == 0
    text = out.read_text()
    assert out.stat().st_size < 20 * 1024 * 1024
    assert 'id="kv-image"' in text and 'id="kv-label"' in text and 'id="kv-uncertainty"' not in text
    assert (STATIC / "niivue" / "niivue.umd.js").read_text()[:200] in text
    # no <script src=...>, no <link href=http...>: the page loads nothing
    assert not re.search(r"<script[^>]+src=", text) and not re.search(r"<link[^>]+href=\"http", text)
    # the embedded image is the phantom on the input grid (small enough to stay whole; its HU have
    # fractions, so float32 is kept: only integer images become int16)
    import base64
    import gzip

    b64 = re.search(r'<script type="text/plain" id="kv-image">([^<]+)</script>', text).group(1)
    emb = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(b64)))
    case, _ = phantom()
    assert emb.shape == case.shape and emb.get_data_dtype() == np.float32
    assert np.allclose(emb.affine, case.affine)
    assert np.array_equal(np.asarray(emb.dataobj), case.image)
    # structures with their centres (the rows the viewer jumps to); the right kidney at positive RAS x
    rows = re.findall(r'<tr data-mm="([^"]+)"><td>([^<]+)</td>', text)
    names = [n for _, n in rows]
    assert names == ["right kidney", "right tumour 1", "left kidney", "left cyst 1"], names
    assert float(rows[0][0].split(",")[0]) > 0 > float(rows[2][0].split(",")[0])
    assert ">QC<" not in text  # no qc entries: no QC column
    # reference volumes beside the predicted ones; modality and window stated
    assert "right: reference" in text and "left: predicted" in text
    assert "ct (from the intensities: air in HU)" in text and "-160..240 HU (W400/L40)" in text


def test_report_picks_up_uncertainty_and_qc_sidecars(tmp_path: Path) -> None:
    img, seg = _write(tmp_path)
    case, lab = phantom()
    unc = np.zeros(case.shape, np.float32)
    unc[lab > 0] = 0.7
    nib.save(nib.Nifti1Image(unc, case.affine), tmp_path / "pred_uncertainty.nii.gz")
    from kidneyseg.reporting.volumes import measure

    m = measure(lab, case.affine, labels={0: "background", 1: "kidney", 2: "tumor", 3: "cyst"})
    m["kidneys"]["right"]["qc"] = {"score": 0.91, "flag": "pass"}
    m["kidneys"]["left"]["cysts"][0]["qc"] = {"score": 0.42, "flag": "review"}
    (tmp_path / "pred_volumes.json").write_text(json.dumps(m))
    out = tmp_path / "r.html"
    assert main(["report", "--image", str(img), "--seg", str(seg), "--viewer", "-o", str(out)]) == 0
    text = out.read_text()
    assert 'id="kv-uncertainty"' in text and '"has_uncertainty": true' in text
    assert ">QC<" in text and '<td class="qc-pass">pass (0.91)</td>' in text
    assert '<td class="qc-review">review (0.42)</td>' in text
    # without --viewer: no NiiVue, the 10 MB report as before
    plain = tmp_path / "plain.html"
    assert main(["report", "--image", str(img), "--seg", str(seg), "-o", str(plain)]) == 0
    assert "niivue" not in plain.read_text().lower() and "kv-image" not in plain.read_text()


def test_tiles_have_positions_scale_bar_and_window() -> None:
    from kidneyseg.labels import get_task
    from kidneyseg.reporting import overlay

    case, lab = phantom()
    mos = overlay.volume_mosaics(case, lab, get_task("kits23"))
    assert mos["axial"].window == (-160.0, 240.0)
    t = mos["axial"].tiles[0]
    # a white scale bar 2 px high, 4 px above the tile's bottom, starting 4 px from its left edge
    bar = mos["axial"].rgb[t.top + t.height - 5 : t.top + t.height - 3, t.left + 4 : t.left + 8]
    assert (bar == 255).all()
    mm = overlay.scale_bar_mm(t.width, mos["axial"].pixel_mm)
    n_px = int(round(mm / mos["axial"].pixel_mm))
    row = mos["axial"].rgb[t.top + t.height - 4, t.left : t.left + t.width]
    assert (row == 255).all(axis=1).sum() == n_px
    # slice position along z in RAS mm: the phantom's axial slice k lies at z = -50 + 2.5 k
    moved_affine = np.diag([1.5, 1.5, 2.5, 1.0])
    moved_affine[:3, 3] = [-47.25, -40.0, -50.0]
    assert overlay.slice_position_mm(moved_affine, case.shape, "axial", 20) == pytest.approx(0.0)


def test_shipped_niivue_matches_its_source_note() -> None:
    """The bundle is the npm file SOURCE.txt names (sha256), with its BSD-2-Clause license beside it."""
    folder = STATIC / "niivue"
    digest = hashlib.sha256((folder / "niivue.umd.js").read_bytes()).hexdigest()
    assert digest in (folder / "SOURCE.txt").read_text()
    assert "BSD 2-Clause" in (folder / "LICENSE").read_text()
