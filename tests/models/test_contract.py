"""One contract test class run for every registry entry.

forward + backward on the right number of spatial dims, an odd input size
(the registry's padding wrapper makes every segmentation model accept it),
save -> load through the model folder gives identical outputs, and a wrong
number of spatial dims is refused with a KidneysegError.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from kidneyseg.errors import KidneysegError
from kidneyseg.models.folder import load_stage, save_stage
from kidneyseg.models.registry import create_model, model_info, model_names

# Ensembles are tested with small members (their own pipelines' members are
# regular registry entries, each tested on its own).
SMALL_MEMBERS = [{"arch": "unet-squeezenet", "arch_kwargs": {}}, {"arch": "unet-resnet34", "arch_kwargs": {}}]
ARCH_KWARGS: dict[str, dict[str, Any]] = {
    "ensemble-mean": {"members": SMALL_MEMBERS},
    "ensemble-concat": {"members": SMALL_MEMBERS, "fusion_kernel": 3},
    "unet3d": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1},
    "fasterrcnn-resnet50": {"min_size": 96, "max_size": 96},
}
SEG_NAMES = [n for n in model_names() if model_info(n).kind == "segmentation"]


# Odd sizes below min_size still work where the padded size trains with batch 2 (V-Net: 17 -> 32).
ODD_SIZE = {"vnet": 17}


def _odd_size(name: str) -> tuple[int, ...]:
    info = model_info(name)
    return (ODD_SIZE.get(name, info.min_size + 1),) * info.spatial_dims


_CACHE: dict[str, torch.nn.Module] = {}


def _build(name: str) -> torch.nn.Module:
    """Each model is built once per session (building VGG/ResNet-152 costs seconds on 2 cores)."""
    if name not in _CACHE:
        torch.manual_seed(0)
        out = 2 if model_info(name).kind == "detection" else 3
        _CACHE[name] = create_model(name, in_channels=1, out_channels=out, **ARCH_KWARGS.get(name, {}))
    return _CACHE[name]


def _spec(name: str) -> dict[str, Any]:
    dims = model_info(name).spatial_dims
    plan = {"modality": "ct", "spatial_dims": dims, "orientation": "RAS", "target_spacing": None,
            "patch_size": [64] * dims, "intensity": {"kind": "window", "low": -60, "high": 300}, "denoise": None,
            "labels": {"0": "background", "1": "kidney", "2": "tumor"}}
    return {
        "arch": name, "arch_kwargs": ARCH_KWARGS.get(name, {}), "in_channels": 1, "out_channels": 3,
        "channel_to_label": [0, 1, 2], "plan": plan,
    }


def test_registry_lists_every_required_model() -> None:
    required = {
        "unet2d", "unet3d", "vnet", "deeplabv3plus-resnet18", "deeplabv3plus-resnet152", "linknet-resnet34",
        "unet-resnet50", "unet-vgg16", "unet-inceptionv3", "unet-resnet34", "unet-squeezenet",
        "ensemble-mean", "ensemble-concat", "fasterrcnn-resnet50",
    }
    assert required <= set(model_names())


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(KidneysegError) as exc:
        create_model("unet-resnet999")
    assert "unet-resnet34" in str(exc.value) and "vnet" in str(exc.value)


@pytest.mark.parametrize("name", SEG_NAMES)
class TestSegmentationContract:
    def test_forward_backward_odd_size(self, name: str) -> None:
        model = _build(name).train()
        size = _odd_size(name)
        x = torch.randn(2, 1, *size)
        y = model(x)
        assert tuple(y.shape) == (2, 3, *size)
        y.float().mean().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert any(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
        assert model.spatial_dims == model_info(name).spatial_dims

    def test_save_load_identical(self, name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
        model = _build(name).eval()
        size = _odd_size(name)
        x = torch.randn(1, 1, *size)
        with torch.no_grad():
            before = model(x)
        save_stage(tmp_path / "main", model, _spec(name))
        stage = load_stage(tmp_path / "main")
        assert not stage.module.training
        with torch.no_grad():
            after = stage.module(x)
        assert torch.equal(before, after)
        assert stage.channel_to_label == [0, 1, 2]

    def test_wrong_dims_refused(self, name: str) -> None:
        info = model_info(name)
        model = _build(name).eval()
        wrong = (info.min_size,) * (5 - info.spatial_dims)  # 3 spatial axes for 2D, 2 for 3D
        # the package's own error (naming the shape found and the one expected), not whatever torch raises
        with pytest.raises(KidneysegError, match="spatial"), torch.no_grad():
            model(torch.randn(1, 1, *wrong))


class TestDetectorContract:
    name = "fasterrcnn-resnet50"

    def _target(self) -> list[dict[str, torch.Tensor]]:
        return [{"boxes": torch.tensor([[10.0, 20.0, 40.0, 60.0], [55.0, 22.0, 85.0, 70.0]]),
                 "labels": torch.tensor([1, 1])}]

    def test_train_losses_backward_then_save_load_identical(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        model = _build(self.name).train()
        losses = model(torch.rand(1, 1, 97, 97), self._target())
        assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} <= set(losses)
        sum(losses.values()).backward()
        model.eval()
        x = torch.rand(1, 1, 97, 97)
        with torch.no_grad():
            before = model(x)
        spec = _spec(self.name) | {"out_channels": 2, "channel_to_label": [0, 1]}
        save_stage(tmp_path / "detector", model, spec)
        after_model = load_stage(tmp_path / "detector").module
        with torch.no_grad():
            after = after_model(x)
        assert len(before) == len(after) == 1
        for k in ("boxes", "scores", "labels"):
            assert torch.equal(before[0][k], after[0][k])


def test_mean_ensemble_is_mean_of_member_probabilities() -> None:
    model = _build("ensemble-mean").eval()
    x = torch.randn(1, 1, 40, 40)
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)
        members = torch.stack([torch.softmax(m(x), dim=1) for m in model.members]).mean(0)
    np.testing.assert_allclose(probs.numpy(), members.numpy(), atol=1e-5)


def test_a_broken_plan_in_model_json_names_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    name = "unet2d"
    spec = _spec(name)
    spec["plan"] = dict(spec["plan"], target_spacing=[0.8], pach_size=[64, 64])
    save_stage(tmp_path / "main", _build(name), spec)
    with pytest.raises(KidneysegError) as exc:
        load_stage(tmp_path / "main")
    assert "model.json" in str(exc.value) and "pach_size" in str(exc.value)  # unknown keys are refused first
    spec["plan"].pop("pach_size")
    (tmp_path / "main" / "model.json").write_text(json.dumps(spec))
    with pytest.raises(KidneysegError, match="target_spacing") as exc:
        load_stage(tmp_path / "main")
    assert "model.json" in str(exc.value)


def test_ensemble_member_list_and_encoder_weights_refusals(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The ensemble's own input checks give their whole message (file, found, expected, fix)."""
    from pathlib import Path

    from kidneyseg.models.ensemble import _build_members

    for members in ([], "unet-resnet50"):
        with pytest.raises(KidneysegError) as exc:
            _build_members(members, 1, 2, None)  # type: ignore[arg-type]
        assert str(exc.value) == (f"an ensemble needs a non-empty list of members; found {members}; expected "
                                  '[{"arch": NAME, "arch_kwargs": {...}}, ...]. '
                                  "Fix: list the member architectures in arch_kwargs['members']")
    for one in ("w.pth", b"w.pth", Path("w.pth")):
        with pytest.raises(KidneysegError) as exc:
            _build_members(SMALL_MEMBERS, 1, 2, one)
        assert str(exc.value) == (f"an ensemble takes one encoder-weights file per member; found {one}; expected "
                                  f"a list of {len(SMALL_MEMBERS)} paths (or None entries). Fix: give "
                                  "--encoder-weights once per member, in member order (use 'none' to skip one)")
    with pytest.raises(KidneysegError) as exc:
        _build_members(SMALL_MEMBERS, 1, 2, [None])
    assert str(exc.value) == (f"wrong number of encoder-weights files for the ensemble; found 1; expected "
                              f"{len(SMALL_MEMBERS)}. Fix: give one path per member, in member order (use 'none' to "
                              "skip one)")
    mods = _build_members(SMALL_MEMBERS, 1, 2, [None] * len(SMALL_MEMBERS))  # one entry per member: built
    assert len(mods) == len(SMALL_MEMBERS)


