"""Confusion counts and overlap metrics: known answers and the empty-mask policy."""

from __future__ import annotations

import numpy as np
import pytest

from kidneyseg.evaluation import Confusion, accuracy, confusion, dice, f1, jaccard, overlap_metrics, precision, recall


def test_counts_then_ratios():
    ref = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    pred = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0], bool)
    c = confusion(pred, ref)
    assert c == Confusion(tp=3, fp=2, fn=1, tn=4)
    assert dice(c) == pytest.approx(6 / 9)
    assert jaccard(c) == pytest.approx(3 / 6)
    assert precision(c) == pytest.approx(3 / 5)
    assert recall(c) == pytest.approx(3 / 4)
    assert f1(c) == pytest.approx(dice(c))
    assert accuracy(c) == pytest.approx(7 / 10)


def test_counts_of_a_crop_with_total():
    c = confusion(np.ones(4, bool), np.zeros(4, bool), n_total=100)
    assert (c.tp, c.fp, c.fn, c.tn) == (0, 4, 0, 96)


def test_empty_policy():
    e = np.zeros(8, bool)
    full = e.copy()
    full[:3] = True
    both = overlap_metrics(confusion(e, e))
    assert both == {"dice": 1.0, "jaccard": 1.0, "precision": 1.0, "recall": 1.0, "accuracy": 1.0, "f1": 1.0}
    missed = overlap_metrics(confusion(e, full))  # empty prediction
    assert missed["dice"] == missed["jaccard"] == missed["precision"] == missed["recall"] == missed["f1"] == 0.0
    assert missed["accuracy"] == pytest.approx(5 / 8)
    spurious = overlap_metrics(confusion(full, e))  # empty reference
    assert spurious["dice"] == spurious["jaccard"] == spurious["precision"] == spurious["recall"] == 0.0


def test_ratios_accept_masks():
    ref = np.array([1, 1, 0, 0], bool)
    pred = np.array([1, 0, 1, 0], bool)
    assert dice(pred, ref) == pytest.approx(0.5) and recall(pred, ref) == pytest.approx(0.5)
    assert accuracy(pred, ref) == pytest.approx(0.5)
    with pytest.raises(TypeError):
        dice(pred)


@pytest.mark.parametrize("metric", [dice, jaccard, precision, recall, f1, accuracy])
def test_every_ratio_takes_masks_as_its_counts(metric):
    ref = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    pred = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0], bool)
    assert metric(pred, ref) == metric(confusion(pred, ref))
    with pytest.raises(TypeError, match="pass a Confusion, or a prediction mask and a reference mask"):
        metric(pred)


def test_label_values_count_as_foreground():
    # masks given as label maps (tumour = 2 against kidney = 1): any nonzero voxel is in the region
    c = confusion(np.array([2, 2, 0, 0]), np.array([2, 0, 2, 0]))
    assert c == Confusion(tp=1, fp=1, fn=1, tn=1)


def test_f1_when_precision_equals_recall():
    c = Confusion(tp=1, fp=1, fn=1, tn=0)  # precision = recall = 0.5
    assert f1(c) == pytest.approx(0.5)


def test_accuracy_of_nothing_is_nan():
    assert np.isnan(accuracy(Confusion(tp=0, fp=0, fn=0, tn=0)))
