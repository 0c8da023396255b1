"""scripts/train_defaults.py: folds trained side by side (``--jobs``), with a stand-in for the processes."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_defaults.py"


@pytest.fixture(scope="module")
def td():
    spec = importlib.util.spec_from_file_location("train_defaults_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class FakeProcesses:
    """Records the commands and how many 'processes' are alive at once; ``fail`` folds exit with 1."""

    def __init__(self, fail: set[int] = frozenset()):
        self.commands: list[list[str]] = []
        self.alive = 0
        self.most_alive = 0
        self.fail = fail

    def __call__(self, cmd, stdout=None, stderr=None):
        outer = self
        self.commands.append(cmd)
        self.alive += 1
        self.most_alive = max(self.most_alive, self.alive)
        fold = int(cmd[cmd.index("--folds") + 1])

        class Proc:
            returncode = None

            def wait(self):
                outer.alive -= 1
                self.returncode = 1 if fold in outer.fail else 0
                return self.returncode

        return Proc()


def _args(tmp_path: Path, jobs: int, epochs: int | None = None) -> argparse.Namespace:
    return argparse.Namespace(work=tmp_path / "work", data=tmp_path / "data", jobs=jobs, epochs=epochs)


def test_folds_run_at_most_jobs_at_once_with_one_thread_each(td, tmp_path, monkeypatch):
    fake = FakeProcesses()
    monkeypatch.setattr(td.subprocess, "Popen", fake)
    done = tmp_path / "work" / "mr" / "fold_1"
    done.mkdir(parents=True)
    (done / "model.json").write_text("{}")  # a finished fold is not trained again

    td.train_folds_in_processes("mr", [0, 1, 2, 3, 4], _args(tmp_path, jobs=2, epochs=3))

    folds = [int(c[c.index("--folds") + 1]) for c in fake.commands]
    assert folds == [0, 2, 3, 4]
    assert fake.most_alive == 2 and fake.alive == 0
    for c in fake.commands:
        assert c[0] == sys.executable
        assert c[c.index("--threads") + 1] == "1"
        assert "--no-pack" in c and c[c.index("--epochs") + 1] == "3"
        assert c[c.index("--modality") + 1] == "mr"
    assert (tmp_path / "work" / "mr" / "fold_0.log").is_file()


def test_a_failed_fold_names_its_log(td, tmp_path, monkeypatch):
    monkeypatch.setattr(td.subprocess, "Popen", FakeProcesses(fail={1}))
    with pytest.raises(RuntimeError, match=r"mr fold 1 failed \(exit 1\): see .*fold_1\.log"):
        td.train_folds_in_processes("mr", [0, 1, 2], _args(tmp_path, jobs=5))


def test_jobs_below_one_is_refused(td, capsys):
    with pytest.raises(SystemExit):
        td.main(["--jobs", "0", "--modality", "mr"])
    assert "--jobs must be at least 1, got 0" in capsys.readouterr().err
