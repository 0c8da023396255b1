"""Cohort prediction on Ray: one task per case, the model loaded once per worker.

``kidneyseg predict INPUT... -o OUT --engine ray [--address ADDR] [--workers N]`` hands the cases to
:func:`run_cohort`.  Each worker is a Ray actor (:class:`CaseWorker`) that builds its
:class:`CaseJob` once (the model folder loaded, torch threads set) and then runs one method call,
a Ray task, per case; a free worker takes the next case (``ray.wait``), so slow cases do not hold
up the others.

What a run leaves in ``OUT``
----------------------------
* each case's outputs, as the one-process ``kidneyseg predict`` writes them (the job decides);
* ``cohort_summary.csv``: ``case, status, seconds, error, input``, one row per case, ``status``
  ``ok`` or ``failed`` (``error``: the message).  During the run a row is appended (and flushed)
  as each case ends, so a run that is killed keeps what it finished; at the end the file is
  rewritten with one row per case in input order;
* ``cohort.json``: the options the outputs were made with (:meth:`CaseJob.fingerprint`).

Starting the same command again skips every case whose row says ``ok`` for the same input and
whose output files are all there, and retries the rest (failed ones, never reached ones).
Other options in the same ``OUT`` are refused (their outputs would mix two models).

Ray itself is an optional dependency (``pip install 'kidneyseg[distributed]'``), imported only
here, when a cohort runs.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kidneyseg.errors import InputError, KidneysegError, OutputError

log = logging.getLogger(__name__)

SUMMARY = "cohort_summary.csv"
RUN_FILE = "cohort.json"
COLUMNS = ("case", "status", "seconds", "error", "input")
#: Object store of a local Ray started here: cases travel as paths, results as small dicts.
LOCAL_OBJECT_STORE_MB = 256
#: Manifest columns naming the image of a row (the first one present is used).
MANIFEST_IMAGE_COLUMNS = ("image", "path", "input")


@dataclass(frozen=True)
class CohortCase:
    """One case of a cohort: its input (file or DICOM folder) and the output stem it is written under."""

    name: str
    path: Path


class CaseJob(Protocol):
    """What a worker does; built on the driver, sent (pickled) to every worker.

    ``setup`` runs once per worker (load the model); ``run`` once per case, writing its outputs into
    ``out`` and returning the line to print, raising on failure; ``outputs`` lists the files a
    finished case has (what a rerun checks); ``fingerprint`` the options the outputs depend on.
    """

    def setup(self) -> None: ...

    def run(self, case: CohortCase, out: Path) -> str: ...

    def outputs(self, case: CohortCase, out: Path) -> list[Path]: ...

    def fingerprint(self) -> dict[str, Any]: ...


class CaseWorker:
    """The body of one Ray actor: the job set up once, then :meth:`run` per case.

    A case that raises is returned as ``status "failed"`` with its message, so the worker and
    the run go on.
    """

    def __init__(self, job: CaseJob, out: str) -> None:
        self.job = job
        self.out = Path(out)
        job.setup()

    def run(self, case: CohortCase) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            line = self.job.run(case, self.out)
            status, error = "ok", ""
        except KidneysegError as exc:
            line, status, error = "", "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - one bad case must not stop the cohort; its message is recorded
            line, status, error = "", "failed", f"{type(exc).__name__}: {exc}"
        return {"case": case.name, "status": status, "seconds": round(time.perf_counter() - t0, 3),
                "error": error, "input": str(case.path), "line": line}

    def pid(self) -> int:
        """The worker's process id (tests: the model is loaded in as many processes as there are workers)."""
        return os.getpid()


# ----------------------------------------------------------------------------- inputs


def expand_globs(inputs: Iterable[str]) -> list[str]:
    """``inputs`` with every pattern (``*``, ``?``, ``[``) that names no existing path replaced by its
    sorted matches (``"scans/*.nii.gz"`` quoted so the shell leaves it).

    Raises :class:`InputError` for a pattern that matches nothing.
    """
    out: list[str] = []
    for raw in inputs:
        if any(c in raw for c in "*?[") and not Path(raw).exists():
            hits = sorted(glob.glob(raw, recursive=True))
            if not hits:
                raise InputError("pattern matches no file", path=raw, expected="at least one image or folder",
                                 fix="check the pattern (quote it so that kidneyseg, not the shell, expands it)")
            out += hits
        else:
            out.append(raw)
    return out


