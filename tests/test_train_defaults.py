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


def _args(tmp_path: Path, jobs: int, epochs: int | None = None, scratch: bool = False) -> argparse.Namespace:
    return argparse.Namespace(work=tmp_path / "work", data=tmp_path / "data", jobs=jobs, epochs=epochs,
                              no_encoder_weights=scratch)


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


def test_the_all_cases_model_trains_beside_the_folds_and_scratch_runs_pass_on(td, tmp_path, monkeypatch):
    fake = FakeProcesses()
    monkeypatch.setattr(td.subprocess, "Popen", fake)
    td.train_folds_in_processes("ct", [0, td.ALL], _args(tmp_path, jobs=2, scratch=True))
    assert [c[c.index("--folds") + 1] for c in fake.commands] == ["0", "-1"]
    assert all("--no-encoder-weights" in c for c in fake.commands)
    assert (tmp_path / "work" / "ct" / "fold_all.log").is_file() and td.fold_dir_name(td.ALL) == "fold_all"


def test_a_failed_fold_names_its_log(td, tmp_path, monkeypatch):
    monkeypatch.setattr(td.subprocess, "Popen", FakeProcesses(fail={1}))
    with pytest.raises(RuntimeError, match=r"mr fold 1 failed \(exit 1\): see .*fold_1\.log"):
        td.train_folds_in_processes("mr", [0, 1, 2], _args(tmp_path, jobs=5))


def test_jobs_below_one_is_refused(td, capsys):
    with pytest.raises(SystemExit):
        td.main(["--jobs", "0", "--modality", "mr"])
    assert "--jobs must be at least 1, got 0" in capsys.readouterr().err


def test_extra_phantoms_never_take_a_shape_from_a_real_case(td, tmp_path, monkeypatch):
    """The training-only phantoms' kidney shapes come from kits23 masks of cases outside the real data set."""
    from kidneyseg.data.phantoms import write_phantom_set
    from kidneyseg.default_models import Recipe

    shared = tmp_path / "shared"
    write_phantom_set(shared / "real", "ct", 2, size=(40, 40, 8), layout="slices", progress=False)  # case_00000/1
    (shared / "kits23_masks").mkdir()
    for name in ("case_00000", "case_00001", "case_00099"):
        (shared / "kits23_masks" / f"{name}.nii.gz").write_bytes(b"")
    recipe = Recipe(modality="ct", pipeline="custom", config={}, data="real", fmt="slices",
                    extra_synth={"modality": "ct", "n": 3, "seed": 4, "layout": "slices"})
    seen = {}

    def fake_run(cmd, check):
        seen["cmd"] = cmd
        shapes = Path(cmd[cmd.index("--shapes") + 1])
        seen["shapes"] = sorted(p.name for p in (shapes / "kits23_masks").iterdir())
        out = Path(cmd[-1])
        out.mkdir(parents=True)
        (out / "index.csv").write_text("stem\n")

    monkeypatch.setattr(td.subprocess, "run", fake_run)
    out = td.extra_phantoms(recipe, shared, tmp_path / "work" / "ct" / "extra_phantoms")
    assert out == tmp_path / "work" / "ct" / "extra_phantoms" and (out / "index.csv").is_file()
    assert seen["shapes"] == ["case_00099.nii.gz"]
    cmd = seen["cmd"]
    assert [cmd[cmd.index(k) + 1] for k in ("--modality", "--n", "--seed", "--layout")] == ["ct", "3", "4", "slices"]
    seen.clear()
    assert td.extra_phantoms(recipe, shared, out) == out and not seen  # generated once, then kept
    assert td.extra_phantoms(Recipe(modality="ct", pipeline="custom", config={}), shared, tmp_path / "x") is None


def test_synth_command_keeps_the_output_folder_out_of_size(td, tmp_path, monkeypatch):
    """``--size`` takes every number up to the next option: the output folder must not follow it directly."""
    seen = []

    def fake_run(cmd, check):
        seen.append(cmd)
        Path(cmd[-1]).mkdir(parents=True)

    monkeypatch.setattr(td.subprocess, "run", fake_run)
    out = td.synth({"modality": "us", "n": 2, "size": [64, 48], "seed": 7}, tmp_path / "phantoms", None)
    cmd = seen[0]
    i = cmd.index("--size")
    assert cmd[i + 1:i + 3] == ["64", "48"] and cmd[i + 3].startswith("--")
    assert "--shapes" not in cmd and cmd[-1].endswith("phantoms.tmp")
    assert out.is_dir() and not (tmp_path / "phantoms.tmp").exists()


