"""Augmentation: seeded, image and label moved together, labels stay integer, intensity never touches labels."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from kidneyseg.augmentation import build_train_transform
from kidneyseg.augmentation.speckle import RandSpeckleNoised
from kidneyseg.errors import KidneysegError


def _sample(shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    lab = np.zeros((1, *shape), np.uint8)
    lab[(0, *(slice(s // 4, s // 2) for s in shape))] = 1
    lab[(0, *(slice(s // 2, 3 * s // 4) for s in shape))] = 2
    img = lab.astype(np.float32) * 10.0  # image = 10 * label: spatial agreement is checkable
    return {"image": img, "label": lab}


@pytest.mark.parametrize("modality,shape,patch", [("ct", (40, 36), (32, 32)), ("us", (30, 50), (32, 32)),
                                                  ("mr", (32, 36, 24), (16, 16, 16)),
                                                  ("ct", (30, 40, 12), (16, 24, 8))])
def test_seeded_and_label_follows_image(modality: str, shape: tuple[int, ...], patch: tuple[int, ...]) -> None:
    tr = build_train_transform(modality, len(shape), patch, fg_ratio=1.0)  # non-square patches keep their shape
    s = _sample(shape)
    tr.set_random_state(5)
    a = [tr(dict(s))[0] for _ in range(4)]
    tr.set_random_state(5)
    b = [tr(dict(s))[0] for _ in range(4)]
    for x, y in zip(a, b):
        assert torch.equal(torch.as_tensor(x["image"]), torch.as_tensor(y["image"]))
        lab = np.asarray(x["label"])
        assert lab.shape == (1, *patch)
        assert set(np.unique(lab)) <= {0, 1, 2}  # nearest neighbour: no new values
        _assert_label_on_image(np.asarray(x["image"])[0], lab[0])
    assert any(np.asarray(x["label"]).any() for x in a)  # foreground oversampling


def _assert_label_on_image(img: np.ndarray, lab: np.ndarray) -> None:
    """The label still lies on the image (image = 10 * label before augmentation; the intensity steps
    are monotonic up to a little noise): inside each label's core (eroded, away from interpolated edges)
    the image levels keep the label order, and almost every core voxel is on its own side of the midpoints."""
    from scipy import ndimage

    cores = {v: ndimage.binary_erosion(lab == v, iterations=1) for v in (0, 1, 2)}
    levels = {v: float(np.median(img[c])) for v, c in cores.items() if c.sum() >= 4}
    assert len(levels) >= 2, "the patch should hold the background and a label"
    order = sorted(levels)
    for lo, hi in itertools.pairwise(order):
        mid = (levels[lo] + levels[hi]) / 2
        assert levels[hi] > levels[lo]
        assert (img[cores[hi]] > mid).mean() > 0.9 and (img[cores[lo]] < mid).mean() > 0.9


def test_speckle_touches_only_image() -> None:
    t = RandSpeckleNoised("image", prob=1.0)
    t.set_random_state(0)
    s = _sample((16, 16))
    out = t(dict(s))
    assert not np.array_equal(out["image"], s["image"]) and out["label"] is s["label"]


def test_bad_patch_refused() -> None:
    with pytest.raises(KidneysegError):
        build_train_transform("ct", 2, (32, 32, 32))


def test_flip_axes_known_answers() -> None:
    from kidneyseg.augmentation import flip_axes

    assert flip_axes("ct", 3, "default", False) == [0, 1, 2]
    assert flip_axes("ct", 2, "light", False) == [0, 1]
    assert flip_axes("us", 2, "default", False) == [1]  # columns: the probe stays at the top
    assert flip_axes("mr", 2, "default", True) == []  # left/right labels: a flip would swap them
    assert flip_axes("ct", 3, "none", False) == []


@pytest.mark.parametrize("sided", [False, True])
def test_transform_flips_exactly_the_flip_axes(sided: bool) -> None:
    from monai.transforms import RandFlipd

    from kidneyseg.augmentation import flip_axes

    t = build_train_transform("mr", 2, (32, 32), sided_labels=sided)
    axes = [tr.flipper.spatial_axis for tr in t.transforms if isinstance(tr, RandFlipd)]
    assert axes == flip_axes("mr", 2, "default", sided)


def test_left_right_mirror_known_answers() -> None:
    from kidneyseg.augmentation import flip_axes

    assert flip_axes("ct", 2, "default", False, "left-right", "PLS") == [1]  # display slices: columns R -> L
    assert flip_axes("ct", 3, "default", False, "left-right", "RAS") == [0]
    assert flip_axes("ct", 2, "default", False, "none", "PLS") == []
    assert flip_axes("mr", 2, "default", True, "left-right", "PLS") == []  # sided labels are never flipped


@pytest.mark.parametrize("orientation", [None, "ASR"])
def test_left_right_mirror_needs_a_left_right_axis(orientation) -> None:  # type: ignore[no-untyped-def]
    from kidneyseg.augmentation import flip_axes

    with pytest.raises(KidneysegError, match="no left-right axis") as e:
        flip_axes("ct", 2, "default", False, "left-right", orientation)
    assert "PLS" in str(e.value)  # the fix names an orientation


def test_unknown_mirror_lists_the_valid_names() -> None:
    from kidneyseg.augmentation import flip_axes

    with pytest.raises(KidneysegError, match="left-right, none"):
        flip_axes("ct", 2, "default", False, "front-back")


def test_left_right_mirror_keeps_front_and_back() -> None:
    """No 90-degree rotations, no front-back flips: a posterior organ stays posterior in every draw,
    while left and right are swapped in some."""
    from monai.transforms import RandFlipd, RandRotate90d

    t = build_train_transform("ct", 2, (32, 32), fg_ratio=1.0, mirror="left-right", orientation="PLS")
    assert [tr.flipper.spatial_axis for tr in t.transforms if isinstance(tr, RandFlipd)] == [1]
    assert not any(isinstance(tr, RandRotate90d) for tr in t.transforms)
    assert any(isinstance(tr, RandRotate90d) for tr in build_train_transform("ct", 2, (32, 32)).transforms)
    label = np.zeros((1, 32, 32), np.uint8)
    label[0, 22:29, 3:10] = 1  # rows run anterior -> posterior, columns right -> left: a right kidney
    rows, cols = _label_centres(t, label, 40)
    assert min(rows) > 16  # always behind
    assert min(cols) < 16 < max(cols)  # sometimes mirrored to the left


@pytest.mark.parametrize("strength,mirror", list(itertools.product(["light", "default"], ["all", "left-right"])))
def test_ultrasound_is_flipped_left_right_only(strength: str, mirror: str) -> None:
    """The probe is at the top row of every ultrasound image: flips never turn one upside down (issue 23, bug 2)."""
    from monai.transforms import RandFlipd, RandRotate90d

    from kidneyseg.augmentation import flip_axes

    assert flip_axes("us", 2, strength, False, mirror) == [1]  # no orientation needed: columns are left-right
    t = build_train_transform("us", 2, (32, 32), fg_ratio=1.0, strength=strength, mirror=mirror)
    assert [tr.flipper.spatial_axis for tr in t.transforms if isinstance(tr, RandFlipd)] == [1]
    assert not any(isinstance(tr, RandRotate90d) for tr in t.transforms)
    label = np.zeros((1, 32, 32), np.uint8)
    label[0, 2:9, 3:10] = 1  # just under the probe, on the left
    rows, cols = _label_centres(t, label, 30)
    assert max(rows) < 16  # always near the probe
    assert min(cols) < 16 < max(cols)  # sometimes mirrored to the right


def _label_centres(t, label: np.ndarray, draws: int) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    """Mean row and column of the label after each of ``draws`` seeded passes of the transform ``t``."""
    sample = {"image": label.astype(np.float32), "label": label}
    rows, cols = [], []
    for seed in range(draws):
        t.set_random_state(seed)
        out = t(dict(sample))
        out = out[0] if isinstance(out, list) else out
        r, c = np.nonzero(np.asarray(out["label"])[0])
        rows.append(float(r.mean()))
        cols.append(float(c.mean()))
    return rows, cols
