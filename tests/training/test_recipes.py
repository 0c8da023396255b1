"""``kidneyseg train --recipe paper``: the recipe's values reach the configuration (explicit options win), and
each of the five published pipelines trains one epoch with it on tiny generated data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kidneyseg.cli import main
from kidneyseg.errors import InputError, RegistryError
from kidneyseg.training.config import TrainConfig
from kidneyseg.training.recipes import RECIPES, get_recipe, recipe_config, recipe_names

PAPER_PIPELINES = ["us-triple-ensemble", "ct2d-ensemble", "ct-detect-vnet", "ct2d-unet-squeezenet",
                   "ct2d-unet-resnet", "ct3d-cascade"]
ENSEMBLE_WEIGHTS = ["resnet50.pth", "vgg16.pth", "inception_v3.pth"]


# ------------------------------------------------------------------------------------------------ the values


def test_every_published_pipeline_has_a_paper_recipe() -> None:
    assert recipe_names() == ["paper"]
    assert sorted(RECIPES["paper"]) == sorted(PAPER_PIPELINES)
    for name in PAPER_PIPELINES:
        r = get_recipe("paper", name)
        assert r.pipeline == name and r.differences, name  # every recipe says what stays different


def test_us_triple_ensemble_paper_values() -> None:
    cfg = recipe_config("paper", "us-triple-ensemble")
    assert cfg.recipe == "paper"
    assert cfg.epochs == 100 and cfg.lr_schedule == "constant"
    assert cfg.ensemble_training == "end-to-end"
    members = [m["arch"] for m in cfg.stage_arch_kwargs["main"]["members"]]
    assert members == ["deeplabv3plus-resnet18", "deeplabv3plus-resnet152", "linknet-resnet18"]


def test_ct2d_ensemble_paper_values(tmp_path: Path) -> None:
    weights = [str(tmp_path / w) for w in ENSEMBLE_WEIGHTS]
    cfg = recipe_config("paper", "ct2d-ensemble", encoder_weights=weights)
    assert cfg.batch_size == 16 and cfg.loss == "bce-dice" and cfg.augmentation == "rot90-elastic"
    members = cfg.stage_arch_kwargs["main"]["members"]
    assert [m["arch"] for m in members] == ["unet-resnet50", "unet-vgg16", "unet-inceptionv3"]
    assert all(m["arch_kwargs"]["dropout"] > 0 for m in members)
    plan = cfg.stage_plans["main"]
    assert plan["crop"] == "body" and plan["denoise"]["method"] == "median" and plan["patch_size"] == [512, 512]


def test_ct2d_ensemble_paper_recipe_refuses_to_run_without_imagenet_encoders() -> None:
    with pytest.raises(InputError) as exc:
        recipe_config("paper", "ct2d-ensemble")
    text = str(exc.value)
    assert "resnet50.pth" in text and "vgg16.pth" in text and "inception_v3.pth" in text
    assert "never downloads" in text
    with pytest.raises(InputError):  # 'none' for one member is not an ImageNet encoder either
        recipe_config("paper", "ct2d-ensemble", encoder_weights=["a.pth", None, "c.pth"])


def test_ct_detect_vnet_paper_values() -> None:
    cfg = recipe_config("paper", "ct-detect-vnet")
    det = cfg.stage_arch_kwargs["detector"]
    assert det["backbone"] == "resnet50-c4"
    assert det["rpn_post_nms_top_n_train"] == 300 and det["rpn_post_nms_top_n_test"] == 300
    assert det["box_positive_fraction"] == 0.5 and det["rpn_positive_fraction"] == 0.5
    assert cfg.stage_plans["segmenter"]["patch_size"] == [64, 64, 32]
    assert cfg.loss == "dice"
    assert cfg.stage_facts["segmenter"]["train_on"] == "detector"


def test_paper_detector_is_faster_rcnn_c4_with_300_proposals_and_1_to_1_sampling() -> None:
    from kidneyseg.models.registry import create_model

    kwargs = dict(get_recipe("paper", "ct-detect-vnet").config["stage_arch_kwargs"]["detector"])
    det: Any = create_model("fasterrcnn-resnet50", in_channels=1, out_channels=2, min_size=64, max_size=64, **kwargs)
    net = det.net
    assert net.backbone.out_channels == 1024 and not hasattr(net.backbone, "fpn")  # C4 features, no FPN
    assert net.rpn._post_nms_top_n == {"training": 300, "testing": 300}
    assert net.roi_heads.fg_bg_sampler.positive_fraction == 0.5
    assert net.rpn.fg_bg_sampler.positive_fraction == 0.5
    assert net.roi_heads.box_head.layer4 is not None  # ResNet-50 layer4 on each RoI, as the C4 design has
    det.eval()
    with torch.no_grad():
        out = det([torch.rand(1, 64, 64)])[0]
    assert set(out) == {"boxes", "labels", "scores"}
    # a torchvision ResNet-50 state dict loads into its trunk (conv1 .. layer3)
    from torchvision.models import resnet50

    from kidneyseg.models.encoders import load_encoder_weights

    got = load_encoder_weights(det, resnet50().state_dict(), arch="fasterrcnn-resnet50")
    assert got["loaded"] == got["encoder_tensors"]


def test_ct3d_cascade_paper_values() -> None:
    cfg = recipe_config("paper", "ct3d-cascade")
    coarse = cfg.stage_plans["coarse"]
    # 3.41 x 1.71 x 1.71 mm (z, y, x), a 128 x 248 x 248 crop scaled to 96 x 128 x 128: RAS x, y, z
    np.testing.assert_allclose(coarse["target_spacing"], [1.71 * 248 / 128, 1.71 * 248 / 128, 3.41 * 128 / 96],
                               atol=1e-3)
    assert coarse["patch_size"] == [128, 128, 96]
    assert cfg.stage_plans["fine"]["patch_size"] == [128, 128, 80]
    assert cfg.stage_facts["fine"]["resize_to_patch"] and cfg.stage_facts["lesion"]["resize_to_patch"]
    assert cfg.loss == "weighted-ce-dice"


@pytest.mark.parametrize("pipeline", ["ct2d-unet-squeezenet", "ct2d-unet-resnet"])
def test_slice_unet_paper_values(pipeline: str) -> None:
    cfg = recipe_config("paper", pipeline)
    assert cfg.recipe == "paper" and cfg.loss == "dice-ce"


def test_explicit_options_win_and_stage_dicts_merge(tmp_path: Path) -> None:
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"stage_plans": {"segmenter": {"target_spacing": [2.0, 2.0, 2.0]}},
                                "stage_arch_kwargs": {"detector": {"rpn_post_nms_top_n_test": 5}}, "epochs": 7}))
    cfg = recipe_config("paper", "ct-detect-vnet", conf, epochs=2, loss="dice-ce")
    assert cfg.epochs == 2 and cfg.loss == "dice-ce"  # flags over the file over the recipe
    assert cfg.stage_plans["segmenter"] == {"patch_size": [64, 64, 32], "target_spacing": [2.0, 2.0, 2.0]}
    det = cfg.stage_arch_kwargs["detector"]
    assert det["rpn_post_nms_top_n_test"] == 5 and det["rpn_post_nms_top_n_train"] == 300
    assert det["backbone"] == "resnet50-c4"


def test_explicit_patch_size_wins_over_the_recipes_stage_sizes(tmp_path: Path) -> None:
    cfg = recipe_config("paper", "ct3d-cascade", patch_size=[32, 32, 32])
    assert cfg.patch_size == [32, 32, 32]
    assert all("patch_size" not in p for p in cfg.stage_plans.values())
    assert cfg.stage_plans["coarse"]["target_spacing"][2] == pytest.approx(4.5467)  # the rest of the recipe stays
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"patch_size": [32, 32, 32], "stage_plans": {"fine": {"patch_size": [16, 16, 8]}}}))
    cfg = recipe_config("paper", "ct3d-cascade", conf)
    assert cfg.stage_plans["fine"]["patch_size"] == [16, 16, 8] and "patch_size" not in cfg.stage_plans["coarse"]


def test_no_recipe_is_the_default_config() -> None:
    for name in PAPER_PIPELINES:
        assert recipe_config(None, name).to_dict() == TrainConfig().to_dict()


def test_unknown_recipe_or_pipeline_without_it_lists_the_valid_names() -> None:
    with pytest.raises(RegistryError) as exc:
        recipe_config("papr", "ct3d-cascade")
    assert "paper" in str(exc.value)
    with pytest.raises(InputError) as exc2:
        recipe_config("paper", "unet3d")
    assert "ct3d-cascade" in str(exc2.value) and "us-triple-ensemble" in str(exc2.value)
    with pytest.raises(RegistryError) as exc3:  # an unknown pipeline is named as such
        recipe_config("paper", "no-such-pipeline")
    assert "pipeline" in str(exc3.value)


def test_train_help_lists_the_recipes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = "".join(capsys.readouterr().out.split())  # argparse wraps lines at hyphens
    assert "--recipeNAME" in help_text and "paper(ct-detect-vnet,ct2d-ensemble,ct2d-unet-resnet" in help_text


def test_cli_unknown_recipe_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--pipeline", "ct3d-cascade", "--recipe", "nope", "--data", str(tmp_path), "--format",
               "kits23", "-o", str(tmp_path / "m")])
    assert rc == 2 and "paper" in capsys.readouterr().err


def test_rot90_elastic_augmentation_rotates_and_deforms_only() -> None:
    from monai import transforms as T

    from kidneyseg.augmentation.transforms import build_train_transform, flip_axes

    tf = build_train_transform("ct", 2, [32, 32], strength="rot90-elastic")
    kinds = [type(t) for t in tf.transforms]
    assert T.RandRotate90d in kinds and T.Rand2DElasticd in kinds
    assert T.RandFlipd not in kinds and T.RandZoomd not in kinds and T.RandShiftIntensityd not in kinds
    assert flip_axes("ct", 2, "rot90-elastic", False) == []  # so --tta mirrors nothing
    with pytest.raises(Exception, match="square"):
        build_train_transform("ct", 2, [32, 48], strength="rot90-elastic")


def test_smp_member_dropout() -> None:
    from kidneyseg.models.registry import create_model

    net = create_model("linknet-resnet18", dropout=0.5)
    assert any(isinstance(m, torch.nn.Dropout2d) and m.p == 0.5 for m in net.modules())
    assert not any(isinstance(m, torch.nn.Dropout2d) for m in create_model("linknet-resnet18").modules())


def test_detector_crop_samples_are_cut_where_the_detector_finds_the_kidney() -> None:
    """The V-Net trains on the detector's box (here a fake detector's fixed box), not only on the ground truth."""
    from kidneyseg.case import Case
    from kidneyseg.training.samples import detector_crop_samples

    label = np.zeros((40, 40, 8), np.uint8)
    label[10:20, 12:22, 2:6] = 1
    image = np.random.default_rng(0).random((40, 40, 8)).astype(np.float32)
    case = Case(image=image, label=label, affine=np.eye(4), name="c", modality="ct")

    class FakeDetector(torch.nn.Module):  # one box, rows 5..25, columns 8..30, on every slice
        def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
            return [{"boxes": torch.tensor([[8.0, 5.0, 30.0, 25.0]]), "scores": torch.tensor([0.9]),
                     "labels": torch.tensor([1])} for _ in images]

    got = detector_crop_samples(case, case, FakeDetector(), "kits23", {0: 0, 1: 1}, 0.0, [16, 16, 8])
    assert [s["name"] for s in got] == ["c_det0"]  # the kidney is inside the detected box: no ground-truth crop
    assert got[0]["box"] == ((5, 25), (8, 30), (0, 8))
    assert got[0]["image"].shape == (1, 16, 16, 8) and got[0]["label"].max() == 1

    class Blind(torch.nn.Module):
        def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
            return [{"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "labels": torch.zeros(0)}
                    for _ in images]

    missed = detector_crop_samples(case, case, Blind(), "kits23", {0: 0, 1: 1}, 0.0, [16, 16, 8])
    assert [s["name"] for s in missed] == ["c_kidney0"]  # a missed kidney still gets its ground-truth crop


# ---------------------------------------------------------------------------------------- one epoch of each


def _model_json(out: Path, stage: str | None = None) -> dict[str, Any]:
    return json.loads(((out / stage) if stage else out).joinpath("model.json").read_text())


def _train(args: list[str]) -> None:
    assert main(["train", *args, "--epochs", "1", "--threads", "2", "--no-progress", "--recipe", "paper"]) == 0


def _assert_recipe_recorded(out: Path, pipeline: str) -> dict[str, Any]:
    top = _model_json(out)
    assert top["pipeline"] == pipeline and top["card"]["recipe"] == "paper"
    assert top["training"]["config"]["recipe"] == "paper"
    assert top["training"]["recipe"]["name"] == "paper" and top["training"]["recipe"]["differences"]
    return top


@pytest.fixture(scope="module")
def ct_volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kidneyseg.data.phantoms import write_phantom_set

    root = tmp_path_factory.mktemp("ct")
    write_phantom_set(root, "ct", 2, size=(48, 48, 12), seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def ct_slices(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kidneyseg.data.phantoms import write_phantom_set

    root = tmp_path_factory.mktemp("slices")
    write_phantom_set(root, "ct", 2, size=(48, 48, 12), seed=0, layout="slices", progress=False)
    return root


def test_us_triple_ensemble_trains_with_paper_recipe(tmp_path: Path) -> None:
    from kidneyseg.data.phantoms import write_phantom_set

    data = tmp_path / "us"
    write_phantom_set(data, "us", 2, size=(32, 32), seed=0, progress=False)
    out = tmp_path / "m"
    # CI size: DeepLabV3+ ResNet-152 (the recipe's second member, tested above) alone takes 15 s to build and step
    conf = tmp_path / "c.json"
    members = [{"arch": "deeplabv3plus-resnet18", "arch_kwargs": {}},
               {"arch": "deeplabv3plus-mobilenetv2", "arch_kwargs": {}},
               {"arch": "linknet-resnet18", "arch_kwargs": {}}]
    conf.write_text(json.dumps({"stage_arch_kwargs": {"main": {"members": members}}}))
    _train(["--pipeline", "us-triple-ensemble", "--data", str(data), "--format", "openkidney-us", "-o", str(out),
            "--fold", "-1", "--patch-size", "32", "32", "--batch-size", "2", "--config", str(conf)])
    top = _assert_recipe_recorded(out, "us-triple-ensemble")
    cfg = top["training"]["config"]
    assert cfg["lr_schedule"] == "constant" and cfg["ensemble_training"] == "end-to-end" and cfg["epochs"] == 1
    main_stage = _model_json(out, "main")
    assert main_stage["arch_kwargs"]["fusion_kernel"] == 3  # the recipe's, kept beside the config's members
    log = (out / "main" / "log.csv").read_text()
    assert "end-to-end" in log  # members and fusion trained together


def test_ct2d_ensemble_trains_with_paper_recipe(ct_slices: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import kidneyseg.models.encoders as enc

    weights = []
    for name in ENSEMBLE_WEIGHTS:
        (tmp_path / name).write_bytes(b"stand-in")  # the loader is replaced below: real files are 60-100 MB each
        weights += ["--encoder-weights", str(tmp_path / name)]
    loaded: list[tuple[str, str]] = []
    monkeypatch.setattr(enc, "load_encoder_weights", lambda module, w, *, arch: loaded.append((arch, Path(w).name)))
    out = tmp_path / "m"
    # CI size: three small members with the recipe's dropout (ResNet-50, VGG16 and InceptionV3, whose 128 px
    # minimum the slices would be padded to, take 40 s here); the recipe's members are tested above
    conf = tmp_path / "c.json"
    small = ["unet-resnet34", "linknet-resnet18", "linknet-mobilenetv2"]
    conf.write_text(json.dumps({"stage_arch_kwargs": {"main": {"members": [
        {"arch": a, "arch_kwargs": {"dropout": 0.5}} for a in small]}}}))
    _train(["--pipeline", "ct2d-ensemble", "--data", str(ct_slices), "--format", "slices", "-o", str(out),
            "--fold", "-1", "--max-cases", "1", "--patch-size", "64", "64", "--batch-size", "3", "--config", str(conf),
            *weights])
    assert loaded == list(zip(small, ENSEMBLE_WEIGHTS))  # one ImageNet file per member, in member order
    top = _assert_recipe_recorded(out, "ct2d-ensemble")
    cfg = top["training"]["config"]
    assert cfg["loss"] == "bce-dice" and cfg["augmentation"] == "rot90-elastic"
    stage = _model_json(out, "main")
    assert stage["plan"]["crop"] == "body" and stage["plan"]["denoise"]["method"] == "median"
    # the explicit --patch-size wins over the recipe's 512 x 512; no flips, so --tta mirrors nothing
    assert stage["plan"]["patch_size"] == [64, 64] and stage["mirror_axes"] == []
    assert stage["stage"]["training"]["loss"] == "bce-dice"


@pytest.mark.parametrize("pipeline", ["ct2d-unet-squeezenet", "ct2d-unet-resnet"])
def test_slice_unets_train_with_paper_recipe(pipeline: str, ct_slices: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    _train(["--pipeline", pipeline, "--data", str(ct_slices), "--format", "slices", "-o", str(out),
            "--fold", "-1", "--max-cases", "1", "--patch-size", "64", "64", "--batch-size", "3"])
    _assert_recipe_recorded(out, pipeline)
    assert _model_json(out, "main")["stage"]["training"]["loss"] == "dice-ce"


@pytest.mark.slow  # 25-45 s on 2 shared CPU cores: ResNet-50 Faster R-CNN steps take seconds even on 48 px slices
def test_ct_detect_vnet_trains_with_paper_recipe(ct_volumes: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import kidneyseg.training.samples as S

    calls: list[str] = []
    real = S.detector_crop_samples

    def spy(case: Any, det_case: Any, detector: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        calls.append(type(detector).__name__)
        return real(case, det_case, detector, *args, **kwargs)

    monkeypatch.setattr(S, "detector_crop_samples", spy)
    conf = tmp_path / "c.json"
    # small enough for CI: 48 px slices, few RoIs (the recipe's 300 proposals and 64x64x32 crops are tested above)
    conf.write_text(json.dumps({"max_background_slices": 0, "stage_plans": {"segmenter": {"patch_size": [32, 32, 16]}},
                                "stage_arch_kwargs": {"detector": {"min_size": 48, "max_size": 48,
                                                                   "box_batch_size_per_image": 4,
                                                                   "rpn_post_nms_top_n_train": 8,
                                                                   "rpn_post_nms_top_n_test": 8}}}))
    out = tmp_path / "m"
    _train(["--pipeline", "ct-detect-vnet", "--data", str(ct_volumes), "--format", "kits23", "-o", str(out),
            "--fold", "-1", "--max-cases", "1", "--config", str(conf), "--batch-size", "2"])
    assert calls == ["KidneyDetector"]  # the segmenter's crops came from the trained detector
    _assert_recipe_recorded(out, "ct-detect-vnet")
    det = _model_json(out, "detector")
    assert det["arch_kwargs"]["backbone"] == "resnet50-c4" and det["arch_kwargs"]["box_positive_fraction"] == 0.5
    seg = _model_json(out, "segmenter")
    assert seg["stage"]["train_on"] == "detector" and seg["stage"]["training"]["loss"] == "dice"
    assert seg["plan"]["patch_size"] == [32, 32, 16]


def test_ct3d_cascade_trains_and_predicts_with_paper_recipe(ct_volumes: Path, tmp_path: Path) -> None:
    from kidneyseg.inference import Predictor

    conf = tmp_path / "c.json"
    tiny = {"channels": [4, 8], "strides": [2], "num_res_units": 0}
    conf.write_text(json.dumps({
        "stage_plans": {"coarse": {"patch_size": [16, 16, 16]}, "fine": {"patch_size": [16, 16, 8]},
                        "lesion": {"patch_size": [16, 16, 8]}},
        "stage_arch_kwargs": {"coarse": tiny, "fine": tiny, "lesion": tiny}}))
    out = tmp_path / "m"
    _train(["--pipeline", "ct3d-cascade", "--data", str(ct_volumes), "--format", "kits23", "-o", str(out),
            "--fold", "-1", "--config", str(conf), "--batch-size", "2"])
    top = _assert_recipe_recorded(out, "ct3d-cascade")
    coarse = _model_json(out, "coarse")
    np.testing.assert_allclose(coarse["plan"]["target_spacing"], [3.3131, 3.3131, 4.5467])
    for stage in ("fine", "lesion"):
        if stage in top["stages"]:
            spec = _model_json(out, stage)
            assert spec["stage"]["resize_to_patch"] is True and spec["plan"]["patch_size"] == [16, 16, 8]
            assert spec["stage"]["training"]["loss"] == "weighted-ce-dice"
    assert "fine" in top["stages"]
    # prediction resamples each kidney crop to the fine patch, as training did
    image = sorted(ct_volumes.glob("case_*/imaging.nii.gz"))[0]
    seen: list[tuple[int, ...]] = []
    predictor = Predictor(out, threads=1)
    fine = predictor.models[0].stages["fine"]
    inner = fine.module

    class Recorder(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(tuple(x.shape[2:]))
            return inner(x)

    fine.module = Recorder()
    pred = predictor.predict_path(image)
    assert pred.label.dtype == np.uint8
    assert seen and all(s == (16, 16, 8) for s in seen)
