"""`kidneyseg predict` end to end: grids kept, batch with a corrupt case, DICOM-SEG written or refused."""

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
sys.path.insert(0, str(TESTS / "io"))

import predict_kit as kit  # noqa: E402

from kidneyseg.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return kit.cached_unet3d(tmp_path_factory)


def _write_nifti(path: Path, img: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(img.astype(np.int16), affine), str(path))
    return path


def test_example_ct_output_on_input_grid(model_dir, shared_data, tmp_path, capsys):
    import nibabel as nib

    src = shared_data / "totalseg_example" / "example_ct.nii.gz"
    rc = main(["predict", str(src), "-o", str(tmp_path / "out"), "--model", str(model_dir), "--threads", "2",
               "--save-probabilities"])
    assert rc == 0
    out = nib.load(str(tmp_path / "out" / "example_ct.nii.gz"))
    inp = nib.load(str(src))
    assert out.shape == inp.shape
    np.testing.assert_allclose(out.affine, inp.affine, atol=1e-5)
    assert out.get_data_dtype() == np.uint8
    vol = json.loads((tmp_path / "out" / "example_ct_volumes.json").read_text())
    assert set(vol["kidneys"]) == {"left", "right"}
    probs = np.load(tmp_path / "out" / "example_ct_probabilities.npz")
    assert probs["probabilities"].dtype == np.float16 and probs["probabilities"].shape == (2,) + inp.shape
    assert "right kidney" in capsys.readouterr().out


