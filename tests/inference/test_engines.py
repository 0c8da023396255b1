"""Engines on plain nn.Modules: sliding window, slice-wise, TTA, detector boxes -> 3D boxes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kidneyseg.inference.engines import (  # noqa: E402
    boxes_to_3d,
    detect_slices,
    predict_2d,
    predict_slicewise,
    predict_with_tta,
    sliding_window_3d,
)


class Pointwise(torch.nn.Module):
    """Logits (x, -x): pointwise, so any tiling or mirroring gives the same answer."""

    spatial_dims = 3

    def forward(self, x):
        return torch.cat([-x[:, :1], x[:, :1]], dim=1)


class Shift(torch.nn.Module):
    """Logit 1 = value of the next voxel along the last axis (not mirror-equivariant)."""

    def forward(self, x):
        nxt = torch.roll(x[:, :1], shifts=-1, dims=-1)
        return torch.cat([torch.zeros_like(nxt), nxt], dim=1)


def _softmax2(v):
    return 1.0 / (1.0 + np.exp(-v))


def test_sliding_window_matches_whole_volume_for_pointwise_net(rng):
    img = rng.normal(size=(1, 30, 26, 21)).astype(np.float32)
    p = sliding_window_3d(Pointwise(), img, (16, 16, 16), overlap=0.5)
    assert p.shape == (2, 30, 26, 21) and p.dtype == np.float32
    np.testing.assert_allclose(p[1], _softmax2(2 * img[0]), atol=1e-5)
    np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)
    p_tta = sliding_window_3d(Pointwise(), img, (16, 16, 16), tta=True)
    np.testing.assert_allclose(p_tta, p, atol=1e-5)


def test_tta_unmirrors_outputs():
    x = torch.arange(6, dtype=torch.float32).reshape(1, 1, 6)
    # mirrored along the last axis, "next voxel" becomes "previous voxel": average of both
    p = predict_with_tta(Shift(), x[:, :, None, :], tta=True, spatial_dims=2, mirror_axes=[1])
    nxt = torch.roll(x, -1, -1)
    prv = torch.roll(x, 1, -1)
    expect = 0.5 * (torch.sigmoid(nxt) + torch.sigmoid(prv))
    torch.testing.assert_close(p[0, 1, 0], expect[0, 0])


def test_slicewise_and_2d(rng):
    vol = rng.normal(size=(1, 20, 18, 7)).astype(np.float32)
    seen = []
    p = predict_slicewise(Pointwise(), vol, batch_size=3, progress=seen.append)
    assert p.shape == (2, 20, 18, 7) and sum(seen) == 7
    np.testing.assert_allclose(p[1], _softmax2(2 * vol[0]), atol=1e-5)
    q = predict_2d(Pointwise(), vol[..., 3], tta=True)
    np.testing.assert_allclose(q, p[..., 3], atol=1e-5)


class FakeDetector(torch.nn.Module):
    """Returns one box where the slice has bright pixels (a stand-in for Faster R-CNN's eval output)."""

    def forward(self, images):
        from scipy import ndimage

        out = []
        for im in images:
            lab, _ = ndimage.label(im[0].numpy() > 0.5, structure=np.ones((3, 3)))
            boxes = [[sl[1].start, sl[0].start, sl[1].stop, sl[0].stop] for sl in ndimage.find_objects(lab)]
            b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
            out.append({"boxes": b, "scores": torch.full((len(b),), 0.9), "labels": torch.ones(len(b))})
        return out


def test_detections_to_two_kidney_boxes():
    vol = np.zeros((1, 40, 30, 12), np.float32)
    vol[0, 3:10, 5:15, 2:9] = 1  # kidney A
    vol[0, 25:35, 8:20, 3:11] = 1  # kidney B (larger)
    vol[0, 20, 25, 0] = 1  # a one-slice speck: third component, dropped
    det = detect_slices(FakeDetector(), vol, batch_size=5)
    assert set(det) == {0} | set(range(2, 11))
    boxes = boxes_to_3d(det, vol.shape[1:])
    assert boxes == [((25, 35), (8, 20), (3, 11)), ((3, 10), (5, 15), (2, 9))]


class NeedsSixteen(torch.nn.Module):
    """Shift, refusing inputs under 16 pixels per axis (as InceptionV3 refuses small images)."""

    def forward(self, x):
        if min(x.shape[2:]) < 16:
            raise RuntimeError("Calculated padded input size per channel: (2 x 2)")
        return Shift()(x)


def test_inputs_under_min_size_are_padded_and_cropped_back(rng):
    """A 2D image or slices smaller than the network's min_size: zero-padded at the high end, output cropped back."""
    from kidneyseg.inference.engines import min_size_forward

    img = rng.normal(size=(1, 5, 7)).astype(np.float32)
    with pytest.raises(RuntimeError):
        predict_2d(NeedsSixteen(), img)
    p = predict_2d(NeedsSixteen(), img, min_size=16, tta=True)
    assert p.shape == (2, 5, 7)
    padded = np.zeros((1, 16, 16), np.float32)
    padded[:, :5, :7] = img
    np.testing.assert_allclose(p, predict_2d(Shift(), padded, tta=True)[:, :5, :7], atol=1e-6)
    vol = rng.normal(size=(1, 5, 7, 3)).astype(np.float32)
    assert predict_slicewise(NeedsSixteen(), vol, min_size=16).shape == (2, 5, 7, 3)
    big = torch.from_numpy(rng.normal(size=(1, 1, 16, 20)).astype(np.float32))
    torch.testing.assert_close(min_size_forward(NeedsSixteen(), 16)(big), Shift()(big))  # large enough: unchanged


def test_detection_slices_one_every_so_many_mm():
    from kidneyseg.inference.engines import detection_slices

    assert detection_slices(200, 2.5, 10.0) == (list(range(1, 200, 4)), 4)  # 50 slices, centred: 1..197
    assert detection_slices(200, 2.5, None) == (list(range(200)), 1)
    assert detection_slices(30, 5.0, 4.0) == (list(range(30)), 1)  # slices thicker than the step: every one
    assert detection_slices(3, 1.0, 10.0) == ([0, 1, 2], 1)  # fewer slices than a step
    ks, slab = detection_slices(101, 1.0, 7.0)
    assert slab == 7 and ks[0] == 1 and ks[-1] == 99


def test_sparse_detections_paint_one_connected_box_per_kidney():
    """Boxes found on every 4th slice stand for their slab: the two kidneys come out as two 3D boxes covering
    every slice between their first and last detection (plus half a slab), not as 2 x 10 thin plates."""
    from kidneyseg.inference.engines import detection_slices

    ks, slab = detection_slices(40, 2.5, 10.0)
    det = {k: np.array([[5, 5, 15, 20, 0.9], [30, 5, 40, 20, 0.8]], np.float32) for k in ks if 8 <= k <= 30}
    boxes = boxes_to_3d(det, (48, 48, 40), slab=slab)
    assert len(boxes) == 2
    k_lo, k_hi = min(det) - slab // 2, max(det) - slab // 2 + slab
    assert all(b[2] == (k_lo, k_hi) for b in boxes)
    assert boxes_to_3d(det, (48, 48, 40)) and len(boxes_to_3d(det, (48, 48, 40))) == 2  # slab 1: the largest plates
    assert boxes_to_3d(det, (48, 48, 40))[0][2][1] - boxes_to_3d(det, (48, 48, 40))[0][2][0] == 1


def test_detect_slices_gives_the_detector_back_in_its_memory_format() -> None:
    """Channels-last is for the run only: a loaded stage stays the model as saved, and a detector being trained
    (the V-Net's crops from it, training.samples.detector_crop_samples) goes on in the default format."""

    class ConvDetector(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)  # 3 input channels: channels-last strides differ from C
            self.formats: list[bool] = []

        def forward(self, ims):  # type: ignore[no-untyped-def]
            self.formats.append(self.conv.weight.is_contiguous(memory_format=torch.channels_last))
            return [{"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0)} for _ in ims]

    det = ConvDetector().eval()
    detect_slices(det, np.zeros((1, 8, 8, 3), np.float32), batch_size=2)
    assert det.formats == [True, True]  # ran channels-last
    assert det.conv.weight.is_contiguous()
    assert not det.conv.weight.is_contiguous(memory_format=torch.channels_last)
