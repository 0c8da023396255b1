"""Known answers for the uncertainty maps: normalised entropy, mutual information, the box, the sources."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kidneyseg.errors import InputError
from kidneyseg.inference.uncertainty import (
    BACKGROUND_CERTAIN,
    BOX_MARGIN,
    binary_entropy,
    compute_uncertainty,
    describe_sources,
    mutual_information,
    normalised_entropy,
)


def test_entropy_known_answers():
    # uniform over 3 classes: 1; certain: 0; [0.5, 0.5, 0]: log 2 / log 3
    p = np.array([[1 / 3, 1.0, 0.5], [1 / 3, 0.0, 0.5], [1 / 3, 0.0, 0.0]], dtype=np.float32)
    h = normalised_entropy(p)
    assert h.dtype == np.float32 and h.shape == (3,)
    np.testing.assert_allclose(h, [1.0, 0.0, math.log(2) / math.log(3)], atol=1e-6)


def test_entropy_of_float16_and_two_classes():
    p = np.array([[0.9], [0.1]], dtype=np.float16)
    expected = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)
    np.testing.assert_allclose(normalised_entropy(p), [expected], atol=1e-3)
    np.testing.assert_allclose(binary_entropy(np.array([0.9, 0.5, 0.0])), [expected, 1.0, 0.0], atol=1e-6)


def test_mutual_information_known_answers():
    a = np.array([[1.0, 0.5], [0.0, 0.5]], dtype=np.float32)
    b = np.array([[0.0, 0.5], [1.0, 0.5]], dtype=np.float32)
    # voxel 0: two certain members that disagree: MI = H(mean) = 1; voxel 1: agree (both 0.5): MI = 0
    np.testing.assert_allclose(mutual_information([a, b]), [1.0, 0.0], atol=1e-6)
    # members that agree give 0 whatever their entropy
    np.testing.assert_allclose(mutual_information([a, a, a]), [0.0, 0.0], atol=1e-6)
    # 0.9/0.1 against 0.1/0.9: H(0.5) - H(0.9) = 1 - 0.469
    c = np.array([[0.9], [0.1]], np.float32)
    d = np.array([[0.1], [0.9]], np.float32)
    h9 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)
    np.testing.assert_allclose(mutual_information([c, d]), [1 - h9], atol=1e-5)


@pytest.mark.parametrize("bad", [np.zeros((1, 4), np.float32), np.zeros((3, 4), np.uint8), np.zeros(4, np.float32)])
def test_bad_probabilities_raise_input_error(bad):
    with pytest.raises(InputError):
        normalised_entropy(bad)


def test_mutual_information_needs_two_members_of_one_shape():
    with pytest.raises(InputError):
        mutual_information([np.full((2, 3), 0.5, np.float32)])
    with pytest.raises(InputError):
        mutual_information([np.full((2, 3), 0.5, np.float32), np.full((2, 4), 0.5, np.float32)])


def test_box_covers_labels_and_hesitant_voxels_only():
    shape = (30, 20, 10)
    probs = np.zeros((3,) + shape, np.float32)
    probs[0] = 1.0
    probs[:, 10, 5, 4] = [0.5, 0.3, 0.2]        # hesitant background
    probs[:, 2, 2, 2] = [BACKGROUND_CERTAIN, 0.01, 0.0]  # certain enough: outside
    label = np.zeros(shape, np.uint8)
    label[12:15, 6:8, 5] = 1                     # labelled (e.g. a filled hole) with background probability 1
    unc = compute_uncertainty(probs, label, [0, 1, 2])
    m = BOX_MARGIN
    assert unc.box == (slice(10 - m, 15 + m), slice(5 - m, 8 + m), slice(4 - m, 6 + m))
    full = unc.full_map()
    assert full.dtype == np.float32 and full.shape == shape
    assert full[10, 5, 4] == pytest.approx(float(normalised_entropy(probs[:, 10, 5, 4][:, None])[0]), abs=1e-6)
    assert full[2, 2, 2] == 0.0 and float(full.max()) <= 1.0
    assert unc.mutual_information is None
    with pytest.raises(InputError):
        unc.full_map("mutual_information")


def test_members_give_mutual_information_in_the_box():
    shape = (8, 8)
    a = np.zeros((2,) + shape, np.float32)
    a[0] = 1.0
    b = a.copy()
    a[:, 4, 4] = [0.0, 1.0]
    b[:, 4, 4] = [1.0, 0.0]
    mean = (a + b) / 2
    label = np.zeros(shape, np.uint8)
    unc = compute_uncertainty(mean, label, [0, 1], members=[a, b])
    assert unc.mutual_information is not None
    assert unc.full_map("mutual_information")[4, 4] == pytest.approx(1.0, abs=1e-6)
    assert unc.full_map()[4, 4] == pytest.approx(1.0, abs=1e-6)


def test_empty_box_when_everything_is_certain_background():
    probs = np.zeros((2, 5, 5), np.float32)
    probs[0] = 1.0
    unc = compute_uncertainty(probs, np.zeros((5, 5), np.uint8), [0, 1])
    assert unc.entropy.size == 0 and not unc.full_map().any()


def test_sources_say_what_the_map_is_made_of():
    class Stage:
        def __init__(self, arch, n=0):
            self.spec = {"arch": arch, "arch_kwargs": {"members": [{}] * n}}

    class Model:
        def __init__(self, *stages):
            self.stages = {f"s{i}": s for i, s in enumerate(stages)}

    one = describe_sources([Model(Stage("unet2d"))], 1)
    assert one["members"] == 1 and one["tta_passes"] == 1 and "single network" in one["method"]
    mr = describe_sources([Model(Stage("ensemble-mean", 5))], 1)
    assert mr["members"] == 5 and "5 ensemble members" in mr["method"] and "mutual" not in mr["method"]
    two = describe_sources([Model(Stage("unet2d")), Model(Stage("unet2d"))], 2)
    assert two["separate_members"] == 2 and "2 mirroring TTA passes" in two["method"] and "mutual" in two["method"]


def test_structure_box_gives_the_qc_of_the_whole_grid(tmp_path):
    """uncertainty="structures" (QC, the default of predict) undoes the probabilities only around the labelled
    structures; every structure's QC is that of the whole-grid uncertainty, and only the box is computed."""
    import torch

    from kidneyseg.case import Case
    from kidneyseg.data.phantoms import ct_phantom
    from kidneyseg.inference import Predictor
    from kidneyseg.models.folder import save_model_folder, save_stage
    from kidneyseg.models.registry import create_model
    from kidneyseg.reporting.volumes import measure

    torch.manual_seed(0)
    labels = {"0": "background", "1": "kidney", "2": "tumor"}
    kwargs = {"channels": [4, 8], "strides": [2], "num_res_units": 0}
    net = create_model("unet2d", in_channels=1, out_channels=3, **kwargs)
    plan = {"modality": "ct", "spatial_dims": 2, "orientation": "PLS", "target_spacing": [2.0, 2.0],
            "patch_size": [32, 32], "intensity": {"kind": "window", "low": -100, "high": 300}, "denoise": None,
            "labels": labels}
    save_stage(tmp_path / "m" / "main", net.eval(), {"arch": "unet2d", "arch_kwargs": kwargs, "in_channels": 1,
                                                      "out_channels": 3, "channel_to_label": [0, 1, 2], "plan": plan})
    save_model_folder(tmp_path / "m", {"pipeline": "unet2d", "task": "kits19", "modality": "ct", "labels": labels,
                                       "stages": ["main"]})
    ph = ct_phantom(size=(64, 64, 12), seed=0)
    img = np.pad(ph.image.astype(np.float32), ((30, 10), (25, 15), (0, 0)), constant_values=-1000.0)  # air around
    case = Case(img, ph.affine, modality="ct")
    pred = Predictor(tmp_path / "m", runtime="torch", postprocess=False)

    def bright_is_kidney(stage, pre, extra=None, progress=None):  # a known network: bright tissue is kidney
        x = np.asarray(pre.image, np.float32)
        fg = 1.0 / (1.0 + np.exp(-(x - 0.6) * 30.0))
        return np.stack([1.0 - fg, 0.8 * fg, 0.2 * fg]).astype(np.float32)

    pred.stage_probabilities = bright_is_kidney  # type: ignore[method-assign]
    whole = pred.predict_case(case.copy(), uncertainty=True)
    boxed = pred.predict_case(case.copy(), uncertainty="structures")
    assert np.array_equal(whole.label, boxed.label)
    mw = measure(whole.label, case.affine, labels=pred.labels, uncertainty=whole.uncertainty)
    mb = measure(boxed.label, case.affine, labels=pred.labels, uncertainty=boxed.uncertainty)
    assert any(mw["kidneys"][side].get("qc") for side in ("right", "left"))  # something was scored
    assert min(b.start for b in boxed.uncertainty.box[:2]) > 0  # in-plane, the box is a part of the grid
    for side in ("right", "left"):
        qw, qb = mw["kidneys"][side].get("qc"), mb["kidneys"][side].get("qc")
        assert (qw is None) == (qb is None)
        if qw is not None:
            assert qb["flag"] == qw["flag"]
            assert qb["score"] == pytest.approx(qw["score"], abs=1e-3)
    assert boxed.uncertainty.shape == whole.uncertainty.shape == case.shape
    with pytest.raises(InputError, match="uncertainty mode"):
        pred.predict_case(case.copy(), uncertainty="everything")
