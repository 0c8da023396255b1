"""End-to-end: `kidneyseg train` on generated slices writes a model folder that loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kidneyseg.cli import main


@pytest.fixture(scope="module")
def slices_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kidneyseg.data.phantoms import write_phantom_set

    root = tmp_path_factory.mktemp("slices")
    write_phantom_set(root, "ct", 4, size=(48, 48, 16), seed=0, layout="slices", progress=False)
    return root


def test_train_cli_writes_loadable_model_folder(slices_set: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"stage_arch_kwargs": {"main": {"decoder_channels": [16, 16, 8, 8]}}, "folds": 2}))
    out = tmp_path / "model"
    rc = main(["train", "--pipeline", "ct2d-unet-squeezenet", "--data", str(slices_set), "--format", "slices",
               "-o", str(out), "--config", str(cfg), "--epochs", "1", "--batch-size", "2", "--patch-size", "32", "32",
               "--threads", "1", "--no-progress", "--init", "kaiming"])
    assert rc == 0
    from kidneyseg.models.folder import load_model_folder

    model = load_model_folder(out)
    assert model.pipeline == "ct2d-unet-squeezenet" and list(model.stages) == ["main"]
    st = model.stages["main"]
    assert st.plan.spatial_dims == 2 and st.plan.patch_size == (32, 32)
    assert st.channel_to_label == [0, 1, 2] and model.labels == {0: "background", 1: "kidney", 2: "tumor"}
    assert model.spec["training"]["config"]["init"] == "kaiming"
    assert set(model.spec["training"]["data"]["train"]).isdisjoint(model.spec["training"]["data"]["val"])
    with torch.no_grad():
        assert st.module(torch.zeros(1, 1, 37, 41)).shape == (1, 3, 37, 41)
    # a second run into the same folder is refused
    rc = main(["train", "--pipeline", "ct2d-unet-squeezenet", "--data", str(slices_set), "--format", "slices",
               "-o", str(out), "--epochs", "1"])
    assert rc == 2 and "already holds a model" in capsys.readouterr().err


def test_train_cli_errors(slices_set: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    rc = main(["train", "--pipeline", "ct2d-nope", "--data", str(slices_set), "--format", "slices", "-o",
               str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc == 2 and "ct2d-unet-resnet" in err and "ct3d-cascade" in err
    rc = main(["train", "--pipeline", "ct2d-unet-resnet", "--data", str(slices_set), "--format", "slices", "-o",
               str(tmp_path / "m"), "--encoder-weights", "imagenet"])
    err = capsys.readouterr().err
    assert rc == 2 and "local file" in err and "never downloads" in err
    # --extra-train reaches training: a missing extra folder is named
    rc = main(["train", "--pipeline", "ct2d-unet-squeezenet", "--data", str(slices_set), "--format", "slices", "-o",
               str(tmp_path / "m"), "--extra-train", str(tmp_path / "no_phantoms"), "slices", "--epochs", "1", "--folds", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "no_phantoms" in err
    assert not (tmp_path / "m").exists()  # refused before any output folder is made


def test_models_cli_lists_and_rejects(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["models", "unet-squeezenet", "unet3d"]) == 0
    out = capsys.readouterr().out
    assert "unet-squeezenet" in out and "GFLOPs" in out and "params" in out
    assert main(["models", "resnet-unet"]) == 2
    assert "unet-resnet34" in capsys.readouterr().err


def test_train_cli_takes_several_data_sets_split_together(slices_set: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import shutil

    other = tmp_path / "other"
    shutil.copytree(slices_set, other)
    for f in other.glob("*.png"):  # the same patients under other names: a second set of the same kind
        f.rename(f.with_name("b" + f.name))
    (other / "index.csv").write_text("\n".join(
        ("b" + line if i else line) for i, line in enumerate((slices_set / "index.csv").read_text().splitlines())) + "\n")
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"stage_arch_kwargs": {"main": {"decoder_channels": [8, 8, 8, 8]}}, "folds": 2}))
    out = tmp_path / "model"
    rc = main(["train", "--pipeline", "ct2d-unet-squeezenet", "--data", str(slices_set), "--format", "slices",
               "--data", str(other), "--format", "slices", "-o", str(out), "--config", str(cfg), "--epochs", "1",
               "--batch-size", "2", "--patch-size", "32", "32", "--threads", "1", "--no-progress"])
    assert rc == 0
    data = json.loads((out / "model.json").read_text())["training"]["data"]
    assert data["extra_val"] and data["extra_train"]
    # patient ids are shared across the sets: each lands in one fold of both
    val = {n.rsplit("_z", 1)[0] for n in data["val"]} | {n.split("/", 1)[1][1:].rsplit("_z", 1)[0] for n in data["extra_val"]}
    train = {n.rsplit("_z", 1)[0] for n in data["train"]} | {n.split("/", 1)[1][1:].rsplit("_z", 1)[0] for n in data["extra_train"]}
    assert not val & train
    rc = main(["train", "--pipeline", "ct2d-unet-squeezenet", "--data", str(slices_set), "--format", "slices",
               "--data", str(other), "-o", str(tmp_path / "m2")])
    assert rc == 2 and "--data and --format must come in pairs" in capsys.readouterr().err


def test_train_uses_the_plan_data_check_prints(slices_set: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """One fingerprint, one derivation: the plan `data check --plan` writes is the plan `train` trains with
    (CT planned with the data set's foreground intensities), and `train --plan FILE` trains with an edited one."""
    from kidneyseg.models.pipelines import get_pipeline

    plan_file = tmp_path / "plan.json"
    assert main(["data", "check", str(slices_set), "--format", "slices", "--plan", str(plan_file)]) == 0
    checked = json.loads(plan_file.read_text())
    assert checked["intensity"]["kind"] == "zscore"  # CT: nnU-Net's foreground statistics, not a fixed window
    common = ["--pipeline", "ct2d-unet-squeezenet", "--data", str(slices_set), "--format", "slices", "--epochs", "1",
              "--batch-size", "2", "--patch-size", "32", "32", "--threads", "1", "--no-progress", "--folds", "2"]
    assert main(["train", *common, "-o", str(tmp_path / "derived")]) == 0
    trained = json.loads((tmp_path / "derived" / "main" / "model.json").read_text())["plan"]
    fixed = set(get_pipeline("ct2d-unet-squeezenet").stages[0].plan) | {"patch_size", "labels"}
    assert fixed == {"patch_size", "labels"}  # the pipeline fixes nothing else: every other key is compared
    assert {k: v for k, v in trained.items() if k not in fixed} == {k: v for k, v in checked.items() if k not in fixed}
    assert trained["patch_size"] == [32, 32]
    # an edited plan file is what training uses
    edited = dict(checked, target_spacing=[1.5, 1.5], intensity={"kind": "window", "low": -100, "high": 200})
    plan_file.write_text(json.dumps(edited))
    assert main(["train", *common, "-o", str(tmp_path / "given"), "--plan", str(plan_file)]) == 0
    given = json.loads((tmp_path / "given" / "main" / "model.json").read_text())["plan"]
    assert given["target_spacing"] == [1.5, 1.5] and given["intensity"] == {"kind": "window", "low": -100, "high": 200}
    # a broken plan file is named, with the key that is wrong
    plan_file.write_text(json.dumps(dict(checked, patch_size=[32])))
    capsys.readouterr()
    assert main(["train", *common, "-o", str(tmp_path / "bad"), "--plan", str(plan_file)]) == 2
    err = capsys.readouterr().err
    assert "patch_size" in err and "plan.json" in err
