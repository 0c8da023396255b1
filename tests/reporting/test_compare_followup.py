"""Follow-up comparison: phantoms whose tumour grew by a known volume, a new and a vanished tumour, dates."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pytest
from followup_phantom import R1, R2, SHAPE, phantoms

from kidneyseg.labels import get_task
from kidneyseg.reporting.compare import (
    Study,
    compare_studies,
    doubling_time_days,
    match_tumours,
    parse_date,
    summary_lines,
    write_comparison,
)


def _shifted(dx: float, dy: float, dz: float) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, 3] = (dx, dy, dz)
    return aff


def _studies(dates: bool = True) -> tuple[Study, Study]:
    b, a = phantoms()
    # the second scan is taken with the patient 25 mm further along the table and 7 mm higher (26 mm, beyond
    # the 20 mm tolerance in scanner coordinates): the kidney-centred frame must still pair the tumours
    sb = Study(label=b, affine=np.eye(4), name="t0", date=dt.date(2023, 1, 1) if dates else None)
    sa = Study(label=a, affine=_shifted(0.0, 7.0, 25.0), name="t1", date=dt.date(2024, 7, 2) if dates else None)
    return sb, sa


def test_growth_by_a_known_volume_within_5_percent():
    res = compare_studies(*_studies())
    assert len(res["tumours"]) == 1
    t = res["tumours"][0]
    assert t["side"] == "right"
    known = 4.0 / 3.0 * math.pi * (R2**3 - R1**3) / 1000  # mL
    err = abs(t["tumour_volume_change_ml"] - known) / known
    assert err < 0.05, f"volume change {t['tumour_volume_change_ml']} mL vs {known:.3f} mL ({100 * err:.1f} %)"
    assert t["tumour_max_diameter_change_mm"] == pytest.approx(2 * (R2 - R1))
    assert t["tumour_max_diameter_before_mm"] == pytest.approx(2 * R1)
    assert t["match_distance_mm"] < 2.0
    # the kidneys did not change (tumours grow inside them)
    assert res["kidneys"]["right"]["kidney_volume_change_ml"] == pytest.approx(0.0)
    assert res["kidneys"]["right"]["tumour_count_before"] == 1 and res["kidneys"]["right"]["tumour_count_after"] == 2


def test_new_and_vanished_tumours_are_listed():
    res = compare_studies(*_studies())
    assert [(t["side"], t["after_id"]) for t in res["new_tumours"]] == [("right", 2)]
    assert res["new_tumours"][0]["offset_from_kidney_mm"][2] == pytest.approx(-16, abs=1.0)
    assert [(t["side"], t["before_id"]) for t in res["vanished_tumours"]] == [("left", 1)]
    lines = summary_lines(res)
    assert any(x.startswith("new right tumour 2") for x in lines)
    assert any(x.startswith("vanished left tumour 1") for x in lines)


def test_dates_give_the_interval_and_growth_per_year():
    res = compare_studies(*_studies())
    days = (dt.date(2024, 7, 2) - dt.date(2023, 1, 1)).days
    assert res["interval_days"] == days == 548
    t = res["tumours"][0]
    assert t["tumour_volume_growth_ml_per_year"] == pytest.approx(t["tumour_volume_change_ml"] / (days / 365.25),
                                                                  rel=1e-3)
    assert t["tumour_diameter_growth_mm_per_year"] == pytest.approx(6.0 / (days / 365.25), rel=1e-3)
    ratio = t["tumour_volume_after_ml"] / t["tumour_volume_before_ml"]
    assert t["tumour_volume_doubling_time_days"] == pytest.approx(days * math.log(2) / math.log(ratio), abs=0.1)
    undated = compare_studies(*_studies(dates=False))
    assert undated["interval_days"] is None and undated["tumours"][0]["tumour_volume_growth_ml_per_year"] is None


def test_a_tumour_that_moved_beyond_the_tolerance_is_new_and_vanished():
    b = [{"id": 1, "offset_from_kidney_mm": [0.0, 0.0, 0.0]}, {"id": 2, "offset_from_kidney_mm": [0, 0, 30.0]}]
    a = [{"id": 1, "offset_from_kidney_mm": [0.0, 0.0, 28.0]}, {"id": 2, "offset_from_kidney_mm": [0, 0, 3.0]}]
    # least total distance: 1-2 (3 mm) and 2-1 (2 mm), not the greedy order
    assert match_tumours(b, a) == [(0, 1, 3.0), (1, 0, 2.0)]
    assert match_tumours(b, a, tolerance_mm=2.5) == [(1, 0, 2.0)]


def test_sides_are_matched_in_patient_space():
    """The after scan stored with its first axis pointing left (LAS): the kidneys keep their sides."""
    sb, sa = _studies()
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = SHAPE[0] - 1
    sa.label = sa.label[::-1].copy()
    sa.affine = flip @ np.eye(4)
    res = compare_studies(sb, sa)
    assert [t["side"] for t in res["tumours"]] == ["right"]
    assert [t["side"] for t in res["vanished_tumours"]] == ["left"]


def test_dates_are_checked():
    assert parse_date("2024-03-31") == dt.date(2024, 3, 31) == parse_date("20240331")
    from kidneyseg.errors import InputError

    with pytest.raises(InputError, match="YYYY-MM-DD"):
        parse_date("31/03/2024")
    sb, sa = _studies()
    sb.date, sa.date = sa.date, sb.date
    with pytest.raises(InputError, match="swap"):
        compare_studies(sb, sa)
    assert doubling_time_days(1.0, 2.0, 100.0) == pytest.approx(100.0)
    assert doubling_time_days(2.0, 1.0, 100.0) is None


def test_writes_json_and_side_by_side_html(tmp_path):
    sb, sa = _studies()
    res = compare_studies(sb, sa)
    jp, hp = write_comparison(res, sb, sa, get_task("kits23"), tmp_path / "out")
    data = json.loads(jp.read_text())
    assert data["tumours"][0]["tumour_volume_change_ml"] == res["tumours"][0]["tumour_volume_change_ml"]
    assert data["before"]["study_date"] == "2023-01-01"
    text = hp.read_text()
    assert text.count('data-plane="axial"') == 2 and text.count('data-plane="coronal"') == 2
    for needle in ("Before: t0", "After: t1", "Tumours matched", "New tumours", "Vanished tumours", "548 days"):
        assert needle in text, needle