def test_batch_with_corrupt_case(model_dir, tmp_path, capsys):
    from kidneyseg.data.phantoms import ct_phantom

    inputs = tmp_path / "in"
    inputs.mkdir()
    for seed in (1, 2):
        ph = ct_phantom(size=(40, 40, 20), seed=seed)
        _write_nifti(inputs / f"good{seed}.nii.gz", ph.image, ph.affine)
    (inputs / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not a gzip stream")
    rc = main(["predict", str(inputs), "-o", str(tmp_path / "out"), "--model", str(model_dir)])
    captured = capsys.readouterr()
    assert rc == 1
    assert (tmp_path / "out" / "good1.nii.gz").is_file() and (tmp_path / "out" / "good2.nii.gz").is_file()
    assert not (tmp_path / "out" / "broken.nii.gz").exists()
    assert "broken.nii.gz" in captured.err and "1 of 3" in captured.err
    assert captured.out.count("kidney") >= 2


def test_batch_pipeline_keeps_input_order_and_names_the_case_whose_write_failed(model_dir, tmp_path, capsys,
                                                                               monkeypatch):
    """A batch reads ahead and writes behind on threads: lines stay in input order, and an error raised while
    writing one case's outputs is reported for that case (not the one predicted meanwhile)."""
    import kidneyseg.reporting.export as export
    from kidneyseg.data.phantoms import ct_phantom
    from kidneyseg.errors import OutputError

    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, name in enumerate(("a", "b", "c", "d")):
        ph = ct_phantom(size=(40, 40, 20), seed=i + 1)
        _write_nifti(inputs / f"{name}.nii.gz", ph.image, ph.affine)
    real = export.save_prediction

    def save(prediction, out_dir, **kw):
        if kw.get("name") == "b":
            raise OutputError("disk full (simulated)", path=Path(out_dir) / "b.nii.gz")
        return real(prediction, out_dir, **kw)

    monkeypatch.setattr(export, "save_prediction", save)
    rc = main(["predict", str(inputs), "-o", str(tmp_path / "out"), "--model", str(model_dir)])
    captured = capsys.readouterr()
    assert rc == 1
    assert "1 of 4" in captured.err and "in/b.nii.gz: error: " in captured.err and "disk full" in captured.err
    starts = [line.split(":")[0] for line in captured.out.splitlines() if line[:2] in ("a:", "c:", "d:")]
    assert starts == ["a", "c", "d"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["a.nii.gz", "c.nii.gz", "d.nii.gz"]


def test_dicom_seg_for_well_formed_series(model_dir, tmp_path):
    import pydicom
    from test_dicomseg import write_ct_series

    _files, series_uid, _ = write_ct_series(tmp_path / "series", n=12, rows=40, cols=40, spacing=(8.0, 8.0), dz=8.0)
    rc = main(["predict", str(tmp_path / "series"), "-o", str(tmp_path / "out"), "--model", str(model_dir),
               "--output-format", "dicom-seg"])
    assert rc == 0
    seg_files = list((tmp_path / "out").glob("*_seg.dcm"))
    assert len(seg_files) == 1
    seg = pydicom.dcmread(str(seg_files[0]))
    assert seg.Modality == "SEG" and seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid


def test_dicom_seg_refused_on_example_series(model_dir, shared_data, tmp_path, capsys):
    folder = shared_data / "totalseg_example" / "example_ct_dicom"
    rc = main(["predict", str(folder), "-o", str(tmp_path / "out"), "--model", str(model_dir),
               "--output-format", "dicom-seg"])
    err = capsys.readouterr().err
    assert rc == 2  # one input that cannot be used: a usage error, one line (issue 22)
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, err
    line = [ln for ln in err.splitlines() if "DICOM-SEG" in ln]
    assert line and ("SeriesInstanceUID" in line[0] or "StudyInstanceUID" in line[0])
    assert "nifti" in line[0]


def test_no_default_model_says_pass_model(tmp_path, capsys, monkeypatch):
    from kidneyseg import default_models

    # default_model_dir looks for <folder of default_models>/<modality>/model.json: an empty folder here
    monkeypatch.setattr(default_models, "__file__", str(tmp_path / "none" / "__init__.py"))
    src = tmp_path / "x.nii.gz"
    _write_nifti(src, np.zeros((8, 8, 8)), np.eye(4))
    rc = main(["predict", str(src), "-o", str(tmp_path / "out"), "--modality", "mr"])
    assert rc == 2
    assert "--model DIR" in capsys.readouterr().err


def test_repeated_model_is_an_ensemble(model_dir, tmp_path):
    """``--model A --model B`` averages both models (as ``Predictor([A, B])``), not B alone (issue 23, bug 4)."""
    import shutil

    import torch

    from kidneyseg.data.phantoms import ct_phantom
    from kidneyseg.inference import Predictor

    other = tmp_path / "other"  # a second, different model: the same folder with its weights perturbed
    shutil.copytree(model_dir, other)
    wpath = next(other.glob("*/weights.pt"))
    gen = torch.Generator().manual_seed(0)
    state = {k: (v + 0.5 * v.std() * torch.randn(v.shape, generator=gen) if v.is_floating_point() and v.numel() > 1
                 else v) for k, v in torch.load(wpath, weights_only=True).items()}
    torch.save(state, wpath)
    ph = ct_phantom(size=(40, 40, 20), seed=1)
    src = _write_nifti(tmp_path / "ph.nii.gz", ph.image, ph.affine)

    def cli_probs(*models: Path) -> np.ndarray:
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        args = ["predict", str(src), "-o", str(out), "--save-probabilities", "--no-postprocess", "--threads", "1"]
        for m in models:
            args += ["--model", str(m)]
        assert main(args) == 0
        return np.load(out / "ph_probabilities.npz")["probabilities"].astype(np.float32)

    both = cli_probs(model_dir, other)
    a, b = cli_probs(model_dir), cli_probs(other)
    assert np.abs(a - b).max() > 0.1  # the two models really differ
    assert np.abs(both - b).max() > 0.05 and np.abs(both - a).max() > 0.05
    from kidneyseg import io

    ref = Predictor([model_dir, other], postprocess=False).predict_case(io.read(src), probabilities=True)
    assert ref.probabilities is not None
    np.testing.assert_allclose(both, ref.probabilities.astype(np.float32), atol=1e-3)
    np.testing.assert_allclose(both, (a + b) / 2, atol=2e-3)


def test_detector_without_a_box_warns_on_stderr_and_in_volumes_json(tmp_path, caplog):
    """``ct-detect-vnet`` keeping no box: the CLI says so (stderr log) and volumes.json carries it (issue 23, bug 5)."""
    import torch

    from kidneyseg.data.phantoms import ct_phantom

    torch.manual_seed(0)
    d = kit.detect_vnet(tmp_path / "det", size=64, score_threshold=1.0)
    ph = ct_phantom(size=(40, 40, 20), seed=1)
    src = _write_nifti(tmp_path / "ph.nii.gz", ph.image[:, :, ::2], ph.affine @ np.diag([1, 1, 2, 1]))
    with caplog.at_level("WARNING"):
        assert main(["predict", str(src), "-o", str(tmp_path / "out"), "--model", str(d), "--threads", "2"]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "kidney detector" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(f"{src}: ")
    assert "score of at least 1" in warned[0] and "score_threshold" in warned[0]
    vol = json.loads((tmp_path / "out" / "ph_volumes.json").read_text())
    assert len(vol["warnings"]) == 1 and "score of at least 1" in vol["warnings"][0]


def test_ct2d_ensemble_on_a_small_slices_png(tmp_path, capsys):
    """A 40x40 PNG of the ``slices`` layout: its index.csv gives the spacing (0.5 mm), so at the plan's 0.8 mm it
    is 25x25, under InceptionV3's smallest input; the ensemble pads and crops back (issue 23, bug 3)."""
    from PIL import Image

    from kidneyseg import io
    from kidneyseg.inference import Predictor

    d = kit.ct2d_ensemble(tmp_path / "ens", spacing=(0.8, 0.8))
    slices = tmp_path / "slices"
    slices.mkdir()
    img = np.zeros((40, 40), np.uint8)
    img[10:25, 12:30] = 180  # a bright blob, not symmetric
    Image.fromarray(img).save(slices / "case_00001_z010_image.png")
    (slices / "index.csv").write_text("stem,case,z,spacing_mm\ncase_00001_z010,case_00001,10,0.5x0.5\n")
    src = slices / "case_00001_z010_image.png"
    r = Predictor(d, threads=1).predict_path(src)
    assert r.label.shape == (40, 40) and r.label.dtype == np.uint8
    assert r.case.spacing == (0.5, 0.5) and r.case.meta["spacing_source"] == str(slices / "index.csv")
    out = tmp_path / "out"
    assert main(["predict", str(src), "-o", str(out), "--model", str(d), "--threads", "1"]) == 0
    written = io.read(out / "case_00001_z010_image.png", is_label=True, spacing=(0.5, 0.5))
    assert written.shape == (40, 40)
    np.testing.assert_array_equal(written.label if written.label is not None else written.image, r.label)


def test_runtime_option_and_export_onnx(model_dir, tmp_path, monkeypatch):
    """--runtime torch and onnx give the same label map; `models --export-onnx` writes the stage's model.onnx,
    which prediction then uses (nothing exported into the cache)."""
    import shutil

    import nibabel as nib

    from kidneyseg.data.phantoms import ct_phantom

    monkeypatch.setenv("KIDNEYSEG_CACHE", str(tmp_path / "cache"))
    ph = ct_phantom(size=(40, 40, 20), seed=3)
    src = _write_nifti(tmp_path / "ct.nii.gz", ph.image, ph.affine)
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    assert main(["models", "--export-onnx", str(model)]) == 0
    assert (model / "main" / "model.onnx").is_file()
    labels = {}
    for rt in ("torch", "onnx"):
        assert main(["predict", str(src), "-o", str(tmp_path / rt), "--model", str(model), "--runtime", rt]) == 0
        labels[rt] = np.asarray(nib.load(str(tmp_path / rt / "ct.nii.gz")).dataobj)
    assert labels["onnx"].any() and np.array_equal(labels["torch"], labels["onnx"])
    assert not (tmp_path / "cache").exists()
