"""Loss registry and stage targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kidneyseg.errors import KidneysegError
from kidneyseg.training.losses import class_weights_from_counts, create_loss, loss_names
from kidneyseg.training.targets import target_mapping, to_channels


@pytest.mark.parametrize("name", ["dice-ce", "bce-dice", "weighted-ce-dice", "dice"])
def test_loss_perfect_prediction_is_lower(name: str) -> None:
    target = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    target[:, :, 2:5, 2:6] = 1
    target[:, :, 6:8, 6:8] = 2
    good = torch.nn.functional.one_hot(target[:, 0], 3).movedim(-1, 1).float() * 20 - 10
    bad = -good
    kw = {"class_weights": [0.5, 1.0, 2.0]} if name == "weighted-ce-dice" else {}
    loss = create_loss(name, **kw)
    lg, lb = float(loss(good, target)), float(loss(bad, target))
    assert lg < 0.05 and lb > lg + 0.5


def test_unknown_loss_lists_names() -> None:
    with pytest.raises(KidneysegError) as exc:
        create_loss("focal")
    assert all(n in str(exc.value) for n in loss_names())


def test_bad_target_shape_refused() -> None:
    with pytest.raises(KidneysegError, match="target"):
        create_loss("dice-ce")(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


def test_class_weights_rare_classes_weigh_more() -> None:
    w = class_weights_from_counts([10000, 100, 0])
    assert w[0] < w[1] <= w[2] and abs(np.mean(w) - 1) < 1e-3


def test_targets() -> None:
    m, c2l, labels = target_mapping("kidney", "kits23")
    assert c2l == [0, 1] and labels == {"0": "background", "1": "kidney"}
    np.testing.assert_array_equal(to_channels(np.array([0, 1, 2, 3]), m), [0, 1, 1, 1])
    m, c2l, _ = target_mapping("lesion", "kits23")
    assert c2l == [0, 2, 3]
    np.testing.assert_array_equal(to_channels(np.array([0, 1, 2, 3]), m), [0, 0, 1, 2])
    m, c2l, _ = target_mapping("kidney", "chaos-mr")
    np.testing.assert_array_equal(to_channels(np.array([0, 1, 2, 3, 4]), m), [0, 0, 1, 1, 0])
    assert target_mapping("lesion", "kits19")[1] == [0, 2]


def test_class_weights_known_answers() -> None:
    # 1 / sqrt(count), an absent class counted as the rarest present one, normalised to mean 1, 4 decimals
    assert class_weights_from_counts([10000, 100, 0]) == [0.1429, 1.4286, 1.4286]
    assert class_weights_from_counts([1, 0.5]) == [0.8284, 1.1716]  # counts below 1 are counts too
    assert class_weights_from_counts([0, 0]) == [1.0, 1.0]  # nothing counted: equal weights


def _dice_by_hand(p: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Mean over samples and foreground channels of 1 - (2 sum(p y) + 1e-5) / (sum(p) + sum(y) + 1e-5)."""
    dims = tuple(range(2, p.ndim))
    inter = (p * onehot).sum(dims)[:, 1:]
    denom = (p.sum(dims) + onehot.sum(dims))[:, 1:]
    return (1.0 - (2.0 * inter + 1e-5) / (denom + 1e-5)).mean()


@pytest.mark.parametrize("name", ["bce-dice", "dice"])
def test_bce_dice_and_dice_known_answers(name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 3, (2, 1, 5, 6), generator=gen)  # class 3 absent: its channel still counts
    onehot = torch.nn.functional.one_hot(target[:, 0], 4).movedim(-1, 1).to(logits.dtype)
    if name == "bce-dice":
        want = (torch.nn.functional.binary_cross_entropy_with_logits(logits, onehot)
                + _dice_by_hand(torch.sigmoid(logits), onehot))
    else:
        want = _dice_by_hand(torch.softmax(logits, 1), onehot)
    got = create_loss(name)(logits, target)
    assert float(got) == pytest.approx(float(want), rel=1e-6)


def test_unknown_loss_message_names_the_kind_and_the_value() -> None:
    with pytest.raises(KidneysegError) as exc:
        create_loss("focal")
    assert str(exc.value).startswith("unknown loss 'focal'")


def test_target_and_weight_refusals_give_their_whole_message() -> None:
    with pytest.raises(KidneysegError) as exc:
        create_loss("dice-ce")(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    assert str(exc.value) == ("loss target does not fit the logits; found (1, 4, 4); expected (N, 1) + (4, 4) for "
                              "logits (1, 2, 4, 4). Fix: pass the label map with a channel axis of size 1")
    with pytest.raises(KidneysegError) as exc:
        create_loss("weighted-ce-dice", class_weights=[1.0])(torch.zeros(1, 2, 4, 4),
                                                              torch.zeros(1, 1, 4, 4, dtype=torch.long))
    assert str(exc.value) == ("class_weights has the wrong length; found 1; expected 2. Fix: give one weight per "
                              "output channel (background first)")


def test_weighted_ce_dice_weights_its_cross_entropy() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, 6, generator=gen)
    target = torch.randint(0, 3, (2, 1, 5, 6), generator=gen)
    w = [0.5, 1.0, 3.0]
    weighted = create_loss("weighted-ce-dice", class_weights=w)(logits, target)
    plain = create_loss("dice-ce")(logits, target)
    ce_w = torch.nn.functional.cross_entropy(logits, target[:, 0], weight=torch.tensor(w))
    ce = torch.nn.functional.cross_entropy(logits, target[:, 0])
    assert float(weighted - plain) == pytest.approx(float(ce_w - ce), rel=1e-4)  # same Dice part
    assert abs(float(ce_w - ce)) > 1e-3
