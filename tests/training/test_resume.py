"""Resume gives the same weights as an uninterrupted run (interrupt in-process, and kill -9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kidneyseg.training.config import TrainConfig
from kidneyseg.training.run import train_pipeline

TINY = {"main": {"channels": [4, 8], "strides": [2], "num_res_units": 0}}


def _cfg(epochs: int = 3) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=2, folds=2, seed=7, progress=False, threads=1,
                       patch_size=[16, 16, 16], stage_arch_kwargs=TINY)


@pytest.fixture(scope="module")
def mr_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kidneyseg.data.phantoms import write_phantom_set

    root = tmp_path_factory.mktemp("mr")
    write_phantom_set(root, "mr", 4, size=(32, 32, 8), seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def uninterrupted(mr_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("a") / "model"
    train_pipeline("unet3d", mr_set, "chaos-mr", out, _cfg())
    return out


def _weights(d: Path) -> dict[str, torch.Tensor]:
    return torch.load(d / "main" / "weights.pt", weights_only=True)


def _same(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    la = (a / "main" / "log.csv").read_text().splitlines()
    lb = (b / "main" / "log.csv").read_text().splitlines()
    drop_seconds = lambda lines: [",".join(x.split(",")[:-1]) for x in lines]  # noqa: E731
    assert drop_seconds(la) == drop_seconds(lb)


def test_model_folder_written(uninterrupted: Path) -> None:
    spec = json.loads((uninterrupted / "model.json").read_text())
    assert spec["pipeline"] == "unet3d" and spec["stages"] == ["main"] and spec["format_version"] == 1
    stage = json.loads((uninterrupted / "main" / "model.json").read_text())
    assert stage["arch"] == "unet3d" and stage["plan"]["spatial_dims"] == 3
    assert stage["channel_to_label"] == [0, 1, 2, 3, 4]
    assert (uninterrupted / "main" / "curves.png").stat().st_size > 0
    assert len((uninterrupted / "main" / "log.csv").read_text().splitlines()) == 4
    assert "torch" in spec["versions"]


def test_resume_after_interrupt_same_weights(mr_set: Path, uninterrupted: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"

    def stop(epoch: int, row: dict) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_pipeline("unet3d", mr_set, "chaos-mr", out, _cfg(), callbacks={"main": [stop]})
    assert not (out / "model.json").exists()
    with pytest.raises(Exception, match="--resume"):
        train_pipeline("unet3d", mr_set, "chaos-mr", out, _cfg())
    train_pipeline("unet3d", mr_set, "chaos-mr", out, _cfg(), resume=True)
    _same(uninterrupted, out)


def test_resume_refuses_changed_options(mr_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "config.json").write_text(json.dumps(_cfg().to_dict()))
    with pytest.raises(Exception, match="seed"):
        train_pipeline("unet3d", mr_set, "chaos-mr", out, TrainConfig(**{**_cfg().to_dict(), "seed": 8}), resume=True)


def test_resume_after_kill_9_same_weights(mr_set: Path, uninterrupted: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    cfg_file = tmp_path / "cfg.json"
    cfg = _cfg().to_dict()
    cfg_file.write_text(json.dumps(cfg))
    cmd = [sys.executable, "-m", "kidneyseg.cli", "train", "--pipeline", "unet3d", "--data", str(mr_set),
           "--format", "chaos-mr", "-o", str(out), "--config", str(cfg_file), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = out / "checkpoints" / "main" / "last.pt"
    deadline = time.time() + 120
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.fail("training finished before it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model.json").exists()
    train_pipeline("unet3d", mr_set, "chaos-mr", out, _cfg(), resume=True)
    _same(uninterrupted, out)
