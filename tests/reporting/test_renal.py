"""RENAL nephrometry parts: known answers on phantoms with tumours of known size placed at known positions.

The phantom kidney is an ellipsoid (semi-axes 25 x 20 x 50 mm along RAS x, y, z at 1 mm voxels); the
"bean" variant has a medial notch (the renal sinus) over z = centre +- 15 mm, so its polar lines are
known: 15 mm above and below the centre.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from kidneyseg.reporting.renal import (
    ENDOPHYTIC_MAX_SHARE,
    exophytic_points,
    radius_points,
    renal_parts,
)
from kidneyseg.reporting.volumes import measure, write_volumes_json

SHAPE = (90, 70, 130)
C = (40, 35, 65)  # kidney centre (voxel = mm under the identity affine)
RADII = (25, 20, 50)


def _grid(shape=SHAPE):  # type: ignore[no-untyped-def]
    return np.ogrid[tuple(slice(0, n) for n in shape)]


def _ball(centre, r, shape=SHAPE):  # type: ignore[no-untyped-def]
    return sum((g - c) ** 2 for g, c in zip(_grid(shape), centre)) <= r * r


def _kidney(notch: bool = False, shape=SHAPE, centre=C, radii=RADII) -> np.ndarray:  # type: ignore[no-untyped-def]
    g = _grid(shape)
    lab = np.zeros(shape, np.uint8)
    lab[sum(((gg - c) / r) ** 2 for gg, c, r in zip(g, centre, radii)) <= 1] = 1
    if notch:  # the sinus: a slot from the medial (low x) surface to 5 mm short of the centre, 16 mm thick
        x, y, z = g
        lab[(x < centre[0] - 5) & (abs(y - centre[1]) <= 8) & (abs(z - centre[2]) <= 15)] = 0
    return lab


def _renal(lab: np.ndarray, affine: np.ndarray | None = None) -> dict:
    m = measure(lab, np.eye(4) if affine is None else affine)
    tumours = m["kidneys"]["right"]["tumors"] + m["kidneys"]["left"]["tumors"]
    assert len(tumours) == 1
    return tumours[0]["renal"]


def _with_tumour(centre, r, notch=False) -> np.ndarray:  # type: ignore[no-untyped-def]
    lab = _kidney(notch)
    lab[_ball(centre, r)] = 2
    return lab


def test_points_tables_follow_the_paper():
    assert [radius_points(d) for d in (1.0, 4.0, 4.01, 6.99, 7.0, 12.0)] == [1, 1, 2, 2, 3, 3]
    assert [exophytic_points(s) for s in (1.0, 0.5, 0.49, 0.2, ENDOPHYTIC_MAX_SHARE, 0.0)] == [1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize(("r", "spacing", "points"), [(10, 1.0, 1), (22, 1.0, 2), (18, 2.0, 3)])
def test_r_is_the_tumours_own_maximal_diameter(r, spacing, points):
    """A sphere of radius r voxels is 2 r voxels across between voxel centres: R in cm and its points."""
    shape = (90, 70, 130) if spacing == 1.0 else (70, 50, 80)
    centre = tuple(n // 2 for n in shape)
    lab = _kidney(shape=shape, centre=centre, radii=(30 / spacing, 25 / spacing, 38 / spacing))
    lab[_ball((centre[0] + int(28 / spacing), centre[1], centre[2]), r, shape)] = 2  # at the lateral surface
    ren = _renal(lab, np.diag([spacing, spacing, spacing, 1.0]))
    assert ren["R"]["max_diameter_cm"] == pytest.approx(2 * r * spacing / 10)
    assert ren["R"]["points"] == points


@pytest.mark.parametrize(("dx", "share", "points"), [
    (5, (0.0, 0.0), 3),  # fully inside (10 mm tumour radius, 10 mm of parenchyma beyond it): endophytic
    (20, (0.10, 0.30), 2),  # centre 5 mm inside the lateral surface (~16 % outside for a flat surface)
    (25, (0.50, 0.62), 1),  # centre on the surface (a sphere of 10 mm on one of 25 mm: 56 % outside)
    (30, (0.80, 0.95), 1),  # centre 5 mm outside (~84 % outside)
])
def test_e_exophytic_share_against_the_parenchymas_hull(dx, share, points):
    ren = _renal(_with_tumour((C[0] + dx, C[1], C[2]), 10))
    e = ren["E"]
    assert share[0] <= e["exophytic_share"] <= share[1]
    assert e["points"] == points
    assert e["outline"] == "convex hull of the kidney's parenchyma"


def test_e_outline_is_the_hull_so_a_sinus_tumour_is_endophytic():
    """The documented choice: a tumour in the sinus (inside the parenchyma's hull) counts as endophytic."""
    ren = _renal(_with_tumour((C[0] - 12, C[1], C[2]), 8, notch=True))  # fills the slot, touches its walls
    assert ren["E"]["exophytic_share"] == 0.0 and ren["E"]["points"] == 3


@pytest.mark.parametrize(("dy", "descriptor"), [(10, "a"), (-10, "p"), (0, "x")])
def test_a_from_the_patient_axes(dy, descriptor):
    lab = _with_tumour((C[0] + 8, C[1] + dy, C[2]), 8)
    assert _renal(lab)["A"]["descriptor"] == descriptor
    # the same array whose second axis points to posterior (RPS): anterior and posterior swap
    flipped = {"a": "p", "p": "a", "x": "x"}[descriptor]
    rps = np.diag([1.0, -1.0, 1.0, 1.0])
    assert _renal(lab, rps)["A"]["descriptor"] == flipped


def test_l_polar_lines_from_the_sinus_notch():
    ren = _renal(_with_tumour((C[0] + 10, C[1], C[2] + 5), 8, notch=True))
    loc = ren["L"]
    assert loc["polar_lines_s_mm"] == pytest.approx([C[2] - 15, C[2] + 15])
    assert "sinus" in loc["polar_lines_from"]


@pytest.mark.parametrize(("z", "points", "position"), [
    (35, 1, "above the upper polar line"),  # z 27..43 above the centre, the line at +15
    (-35, 1, "below the lower polar line"),
    (20, 2, "between or across the polar lines"),  # z 12..28: crosses the upper line, mostly above it
    (5, 3, "between or across the polar lines"),  # between the lines and across the axial midline
])
@pytest.mark.parametrize("notch", [True, False])
def test_l_points(z, points, position, notch):
    """With the sinus notch the lines are at +-15 mm; without one (a convex kidney) at the thirds (+-16.7 mm)."""
    ren = _renal(_with_tumour((C[0] + 10, C[1], C[2] + z), 8, notch=notch))
    assert ren["L"]["points"] == points
    assert ren["L"]["position"] == position
    if not notch:
        assert "thirds" in ren["L"]["polar_lines_from"]
        assert ren["L"]["polar_lines_s_mm"] == pytest.approx([C[2] - 50 / 3, C[2] + 50 / 3], abs=0.01)


def test_l_follows_the_affine_not_the_array():
    """The same array stored with its third axis pointing inferior (RAI): upper pole becomes lower pole."""
    lab = _with_tumour((C[0] + 10, C[1], C[2] + 35), 8, notch=True)
    rai = np.diag([1.0, 1.0, -1.0, 1.0])
    loc = _renal(lab, rai)["L"]
    assert loc["points"] == 1 and loc["position"] == "below the lower polar line"
    assert loc["polar_lines_s_mm"] == pytest.approx([-(C[2] + 15), -(C[2] - 15)])


def test_n_is_not_available_and_says_why():
    ren = _renal(_with_tumour((C[0] + 5, C[1], C[2]), 10))
    assert ren["N"]["points"] is None and ren["N"]["available"] is False
    assert "collecting-system" in ren["N"]["reason"]
    assert ren["score_without_n"] == ren["R"]["points"] + ren["E"]["points"] + ren["L"]["points"] == 1 + 3 + 3
    assert ren["notation"] == "R1 E3 N? L3 x"


def test_each_tumour_is_scored_on_its_own_and_written_to_volumes_json(tmp_path):
    """Two tumours of one kidney: an upper-pole endophytic one and a lateral exophytic one, never merged."""
    lab = _kidney(notch=True)
    lab[_ball((C[0] + 3, C[1], C[2] + 35), 8)] = 2
    lab[_ball((C[0] + 30, C[1], C[2]), 10)] = 2
    m = measure(lab, np.eye(4))
    tumours = m["kidneys"]["right"]["tumors"] + m["kidneys"]["left"]["tumors"]
    assert len(tumours) == 2
    big, small = tumours  # largest first
    assert big["renal"]["notation"] == "R1 E1 N? L3 x"
    assert small["renal"]["notation"] == "R1 E3 N? L1 x"
    assert big["renal"]["R"]["max_diameter_cm"] == pytest.approx(2.0)  # not the 5 cm span of the two
    back = json.loads(write_volumes_json(m, tmp_path / "v.json").read_text())
    kid = back["kidneys"]["right"] if back["kidneys"]["right"]["tumors"] else back["kidneys"]["left"]
    assert kid["tumors"][1]["renal"]["L"]["points"] == 1


def test_renal_parts_on_an_empty_parenchyma_is_not_a_crash():
    t = np.zeros((10, 10, 10), bool)
    t[3:6, 3:6, 3:6] = True
    ren = renal_parts(t, np.zeros_like(t), t, np.eye(4))
    assert ren["E"]["points"] is None and ren["L"]["points"] is None and ren["score_without_n"] is None


def test_l_crossing_the_axial_midline_is_3_though_most_lies_beyond_a_line():
    """A 4 cm tumour centred 1 mm above the upper polar line reaches 4 mm below the midline: L 3, not 2."""
    ren = _renal(_with_tumour((C[0] + 25, C[1], C[2] + 16), 20, notch=True))
    loc = ren["L"]
    assert loc["share_between_polar_lines"] < 0.5 and loc["crosses_axial_midline"]
    assert loc["points"] == 3


def test_the_html_report_shows_the_renal_table():
    from kidneyseg.case import Case
    from kidneyseg.labels import get_task
    from kidneyseg.reporting.html import ReportInputs, volumes_section

    lab = _with_tumour((C[0] + 30, C[1], C[2]), 10)
    case = Case(image=np.zeros(SHAPE, np.float32), affine=np.eye(4), name="p", modality="ct")
    body, _ = volumes_section(ReportInputs(case=case, seg=lab, task=get_task("kits23")))
    assert "RENAL nephrometry per tumour" in body and "R1 E1 N? L3 x" in body
    assert "needs a collecting-system label" in body and "0.1 mL are not counted" in body