@pytest.mark.parametrize("arch", ["ensemble-mean", "ensemble-concat"])
def test_ensemble_defaults_and_per_member_encoder_weights(arch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torchvision

    from kidneyseg.models.ensemble import ConcatFusionEnsemble, MeanEnsemble

    cls = MeanEnsemble if arch == "ensemble-mean" else ConcatFusionEnsemble
    net = cls(SMALL_MEMBERS)  # defaults: one input channel, two classes (and a 3x3 fusion)
    assert net(torch.zeros(1, 1, 64, 64)).shape == (1, 2, 64, 64)
    if arch == "ensemble-concat":
        assert tuple(net.fusion.weight.shape) == (2, 2 * len(SMALL_MEMBERS), 3, 3)
    torch.manual_seed(1)
    ref = torchvision.models.resnet34(weights=None)
    path = tmp_path / "resnet34.pth"
    torch.save(ref.state_dict(), path)
    loaded = cls(SMALL_MEMBERS, encoder_weights=[None, str(path)])  # the second member is the ResNet-34 U-Net
    assert torch.equal(loaded.members[1].net.encoder.layer4[2].conv2.weight, ref.layer4[2].conv2.weight)


def test_fusion_kernel_must_be_odd() -> None:
    from kidneyseg.models.ensemble import ConcatFusionEnsemble

    with pytest.raises(KidneysegError) as exc:
        ConcatFusionEnsemble(SMALL_MEMBERS, fusion_kernel=2)
    assert str(exc.value) == "fusion_kernel must be odd; found 2; expected 1 or 3. Fix: set arch_kwargs.fusion_kernel to 1 or 3"


@pytest.mark.parametrize("kernel", [1, 3])
def test_concat_fusion_starts_as_the_mean_of_the_member_logits(kernel) -> None:  # type: ignore[no-untyped-def]
    from kidneyseg.models.ensemble import ConcatFusionEnsemble

    torch.manual_seed(0)
    net = ConcatFusionEnsemble(SMALL_MEMBERS, out_channels=3, fusion_kernel=kernel).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        logits = net.member_logits(x)
        expected = torch.stack(logits).mean(dim=0)
        assert torch.allclose(net(x), expected, atol=1e-5)
    # the random start of PyTorch is still there on request, and an unknown name is refused
    torch.manual_seed(0)
    rnd = ConcatFusionEnsemble(SMALL_MEMBERS, out_channels=3, fusion_kernel=kernel, fusion_init="random")
    assert not torch.allclose(rnd.fusion.weight, net.fusion.weight)
    with pytest.raises(KidneysegError, match="unknown fusion_init; found avg; expected 'mean' or 'random'"):
        ConcatFusionEnsemble(SMALL_MEMBERS, fusion_init="avg")


def test_a_resnet_encoder_cut_to_fewer_stages_holds_only_what_runs() -> None:
    from kidneyseg.models.registry import create_model

    full = create_model("deeplabv3plus-resnet18", in_channels=1, out_channels=2)
    cut = create_model("deeplabv3plus-resnet18", in_channels=1, out_channels=2, encoder_depth=4)
    assert any(".layer4." in k for k in full.state_dict())
    assert not any(".layer4." in k for k in cut.state_dict())
    assert any(".layer3." in k for k in cut.state_dict())
    with torch.no_grad():
        assert cut.eval()(torch.zeros(1, 1, 64, 96)).shape == (1, 2, 64, 96)


def test_members_min_size_is_the_largest_members() -> None:
    from kidneyseg.models.registry import members_min_size

    assert members_min_size([{"arch": "unet-squeezenet"}, {"arch": "unet-inceptionv3"}]) == max(
        model_info("unet-squeezenet").min_size, model_info("unet-inceptionv3").min_size) == 128
    assert members_min_size([{"arch": "unet-squeezenet"}]) == model_info("unet-squeezenet").min_size == 16
    assert members_min_size([]) == 1 and members_min_size(["not a spec"]) == 1  # type: ignore[list-item]


@pytest.mark.parametrize("arch", ["unet3d", "fasterrcnn-resnet50", "ensemble-mean"])
def test_ensemble_members_must_be_2d_segmentation_models(arch: str) -> None:
    from kidneyseg.models.ensemble import _build_members

    with pytest.raises(KidneysegError) as exc:
        _build_members([{"arch": arch}], 1, 2, None)
    assert str(exc.value) == (f"ensemble members must be 2D segmentation models; found {arch}; expected a 2D "
                              "segmentation registry name. Fix: pick members such as unet-resnet50 or "
                              "deeplabv3plus-resnet18")
