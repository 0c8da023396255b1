"""Augmentation: seeded, image and label moved together, labels stay integer, intensity never touches labels."""

from __future__ import annotations

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
                                                  ("mr", (20, 24, 18), (16, 16, 16)),
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
    assert any(np.asarray(x["label"]).any() for x in a)  # foreground oversampling


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
    assert flip_axes("us", 2, "default", False) == [0]
    assert flip_axes("mr", 2, "default", True) == []  # left/right labels: a flip would swap them
    assert flip_axes("ct", 3, "none", False) == []


@pytest.mark.parametrize("sided", [False, True])
def test_transform_flips_exactly_the_flip_axes(sided: bool) -> None:
    from monai.transforms import RandFlipd

    from kidneyseg.augmentation import flip_axes

    t = build_train_transform("mr", 2, (32, 32), sided_labels=sided)
    axes = [tr.flipper.spatial_axis for tr in t.transforms if isinstance(tr, RandFlipd)]
    assert axes == flip_axes("mr", 2, "default", sided)
