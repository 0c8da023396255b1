"""preprocessing.components.values_mask: np.isin by a lookup table, the same answer for every dtype."""

from __future__ import annotations

import numpy as np
import pytest

from kidneyseg.preprocessing.components import values_mask


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64, np.uint16])
def test_values_mask_equals_isin(dtype) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 9, size=(7, 6, 5)).astype(dtype)
    for values in [(1,), (2, 3), (0, 8), (), (5, 300), (9,)]:
        got = values_mask(arr, values)
        assert got.dtype == bool and got.shape == arr.shape
        np.testing.assert_array_equal(got, np.isin(arr, values))


def test_values_mask_negative_and_large_values_fall_back_to_isin() -> None:
    arr = np.array([[-3, 0, 2], [5, 2_000_000, -3]], dtype=np.int64)
    np.testing.assert_array_equal(values_mask(arr, (-3, 2_000_000)), np.isin(arr, (-3, 2_000_000)))
    np.testing.assert_array_equal(values_mask(arr.astype(float), (2.0,)), np.isin(arr, (2,)))
    assert not values_mask(np.zeros((0, 3), np.uint8), (0,)).any()