def test_accuracy_doc_keeps_the_sections_of_models_not_retrained(td, tmp_path, monkeypatch):
    import json as _json

    root = tmp_path / "root"
    (root / "docs" / "models").mkdir(parents=True)
    (root / "docs" / "models" / "accuracy.md").write_text("# old\n\n## CT\n\nold ct\n\n## MR\n\nmr table\n")
    monkeypatch.setattr(td, "ROOT", root)
    (tmp_path / "work" / "ct").mkdir(parents=True)
    (tmp_path / "work" / "ct" / "metrics.json").write_text(_json.dumps({"note": "new", "table": "new ct table"}))
    text = td.write_accuracy_doc(tmp_path / "work").read_text()
    assert "new ct table" in text and "old ct" not in text and "## MR\n\nmr table" in text


def test_cards_quote_only_what_the_run_measured(td):
    """No measurement literal in the card templates: every figure is a {fact} filled from the run (wall time,
    configuration, cross-validation rows, the example), and a fact the run lacks is an error, not a stale number."""
    import re

    from kidneyseg.default_models import RECIPES

    texts = [t for card in td.CARDS.values() for v in card.values() for t in (v if isinstance(v, list) else [v])]
    literal = re.compile(r"\d+\.\d+\s*(min|mL|MB|s\b|%)|\b0\.\d{2,}")
    assert [t for t in texts if literal.search(t)] == []
    ev_ct = {"summary": {"KiTS19 slices": {"kidney+masses": {"dice": 0.5, "dice_per_fold": [0.4, 0.6]}},
                         "CURVAS slices": {"kidney": {"dice": 0.7}}},
             "example": {"dice_both": 0.81, "ml_pred_right": 12.5, "ml_tumor_right": 2.5, "ml_pred_left": 11.0,
                         "ml_tumor_left": 1.0, "ml_ref_right": 13.0, "ml_ref_left": 12.0, "warnings": []}}
    ev_mr = {"rows": [{"case": "case_36", "region": "right kidney", "dice": 0.25},
                      {"case": "case_36", "region": "left kidney", "dice": 0.75}]}
    for mod, ev in (("ct", ev_ct), ("mr", ev_mr), ("us", {})):
        cfg = {"epochs": 7, "batch_size": 3, "contrast_phase_prob": 0.2, "fusion_epochs": 2}
        card = td.fill_card(td.CARDS[mod], td.card_facts(mod, RECIPES[mod], cfg, ev, 123.0, 6, 2))
        text = " ".join(t for v in card.values() for t in (v if isinstance(v, list) else [v]))
        assert "{" not in text
        assert ("7 epochs" in text) if mod == "us" else ("2.0 min (123 s)" in text)
    assert "0.400 / 0.600" in " ".join(td.fill_card(td.CARDS["ct"], td.card_facts(
        "ct", RECIPES["ct"], {"epochs": 1}, ev_ct, 60.0, 6, 6))["failure_modes"])
    with pytest.raises(KeyError, match="did not measure"):
        td.fill_card({"note": "took {wall_min} min and {missing}"}, {"wall_min": 1})


def test_cards_say_which_networks_an_earlier_run_trained(td, tmp_path):
    """A rerun into a work folder that already holds trained folds does not claim their training time."""
    import json

    from kidneyseg.default_models import RECIPES

    old = tmp_path / "fold_0"
    old.mkdir()
    (old / "model.json").write_text(json.dumps({"training": {"seconds": 773.2}}))
    ev = {"summary": {}, "example": {"dice_both": 0.81, "ml_pred_right": 12.5, "ml_tumor_right": 2.5,
                                     "ml_pred_left": 11.0, "ml_tumor_left": 1.0, "ml_ref_right": 13.0,
                                     "ml_ref_left": 12.0, "warnings": []}}
    card = td.fill_card(td.CARDS["ct"], td.card_facts("ct", RECIPES["ct"], {"epochs": 3, "batch_size": 2}, ev,
                                                       60.0, 5, 4, [old]))
    assert "the 5 networks" in card["training_note"]
    assert "1 more network(s) were trained by an earlier run" in card["training_note"]
    assert "fold_0 773 s" in card["training_note"]
    fresh = td.fill_card(td.CARDS["ct"], td.card_facts("ct", RECIPES["ct"], {"epochs": 3, "batch_size": 2}, ev,
                                                        60.0, 6, 4))
    assert "earlier run" not in fresh["training_note"]
    repack = td.fill_card(td.CARDS["ct"], td.card_facts("ct", RECIPES["ct"], {"epochs": 3, "batch_size": 2}, ev,
                                                         2.0, 0, 1, [old]))
    assert "no network was trained" in repack["training_note"] and "the 0 networks" not in repack["training_note"]
    assert "fold_0 773 s" in repack["training_note"]
