"""`kidneyseg predict --save-uncertainty`: the map on the input grid, QC per structure in volumes.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")
TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "inference"))

import predict_kit as kit  # noqa: E402

from kidneyseg.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return kit.cached_unet3d(tmp_path_factory)


@pytest.fixture()
def phantom_file(tmp_path):
    import nibabel as nib

    from kidneyseg.data.phantoms import ct_phantom

    ph = ct_phantom(size=(40, 40, 20), seed=1)
    # stored flipped along i and j (LPS-like) with an origin: the map must follow this grid, not RAS
    img = ph.image[::-1, ::-1].astype(np.int16)
    aff = np.asarray(ph.affine, float) @ np.array([[-1, 0, 0, 39], [0, -1, 0, 39], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    aff[:3, 3] += [12.5, -30.0, 7.0]
    path = tmp_path / "ph.nii.gz"
    nib.save(nib.Nifti1Image(img, aff), str(path))
    return path


def test_save_uncertainty_writes_the_map_on_the_input_grid(model_dir, phantom_file, tmp_path, capsys):
    import nibabel as nib

    out = tmp_path / "out"
    rc = main(["predict", str(phantom_file), "-o", str(out), "--model", str(model_dir), "--threads", "1",
               "--save-uncertainty", "--save-probabilities"])
    assert rc == 0
    inp = nib.load(str(phantom_file))
    unc = nib.load(str(out / "ph_uncertainty.nii.gz"))
    assert unc.shape == inp.shape
    np.testing.assert_allclose(unc.affine, inp.affine, atol=1e-5)
    assert unc.get_data_dtype() == np.float32
    u = np.asarray(unc.dataobj)
    assert u.min() >= 0.0 and u.max() <= 1.0 and u.max() > 0.05
    # the map is the normalised entropy of the written probabilities (float16 there), voxel for voxel
    p = np.load(out / "ph_probabilities.npz")["probabilities"].astype(np.float32)
    from kidneyseg.inference.uncertainty import normalised_entropy

    h = normalised_entropy(p)
    inside = u > 0
    np.testing.assert_allclose(u[inside], h[inside], atol=5e-3)
    assert float(h[~inside].max(initial=0.0)) < 0.1  # outside the box: certain background only
    vol = json.loads((out / "ph_volumes.json").read_text())
    assert vol["qc"]["threshold"] > 0 and "single network" in vol["qc"]["uncertainty"]
    present = [s for s in ("right", "left") if vol["kidneys"][s]["present"]]
    assert present
    for side in present:
        q = vol["kidneys"][side]["qc"]
        assert 0.0 <= q["score"] <= 1.0 and q["flag"] in ("pass", "review")
    line = capsys.readouterr().out
    assert "kidney" in line


def test_no_qc_writes_no_qc_and_no_map(model_dir, phantom_file, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", str(phantom_file), "-o", str(out), "--model", str(model_dir), "--threads", "1",
                 "--no-qc"]) == 0
    vol = json.loads((out / "ph_volumes.json").read_text())
    assert "qc" not in vol and all("qc" not in vol["kidneys"][s] for s in ("right", "left"))
    assert not (out / "ph_uncertainty.nii.gz").exists()


def test_ensemble_of_folders_gives_mutual_information(model_dir, phantom_file):
    from kidneyseg import io
    from kidneyseg.inference import Predictor

    case = io.read(phantom_file)
    res = Predictor([model_dir, model_dir], threads=1).predict_case(case, uncertainty=True)
    unc = res.uncertainty
    assert unc is not None and unc.mutual_information is not None
    assert float(unc.mutual_information.max(initial=0.0)) < 1e-4  # identical members do not disagree
    assert unc.sources["separate_members"] == 2 and "mutual information" in unc.sources["method"]
    single = Predictor(model_dir, threads=1).predict_case(case)
    assert single.uncertainty is None and "uncertainty" not in single.timings
