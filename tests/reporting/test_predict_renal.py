"""`kidneyseg predict` writes the RENAL parts of every tumour: known answers on a CT phantom.

The phantom holds two ellipsoid kidneys (semi-axes 25 x 20 x 50 mm along RAS x, y, z, 1 mm voxels), each
with a medial notch (the renal sinus, z = centre +- 15 mm, so the polar lines are known), and one spherical
tumour each of known size and position.  It is stored LPS-like (array axes 0 and 1 pointing to the patient's
left and posterior, with an origin), so sides, anterior and superior must come from the affine.  The network
stage is replaced by one that returns the phantom's own label (looked up in world mm on the network grid),
so everything after it is the real `predict` path: plan, undo to the input grid, post-processing, QC,
volumes.json and the stdout line.

Known answers (Kutikov and Uzzo 2009):

* right kidney, tumour of radius 12 mm centred on the lateral surface (x + 25 mm), 6 mm anterior and 5 mm
  superior of the kidney's centre: diameter 24 mm -> R1; centred on the surface, so more than half outside
  the parenchyma's hull -> E1; between the polar lines and across the axial midline -> L3; 84 % of a sphere
  lies anterior of a plane 6 mm behind its centre (>= 2/3) -> a.  ``R1 E1 N? L3 a``, R + E + L = 5.
* left kidney, tumour of radius 22 mm at the lower pole (z - 45 mm), 10 mm lateral and 10 mm posterior:
  diameter 44 mm -> R2; it reaches 17 mm below the pole, mostly outside -> E1; entirely below the lower
  polar line (its top at z - 23 mm, the line at z - 15 mm) -> L1; 18 % of it anterior (<= 1/3) -> p.
  ``R2 E1 N? L1 p``, R + E + L = 4.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

SHAPE_RAS = (180, 70, 135)  # RAS index grid, 1 mm
RIGHT = (135, 35, 75)  # kidney centres (RAS index); larger x = patient right
LEFT = (45, 35, 75)
RADII = (25, 20, 50)
ORIGIN = (-90.0, -35.0, -60.0)  # RAS mm of RAS index (0, 0, 0)
KNOWN = {
    "right": {"notation": "R1 E1 N? L3 a", "R": (2.4, 1), "E": 1, "A": "a", "L": 3, "score": 5, "position":
              "between or across the polar lines"},
    "left": {"notation": "R2 E1 N? L1 p", "R": (4.4, 2), "E": 1, "A": "p", "L": 1, "score": 4, "position":
             "below the lower polar line"},
}


def _renal_phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(CT image in HU, label map 0/1/2, affine) stored LPS-like: file axes 0, 1 run to patient left, posterior."""
    g = np.ogrid[tuple(slice(0, n) for n in SHAPE_RAS)]
    x, y, z = g

    def ell(c, r):  # type: ignore[no-untyped-def]
        return sum(((gg - cc) / rr) ** 2 for gg, cc, rr in zip(g, c, r)) <= 1

    def ball(c, r):  # type: ignore[no-untyped-def]
        return sum((gg - cc) ** 2 for gg, cc in zip(g, c)) <= r * r

    lab = np.zeros(SHAPE_RAS, np.uint8)
    for c, medial in ((RIGHT, -1), (LEFT, 1)):  # the medial side faces the midline
        kid = ell(c, RADII)
        lab[kid] = 1
        lab[kid & ((x - c[0]) * medial > 5) & (abs(y - c[1]) <= 8) & (abs(z - c[2]) <= 15)] = 0  # the sinus
    lab[ball((RIGHT[0] + 25, RIGHT[1] + 6, RIGHT[2] + 5), 12)] = 2
    lab[ball((LEFT[0] - 10, LEFT[1] - 10, LEFT[2] - 45), 22)] = 2
    rng = np.random.default_rng(0)
    img = np.full(SHAPE_RAS, -90.0) + rng.normal(0, 5, SHAPE_RAS)  # fat
    img[:, :3] = -1000.0  # a strip of air
    img[lab == 1] += 250.0  # enhancing parenchyma ~160 HU
    img[lab == 2] += 170.0  # tumour ~80 HU
    # store LPS-like: file index i = 179 - x, j = 69 - y, k = z
    aff = np.array([[-1.0, 0, 0, ORIGIN[0] + SHAPE_RAS[0] - 1], [0, -1.0, 0, ORIGIN[1] + SHAPE_RAS[1] - 1],
                    [0, 0, 1.0, ORIGIN[2]], [0, 0, 0, 1.0]])
    return img[::-1, ::-1].astype(np.int16), np.ascontiguousarray(lab[::-1, ::-1]), aff


