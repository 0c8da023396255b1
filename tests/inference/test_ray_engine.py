"""`kidneyseg predict --engine ray`: a cohort on Ray workers, as the one-process command predicts it.

End to end: 6 generated CT phantoms (`kidneyseg data synth`), one of them corrupt; the Ray engine writes the
5 label maps the local engine writes (same voxels, same volumes), records the corrupt one in
cohort_summary.csv and goes on, and a second run leaves the 5 alone.  With a job that records where it
runs: the model is set up once per worker, not once per case; a worker that dies loses only its case.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("torch")
pytest.importorskip("monai")
TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "inference"))

import predict_kit as kit  # noqa: E402

from kidneyseg.cli import main  # noqa: E402
from kidneyseg.errors import InputError  # noqa: E402
from kidneyseg.inference import cohort  # noqa: E402

# the jobs below are defined in this test module, which Ray's workers cannot import: send them by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def local_ray():
    """A small local Ray for the module: 2 CPUs, no dashboard, a 200 MB object store."""
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2,
                 log_to_driver=False)  # "local": never a cluster some `ray start` left on the machine
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return kit.cached_unet3d(tmp_path_factory)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    """6 CT phantoms (40 x 40 x 20) by `kidneyseg data synth`, case_00003 made unreadable."""
    root = tmp_path_factory.mktemp("cohort") / "phantoms"
    assert main(["-q", "data", "synth", str(root), "--modality", "ct", "--n", "6", "--size", "40", "40", "20",
                 "--layout", "folder", "--shapes", "none", "--seed", "3"]) == 0
    images = root / "images"
    assert len(list(images.glob("*.nii.gz"))) == 6
    (images / "case_00003.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 not a gzip stream")
    return images


def _summary(out: Path) -> dict[str, dict[str, str]]:
    with open(out / cohort.SUMMARY, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(cohort.COLUMNS)
    return {r["case"]: r for r in rows}


def _labels(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    import nibabel as nib

    found = {}
    for p in sorted(out.glob("*.nii.gz")):
        img = nib.load(str(p))
        found[p.name] = (np.asarray(img.dataobj), img.affine)
    return found


GOOD = ["case_00000", "case_00001", "case_00002", "case_00004", "case_00005"]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_ray_cohort_matches_local_and_reruns_nothing(local_ray, model_dir, phantoms, tmp_path, capsys):
    common = ["--model", str(model_dir), "--threads", "1"]
    assert main(["predict", str(phantoms), "-o", str(tmp_path / "local"), *common]) == 1  # the corrupt case
    capsys.readouterr()
    out = tmp_path / "ray"
    rc = main(["predict", str(phantoms), "-o", str(out), *common, "--engine", "ray", "--workers", "2"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "5 of 6 case(s) done" in err and "1 of 6 case(s) failed" in err and "case_00003.nii.gz" in err

    ours, theirs = _labels(out), _labels(tmp_path / "local")
    assert sorted(ours) == [f"{c}.nii.gz" for c in GOOD] == sorted(theirs)
    for name, (lab, aff) in ours.items():  # the voxels and the grid of the one-process prediction
        assert lab.dtype == np.uint8 and np.array_equal(lab, theirs[name][0]) and np.array_equal(aff, theirs[name][1])
        assert (lab > 0).any(), name  # a real prediction, not an empty map that would match anything
    for c in GOOD:
        assert json.loads((out / f"{c}_volumes.json").read_text()) == \
            json.loads((tmp_path / "local" / f"{c}_volumes.json").read_text())

    rows = _summary(out)
    assert sorted(rows) == sorted(GOOD + ["case_00003"])
    assert all(rows[c]["status"] == "ok" and rows[c]["error"] == "" and float(rows[c]["seconds"]) > 0 for c in GOOD)
    bad = rows["case_00003"]
    assert bad["status"] == "failed" and "cannot read NIfTI" in bad["error"]
    assert bad["input"] == str(phantoms / "case_00003.nii.gz")

    # the same command again: the 5 finished cases are not touched; the failed one is tried again
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    rc = main(["predict", str(phantoms), "-o", str(out), *common, "--engine", "ray", "--workers", "2"])
    err = capsys.readouterr().err
    assert rc == 1 and "(5 by an earlier run)" in err and "1 of 6 case(s) failed" in err
    for c in GOOD:
        for f in (f"{c}.nii.gz", f"{c}_volumes.json"):
            assert (out / f).stat().st_mtime_ns == stamps[f], f
    assert _summary(out)["case_00003"]["status"] == "failed"

    # other options into the same folder would mix two kinds of output: refused
    rc = main(["predict", str(phantoms), "-o", str(out), *common, "--engine", "ray", "--no-postprocess"])
    assert rc == 2 and "other options" in capsys.readouterr().err


@dataclass
class RecordingJob:
    """A job that records in ``log`` which process set it up and which ran each case (no model)."""

    log: str
    die_on: str = ""

    def setup(self) -> None:
        Path(self.log, f"setup-{os.getpid()}-{time.time_ns()}").write_text("")  # one file per set-up

    def run(self, case: cohort.CohortCase, out: Path) -> str:
        if case.name == self.die_on:
            os._exit(1)  # the worker process dies under this case
        if case.name == "bad":
            raise InputError("refused", path=case.path)
        Path(self.log, f"case-{case.name}-{os.getpid()}").write_text("")
        (out / f"{case.name}.txt").write_text(case.name)
        return f"{case.name} done"

    def outputs(self, case: cohort.CohortCase, out: Path) -> list[Path]:
        return [out / f"{case.name}.txt"]

    def fingerprint(self) -> dict:
        return {"job": "recording"}


def _cases(tmp_path: Path, names: list[str]) -> list[cohort.CohortCase]:
    return [cohort.CohortCase(n, tmp_path / f"{n}.nii.gz") for n in names]


@pytest.mark.timeout(120)
def test_model_set_up_once_per_worker(local_ray, tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    names = [f"c{i}" for i in range(8)] + ["bad"]
    lines: list[str] = []
    rows = cohort.run_cohort(_cases(tmp_path, names), tmp_path / "out", RecordingJob(str(log)), workers=2,
                             progress=False, echo=lines.append)
    setups = [p.name.split("-")[1] for p in log.glob("setup-*")]
    ran = {p.name.split("-")[1]: p.name.split("-")[2] for p in log.glob("case-*")}
    assert len(setups) == len(set(setups)) == 2  # two workers, each set up once, for 9 cases
    assert sorted(ran) == sorted(names[:-1]) and set(ran.values()) <= set(setups)
    assert [r["case"] for r in rows] == names  # input order
    assert [r["status"] for r in rows] == ["ok"] * 8 + ["failed"] and "refused" in rows[-1]["error"]
    assert sorted(lines) == sorted(f"{n} done" for n in names[:-1])


@pytest.mark.timeout(120)
def test_dead_worker_loses_only_its_case(local_ray, tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    names = ["a", "b", "crash", "c", "d"]
    rows = cohort.run_cohort(_cases(tmp_path, names), tmp_path / "out", RecordingJob(str(log), die_on="crash"),
                             workers=2, progress=False, echo=lambda line: None)
    status = {r["case"]: r["status"] for r in rows}
    assert status == {"a": "ok", "b": "ok", "crash": "failed", "c": "ok", "d": "ok"}
    assert "worker lost" in next(r["error"] for r in rows if r["case"] == "crash")
    # a rerun does only the failed case (and fails it again)
    again = cohort.run_cohort(_cases(tmp_path, names), tmp_path / "out", RecordingJob(str(log), die_on="crash"),
                              workers=2, progress=False, echo=lambda line: None)
    assert [r["case"] for r in again if not r.get("skipped")] == ["crash"]


def test_manifest_globs_and_names(tmp_path):
    (tmp_path / "scans").mkdir()
    for n in ("a.nii.gz", "b.nii.gz", "c.mha"):
        (tmp_path / "scans" / n).write_bytes(b"")
    assert cohort.expand_globs([str(tmp_path / "scans" / "*.nii.gz")]) == \
        [str(tmp_path / "scans" / "a.nii.gz"), str(tmp_path / "scans" / "b.nii.gz")]
    with pytest.raises(InputError, match="pattern matches no file"):
        cohort.expand_globs([str(tmp_path / "none" / "*.nii.gz")])
    man = tmp_path / "list.csv"
    man.write_text("case,image\np1,scans/a.nii.gz\n,scans/c.mha\n,\n")
    assert cohort.read_manifest(man) == [(tmp_path / "scans" / "a.nii.gz", "p1"), (tmp_path / "scans" / "c.mha", None)]
    (tmp_path / "bad.csv").write_text("file\nx.nii.gz\n")
    with pytest.raises(InputError, match="no image column"):
        cohort.read_manifest(tmp_path / "bad.csv")
    named = cohort.name_cases([Path("x/a.nii.gz"), Path("y/a.nii.gz"), Path("z/case_00001_0000.nii.gz")])
    assert [c.name for c in named] == ["a", "a_2", "case_00001"]  # as `predict` names its outputs


def test_other_options_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / cohort.RUN_FILE).write_text(json.dumps({"job": "another"}))
    with pytest.raises(InputError) as err:
        cohort.run_cohort(_cases(tmp_path, ["a"]), out, RecordingJob(str(tmp_path)), progress=False)
    assert "job='recording'" in str(err.value) and "job='another'" in str(err.value)
