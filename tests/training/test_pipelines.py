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
    ck = tmp_path / "m" / "checkpoints" / "main"
    after_members: dict[str, torch.Tensor] = {}

    def snapshot(epoch: int, row: dict) -> None:  # type: ignore[type-arg]
        if epoch == 0:  # last.pt is written before the callbacks run
            after_members.update(torch.load(ck / "last.pt", weights_only=True)["model"])

    out = train_pipeline("us-triple-ensemble", data, "openkidney-us", tmp_path / "m", cfg,
                         callbacks={"main": [snapshot]})
    with open(out / "main" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["phase"] for r in rows] == ["members", "fusion"]
    spec = json.loads((out / "main" / "model.json").read_text())
    assert spec["arch"] == "ensemble-concat" and len(spec["arch_kwargs"]["members"]) == 2
    # the fusion epoch leaves the members untouched (weights and batch-norm statistics) and trains the fusion
    last = torch.load(ck / "last.pt", weights_only=True)["model"]
    members = [k for k in last if k.startswith("members.")]
    assert members and after_members
    for k in members:
        assert torch.equal(last[k], after_members[k]), f"{k} changed in the fusion epoch"
    assert not torch.equal(last["fusion.weight"], after_members["fusion.weight"])


def test_concat_ensemble_ships_fusion_phase_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped ``best`` weights come from a fusion-phase epoch, however well a members-phase epoch scores:
    a members-phase epoch's fusion convolution is still random (issue 23, bug 1)."""
    from kidneyseg.data.phantoms import write_phantom_set
    from kidneyseg.training.trainer import StageTrainer

    data = tmp_path / "us"
    write_phantom_set(data, "us", 4, size=(48, 64), seed=0, progress=False)
    cfg = TrainConfig(epochs=3, fusion_epochs=1, batch_size=2, folds=2, progress=False, threads=1, patch_size=[32, 32],
                      stage_arch_kwargs={"main": {"members": TINY_MEMBERS, "fusion_kernel": 1}})
    real = StageTrainer.validate
    scored: list[str | None] = []

    def members_score_best(self: StageTrainer, samples: list, phase: str | None = None) -> dict:  # type: ignore[type-arg]
        out = real(self, samples, phase)
        scored.append(phase)
        # the members' epochs score highest, the later the lower: a rule across phases would pick epoch 1
        out["dice_mean"] = {1: 0.9, 2: 0.8}.get(len(self.rows) + 1, 0.1)
        return out

    monkeypatch.setattr(StageTrainer, "validate", members_score_best)
    ck = tmp_path / "m" / "checkpoints" / "main"
    init: dict[str, torch.Tensor] = {}

    def snapshot(epoch: int, row: dict) -> None:  # type: ignore[type-arg]
        if epoch == 0:  # the members phase never touches the fusion: its weights are still the initial ones
            init.update(torch.load(ck / "last.pt", weights_only=True)["model"])

    out = train_pipeline("us-triple-ensemble", data, "openkidney-us", tmp_path / "m", cfg,
                         callbacks={"main": [snapshot]})
    assert scored == ["members", "members", "fusion"]  # every epoch was validated, each with its phase
    with open(out / "main" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["val_output"] for r in rows] == ["members' mean", "members' mean", ""]
    shipped = torch.load(out / "main" / "weights.pt", weights_only=True)
    last = torch.load(ck / "last.pt", weights_only=True)["model"]
    assert torch.equal(shipped["fusion.weight"], last["fusion.weight"])
    assert not torch.equal(shipped["fusion.weight"], init["fusion.weight"])
    summary = json.loads((out / "main" / "model.json").read_text())["stage"]["training"]
    assert summary["best_epoch"] == 3 and summary["best_phase"] == "fusion" and summary["weights"] == "best"


def test_members_phase_validates_the_members_mean() -> None:
    """During the members phase validation scores the mean of the members' probabilities, not the random fusion."""
    from kidneyseg.models.registry import create_model
    from kidneyseg.preprocessing.plan import Plan
    from kidneyseg.training.trainer import StageTrainer

    torch.manual_seed(0)
    net = create_model("ensemble-concat", in_channels=1, out_channels=2, members=TINY_MEMBERS, fusion_kernel=1)
    plan = Plan.from_json({"modality": "us", "spatial_dims": 2, "orientation": None, "target_spacing": None,
                           "patch_size": [32, 32], "intensity": {"kind": "percentile_zscore", "low_pct": 0.5,
                                                                 "high_pct": 99.5},
                           "denoise": None, "labels": {"0": "background", "1": "kidney"}}, path="test")
    trainer = StageTrainer(net, torch.nn.CrossEntropyLoss(), TrainConfig(epochs=3), "unused", plan,
                           channel_names=["background", "kidney"])
    x = torch.randn(1, 1, 32, 32)
    net.eval()
    with torch.no_grad():
        mean = torch.stack([torch.softmax(z, 1) for z in net.member_logits(x)]).mean(0)
        torch.testing.assert_close(torch.softmax(trainer._val_forward("members")(x), 1), mean)
        torch.testing.assert_close(trainer._val_forward("fusion")(x), net(x))
    assert not trainer.counts_for_best("members") and trainer.counts_for_best("fusion")


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


def test_slice_context_stage_trains_and_predicts_on_the_input_grid(tmp_path: Path) -> None:
    """2.5D: ``context_slices: 1`` makes a 3-channel slice-wise network; prediction stacks the neighbours the same way."""
    from kidneyseg import io
    from kidneyseg.data.phantoms import write_phantom_set
    from kidneyseg.inference import Predictor

    data = tmp_path / "ct"
    write_phantom_set(data, "ct", 2, size=(40, 40, 8), seed=0, progress=False)
    cfg = TrainConfig(epochs=1, batch_size=2, folds=2, progress=False, threads=1, max_background_slices=1,
                      stage_arch_kwargs={"main": {"decoder_channels": [8, 8, 8, 8]}},
                      stage_plans={"main": {"context_slices": 1, "patch_size": [32, 32]}})
    out = train_pipeline("ct2d-unet-squeezenet", data, "kits23", tmp_path / "m", cfg)
    spec = json.loads((out / "main" / "model.json").read_text())
    assert spec["in_channels"] == 3 and spec["plan"]["context_slices"] == 1
    assert spec["mirror_axes"] == [0, 1]  # CT slices were flipped along both in-plane axes
    first = next(w for k, w in torch.load(out / "main" / "weights.pt", weights_only=True).items() if w.ndim == 4)
    assert first.shape[1] == 3  # the first convolution sees three slices
    image = sorted(data.glob("case_*/imaging.nii.gz"))[0]
    predictor = Predictor(out, threads=1)
    stage = predictor.models[0].stages["main"]
    seen: list[torch.Tensor] = []

    class Recorder(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.clone())
            return self.inner(x)

    stage.module = Recorder(stage.module)
    pred = predictor.predict_path(image)
    case = io.read(image)
    assert pred.label.shape == case.shape and pred.label.dtype.name == "uint8"
    x = torch.cat(seen)  # (K, 3, I, J): slices in order
    assert x.shape[1] == 3 and x.shape[0] == case.shape[2]
    # channel 0 of slice k is slice k-1 (clamped), channel 2 is slice k+1: the neighbours, not the image repeated
    torch.testing.assert_close(x[1:, 0], x[:-1, 1])
    torch.testing.assert_close(x[:-1, 2], x[1:, 1])
    torch.testing.assert_close(x[0, 0], x[0, 1])
    assert not torch.equal(x[:, 0], x[:, 1])
