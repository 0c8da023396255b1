"""Case-level splits: no patient (no volume's slices) in both train and val of a fold."""

from __future__ import annotations

from pathlib import Path

import pytest

from kidneyseg.data.adapters import CaseRef, Dataset
from kidneyseg.data.splits import load_splits, make_splits, save_splits
from kidneyseg.errors import InputError


def _slices_dataset(n_patients: int = 13) -> Dataset:
    cases = []
    for p in range(n_patients):
        for z in range(1 + p % 4):  # 1 to 4 slices per volume
            cases.append(CaseRef(f"case_{p:05d}_z{z:03d}", f"case_{p:05d}", None, None))
    return Dataset(Path("."), "slices", "kits19", "ct", cases)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_no_patient_leaks_between_train_and_val(seed: int) -> None:
    ds = _slices_dataset()
    patient = {c.name: c.patient for c in ds.cases}
    splits = make_splits(ds, 5, seed)
    assert len(splits) == 5
    all_val = []
    for fold in splits:
        train_p = {patient[n] for n in fold["train"]}
        val_p = {patient[n] for n in fold["val"]}
        assert not train_p & val_p
        assert set(fold["train"]) | set(fold["val"]) == set(patient)
        all_val += fold["val"]
    assert sorted(all_val) == sorted(patient)  # every case validated exactly once
    sizes = [len(f["val"]) for f in splits]
    assert max(sizes) - min(sizes) <= 4  # balanced up to one patient's slices


def test_splits_deterministic_and_roundtrip(tmp_path: Path) -> None:
    ds = _slices_dataset()
    a, b, c = make_splits(ds, 3, 5), make_splits(ds, 3, 5), make_splits(ds, 3, 6)
    assert a == b and a != c
    assert load_splits(save_splits(a, tmp_path / "splits.json")) == a


def test_too_few_patients() -> None:
    with pytest.raises(InputError, match="fewer patients than folds"):
        make_splits(_slices_dataset(3), 5, 0)


@pytest.mark.shared
def test_real_slices_no_leakage(shared_data: Path) -> None:
    from kidneyseg.data.adapters import load_dataset

    ds = load_dataset(shared_data / "kits19_slices", "slices")
    patient = {c.name: c.patient for c in ds.cases}
    for fold in make_splits(ds, 5, 0):
        assert not {patient[n] for n in fold["train"]} & {patient[n] for n in fold["val"]}
