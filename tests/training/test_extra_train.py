"""``extra_train``: more data sets join every fold's training cases, never its validation cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kidneyseg.errors import InputError
from kidneyseg.training.config import TrainConfig
from kidneyseg.training.run import train_pipeline

TINY = {"main": {"decoder_channels": [8, 8, 8, 8]}}


def _slices(root: Path, n: int, seed: int) -> Path:
    from kidneyseg.data.phantoms import write_phantom_set

    write_phantom_set(root, "ct", n, size=(40, 40, 8), seed=seed, layout="slices", progress=False, shapes_root=None)
    return root


@pytest.mark.parametrize("bad", [{"data": "x"}, {"format": "slices"}, "folder", {"data": "x", "format": "slices", "z": 1}])
def test_bad_extra_train_entry_is_named(bad: object) -> None:
    with pytest.raises(InputError, match=r"extra_train\[0\]"):
        TrainConfig(extra_train=[bad]).check()  # type: ignore[list-item]


def test_extra_cases_train_every_fold_and_are_never_validated(tmp_path: Path) -> None:
    from kidneyseg.data.adapters import load_dataset

    main = _slices(tmp_path / "main", 2, seed=0)
    extra = _slices(tmp_path / "extra", 2, seed=5)
    n_main = len(load_dataset(main, "slices").cases)
    n_extra = len(load_dataset(extra, "slices").cases)
    cfg = TrainConfig(epochs=1, batch_size=2, folds=2, fold=0, progress=False, threads=1, patch_size=[32, 32],
                      stage_arch_kwargs=TINY, extra_train=[{"data": str(extra), "format": "slices"}])
    out = train_pipeline("ct2d-unet-squeezenet", main, "slices", tmp_path / "m", cfg)
    data = json.loads((out / "model.json").read_text())["training"]["data"]
    assert len(data["extra_train"]) == n_extra and all(n.startswith("extra0/") for n in data["extra_train"])
    assert len(data["train"]) + len(data["val"]) == n_main  # the split is the main data set's alone
    stage = json.loads((out / "main" / "model.json").read_text())["stage"]["training"]
    assert stage["train_samples"] == len(data["train"]) + n_extra
    assert stage["val_samples"] == len(data["val"])


def test_extra_data_of_another_modality_is_refused(tmp_path: Path) -> None:
    from kidneyseg.data.phantoms import write_phantom_set

    main = _slices(tmp_path / "main", 2, seed=0)
    mr = tmp_path / "mr"
    write_phantom_set(mr, "mr", 1, size=(40, 40, 8), seed=0, progress=False, shapes_root=None)
    cfg = TrainConfig(epochs=1, batch_size=2, folds=2, progress=False, threads=1, patch_size=[32, 32],
                      stage_arch_kwargs=TINY, extra_train=[{"data": str(mr), "format": "chaos-mr"}])
    with pytest.raises(InputError, match=r"extra_train\[0\] is not the same kind of data.*modality mr"):
        train_pipeline("ct2d-unet-squeezenet", main, "slices", tmp_path / "m", cfg)


@pytest.mark.parametrize("n", [-1, True, "4", 2.0])
def test_bad_max_background_slices_is_named(n: object) -> None:
    with pytest.raises(InputError, match=r"extra_train\[0\].*max_background_slices"):
        TrainConfig(extra_train=[{"data": "x", "format": "kits23", "max_background_slices": n}]).check()


def test_extra_volume_set_takes_its_own_number_of_background_slices(tmp_path: Path) -> None:
    """A 2D stage on an extra volume set adds that set's ``max_background_slices`` label-free slices per case
    (0: labelled slices only; more than there are: every slice), the main set keeping the config's."""
    from kidneyseg.data.adapters import load_dataset
    from kidneyseg.data.phantoms import write_phantom_set

    main = _slices(tmp_path / "main", 2, seed=0)
    vol = tmp_path / "vol"
    write_phantom_set(vol, "ct", 1, size=(40, 40, 24), seed=3, progress=False, shapes_root=None)
    (ref,) = load_dataset(vol, "kits23").cases
    case = ref.load()
    n_slices = case.shape[2]
    n_labelled = int(case.require_label().any(axis=(0, 1)).sum())
    assert 0 < n_labelled < n_slices  # the phantom has kidney-free slices to choose from

    def train_samples(n_bg: int, name: str) -> tuple[int, int]:
        cfg = TrainConfig(epochs=1, batch_size=2, folds=2, fold=0, progress=False, threads=1, patch_size=[32, 32],
                          stage_arch_kwargs=TINY, classes={"0": "background", "1": "kidney", "2": "tumor", "3": "cyst"},
                          extra_train=[{"data": str(vol), "format": "kits23", "max_background_slices": n_bg}])
        out = train_pipeline("ct2d-unet-squeezenet", main, "slices", tmp_path / name, cfg)
        data = json.loads((out / "model.json").read_text())["training"]["data"]
        stage = json.loads((out / "main" / "model.json").read_text())["stage"]["training"]
        return int(stage["train_samples"]), len(data["train"])

    none, n_main = train_samples(0, "m0")
    every, _ = train_samples(1000, "m1")
    assert none == n_main + n_labelled
    assert every == n_main + n_slices


@pytest.mark.parametrize("bad", [0, True, "2", 1.5])
def test_bad_repeat_is_named(bad: object) -> None:
    with pytest.raises(InputError, match=r"extra_train\[0\].*repeat"):
        TrainConfig(extra_train=[{"data": "x", "format": "slices", "repeat": bad}]).check()
    with pytest.raises(InputError, match=r"'repeat'"):
        TrainConfig(repeat=bad).check()  # type: ignore[arg-type]


def test_repeat_draws_a_set_more_often_in_training_only(tmp_path: Path) -> None:
    """``repeat`` (main set) and an extra set's ``"repeat"`` list that set's training samples N times per
    epoch; validation samples are never repeated."""
    main = _slices(tmp_path / "main", 2, seed=0)
    extra = _slices(tmp_path / "extra", 2, seed=5)

    def counts(repeat: int, extra_repeat: int, name: str) -> tuple[int, int, int, int]:
        cfg = TrainConfig(epochs=1, batch_size=2, folds=2, fold=0, progress=False, threads=1, patch_size=[32, 32],
                          stage_arch_kwargs=TINY, repeat=repeat,
                          extra_train=[{"data": str(extra), "format": "slices", "repeat": extra_repeat}])
        out = train_pipeline("ct2d-unet-squeezenet", main, "slices", tmp_path / name, cfg)
        data = json.loads((out / "model.json").read_text())["training"]["data"]
        stage = json.loads((out / "main" / "model.json").read_text())["stage"]["training"]
        return int(stage["train_samples"]), int(stage["val_samples"]), len(data["train"]), len(data["extra_train"])

    n_train, n_val, n_main, n_extra = counts(1, 1, "a")
    assert n_train == n_main + n_extra and n_main > 0 and n_extra > 0
    assert counts(2, 1, "b")[:2] == (2 * n_main + n_extra, n_val)
    assert counts(1, 3, "c")[:2] == (n_main + 3 * n_extra, n_val)
