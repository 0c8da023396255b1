"""`kidneyseg report`: QC flags and scores, RENAL parts and the follow-up comparison from the sidecars."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kidneyseg.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reporting"))
from followup_phantom import phantoms


def _write(folder: Path, name: str, lab: np.ndarray) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    img = np.where(lab == 1, 160.0, np.where(lab == 2, 90.0, -100.0)).astype(np.float32)
    ip, sp = folder / f"{name}.nii.gz", folder / f"{name}_seg.nii.gz"
    nib.save(nib.Nifti1Image(img, np.eye(4)), ip)
    nib.save(nib.Nifti1Image(lab.astype(np.uint8), np.eye(4)), sp)
    return ip, sp


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two follow-up studies, their comparison (dates 548 days apart) and a volumes.json with QC for the second."""
    from kidneyseg.reporting.volumes import measure

    root = tmp_path_factory.mktemp("followup")
    before, after = phantoms()
    ib, sb = _write(root / "in", "t0", before)
    ia, sa = _write(root / "in", "t1", after)
    out = root / "cmp"
    assert main(["compare", str(ib), str(ia), "--seg", str(sb), str(sa), "--dates", "2023-01-01", "2024-07-02",
                 "-o", str(out)]) == 0
    m = measure(after, np.eye(4))
    m["kidneys"]["right"]["qc"] = {"score": 0.953, "flag": "pass"}
    m["kidneys"]["right"]["tumors"][1]["qc"] = {"score": 0.617, "flag": "review"}
    m["qc"] = {"method": "expected_dice", "threshold": 0.9, "flag_rule": "review when score < 0.9; pass otherwise"}
    (root / "in" / "t1_seg_volumes.json").write_text(json.dumps(m))
    return {"image": ia, "seg": sa, "compare": out / "compare.json", "root": root}


def test_report_shows_qc_renal_and_the_comparison(studies: dict[str, Path]) -> None:
    out = studies["root"] / "r.html"
    assert main(["report", "--image", str(studies["image"]), "--seg", str(studies["seg"]),
                 "--compare", str(studies["compare"]), "-o", str(out)]) == 0
    text = out.read_text()
    saved = json.loads((studies["root"] / "in" / "t1_seg_volumes.json").read_text())
    # QC per structure: flag and score from the sidecar, and the count line
    def row_of(name: str) -> str:
        start = text.index(f"<td>{name}</td>")
        return text[start: text.index("</tr>", start)]

    assert '<td class="qc-pass">pass (0.95)</td>' in row_of("right kidney")
    assert '<td class="qc-review">review (0.62)</td>' in row_of("right tumour 2")
    assert "qc-" not in row_of("right tumour 1") and "qc-" not in row_of("left kidney")
    assert '<span class="qc-review">1 to review</span>' in text and "review when score &lt; 0.9" in text
    # RENAL per tumour: the notation and R + E + L in the structures table, the parts in the RENAL table
    for t in saved["kidneys"]["right"]["tumors"]:
        ren = t["renal"]
        assert f'<td class="renal">{ren["notation"]} (R+E+L {ren["score_without_n"]})</td>' in text
        assert f"{ren['R']['max_diameter_cm']:.1f} cm → {ren['R']['points']}" in text
    assert 'id="renalTable"' in text and "not available: no collecting-system label" in text
    # the comparison: this label map is the after study; changes per tumour, growth per year, new and vanished
    res = json.loads(studies["compare"].read_text())
    sec = text[text.index('<section id="followup">'):]
    sec = sec[: sec.index("</section>")]
    assert "interval 548 days" in sec and "label map is the <b>after</b> study" in sec
    assert "Before: t0 (2023-01-01); after: t1 (2024-07-02)" in sec
    (t,) = res["tumours"]
    row = sec[sec.index("<td>right 1 → 1</td>"):]
    row = row[: row.index("</tr>")]
    for key in ("tumour_volume_before_ml", "tumour_volume_after_ml", "tumour_volume_change_ml"):
        assert f"<td>{t[key]:.3f}</td>" in row, key
    assert f"<td>{t['tumour_volume_growth_ml_per_year']:.1f}</td>" in row
    assert f"<td>{t['tumour_volume_doubling_time_days']:.1f}</td>" in row
    assert f"{t['renal_before']} → {t['renal_after']}" in row
    (new,), (gone,) = res["new_tumours"], res["vanished_tumours"]
    new_part = sec[sec.index("New tumours"):sec.index("Vanished tumours")]
    assert f"<td>{new['side']} {new['after_id']}</td><td>{new['tumour_volume_ml']:.3f}</td>" in new_part
    gone_part = sec[sec.index("Vanished tumours"):]
    assert f"<td>{gone['side']} {gone['before_id']}</td><td>{gone['tumour_volume_ml']:.3f}</td>" in gone_part
    for side, k in res["kidneys"].items():
        assert f"<td>{side} kidney</td><td>{k['kidney_volume_before_ml']:.3f}</td>" in sec


def test_compare_json_beside_the_label_map_only_when_it_names_it(studies: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "case"
    folder.mkdir()
    seg = folder / "t1_seg.nii.gz"
    shutil.copy(studies["seg"], seg)
    res = json.loads(studies["compare"].read_text())
    res["after"]["segmentation"] = str(seg)
    (folder / "compare.json").write_text(json.dumps(res))
    out = tmp_path / "r.html"
    assert main(["report", "--image", str(studies["image"]), "--seg", str(seg), "-o", str(out)]) == 0
    assert '<section id="followup">' in out.read_text()
    res["after"]["segmentation"] = str(tmp_path / "another_seg.nii.gz")  # a comparison of other studies
    (folder / "compare.json").write_text(json.dumps(res))
    assert main(["report", "--image", str(studies["image"]), "--seg", str(seg), "-o", str(out)]) == 0
    text = out.read_text()
    assert 'id="followup"' not in text and ">QC<" not in text  # no sidecars: no comparison, no QC column


def test_report_says_why_renal_is_not_available_and_refuses_a_bad_comparison(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lab = phantoms()[0]
    lab[lab == 2] = 1  # no tumour
    ip, sp = _write(tmp_path, "k", lab)
    out = tmp_path / "r.html"
    assert main(["report", "--image", str(ip), "--seg", str(sp), "-o", str(out)]) == 0
    assert "RENAL nephrometry: not available: no tumour component of at least 0.1 mL" in out.read_text()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kidneys": {}}))
    assert main(["report", "--image", str(ip), "--seg", str(sp), "--compare", str(bad), "-o", str(out)]) == 2
    assert "not a comparison of kidneyseg compare" in capsys.readouterr().err
