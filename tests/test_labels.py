import subprocess
import sys

import numpy as np
import pytest

from kidneyseg.errors import RegistryError
from kidneyseg.labels import TASKS, get_task


def test_kits23_regions_are_the_official_ones_plus_cyst():
    t = get_task("kits23")
    assert [(r.name, r.labels) for r in t.regions] == [
        ("kidney_and_masses", (1, 2, 3)),
        ("masses", (2, 3)),
        ("tumor", (2,)),
        ("cyst", (3,)),
    ]
    assert [r.name for r in t.regions if not r.optional] == ["kidney_and_masses", "masses", "tumor"]
    assert t.region("tumor").tolerance_mm == pytest.approx(1.1498198361434828)
    # KiTS defines no cyst tolerance: the masses tolerance is used
    assert t.region("cyst").tolerance_mm == t.region("masses").tolerance_mm == pytest.approx(1.1328796488598762)
    assert [r.name for r in get_task("ct-abdomen").regions] == [r.name for r in t.regions]


def test_chaos_values():
    t = get_task("chaos-mr")
    assert t.labels[2] == "kidney_right" and t.labels[3] == "kidney_left"
    assert t.region("kidney").labels == (2, 3)


def test_region_mask_binary_and_union():
    lab = np.array([0, 1, 2, 3, 7])
    assert get_task("binary").region("foreground").mask(lab).tolist() == [False, True, True, True, True]
    assert get_task("kits23").region("masses").mask(lab).tolist() == [False, False, True, True, False]


def test_unknown_task_lists_valid_names():
    with pytest.raises(RegistryError) as exc:
        get_task("kits99")
    for name in TASKS:
        assert name in str(exc.value)


def test_label_registry_imports_without_torch():
    code = "import sys, kidneyseg.labels; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("given,expected", [
    ("Right kidney", "kidney_right"), ("right-kidney", "kidney_right"), ("kidney_left", "kidney_left"),
    ("left  kidney", "kidney_left"), ("Tumour", "tumor"), ("mass", "tumor"), ("Renal vein", "renal_vein"),
])
def test_canonical_label_name(given, expected):
    from kidneyseg.labels import canonical_label_name

    assert canonical_label_name(given) == expected


def test_tumour_spellings_are_found_by_the_lesion_names() -> None:
    from kidneyseg.labels import LESION_NAMES, TUMOR_NAMES, values_named

    labels = {0: "background", 1: "Kidney", 2: "Tumour", 3: "mass", 4: "cyst"}
    assert values_named(labels, TUMOR_NAMES) == (2, 3)
    assert values_named(labels, LESION_NAMES) == (2, 3, 4)


def test_values_for_names_picks_one_task() -> None:
    from kidneyseg.errors import KidneysegError
    from kidneyseg.labels import values_for_names

    assert values_for_names(["Tumor", "Kidney"]) == ("kits23", {"Tumor": 2, "Kidney": 1})
    assert values_for_names(["Right kidney", "left kidney", "Liver"]) == (
        "chaos-mr", {"Right kidney": 2, "left kidney": 3, "Liver": 1})
    assert values_for_names(["Kidney", "Liver"]) == ("ct-abdomen", {"Kidney": 1, "Liver": 4})
    assert values_for_names(["Segment_1"]) == (None, {})
    with pytest.raises(KidneysegError, match="no single task"):
        values_for_names(["kidney", "kidney_right"])


def test_match_regions_reads_a_value_by_the_regions_holding_it() -> None:
    from kidneyseg.errors import KidneysegError
    from kidneyseg.labels import match_regions

    assert match_regions({"kidney": [1, 2, 3], "masses": [2, 3], "tumor": [2]}) == ("kits23", {1: 1, 2: 2, 3: 3})
    assert match_regions({"kidney": [1, 2, 3], "masses": [2, 3], "tumor": [3]}) == ("kits23", {1: 1, 2: 3, 3: 2})
    assert match_regions({"kidney_and_tumor": [1, 2], "tumour": [2]}) == ("kits19", {1: 1, 2: 2})
    # the optional cyst region may be declared too, and must then agree with the other regions
    assert match_regions({"kidney": [1, 2, 3], "masses": [2, 3], "tumor": [2], "cyst": [3]}) == (
        "kits23", {1: 1, 2: 2, 3: 3})
    with pytest.raises(KidneysegError, match="match no task"):
        match_regions({"kidney": [1, 2, 3], "masses": [2, 3], "tumor": [2], "cyst": [2]})
    with pytest.raises(KidneysegError, match="match no task"):  # a required region cannot be left out
        match_regions({"kidney": [1, 2, 3], "tumor": [2], "cyst": [3]})
    assert match_regions({"kidney": [2, 3], "kidney_right": [2], "kidney_left": [3]})[0] == "chaos-mr"


def test_colour_of_a_name_is_its_task_colour() -> None:
    from kidneyseg.labels import COLOR_TUMOR, COLOR_UNKNOWN, color_of

    assert color_of("Tumour") == COLOR_TUMOR and color_of("renal vein") == COLOR_UNKNOWN
    assert color_of("liver") == get_task("ct-abdomen").colors[4]
