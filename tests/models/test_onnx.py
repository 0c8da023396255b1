"""ONNX Runtime for segmentation stages: same results as torch, exported once, no torch import when cached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kidneyseg.case import Case
from kidneyseg.errors import InputError

pytest.importorskip("onnxruntime")

LABELS = {"0": "background", "1": "kidney", "2": "tumor"}


def _folder(d: Path, arch: str = "unet2d", kwargs: dict | None = None, seed: int = 0, dims: int = 2) -> Path:
    import torch

    from kidneyseg.models.folder import save_model_folder, save_stage
    from kidneyseg.models.registry import create_model

    torch.manual_seed(seed)
    kwargs = kwargs if kwargs is not None else {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}
    net = create_model(arch, in_channels=1, out_channels=3, **kwargs)
    plan = {"modality": "ct", "spatial_dims": dims, "orientation": "PLS" if dims == 2 else "RAS",
            "target_spacing": [2.0, 2.0] if dims == 2 else [2.0, 2.0, 2.0], "patch_size": [32] * dims,
            "intensity": {"kind": "window", "low": -100, "high": 200}, "denoise": None, "labels": LABELS}
    save_stage(d / "main", net.eval(), {"arch": arch, "arch_kwargs": kwargs, "in_channels": 1, "out_channels": 3,
                                        "channel_to_label": [0, 1, 2], "plan": plan})
    save_model_folder(d, {"pipeline": arch, "task": "kits19", "modality": "ct", "labels": LABELS,
                          "stages": ["main"]})
    return d


def _volume(shape=(45, 37, 6), seed=1) -> Case:
    rng = np.random.default_rng(seed)
    img = rng.normal(40, 80, shape).astype(np.float32)
    affine = np.array([[0, -0.9, 0, 5], [-0.9, 0, 0, -3], [0, 0, 3.0, 1], [0, 0, 0, 1.0]])  # not RAS
    return Case(img, affine, name="vol", modality="ct")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("KIDNEYSEG_CACHE", str(d))
    return d


def test_onnx_matches_torch_on_odd_sizes(tmp_path, cache):
    """Slice-wise on a volume whose slices are no multiple of the network's, and with TTA: labels equal,
    probabilities within 1e-4 (float rounding of another kernel library)."""
    from kidneyseg.inference import Predictor

    model = _folder(tmp_path / "m")
    case = _volume()
    for tta in (False, True):
        ref = Predictor(model, runtime="torch", tta=tta).predict_case(case.copy(), probabilities=True)
        got_p = Predictor(model, runtime="onnx", tta=tta)
        assert getattr(got_p.models[0].stages["main"].module, "runs_on_numpy", False)
        got = got_p.predict_case(case.copy(), probabilities=True)
        assert ref.probabilities is not None and got.probabilities is not None
        assert np.abs(ref.probabilities.astype(np.float32) - got.probabilities.astype(np.float32)).max() < 1e-3
        assert np.array_equal(ref.label, got.label)
    assert len(list((cache / "onnx").glob("*.onnx"))) == 1  # exported once, reused by the second Predictor


def test_onnx_2d_image_smaller_than_min_size(tmp_path, cache):
    """A 2D image under the network's min_size is padded and cropped back on the numpy path too."""
    from kidneyseg.inference import Predictor

    model = _folder(tmp_path / "m")
    rng = np.random.default_rng(3)
    case = Case(rng.normal(0, 50, (11, 23)).astype(np.float32), np.diag([2.0, 2.0, 1.0, 1.0]), modality="ct")
    ref = Predictor(model, runtime="torch").predict_case(case.copy(), probabilities=True)
    got = Predictor(model, runtime="onnx").predict_case(case.copy(), probabilities=True)
    assert got.label.shape == (11, 23)
    assert np.abs(ref.probabilities.astype(np.float32) - got.probabilities.astype(np.float32)).max() < 1e-3


def test_stale_export_is_not_used(tmp_path, cache):
    """An export belongs to its weights: other weights in the same folder get their own export."""
    from kidneyseg.models import onnx as onnx_rt
    from kidneyseg.models.folder import load_stage

    model = _folder(tmp_path / "m", seed=0)
    first = load_stage(model / "main", runtime="auto").module
    _folder(tmp_path / "m", seed=5)  # new weights, same file names
    second = load_stage(model / "main", runtime="auto").module
    assert first.digest != second.digest
    assert sorted(p.stem for p in (cache / "onnx").glob("*.onnx")) == sorted([first.digest, second.digest])
    # a foreign file at the cached name (made from other weights) is not trusted either
    foreign = cache / "onnx" / f"{second.digest}.onnx"
    (cache / "onnx" / f"{first.digest}.onnx").replace(foreign)
    assert onnx_rt.find_export(model / "main", second.digest) is None


