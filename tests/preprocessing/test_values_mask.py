"""preprocessing.components.values_mask: np.isin by comparisons (few values) or a lookup table (more), the same
answer for every dtype."""

from __future__ import annotations

import numpy as np
import pytest

from kidneyseg.preprocessing.components import values_mask


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64, np.uint16])
def test_values_mask_equals_isin(dtype) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 9, size=(7, 6, 5)).astype(dtype)
    for values in [(1,), (2, 3), (0, 8), (), (5, 300), (9,), (-1, 2), (1, 2, 3, 4), (1, 2, 3, 4, 5),
                   (0, 2, 4, 6, 8, 300), (-1, 1, 3, 5, 7, 70000)]:
        got = values_mask(arr, values)
        assert got.dtype == bool and got.shape == arr.shape
        np.testing.assert_array_equal(got, np.isin(arr, values))


def test_values_mask_negative_and_large_values_fall_back_to_isin() -> None:
    arr = np.array([[-3, 0, 2], [5, 2_000_000, -3]], dtype=np.int64)
    for values in [(-3, 2_000_000), (-3, 0, 1, 2, 5, 2_000_000)]:  # compared, then too many to compare
        np.testing.assert_array_equal(values_mask(arr, values), np.isin(arr, values))
    np.testing.assert_array_equal(values_mask(arr.astype(float), (2.0,)), np.isin(arr, (2,)))
    np.testing.assert_array_equal(values_mask(arr.astype(float), range(6)), np.isin(arr, range(6)))
    assert not values_mask(np.zeros((0, 3), np.uint8), (0,)).any()
