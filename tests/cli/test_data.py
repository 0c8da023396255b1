"""`kidneyseg data synth | check | split | slice` end to end on a tiny phantom set."""

from __future__ import annotations

import json
from pathlib import Path

from kidneyseg.cli import main


def test_data_commands_end_to_end(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "ph"
    assert main(["data", "synth", "--modality", "ct", "--n", "3", "--size", "40", "40", "20", "--seed", "1",
                 "--shapes", "none", str(out)]) == 0
    assert (out / "case_00000" / "imaging.nii.gz").exists() and (out / "case_00002" / "segmentation.nii.gz").exists()
    fp, plan = tmp_path / "fp.json", tmp_path / "plan.json"
    assert main(["data", "check", str(out), "--format", "kits23", "--fingerprint", str(fp), "--plan", str(plan),
                 "--strict"]) == 0
    text = capsys.readouterr().out
    assert "cases: 3 from 3" in text and "[0, 1, 2, 3]" in text
    assert json.loads(fp.read_text())["plans"]["2d"]["spatial_dims"] == 2
    assert json.loads(plan.read_text())["spatial_dims"] == 3
    assert main(["data", "check", str(out), "--format", "kits23", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_cases"] == 3
    splits = tmp_path / "splits.json"
    assert main(["data", "split", str(out), "--format", "kits23", "--folds", "3", "--seed", "0", "-o", str(splits)]) == 0
    assert len(json.loads(splits.read_text())) == 3
    assert main(["data", "slice", str(out), "--format", "kits23", "-o", str(tmp_path / "cache"), "--only-kidney"]) == 0
    assert (tmp_path / "cache" / "index.csv").exists()


def test_data_errors_are_one_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["data", "check", str(tmp_path), "--format", "chaos-mr"]) == 2
    err = capsys.readouterr().err
    assert "no cases found" in err and "Fix:" in err
    assert main(["data", "synth", str(tmp_path / "x"), "--modality", "us", "--size", "10", "10", "10"]) == 2
    assert main(["data", "synth", "--modality", "us", "--layout", "kits23", str(tmp_path / "y")]) == 2
