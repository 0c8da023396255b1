import numpy as np
import pytest
import torch

from kidneyseg.augmentation import build_train_transform
from kidneyseg.augmentation.contrast_phase import RandContrastPhased, compress_enhancement
from kidneyseg.errors import KidneysegError


def test_compress_known_values():
    # window 0..255 HU in [0, 1] units: fat 0, kidney 200 HU, bone 255 HU (saturated)
    img = np.array([0.0, 20, 100, 200, 255], np.float32) / 255
    out = compress_enhancement(img, 40 / 255, 0.5, 250 / 255) * 255
    np.testing.assert_allclose(out, [0, 20, 70, 120, 255], atol=1e-4)  # only 40..250 HU moves
    organ = np.array([0, 0, 0, 0, 1], bool)  # saturated cortex inside the kidney label is compressed too
    out2 = compress_enhancement(img, 40 / 255, 0.5, 250 / 255, organ) * 255
    np.testing.assert_allclose(out2, [0, 20, 70, 120, 147.5], atol=1e-4)
    t = compress_enhancement(torch.as_tensor(img), 40 / 255, 0.5, 250 / 255)
    np.testing.assert_allclose(t.numpy() * 255, out, atol=1e-4)
    with pytest.raises(KidneysegError):
        compress_enhancement(img, 0.5, 0.0, 0.9)


def test_transform_changes_image_only_and_is_seeded():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 1, (1, 32, 32)).astype(np.float32)
    lab = np.zeros((1, 32, 32), np.uint8)
    lab[0, 10:20, 10:20] = 1
    t = RandContrastPhased("image", window=(0, 255), prob=1.0)
    t.set_random_state(3)
    a = t({"image": img, "label": lab})
    t.set_random_state(3)
    b = t({"image": img, "label": lab})
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], lab)
    assert a["image"].max() <= img.max() and not np.array_equal(a["image"], img)


def test_built_into_ct_transform_when_asked():
    tr = build_train_transform("ct", 2, (32, 32), contrast_phase=(0.3, (0, 255)))
    assert any(isinstance(x, RandContrastPhased) for x in tr.transforms)
    assert not any(isinstance(x, RandContrastPhased) for x in build_train_transform("ct", 2, (32, 32)).transforms)
