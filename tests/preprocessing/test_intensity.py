"""Intensity windows, z-scores, denoising and body crop: known answers on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest

from kidneyseg.case import Case
from kidneyseg.errors import KidneysegError, RegistryError
from kidneyseg.preprocessing.body import body_box, body_mask, crop_to_body
from kidneyseg.preprocessing.denoise import denoise
from kidneyseg.preprocessing.geometry import undo
from kidneyseg.preprocessing.intensity import normalize, percentile_zscore, window, zscore


def test_window_known_values() -> None:
    out = window(np.array([-1000, -60, 120, 300, 2000]), -60, 300)
    np.testing.assert_allclose(out, [0, 0, 0.5, 1, 1])
    assert out.dtype == np.float32
    with pytest.raises(KidneysegError, match="empty"):
        window(np.zeros(3), 10, 10)


def test_zscore_and_percentile_zscore(rng: np.random.Generator) -> None:
    np.testing.assert_allclose(zscore(np.array([0.0, 100.0, 500.0]), 100, 50, low=0, high=200), [-2, 0, 2])
    img = rng.normal(300, 40, (64, 64)).astype(np.float32)
    img[0, 0] = 1e6  # outlier clipped by the percentiles
    out = percentile_zscore(img, 0.5, 99.5)
    assert abs(out.mean()) < 0.01 and abs(out.std() - 1) < 0.01 and out.max() < 4
    assert normalize(img, {"kind": "percentile_zscore"}).shape == img.shape
    with pytest.raises(RegistryError, match="window"):
        normalize(img, {"kind": "minmax"})


@pytest.mark.parametrize("method", ["median", "bilateral", "nlmeans", "gaussian"])
def test_denoisers_reduce_noise_keep_edges(method: str, rng: np.random.Generator) -> None:
    clean = np.zeros((48, 48, 3), np.float32)
    clean[:, 24:] = 200.0
    noisy = clean + rng.normal(0, 20, clean.shape).astype(np.float32)
    out = denoise(noisy, {"method": method})
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert np.abs(out - clean)[:, 4:20].std() < 0.8 * 20  # flat region smoother
    assert out[:, 30:].mean() - out[:, :18].mean() > 150  # the edge survives


def test_speckle_reduction(rng: np.random.Generator) -> None:
    speckled = (100 * rng.rayleigh(1.0, (64, 64))).astype(np.float32)
    out = denoise(speckled, "speckle")
    assert out.std() < 0.7 * speckled.std()
    with pytest.raises(KidneysegError, match="non-negative"):
        denoise(speckled - 500, "speckle")


def test_body_mask_and_crop() -> None:
    img = np.full((40, 40, 5), -1000.0, np.float32)
    img[10:30, 8:32] = 40.0
    img[18:20, 18:20] = -900.0  # gas inside the body
    img[0:2, 0:2] = 500.0  # a small object outside (table edge)
    m = body_mask(img)
    assert m[19, 19, 2] and not m[0, 0, 0]
    assert body_box(m, margin=0) == [(10, 30), (8, 32), (0, 5)]
    case = Case(image=img, affine=np.eye(4), label=(img == 40).astype(np.uint8), modality="ct")
    out = crop_to_body(case)
    assert out.shape == (24, 28, 5)
    np.testing.assert_array_equal(undo(out, out.label), case.label)
