import pytest

from kidneyseg.errors import InputError
from kidneyseg.training.config import TrainConfig, lr_at


def test_poly_schedule_known_values():
    assert lr_at(1e-2, 0, 10, "poly") == pytest.approx(1e-2)
    assert lr_at(1e-2, 5, 10, "poly") == pytest.approx(1e-2 * 0.5**0.9)
    assert lr_at(1e-2, 9, 10, "poly") == pytest.approx(1e-2 * 0.1**0.9)
    assert lr_at(1e-2, 7, 10, "constant") == 1e-2


def test_bad_schedule_named_in_error():
    with pytest.raises(InputError, match="lr_schedule"):
        TrainConfig(lr_schedule="cosine").check()


def test_bad_mirror_named_in_error_with_the_valid_values():
    with pytest.raises(InputError, match=r"mirror.*all or left-right or none"):
        TrainConfig(mirror="front-back").check()
    assert TrainConfig(mirror="left-right").check().mirror == "left-right"