def test_cached_export_runs_without_importing_torch(tmp_path, cache):
    """Once exported, predicting with the stage imports neither torch nor MONAI (the CLI's start-up cost)."""
    from kidneyseg.models.folder import load_stage

    model = _folder(tmp_path / "m")
    load_stage(model / "main", runtime="auto")  # exports into the cache
    code = (
        "import sys, numpy as np\n"
        "from kidneyseg.inference import Predictor\n"
        "from kidneyseg.case import Case\n"
        f"p = Predictor({str(model)!r}, threads=1)\n"
        "c = Case(np.zeros((30, 30, 4), np.float32), np.diag([2.0, 2.0, 3.0, 1.0]), modality='ct')\n"
        "p.predict_case(c)\n"
        "print(sorted(m for m in ('torch', 'monai', 'segmentation_models_pytorch') if m in sys.modules))\n"
    )
    env = dict(os.environ, KIDNEYSEG_CACHE=str(cache))
    env.pop("KIDNEYSEG_RUNTIME", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_export_in_the_model_folder_is_found_first(tmp_path, cache):
    from kidneyseg.models.folder import load_stage
    from kidneyseg.models.onnx import ONNX_FILE, export_model_folder

    model = _folder(tmp_path / "m")
    written = export_model_folder(model)
    assert written == [model / "main" / ONNX_FILE]
    net = load_stage(model / "main", runtime="onnx").module
    assert net.path == model / "main" / ONNX_FILE
    assert not (cache / "onnx").exists()  # nothing exported into the cache


def test_runtime_torch_and_errors(tmp_path, cache, monkeypatch):
    from kidneyseg.inference import Predictor
    from kidneyseg.models.folder import load_stage

    model = _folder(tmp_path / "m")
    assert not getattr(load_stage(model / "main", runtime="torch").module, "runs_on_numpy", False)
    with pytest.raises(InputError, match=r"auto \| onnx \| torch"):
        Predictor(model, runtime="tensorrt")
    monkeypatch.setenv("KIDNEYSEG_RUNTIME", "fast")
    with pytest.raises(InputError, match="KIDNEYSEG_RUNTIME"):
        Predictor(model)
    monkeypatch.setenv("KIDNEYSEG_RUNTIME", "torch")
    assert not getattr(Predictor(model).models[0].stages["main"].module, "runs_on_numpy", False)
    assert not (cache / "onnx").exists()


def test_detector_stage_stays_on_torch(tmp_path, cache):
    from kidneyseg.models.onnx import exportable

    assert exportable({"arch": "unet-efficientnet-lite0"})
    assert not exportable({"arch": "fasterrcnn-resnet50"})
    assert not exportable({"arch": "no-such-net"})


def test_unwritable_cache_falls_back_to_torch(tmp_path, monkeypatch, caplog):
    from kidneyseg.models.folder import load_stage

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("KIDNEYSEG_CACHE", str(blocker / "cache"))  # under a file: cannot be created
    model = _folder(tmp_path / "m")
    st = load_stage(model / "main", runtime="auto")
    assert not getattr(st.module, "runs_on_numpy", False)
    assert "running on torch" in caplog.text
    with pytest.raises(InputError, match="cannot run on ONNX Runtime"):
        load_stage(model / "main", runtime="onnx")


def test_export_metadata(tmp_path, cache):
    import onnx

    from kidneyseg.models.folder import load_stage
    from kidneyseg.models.onnx import DIGEST_KEY, stage_digest

    model = _folder(tmp_path / "m")
    net = load_stage(model / "main", runtime="auto").module
    meta = {p.key: p.value for p in onnx.load(str(net.path)).metadata_props}
    spec = json.loads((model / "main" / "model.json").read_text())
    assert meta[DIGEST_KEY] == stage_digest(model / "main" / "weights.pt", spec)
    assert meta["kidneyseg_pad_multiple"] == str(net.multiple) == "4"  # two stride-2 levels


def test_truncated_export_in_the_folder_is_ignored(tmp_path, cache):
    """A damaged model.onnx (a copy cut short) is not used: the stage exports into the cache instead."""
    from kidneyseg.models.folder import load_stage
    from kidneyseg.models.onnx import ONNX_FILE, export_model_folder

    model = _folder(tmp_path / "m")
    path = export_model_folder(model)[0]
    path.write_bytes(path.read_bytes()[:500])
    net = load_stage(model / "main", runtime="onnx").module
    assert net.path.parent == cache / "onnx" and net.path.name != ONNX_FILE
