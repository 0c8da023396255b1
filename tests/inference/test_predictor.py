"""Predictor end to end on model folders built in the test: grids, orientation, pipelines."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")
sys.path.insert(0, str(Path(__file__).parent))

import predict_kit as kit

from kidneyseg.case import Case
from kidneyseg.evaluation import dice
from kidneyseg.inference import Predictor


@pytest.fixture(scope="module")
def unet3d_dir(tmp_path_factory):
    return kit.cached_unet3d(tmp_path_factory, steps=40)


@pytest.fixture(scope="module")
def phantom():
    from kidneyseg.data.phantoms import ct_phantom

    return ct_phantom(size=(40, 40, 20), seed=1)  # the training phantom: this checks the pipeline, not generalisation


def _to_ipl(img: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    cur = nib.orientations.io_orientation(affine)
    tr = nib.orientations.ornt_transform(cur, nib.orientations.axcodes2ornt(("I", "P", "L")))
    return nib.orientations.apply_orientation(img, tr), affine @ nib.orientations.inv_ornt_aff(tr, img.shape)


def test_ipl_input_aligns_voxel_for_voxel_with_ras_twin(unet3d_dir, phantom, tmp_path):
    import nibabel as nib

    from kidneyseg.preprocessing.geometry import reorient

    pred = Predictor(unet3d_dir, threads=2)
    ras_case = Case(phantom.image.astype(np.float32), phantom.affine, name="ras")
    ipl_img, ipl_aff = _to_ipl(phantom.image.astype(np.float32), phantom.affine)
    ipl_case = Case(ipl_img, ipl_aff, name="ipl")
    assert nib.aff2axcodes(ipl_aff) == ("I", "P", "L")
    r_ras = pred.predict_case(ras_case)
    r_ipl = pred.predict_case(ipl_case, probabilities=True)
    assert r_ipl.label.shape == ipl_img.shape and np.allclose(r_ipl.affine, ipl_aff)
    # the phantom is stored LAS: compare both results in RAS, voxel for voxel
    twin = reorient(Case(None, phantom.affine, label=r_ras.label), "RAS")
    back = reorient(Case(None, ipl_aff, label=r_ipl.label), "RAS")
    np.testing.assert_allclose(back.affine, twin.affine, atol=1e-6)
    np.testing.assert_array_equal(back.label, twin.label)
    assert r_ras.label.any(), "a model trained on phantoms should find some kidney"
    # a trained model overlaps the phantom's kidneys
    truth = phantom.label > 0
    dice = 2 * (truth & (r_ras.label > 0)).sum() / (truth.sum() + (r_ras.label > 0).sum())
    assert dice > 0.3
    assert r_ipl.probabilities.dtype == np.float16 and r_ipl.probabilities.shape == (2,) + ipl_img.shape


def test_example_ct_grid_is_kept(unet3d_dir, shared_data):
    from kidneyseg import io

    case = io.read(shared_data / "totalseg_example" / "example_ct.nii.gz")
    r = Predictor(unet3d_dir, threads=2).predict_case(case)
    assert r.label.shape == case.shape and r.label.dtype == np.uint8
    np.testing.assert_allclose(r.affine, case.affine)


def test_cascade_end_to_end(phantom, tmp_path):
    d = kit.cascade(tmp_path / "cascade", steps=40)
    case = Case(phantom.image.astype(np.float32), phantom.affine, name="c")
    r = Predictor(d, threads=2).predict_case(case, probabilities=True)
    assert r.label.shape == case.shape
    assert set(np.unique(r.label)) <= {0, 1, 2, 3}
    assert r.probabilities.shape == (4,) + case.shape
    np.testing.assert_allclose(r.probabilities.astype(np.float32).sum(0), 1.0, atol=1e-2)
    # every stage ran on a kidney box (the fine and lesion timings stay 0.0 when the coarse stage finds none)
    assert all(r.timings[s] > 0 for s in ("coarse", "fine", "lesion"))
    # the cascade's labels are the argmax of its probabilities on the input grid, as the single-model path's
    # (probabilities brought back linearly, not hard labels by nearest neighbour)
    values = np.array([0, 1, 2, 3])
    # (hard labels undone by nearest neighbour disagreed on 44 of 144 foreground voxels here; now float16
    # rounding of the returned probabilities is all that differs)
    raw = Predictor(d, threads=2, postprocess=False).predict_case(case, probabilities=True)  # before clean-up
    from_probs = values[np.argmax(raw.probabilities.astype(np.float32), axis=0)]
    assert raw.label.any() and (raw.label != from_probs).sum() <= 0.02 * (raw.label > 0).sum()
    # and what it labels is the phantom's kidney (a cascade that finds no box labels every voxel background)
    assert dice(r.label > 0, phantom.label > 0) > 0.2  # tiny networks, a few steps: 0.32 when written


def test_detect_vnet_end_to_end(phantom, tmp_path):
    d = kit.detect_vnet(tmp_path / "det", size=64)
    case = Case(phantom.image.astype(np.float32)[:, :, ::2], phantom.affine @ np.diag([1, 1, 2, 1]), name="d")
    r = Predictor(d, threads=2).predict_case(case)
    assert r.label.shape == case.shape
    assert set(np.unique(r.label)) <= {0, 1, 2}
    # the segmenter ran on a detected box (its timing stays 0.0 when the detector finds none)
    assert r.timings["detector"] > 0 and r.timings["segmenter"] > 0
    assert not any("detector" in w for w in r.warnings)  # boxes were found: no word about the detector


def test_detect_vnet_segments_the_kidneys_its_detector_boxes(phantom, tmp_path, monkeypatch):
    """A perfect detector (the phantom's own boxes) and a V-Net trained a few steps on those crops: the output
    lies on the phantom's kidneys, so boxes, crops, resizing and the paste-back all line up."""
    import kidneyseg.inference.engines as engines

    image, label = phantom.image.astype(np.float32)[:, :, ::2], phantom.label[:, :, ::2]
    affine = phantom.affine @ np.diag([1, 1, 2, 1])
    d = kit.detect_vnet(tmp_path / "det", size=64, train_on=Case(image, affine, label=label))
    oracle = kit.oracle_detections(Case(image, affine, label=label))
    monkeypatch.setattr(engines, "detect_slices", lambda *a, **k: oracle)
    r = Predictor(d, threads=2).predict_case(Case(image, affine, name="d"))
    assert dice(r.label > 0, label > 0) > 0.2  # 0.39 when written; 0 when no box is segmented or it lands elsewhere


def test_detect_vnet_without_a_box_warns(phantom, tmp_path):
    """No box reaches the detector's score threshold: the empty label map comes with a warning that names the
    threshold and the fix (issue 23, bug 5)."""
    import torch

    torch.manual_seed(0)
    d = kit.detect_vnet(tmp_path / "det", size=64, score_threshold=1.0)
    case = Case(phantom.image.astype(np.float32)[:, :, ::2], phantom.affine @ np.diag([1, 1, 2, 1]), name="d")
    r = Predictor(d, threads=2).predict_case(case)
    assert not r.label.any() and r.timings["segmenter"] == 0.0
    assert len(r.warnings) == 1
    msg = r.warnings[0]
    assert "no box with a score of at least 1" in msg and "on any of the 10 axial slices" in msg
    assert "Fix: lower \"score_threshold\"" in msg and str(d / "detector" / "model.json") in msg


def test_slicewise_2d_model_on_volume_and_us_image(phantom, tmp_path):
    from kidneyseg.data.phantoms import us_phantom

    # tiny networks trained a few steps on the very images they segment: the check is that every slice goes
    # through the network and comes back in its place (an all-background predictor gives Dice 0)
    d = kit.slice2d(tmp_path / "s2d", spacing=[8.0, 8.0], steps=60)
    case = Case(phantom.image.astype(np.float32), phantom.affine, name="s")
    r = Predictor(d, tta=True, threads=2).predict_case(case)
    assert r.label.shape == case.shape
    assert dice(r.label > 0, phantom.label > 0) > 0.3  # 0.63 when written
    ph = us_phantom(size=(90, 120), seed=3)
    u = kit.us_model(tmp_path / "us", steps=60, phantom=ph)
    us = Case(ph.image.astype(np.float32), ph.affine, name="us", modality="us")
    ru = Predictor(u).predict_case(us, probabilities=True)
    assert ru.label.shape == (90, 120) and ru.probabilities.shape == (2, 90, 120)
    assert dice(ru.label > 0, ph.label > 0) > 0.3  # 0.53 when written


def test_ensemble_of_folders_averages(unet3d_dir, phantom, tmp_path):
    import shutil

    import torch

    # a second, different model: the same folder with its weights perturbed
    other = tmp_path / "other"
    shutil.copytree(unet3d_dir, other)
    wpath = next(other.glob("*/weights.pt"))
    state = torch.load(wpath, weights_only=True)
    gen = torch.Generator().manual_seed(0)
    state = {k: (v + 0.5 * v.std() * torch.randn(v.shape, generator=gen) if v.is_floating_point() and v.numel() > 1
                 else v) for k, v in state.items()}
    torch.save(state, wpath)
    case = Case(phantom.image.astype(np.float32), phantom.affine, name="e")
    p1 = Predictor(unet3d_dir, postprocess=False).predict_case(case, probabilities=True).probabilities
    p2 = Predictor(other, postprocess=False).predict_case(case, probabilities=True).probabilities
    assert p1 is not None and p2 is not None
    p1, p2 = p1.astype(np.float32), p2.astype(np.float32)
    assert np.abs(p1 - p2).max() > 0.1  # the two members really differ
    both = Predictor([unet3d_dir, other], postprocess=False).predict_case(case, probabilities=True)
    assert both.probabilities is not None
    np.testing.assert_allclose(both.probabilities.astype(np.float32), (p1 + p2) / 2, atol=2e-3)
    # ensembles take the argmax of the averaged probabilities on the input grid
    expect = np.argmax(both.probabilities.astype(np.float32), axis=0)
    assert (both.label == expect).mean() > 0.999


def test_postprocess_warning_known_answers():
    """Volumes in the warning come from the spacing; it speaks only when less than half the region is kept."""
    from kidneyseg.inference.predictor import postprocess_warning

    raw = np.zeros((20, 20, 20), np.uint8)
    raw[:10, :10, :10] = 2  # 1000 voxels of tumour
    raw[15:, 15:, 15:] = 1  # 125 voxels of kidney
    clean = np.zeros_like(raw)
    msg = postprocess_warning(raw, clean, (2.0, 2.0, 2.0), [1], [2, 3], modality="ct")  # 8 uL per voxel
    assert "kept 0.0 of the 9.0 mL" in msg and "kidney 1.0, lesions 8.0 mL" in msg
    assert "contrast-enhanced CT" in msg and "--no-postprocess" in msg
    assert "contrast" not in postprocess_warning(raw, clean, (2.0, 2.0, 2.0), [1], [2, 3], modality="mr")
    kept_half = raw * (np.arange(20) < 10)[:, None, None].astype(np.uint8)
    kept_half[:10, :10, 5:] = 0  # 500 of 1125 voxels kept: under half
    assert "kept 4.0 of the 9.0 mL" in postprocess_warning(raw, kept_half, (2.0, 2.0, 2.0), [1], [2, 3])
    kept_half[:10, :10, 5] = 2  # 600 of 1125: over half, no warning
    assert postprocess_warning(raw, kept_half, (2.0, 2.0, 2.0), [1], [2, 3]) is None
    assert postprocess_warning(np.zeros_like(raw), clean, (1.0, 1.0, 1.0), [1], [2, 3]) is None
    img = np.zeros((10, 10), np.uint8)
    img[:4, :5] = 1  # 20 pixels of 0.5 x 0.5 mm
    assert "kept 0.0 of the 5.0 mm^2" in postprocess_warning(img, np.zeros_like(img), (0.5, 0.5), [1], [])
    # all of it smaller than the post-processing floor: specks removed as they should be, no warning
    assert postprocess_warning(img, np.zeros_like(img), (0.5, 0.5), [1], [], floor_ml=0.0051) is None
    assert postprocess_warning(img, np.zeros_like(img), (0.5, 0.5), [1], [], floor_ml=0.0049) is not None
    assert postprocess_warning(raw, clean, (2.0, 2.0, 2.0), [1], [2, 3], floor_ml=9.1) is None


def test_prediction_carries_the_postprocess_warning_to_volumes_json(unet3d_dir, phantom, tmp_path, monkeypatch,
                                                                    caplog):
    """A network output that post-processing mostly wipes out is not reported as a plain result."""
    import json

    from kidneyseg.reporting.export import save_prediction

    case = Case(phantom.image.astype(np.float32), phantom.affine, name="w", modality="ct")
    p = Predictor(unet3d_dir)  # labels: background, kidney
    fake = np.zeros(case.shape, np.uint8)
    for i in range(6):  # six equal kidney blobs: the two largest are kept, a third of the region
        fake[2 + 6 * i: 6 + 6 * i, 5:10, 5:10] = 1
    monkeypatch.setattr(Predictor, "_run_model", lambda self, model, c, need, t, **kw: (fake, None))
    with caplog.at_level("WARNING"):
        res = p.predict_case(case)
    assert (res.label > 0).sum() == 2 * 4 * 5 * 5
    assert len(res.warnings) == 1 and "w: post-processing kept" in caplog.text
    written = save_prediction(res, tmp_path)
    assert json.loads(written["volumes"].read_text())["warnings"] == res.warnings
    kidney = (phantom.label > 0).astype(np.uint8)
    monkeypatch.setattr(Predictor, "_run_model", lambda self, model, c, need, t, **kw: (kidney, None))
    assert Predictor(unet3d_dir).predict_case(case).warnings == []


@pytest.mark.parametrize("saved_axes", [None, [0, 1]])
def test_ultrasound_tta_mirrors_left_right_only(tmp_path, saved_axes):
    """``--tta`` on ultrasound: the identity and the left-right (column) pass, never upside down (issue 23, bug 2);
    a folder whose stage lists the row axis (written before the fix) loses it."""
    import json

    import torch

    from kidneyseg.data.phantoms import us_phantom
    from kidneyseg.preprocessing.geometry import undo
    from kidneyseg.preprocessing.plan import apply_plan

    d = kit.us_model(tmp_path / "us")  # random weights: any network tells the passes apart
    if saved_axes is not None:
        spec_path = d / "main" / "model.json"
        spec = json.loads(spec_path.read_text())
        spec["mirror_axes"] = saved_axes
        spec_path.write_text(json.dumps(spec))
    ph = us_phantom(size=(90, 120), seed=3)
    case = Case(ph.image.astype(np.float32), ph.affine, name="us", modality="us")
    pred = Predictor(d, tta=True, postprocess=False)
    stage = pred.models[0].stages["main"]
    seen: list[torch.Tensor] = []
    inner = stage.module

    class Recorder(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.clone())
            return inner(x)

    stage.module = Recorder()
    r = pred.predict_case(case, probabilities=True)
    assert len(seen) == 2  # identity and left-right
    x = seen[0]
    assert not torch.allclose(x, torch.flip(x, (2,)))  # the image is not up-down symmetric
    torch.testing.assert_close(seen[1], torch.flip(x, (3,)))  # the second pass is the column mirror
    with torch.no_grad():
        p = (torch.softmax(inner(x), 1) + torch.flip(torch.softmax(inner(torch.flip(x, (3,))), 1), (3,))) / 2
    pre = apply_plan(case, stage.plan)
    expect = undo(pre, p[0].numpy(), is_label=False, channel_axis=True)
    expect /= np.clip(expect.sum(axis=0, keepdims=True), 1e-6, None)
    assert r.probabilities is not None
    np.testing.assert_allclose(r.probabilities.astype(np.float32), expect, atol=2e-3)


def test_2d_images_get_the_disc_of_the_3d_blob_floor(tmp_path, monkeypatch):
    """The Predictor's small-blob floor on a 2D image is the area of the disc through the centre of its 3D floor's
    sphere (0.5 mL -> 76 mm^2), and a volume keeps the volume floor."""
    import kidneyseg.postprocessing as post
    from kidneyseg.postprocessing import area_floor_ml

    seen = []
    real = post.postprocess_label

    def spy(label, spacing, **kw):  # type: ignore[no-untyped-def]
        seen.append((np.asarray(label).ndim, kw["min_volume_ml"]))
        return real(label, spacing, **kw)

    monkeypatch.setattr(post, "postprocess_label", spy)
    d = kit.slice2d(tmp_path / "s2d", spacing=[2.0, 2.0])
    rng = np.random.default_rng(0)
    img = rng.normal(0, 200, (64, 64)).astype(np.float32)
    Predictor(d, min_volume_ml=0.5).predict_case(Case(img, np.diag([0.8, 0.8, 1.0, 1.0]), name="slice"))
    Predictor(d, min_volume_ml=0.5).predict_case(Case(img[..., None].repeat(3, 2), np.diag([0.8, 0.8, 2.0, 1.0])))
    floors = dict(seen)
    assert floors[2] == pytest.approx(area_floor_ml(0.5)) and floors[3] == 0.5
    assert area_floor_ml(0.5) * 1000 == pytest.approx(76.16, abs=0.01)  # a 9.85 mm sphere's central disc


def test_2d_confidence_floor_removes_hesitant_components_from_images_only(tmp_path):
    """``min_confidence_2d`` (argument, or model.json's ``postprocess`` block) removes kidney-region components of a
    2D image whose mean probability is below it; volumes are left to the geometric rules (no small-blob floor
    here: the untrained network labels scattered pixels)."""
    import json

    from kidneyseg.errors import InputError

    d = kit.slice2d(tmp_path / "s2d", spacing=[2.0, 2.0])
    rng = np.random.default_rng(0)
    img = rng.normal(0, 200, (64, 64)).astype(np.float32)
    image = Case(img, np.diag([0.8, 0.8, 1.0, 1.0]), name="slice")
    volume = Case(img[..., None].repeat(3, 2), np.diag([0.8, 0.8, 2.0, 1.0]))
    base = Predictor(d, min_volume_ml=0.0).predict_case(image, probabilities=True)
    region = np.isin(base.label, (1, 2))
    assert region.any()  # the untrained network labels some kidney region on noise
    assert np.array_equal(Predictor(d, min_volume_ml=0.0, min_confidence_2d=0.0).predict_case(image).label, base.label)
    assert not np.isin(Predictor(d, min_volume_ml=0.0, min_confidence_2d=1.0).predict_case(image).label, (1, 2)).any()
    vol = Predictor(d, min_volume_ml=0.0).predict_case(volume).label
    assert np.array_equal(Predictor(d, min_volume_ml=0.0, min_confidence_2d=1.0).predict_case(volume).label, vol)
    # the model folder's setting is the default, an argument overrides it, a bad one names model.json
    spec = json.loads((d / "model.json").read_text())
    (d / "model.json").write_text(json.dumps({**spec, "postprocess": {"min_mean_confidence_2d": 1.0}}))
    assert Predictor(d, min_volume_ml=0.0).min_confidence_2d == 1.0
    assert not np.isin(Predictor(d, min_volume_ml=0.0).predict_case(image).label, (1, 2)).any()
    assert np.array_equal(Predictor(d, min_volume_ml=0.0, min_confidence_2d=0.0).predict_case(image).label, base.label)
    (d / "model.json").write_text(json.dumps({**spec, "postprocess": {"min_mean_confidence_2d": 1.5}}))
    with pytest.raises(InputError, match="post-processing setting") as e:
        Predictor(d, min_volume_ml=0.0)
    assert "model.json" in str(e.value) and "1.5" in str(e.value)
