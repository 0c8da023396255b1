"""Partial labels: data sets with different label sets train one model (marginal loss, label groups)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kidneyseg.errors import KidneysegError
from kidneyseg.labels import get_task, partial_label_groups
from kidneyseg.training.losses import DiceCE
from kidneyseg.training.targets import partial_targets
from kidneyseg.training.trainer import stack_groups

CLASSES = ["background", "kidney", "tumor", "liver", "spleen", "pancreas"]


def _logits(p: list[list[float]]) -> torch.Tensor:
    """(1, C, 1, V) logits whose softmax is the columns of ``p`` (one list of C probabilities per pixel)."""
    return torch.log(torch.tensor(p, dtype=torch.float64)).T[None, :, None, :]


# ----------------------------------------------------------------------------- the marginal loss


def test_marginal_loss_known_answer() -> None:
    # 2 pixels, channels (background, kidney, tumour); groups: {background}, {kidney, tumour}
    x = _logits([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    y = torch.tensor([1, 0]).view(1, 1, 1, 2)
    g = torch.tensor([[[1, 0, 0], [0, 1, 1]]], dtype=torch.float64)
    ce = -(math.log(0.8) + math.log(0.6)) / 2
    q = [0.8, 0.4]  # summed kidney + tumour probability per pixel
    dice = 1 - (2 * 0.8 + 1e-5) / (sum(q) + 1 + 1e-5)
    assert float(DiceCE()(x, y, g)) == pytest.approx(ce + dice, rel=1e-6)


def test_marginal_loss_ignores_how_a_merged_label_splits() -> None:
    y = torch.tensor([1, 0]).view(1, 1, 1, 2)
    g = torch.tensor([[[1, 0, 0], [0, 1, 1]]], dtype=torch.float64)
    a = _logits([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    b = _logits([[0.2, 0.1, 0.7], [0.6, 0.35, 0.05]])  # kidney <-> tumour moved, their sums kept
    assert float(DiceCE()(a, y, g)) == pytest.approx(float(DiceCE()(b, y, g)), rel=1e-9)
    # the plain loss (kidney only, as if the set labelled tumour as background) does punish it
    assert float(DiceCE()(a, y)) != pytest.approx(float(DiceCE()(b, y)), rel=1e-3)


def test_marginal_loss_with_one_group_per_channel_is_dice_ce() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 5)
    y = torch.randint(0, 4, (2, 1, 6, 5))
    eye = torch.eye(4).expand(2, 4, 4)
    assert float(DiceCE()(x, y, eye)) == pytest.approx(float(DiceCE()(x, y)), rel=1e-5)


def test_padded_group_rows_change_nothing_and_keep_gradients_finite() -> None:
    torch.manual_seed(1)
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    y = torch.randint(0, 2, (1, 1, 4, 4))
    g2 = torch.tensor([[[1.0, 0, 0], [0, 1, 1]]])
    g3 = torch.cat([g2, torch.zeros(1, 1, 3)], dim=1)  # padded as stack_groups does
    l2, l3 = DiceCE()(x, y, g2), DiceCE()(x, y, g3)
    assert float(l2.detach()) == pytest.approx(float(l3.detach()), rel=1e-6)
    l3.backward()
    assert torch.isfinite(x.grad).all()


def test_stack_groups_pads_to_the_largest_and_refuses_a_mix() -> None:
    a, b = np.eye(3, dtype=np.uint8)[:2], np.eye(3, dtype=np.uint8)
    t = stack_groups([a, b])
    assert t is not None and t.shape == (2, 3, 3) and float(t[0, 2].sum()) == 0.0
    assert stack_groups([None, None]) is None
    with pytest.raises(KidneysegError, match="mixes"):
        stack_groups([a, None])


def test_marginal_loss_refuses_groups_that_do_not_fit() -> None:
    with pytest.raises(KidneysegError, match="groups do not fit"):
        DiceCE()(torch.zeros(1, 3, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.long), torch.ones(1, 2, 4))


# ----------------------------------------------------------------------------- label groups


def test_groups_of_the_shared_ct_label_sets() -> None:
    kits = partial_label_groups(get_task("kits19").labels, CLASSES)
    assert kits == [("background+liver+spleen+pancreas", (0,), (0, 3, 4, 5)), ("kidney", (1,), (1,)),
                    ("tumor", (2,), (2,))]
    curvas = partial_label_groups(get_task("curvas-ct").labels, CLASSES)  # its kidney holds the masses
    assert curvas == [("background+spleen", (0,), (0, 4)), ("kidney+tumor", (1,), (1, 2)), ("liver", (4,), (3,)),
                      ("pancreas", (5,), (5,))]
    ts = partial_label_groups(get_task("totalseg-ct").labels, CLASSES)  # right and left: one side-less group
    assert ts == [("background+pancreas", (0,), (0, 5)), ("liver", (1,), (3,)), ("kidney+tumor", (2, 3), (1, 2)),
                  ("spleen", (4,), (4,))]


def test_declared_unions_override_the_rule() -> None:
    g = partial_label_groups({0: "background", 1: "kidney"}, CLASSES, {"kidney": ["kidney"]})
    assert g[1] == ("kidney", (1,), (1,)) and g[0][2] == (0, 2, 3, 4, 5)


def test_a_label_declared_background_joins_the_background_group() -> None:
    """CURVAS for a kidney-only model: its liver and pancreas are declared background (without the declaration
    they are refused, the model has no such class)."""
    decl = {"liver": ["background"], "pancreas": ["background"]}
    g = partial_label_groups(get_task("curvas-ct").labels, ["background", "kidney", "tumor"], decl)
    assert g == [("background", (0, 4, 5), (0,)), ("kidney+tumor", (1,), (1, 2))]
    mapping, mat, names = partial_targets(get_task("curvas-ct").labels, {0: "background", 1: "kidney", 2: "tumor"},
                                          decl)
    assert mapping == {4: 0, 5: 0, 1: 1} and mat.tolist() == [[1, 0, 0], [0, 1, 1]]
    assert names == ["background", "kidney+tumor"]
    with pytest.raises(KidneysegError, match=r"label 'liver'.*\{\"liver\": \[\"background\"\]\}"):
        partial_label_groups(get_task("curvas-ct").labels, ["background", "kidney", "tumor"])


def test_a_label_that_is_no_model_class_names_the_fix() -> None:
    with pytest.raises(KidneysegError, match=r"label 'cyst' of kits23 set.*\"classes\""):
        partial_label_groups(get_task("kits23").labels, CLASSES, where="kits23 set")


def test_partial_targets_matrix_and_mapping() -> None:
    classes = {0: "background", 1: "kidney", 2: "tumor", 4: "liver", 5: "pancreas"}
    mapping, mat, names = partial_targets(get_task("curvas-ct").labels, classes)
    assert mapping == {1: 1, 4: 2, 5: 3}  # label value -> group index (0, background, unmapped)
    assert mat.tolist() == [[1, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]]
    assert names == ["background", "kidney+tumor", "liver", "pancreas"]


# ----------------------------------------------------------------------------- training on two label sets


def _slices(root: Path, n: int, seed: int) -> Path:
    from kidneyseg.data.phantoms import write_phantom_set

    write_phantom_set(root, "ct", n, size=(40, 40, 8), seed=seed, layout="slices", progress=False, shapes_root=None)
    return root


def _merged_copy(src: Path, dst: Path) -> Path:
    """The same slices with kidney, tumour and cyst merged into one 'kidney' label (a CURVAS-like set)."""
    from PIL import Image

    shutil.copytree(src, dst)
    for f in dst.glob("*_label.png"):
        a = np.asarray(Image.open(f))
        Image.fromarray(np.where(a > 0, 1, 0).astype(np.uint8)).save(f)
    return dst


def test_two_label_sets_train_one_model_split_together_by_patient(tmp_path: Path) -> None:
    from kidneyseg.training.config import TrainConfig
    from kidneyseg.training.run import train_pipeline

    main = _slices(tmp_path / "kits", 4, seed=0)
    other = _merged_copy(main, tmp_path / "merged")  # the same patients, labelled another way
    with (main / "index.csv").open() as fh:
        patients = {r["stem"]: r["case"] for r in csv.DictReader(fh)}
    classes = {"0": "background", "1": "kidney", "2": "tumor", "3": "cyst", "4": "liver", "5": "pancreas"}
    cfg = TrainConfig(epochs=1, batch_size=4, folds=2, fold=0, progress=False, threads=1, patch_size=[32, 32],
                      stage_arch_kwargs={"main": {"decoder_channels": [8, 8, 8, 8]}}, classes=classes,
                      extra_train=[{"data": str(other), "format": "slices", "split": True,
                                    "options": {"task": "curvas-ct"}}])
    out = train_pipeline("ct2d-unet-squeezenet", main, "slices", tmp_path / "m", cfg)
    top = json.loads((out / "model.json").read_text())
    assert top["labels"] == classes
    data = top["training"]["data"]
    assert data["extra_val"] and all(n.startswith("extra0/") for n in data["extra_val"])
    # a patient never trains in one set and validates in the other
    val_p = {patients[n] for n in data["val"]} | {patients[n.split("/", 1)[1]] for n in data["extra_val"]}
    train_p = {patients[n] for n in data["train"]} | {patients[n.split("/", 1)[1]] for n in data["extra_train"]}
    assert val_p and train_p and not val_p & train_p
    stage = json.loads((out / "main" / "model.json").read_text())
    assert stage["channel_to_label"] == [0, 1, 2, 3, 4, 5]
    last = stage["stage"]["training"]["last_val"]
    # each set is scored per label group: the merged set's kidney+tumor+cyst; KiTS19's kidney holds the cysts
    # (KiTS19 has no cyst label), its tumour is a class of its own
    assert {"dice_kidney+tumor+cyst", "dice_kidney+cyst", "dice_tumor"} <= set(last)
    assert math.isfinite(stage["stage"]["training"]["last_train_loss"])


def test_other_label_set_without_classes_is_refused(tmp_path: Path) -> None:
    from kidneyseg.errors import InputError
    from kidneyseg.training.config import TrainConfig
    from kidneyseg.training.run import train_pipeline

    main = _slices(tmp_path / "kits", 2, seed=0)
    other = _merged_copy(main, tmp_path / "merged")
    cfg = TrainConfig(epochs=1, batch_size=2, folds=2, progress=False, threads=1, patch_size=[32, 32],
                      extra_train=[{"data": str(other), "format": "slices", "options": {"task": "curvas-ct"}}])
    with pytest.raises(InputError, match=r"extra_train\[0\].*partial labels"):
        train_pipeline("ct2d-unet-squeezenet", main, "slices", tmp_path / "m", cfg)


@pytest.mark.parametrize("bad", [{"1": "kidney"}, {"0": "background", "x": "kidney"},
                                 {"0": "background", "1": "kidney", "2": "kidney"}])
def test_bad_classes_are_named(bad: dict[str, str]) -> None:
    from kidneyseg.errors import InputError
    from kidneyseg.training.config import TrainConfig

    with pytest.raises(InputError, match="classes"):
        TrainConfig(classes=bad).check()


def test_marginal_loss_errors_say_what_was_found_expected_and_the_fix() -> None:
    logits, target = torch.zeros(1, 3, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.long)
    with pytest.raises(KidneysegError) as exc:
        DiceCE()(logits, target, torch.ones(1, 2, 4))
    assert str(exc.value) == ("partial-label groups do not fit the logits; found (1, 2, 4); expected (N=1, G, C=3). "
                              "Fix: give one (G, C) 0/1 matrix per sample")
    with pytest.raises(KidneysegError) as exc:
        DiceCE(class_weights=[1.0, 2.0, 3.0])(logits, target, torch.ones(1, 2, 3))
    assert str(exc.value) == ("class weights with partial labels; found class_weights and groups; expected one of "
                              "them. Fix: use dice-ce without class weights for partial labels")


def test_marginal_loss_target_outside_its_groups_and_a_set_with_only_background() -> None:
    logits = torch.randn(1, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    for t, found in ((2, 2), (-1, -1)):
        with pytest.raises(KidneysegError) as exc:
            DiceCE()(logits, torch.full((1, 1, 2, 2), t, dtype=torch.long), torch.ones(1, 2, 3))
        assert str(exc.value) == (f"partial-label target outside its groups; found {found}; expected 0..1. "
                                  "Fix: map label values to group indices")
    # one group holding every class (and a padded empty row): nothing to learn, the loss is exactly 0
    groups = torch.tensor([[[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]])
    logits.requires_grad_(True)
    loss = DiceCE()(logits, torch.zeros(1, 1, 2, 2, dtype=torch.long), groups)
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