def read_manifest(path: str | os.PathLike[str]) -> list[tuple[Path, str | None]]:
    """Inputs listed in a CSV manifest: ``(image path, case name or None)`` per row.

    The image column is the first of ``image``, ``path``, ``input``; relative paths are taken from
    the CSV's folder; an optional ``case`` column names the outputs.  Raises :class:`InputError`
    when there is no such column or no row.
    """
    p = Path(path)
    with open(p, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        col = next((c for c in MANIFEST_IMAGE_COLUMNS if c in fields), None)
        if col is None:
            raise InputError("CSV manifest has no image column", path=p, found=", ".join(fields) or "no header",
                             expected="a header with one of: " + ", ".join(MANIFEST_IMAGE_COLUMNS)
                             + " (optional: case)", fix="add a header line such as 'case,image'")
        rows = []
        for row in reader:
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if not row.get(col):
                continue
            img = Path(row[col])
            rows.append((img if img.is_absolute() else p.parent / img, row.get("case") or None))
    if not rows:
        raise InputError("CSV manifest lists no image", path=p, expected="one row per case",
                         fix=f"fill the '{col}' column")
    return rows


def name_cases(paths: Sequence[Path], names: Sequence[str | None] | None = None,
               name_of: Callable[[Path], str] | None = None) -> list[CohortCase]:
    """Cases with unique output stems, as the one-process ``predict`` names them: ``name_of(path)``
    (default :func:`kidneyseg.io.case_name`) or the manifest's name, ``_2``, ``_3``... for repeats."""
    from kidneyseg.io import case_name

    namer = name_of or case_name
    seen: dict[str, int] = {}
    cases = []
    for i, p in enumerate(paths):
        base = (names[i] if names is not None else None) or namer(p)
        seen[base] = seen.get(base, 0) + 1
        cases.append(CohortCase(base if seen[base] == 1 else f"{base}_{seen[base]}", Path(p)))
    return cases


# ----------------------------------------------------------------------------- bookkeeping


def read_summary(out: Path) -> dict[str, dict[str, str]]:
    """Rows of ``out/cohort_summary.csv`` by case (the last row of a case wins); empty when absent."""
    path = out / SUMMARY
    if not path.is_file():
        return {}
    rows: dict[str, dict[str, str]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("case"):
                rows[row["case"]] = {k: (row.get(k) or "") for k in COLUMNS}
    return rows


def _check_fingerprint(out: Path, fingerprint: dict[str, Any]) -> None:
    path = out / RUN_FILE
    new = json.loads(json.dumps(fingerprint))
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError("cohort run file cannot be read", path=path, found=str(exc),
                             fix="delete it to predict every case again, or choose another -o folder") from exc
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            raise InputError("the output folder holds a cohort predicted with other options", path=path,
                             found=", ".join(f"{k}={new.get(k)!r}" for k in diff),
                             expected=", ".join(f"{k}={old.get(k)!r}" for k in diff),
                             fix="repeat the first run's options to continue it, or choose another -o folder")
    else:
        from kidneyseg.io import atomic_path

        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(new, indent=2) + "\n", encoding="utf-8")


def _write_summary(out: Path, rows: Sequence[dict[str, Any]]) -> None:
    from kidneyseg.io import atomic_path

    with atomic_path(out / SUMMARY) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


class _Journal:
    """``cohort_summary.csv`` opened for appending: one flushed row per finished case."""

    def __init__(self, out: Path) -> None:
        path = out / SUMMARY
        new = not path.is_file() or path.stat().st_size == 0
        self.f = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - kept open for the run, closed by close()
        self.w = csv.DictWriter(self.f, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            self.w.writeheader()

    def add(self, row: dict[str, Any]) -> None:
        self.w.writerow(row)
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


# ----------------------------------------------------------------------------- Ray


def _ray() -> Any:
    from kidneyseg._optional import require

    return require("ray", "cohort prediction on Ray (--engine ray)")


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a ``HOST:PORT`` address nothing answers on within ``timeout_s`` (Ray itself retries for minutes).

    ``auto`` and ``ray://`` (Ray Client) addresses are left to Ray.
    """
    import socket

    if address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as exc:
        raise KidneysegError("cannot connect to the Ray cluster", path=address, found=f"{type(exc).__name__}: {exc}",
                             expected="the head node's GCS port (`ray start --head --port 6379`)",
                             fix="check --address HOST:PORT and that the cluster runs, or drop --address to run "
                                 "on this machine") from None


def connect(address: str | None, num_cpus: int | None = None, *,
            object_store_mb: int = LOCAL_OBJECT_STORE_MB) -> bool:
    """Join the Ray cluster at ``address`` (``"auto"``, ``"HOST:6379"``, ``"ray://HOST:10001"``), or start a
    local Ray with ``num_cpus`` cores (default: the cores this process is given) when ``address`` is None.

    A Ray already initialised in this process is used as it is.  Returns whether this call connected (the
    caller then calls ``ray.shutdown()``).  Raises :class:`KidneysegError` when the cluster cannot be reached.
    """
    ray = _ray()
    if ray.is_initialized():
        return False
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise KidneysegError("cannot connect to the Ray cluster", path=address, found=str(exc).splitlines()[0],
                                 expected="a running cluster (`ray start --head` on its head node)",
                                 fix="check --address (HOST:6379, or ray://HOST:10001 for Ray Client), or drop it "
                                     "to run on this machine") from exc
        return True
    # address "local": a new Ray of its own, even where `ray start` left a cluster on this machine
    ray.init(address="local", num_cpus=int(num_cpus or available_cores()), include_dashboard=False,
             object_store_memory=int(object_store_mb) * 1024**2)
    return True


def run_cohort(cases: Sequence[CohortCase], out: str | os.PathLike[str], job: CaseJob, *,
               workers: int | None = None, cpus_per_worker: int = 1, progress: bool = True,
               echo: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run ``job`` on every case of ``cases`` with Ray workers, skipping cases finished by an earlier run.

    Ray must be connected (:func:`connect`).  ``workers``: actors started (default: the cluster's CPUs
    divided by ``cpus_per_worker``, at most one per case to do); each reserves ``cpus_per_worker`` CPUs.
    ``echo`` receives each finished case's line (default: printed to stdout).  Returns one row per case
    (``case, status, seconds, error, input``, plus ``skipped`` for those done before), in input order;
    ``cohort_summary.csv`` holds the same rows.
    """
    from tqdm import tqdm

    ray = _ray()
    out = Path(out)
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise InputError("cohort cases share an output name", found=sorted({n for n in names if names.count(n) > 1}),
                         expected="one name per case", fix="give each case its own name (manifest 'case' column)")
    if out.exists() and not out.is_dir():
        raise OutputError("output is not a folder", path=out, fix="choose a folder for -o")
    _check_fingerprint(out, job.fingerprint())
    before = read_summary(out)
    done: dict[str, dict[str, Any]] = {}
    for c in cases:
        row = before.get(c.name)
        if row and row["status"] == "ok" and row["input"] == str(c.path) and all(
                p.is_file() for p in job.outputs(c, out)):
            done[c.name] = {**row, "skipped": True}
    todo = [c for c in cases if c.name not in done]
    if done:
        log.info("%d of %d case(s) done by an earlier run: skipped", len(done), len(cases))
    rows: dict[str, dict[str, Any]] = dict(done)
    echo = echo or (lambda line: tqdm.write(line, file=sys.stdout))
    if todo:
        if workers is not None and int(workers) < 1:
            raise InputError("--workers must be at least 1", found=workers, fix="pass --workers 1 or more")
        cpus = float(ray.cluster_resources().get("CPU", 1))
        n = int(workers) if workers else max(1, int(cpus // max(1, cpus_per_worker)))
        n = min(n, len(todo))
        # max_restarts: a worker that dies (out of memory, a crash in a library) is started again, its case
        # recorded as failed; max_task_retries=0: that case is not tried again on the new worker
        actor = ray.remote(num_cpus=cpus_per_worker, max_restarts=3, max_task_retries=0)(CaseWorker)
        pool = [actor.remote(job, str(out)) for _ in range(n)]
        journal = _Journal(out)
        bar = tqdm(total=len(cases), initial=len(done), desc="predict (ray)", unit="case", file=sys.stderr,
                   disable=not progress, dynamic_ncols=True)
        pending: dict[Any, tuple[CohortCase, Any]] = {}
        queue = list(reversed(todo))
        try:
            for a in pool:
                if queue:
                    c = queue.pop()
                    pending[a.run.remote(c)] = (c, a)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                ref = ready[0]
                c, a = pending.pop(ref)
                try:
                    row = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker died under this case
                    row = {"case": c.name, "status": "failed", "seconds": "", "input": str(c.path), "line": "",
                           "error": f"worker lost: {type(exc).__name__}: {str(exc).splitlines()[0]}"}
                if queue:
                    nxt = queue.pop()
                    pending[a.run.remote(nxt)] = (nxt, a)
                rows[c.name] = row
                journal.add(row)
                bar.update(1)
                if row["status"] == "ok":
                    if row.get("line"):
                        echo(row["line"])
                else:
                    tqdm.write(f"kidneyseg predict: {c.path}: error: {row['error']}", file=sys.stderr)
        finally:
            bar.close()
            journal.close()
            for a in pool:
                ray.kill(a)
    ordered = [rows[c.name] for c in cases]
    _write_summary(out, ordered)
    return ordered
