"""Every command that reads images, held to a generated corpus of malformed files (issue 22, item 6).

On each file of :mod:`malformed_corpus` (built into a temporary folder, never committed),
``kidneyseg info``, ``convert`` and ``predict`` exit with code 2 and one stderr line, without a
traceback, without leaving a file behind, in well under 5 s; headers that claim huge images are
refused from the header, before any allocation.  A batch that mixes good and bad files writes
the good ones and exits 1.

The commands run in-process (:func:`kidneyseg.cli.main`); two cases also run as a real process.
``predict`` gets a model folder whose loading fails the test: reading must fail first.
"""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import malformed_corpus as mc
import pytest

from kidneyseg.cli import main

COMMANDS = ("info", "convert", "predict")
MAX_SECONDS = 5.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, mc.Malformed]:
    return {m.id: m for m in mc.build_corpus(tmp_path_factory.mktemp("malformed"))}


@pytest.fixture(scope="module")
def unloadable_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that passes for a model folder; :class:`Predictor` is patched to fail if it is loaded."""
    d = tmp_path_factory.mktemp("model")
    (d / "model.json").write_text("{}")
    return d


@pytest.fixture
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    import kidneyseg.inference as inference

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("predict loaded a model before reading its one input")

    monkeypatch.setattr(inference, "Predictor", refuse)


def _argv(command: str, m: mc.Malformed, out: Path, model: Path) -> list[str]:
    label = ["--label"] if m.label else []
    if command == "info":
        return ["info", str(m.path), *label]
    if command == "convert":
        return ["convert", str(m.path), str(out / "converted.nii.gz"), *label]
    return ["predict", str(m.path), "-o", str(out / "pred"), "--model", str(model)]


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", mc.ALL_KINDS)
def test_malformed_file_is_one_line_exit_2(corpus: dict[str, mc.Malformed], unloadable_model: Path,
                                           no_model_loading: None, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str], kind: str, command: str) -> None:
    m = corpus[kind]
    if command == "predict" and m.label:
        pytest.skip("a defect of label maps; predict reads images")
    case_dir = m.path.parent if m.path.is_file() else m.path
    before = _files_under(case_dir)
    capsys.readouterr()
    start = time.perf_counter()
    code = main(_argv(command, m, tmp_path, unloadable_model))
    seconds = time.perf_counter() - start
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    line = lines[0]
    assert line.startswith(f"kidneyseg {command}: error: ") and "Fix:" in line, line
    assert m.says.lower() in line.lower(), (m.says, line)
    assert captured.out == ""
    assert list(tmp_path.rglob("*")) == [], "an output was left behind"
    assert _files_under(case_dir) == before, "a file appeared beside the input"
    assert seconds < MAX_SECONDS


def test_corpus_is_wide() -> None:
    assert len(mc.ALL_KINDS) >= 60 and len(set(mc.ALL_KINDS)) == len(mc.ALL_KINDS)
    assert set(mc.KINDS) >= {"empty", "truncated", "mislabelled", "dimensionality", "geometry", "voxel type", "size",
                             "png", "dicom", "missing data file"}


@pytest.mark.parametrize("kind", ["truncated-claim.nii.gz", "huge-header.nrrd", "huge-header.mha",
                                  "huge-header.dcm", "bomb-warning-zone.png", "bomb-1bit.png"])
def test_huge_claims_are_refused_from_the_header(corpus: dict[str, mc.Malformed], kind: str) -> None:
    """Refused before any allocation: the reader's peak Python/numpy memory stays far below the claimed size."""
    from kidneyseg import io
    from kidneyseg.errors import InputError

    tracemalloc.start()
    try:
        with pytest.raises(InputError) as info:
            io.read(corpus[kind].path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20e6, f"{peak / 1e6:.0f} MB allocated before refusing"
    assert "claims" in str(info.value) or "decompression-bomb" in str(info.value), info.value


@pytest.mark.parametrize("kind", ["huge-header.nii.gz", "bomb-ihdr.png"])
def test_real_process_one_line_under_a_memory_limit(corpus: dict[str, mc.Malformed], tmp_path: Path,
                                                    kind: str) -> None:
    """As a user runs it: a real process, 1 GiB of address space beyond what Python needs at start."""
    resource = pytest.importorskip("resource")

    def limit() -> None:  # no allocation of the claimed size could succeed
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    proc = subprocess.run([sys.executable, "-m", "kidneyseg.cli", "convert", str(corpus[kind].path),
                           str(tmp_path / "out.nii.gz")], capture_output=True, text=True, timeout=120,
                          preexec_fn=limit)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("monai")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
    import predict_kit as kit

    return kit.cached_unet3d(tmp_path_factory)


def test_batch_of_good_and_malformed_files_writes_the_good_ones_and_exits_1(
        corpus: dict[str, mc.Malformed], model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = [mc.good_volume(tmp_path / "good1.nii.gz", seed=1), mc.good_volume(tmp_path / "good2.nii.gz", seed=2)]
    bad = [corpus[k].path for k in ("truncated.nii.gz", "huge-header.nii", "bomb-ihdr.png", "dicom-no-pixel-data",
                                    "nan-only.nrrd", "mhd-missing-raw")]
    out = tmp_path / "out"
    capsys.readouterr()
    code = main(["-q", "predict", str(good[0]), *map(str, bad), str(good[1]), "-o", str(out), "--model",
                 str(model_dir), "--threads", "2"])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert (out / "good1.nii.gz").is_file() and (out / "good2.nii.gz").is_file()
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".nii.gz")) == ["good1.nii.gz", "good2.nii.gz"]
    lines = [line for line in captured.err.splitlines() if line.startswith("kidneyseg")]  # not tqdm's bar
    assert len(lines) == len(bad) + 1, captured.err  # one per bad case and the summary
    assert lines[-1].startswith(f"kidneyseg predict: {len(bad)} of {len(bad) + 2} case(s) failed")
    assert "Traceback" not in captured.err
    assert captured.out.count("kidney") >= 2
