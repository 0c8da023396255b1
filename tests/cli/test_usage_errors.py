"""Tracebacks a user could trigger (issue 22, item 7), each now one stderr line or a quiet exit.

`train --config` with a binary file or JSON of the wrong types, `info DIR | head` (broken pipe),
`report -o r.pdf`, and `--spacing` that is not positive or is given for a volume.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kidneyseg.cli import main


def _one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["-q", *argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return code, lines[0]


def _train(cfg: Path, tmp_path: Path) -> list[str]:
    # the config is read before the data set: --data need not exist for these errors
    return ["train", "--pipeline", "ct2d-unet-squeezenet", "--data", str(tmp_path / "nodata"), "--format", "slices",
            "-o", str(tmp_path / "model"), "--config", str(cfg)]


def test_train_config_binary_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "weights.json"
    cfg.write_bytes(b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03.")  # a pickle, say
    code, line = _one_line(capsys, _train(cfg, tmp_path))
    assert code == 2
    assert "weights.json" in line and "not UTF-8" in line and "byte 0x80" in line and "Fix:" in line


@pytest.mark.parametrize("content, key, found, expected", [
    ({"epochs": "ten"}, "'epochs'", '"ten" (a JSON string)', "expected integer"),
    ({"lr": [0.1]}, "'lr'", "[0.1] (a JSON array)", "expected number"),
    ({"progress": "yes"}, "'progress'", '"yes" (a JSON string)', "expected true/false"),
    ({"patch_size": [32, "32"]}, "'patch_size[1]'", '"32" (a JSON string)', "expected integer"),
    ({"threads": 1.5}, "'threads'", "1.5 (a JSON number)", "expected integer or null"),
    ({"stage_plans": {"main": 5}}, "'stage_plans[\"main\"]'", "5 (a JSON number)", "expected object"),
], ids=["epochs-str", "lr-list", "bool-str", "patch-item", "threads-float", "nested"])
def test_train_config_wrong_types(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: dict, key: str,
                                  found: str, expected: str) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(content))
    code, line = _one_line(capsys, _train(cfg, tmp_path))
    assert code == 2
    for text in ("cfg.json", key, "wrong type", f"found {found}", expected, "Fix:"):
        assert text in line, (text, line)


def test_train_config_not_an_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text("[1, 2]")
    code, line = _one_line(capsys, _train(cfg, tmp_path))
    assert code == 2
    assert "cfg.json" in line and "found a JSON array" in line and "expected an object" in line


def test_train_config_bad_value_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"epochs": 0}')
    code, line = _one_line(capsys, _train(cfg, tmp_path))
    assert code == 2 and "cfg.json" in line and "'epochs'" in line and "found 0" in line


def _nifti(path: Path, shape: tuple[int, ...] = (6, 5, 4)) -> Path:
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.eye(4)), str(path))
    return path


def test_info_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """`kidneyseg info X | head`: head has gone before info writes; no BrokenPipeError traceback."""
    img = _nifti(tmp_path / "a.nii.gz")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (head) is gone before kidneyseg writes
    try:
        proc = subprocess.run([sys.executable, "-m", "kidneyseg.cli", "info", str(img)], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120, env=env)
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert "Exception ignored" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == ""
    assert proc.returncode == 1


def test_main_returns_on_broken_pipe_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    class ClosedPipe:
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    img = _nifti(tmp_path / "a.nii.gz")
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["info", str(img)]) == 1


def test_report_to_pdf_is_refused_naming_the_suffixes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = _nifti(tmp_path / "img.nii.gz")
    seg = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.uint8), np.eye(4)), str(seg))
    code, line = _one_line(capsys, ["report", "--image", str(img), "--seg", str(seg), "-o", str(tmp_path / "r.pdf")])
    assert code == 2
    assert "r.pdf" in line and "'.pdf'" in line and ".html" in line and "Fix:" in line
    assert not (tmp_path / "r.pdf").exists()


@pytest.mark.parametrize("command", ["info", "convert", "predict", "report"])
def test_non_positive_spacing_is_refused_for_3d_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       command: str) -> None:
    img = _nifti(tmp_path / "img.nii.gz")
    argv = {
        "info": ["info", str(img)],
        "convert": ["convert", str(img), str(tmp_path / "out.nrrd")],
        "predict": ["predict", str(img), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "no-model")],
        "report": ["report", "--image", str(img), "--seg", str(img), "-o", str(tmp_path / "r.html")],
    }[command]
    code, line = _one_line(capsys, [*argv, "--spacing", "0", "-1"])
    assert code == 2
    assert "--spacing" in line and "found 0 -1" in line and "positive" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.nii.gz"]


def test_spacing_for_a_volume_is_said_to_be_ignored(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    img = _nifti(tmp_path / "img.nii.gz")
    capsys.readouterr()
    assert main(["info", str(img), "--json", "--spacing", "0.5", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["spacing_mm"] == [1.0, 1.0, 1.0]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "img.nii.gz" in warnings[0] and "only used for 2D images" in warnings[0]
