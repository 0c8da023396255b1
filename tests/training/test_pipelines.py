"""Multi-part pipelines train end to end on tiny phantoms: concat ensemble phases, detector + V-Net."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from kidneyseg.training.config import TrainConfig
from kidneyseg.training.run import train_pipeline

TINY_MEMBERS = [{"arch": "unet-squeezenet", "arch_kwargs": {"decoder_channels": [8, 8, 8, 8]}},
                {"arch": "unet2d", "arch_kwargs": {"channels": [4, 8], "strides": [2], "num_res_units": 0}}]


def test_concat_ensemble_members_then_fusion(tmp_path: Path) -> None:
    from kidneyseg.data.phantoms import write_phantom_set

    data = tmp_path / "us"
    write_phantom_set(data, "us", 4, size=(48, 64), seed=0, progress=False)
    cfg = TrainConfig(epochs=2, fusion_epochs=1, batch_size=2, folds=2, progress=False, threads=1, patch_size=[32, 32],
                      stage_arch_kwargs={"main": {"members": TINY_MEMBERS, "fusion_kernel": 1}})
    out = train_pipeline("us-triple-ensemble", data, "openkidney-us", tmp_path / "m", cfg)
    rows = list(csv.DictReader(open(out / "main" / "log.csv")))
    assert [r["phase"] for r in rows] == ["members", "fusion"]
    # the fusion epoch leaves the members untouched
    ck = tmp_path / "m" / "checkpoints" / "main"
    last = torch.load(ck / "last.pt", weights_only=True)["model"]
    spec = json.loads((out / "main" / "model.json").read_text())
    assert spec["arch"] == "ensemble-concat" and len(spec["arch_kwargs"]["members"]) == 2
    assert "fusion.weight" in last


@pytest.mark.slow
def test_detect_vnet_pipeline(tmp_path: Path) -> None:
    from kidneyseg.data.phantoms import write_phantom_set

    data = tmp_path / "ct"
    write_phantom_set(data, "ct", 2, size=(48, 48, 8), seed=0, progress=False)
    cfg = TrainConfig(epochs=1, batch_size=2, folds=2, progress=False, threads=1, max_background_slices=1,
                      stage_arch_kwargs={"detector": {"min_size": 48, "max_size": 48}},
                      stage_plans={"segmenter": {"patch_size": [32, 32, 32]}})
    out = train_pipeline("ct-detect-vnet", data, "kits23", tmp_path / "m", cfg)
    spec = json.loads((out / "model.json").read_text())
    assert spec["stages"] == ["detector", "segmenter"]
    seg = json.loads((out / "segmenter" / "model.json").read_text())
    assert seg["arch"] == "vnet" and seg["channel_to_label"] == [0, 1, 2, 3]
    assert seg["plan"]["patch_size"] == [32, 32, 32] and seg["plan"]["intensity"]["kind"] == "window"
    det = json.loads((out / "detector" / "model.json").read_text())
    assert det["channel_to_label"] == [0, 1] and "recall_50" in (out / "detector" / "log.csv").read_text()
