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