def _model_folder(folder: Path) -> Path:
    """A real model folder (untrained 3D U-Net, 1 mm RAS plan); its network is replaced in the test."""
    from kidneyseg.models.folder import save_model_folder, save_stage
    from kidneyseg.models.registry import create_model

    labels = {"0": "background", "1": "kidney", "2": "tumor", "3": "cyst"}
    plan = {"modality": "ct", "spatial_dims": 3, "orientation": "RAS", "target_spacing": [1.0, 1.0, 1.0],
            "patch_size": [32, 32, 32], "intensity": {"kind": "window", "low": -160, "high": 240},
            "denoise": None, "labels": labels}
    kwargs = {"channels": [4, 8], "strides": [2], "num_res_units": 0}
    net = create_model("unet3d", in_channels=1, out_channels=4, **kwargs)
    save_stage(folder / "main", net, {"arch": "unet3d", "arch_kwargs": kwargs, "in_channels": 1, "out_channels": 4,
                                      "channel_to_label": [0, 1, 2, 3], "plan": plan})
    save_model_folder(folder, {"pipeline": "unet3d", "task": "kits23", "modality": "ct", "labels": labels,
                               "stages": ["main"]})
    return folder


def _oracle_network(truth: np.ndarray, affine: np.ndarray):  # type: ignore[no-untyped-def]
    """A stand-in for ``Predictor.stage_probabilities``: the truth label at each network voxel's world mm."""
    inv = np.linalg.inv(affine)

    def stage_probabilities(self, stage, pre, extra=None, progress=None):  # type: ignore[no-untyped-def]
        idx = np.indices(pre.shape).reshape(3, -1).T.astype(np.float64)
        world = idx @ np.asarray(pre.affine)[:3, :3].T + np.asarray(pre.affine)[:3, 3]
        src = np.rint(world @ inv[:3, :3].T + inv[:3, 3]).astype(np.int64)
        ok = np.all((src >= 0) & (src < np.asarray(truth.shape)), axis=1)
        lab = np.zeros(len(idx), np.uint8)
        lab[ok] = truth[tuple(src[ok].T)]
        probs = np.full((4, len(idx)), 0.01, np.float32)
        probs[lab, np.arange(len(idx))] = 0.97
        return probs.reshape((4, *pre.shape))

    return stage_probabilities


def test_predict_writes_the_known_renal_parts(tmp_path, monkeypatch, capsys):
    import nibabel as nib

    from kidneyseg.cli import main
    from kidneyseg.inference.predictor import Predictor

    img, lab, aff = _renal_phantom()
    path = tmp_path / "renal_ct.nii.gz"
    nib.save(nib.Nifti1Image(img, aff), str(path))
    model = _model_folder(tmp_path / "model")
    monkeypatch.setattr(Predictor, "stage_probabilities", _oracle_network(lab, aff))
    out = tmp_path / "out"
    assert main(["predict", str(path), "-o", str(out), "--model", str(model), "--threads", "1",
                 "--runtime", "torch"]) == 0
    line = capsys.readouterr().out
    written = nib.load(str(out / "renal_ct.nii.gz"))
    np.testing.assert_array_equal(np.asarray(written.dataobj), lab)  # the oracle's label came through exactly

    vol = json.loads((out / "renal_ct_volumes.json").read_text())
    assert vol["renal"]["available"] is True and vol["renal"]["tumours"] == 2
    for side, known in KNOWN.items():
        tumours = vol["kidneys"][side]["tumors"]
        assert len(tumours) == 1, (side, tumours)
        ren = tumours[0]["renal"]
        assert ren["notation"] == known["notation"], (side, ren)
        assert (ren["R"]["max_diameter_cm"], ren["R"]["points"]) == pytest.approx(known["R"])
        assert ren["E"]["points"] == known["E"]
        assert ren["E"]["exophytic_share"] >= 0.5
        assert ren["A"]["descriptor"] == known["A"]
        assert ren["L"]["points"] == known["L"] and ren["L"]["position"] == known["position"]
        # the polar lines are the notch's ends, 15 mm either side of the kidney's centre, in RAS z mm
        assert ren["L"]["polar_lines_s_mm"] == pytest.approx([ORIGIN[2] + RIGHT[2] - 15, ORIGIN[2] + RIGHT[2] + 15])
        assert "sinus" in ren["L"]["polar_lines_from"]
        assert ren["N"]["points"] is None and ren["N"]["available"] is False and "collecting" in ren["N"]["reason"]
        assert ren["score_without_n"] == known["score"]
        assert f"RENAL {known['notation']}" in line
        assert tumours[0]["qc"]["flag"] == "pass"  # the oracle is certain


def test_renal_block_says_why_it_is_not_available():
    from kidneyseg.reporting.volumes import measure

    lab = np.zeros((30, 30, 30), np.uint8)
    lab[5:20, 5:20, 5:25] = 1
    m = measure(lab, np.eye(4))
    assert m["renal"]["available"] is False and "no tumour" in m["renal"]["reason"]
    assert "no tumour label" in measure(lab, np.eye(4), labels={0: "background", 1: "kidney"})["renal"]["reason"]
    assert "2D image" in measure(lab[:, :, 10], np.eye(4))["renal"]["reason"]
    assert "not computed" in measure(lab, np.eye(4), renal=False)["renal"]["reason"]
    assert "collecting-system" in m["renal"]["n_reason"]
