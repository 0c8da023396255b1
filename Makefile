# kidneyseg: two commands on a fresh machine.
#   make demo   segments an example image the project generates (installs what it needs)
#   make test   runs the test suite (installs what it needs)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.kidneyseg-installed
DEMO_OUT ?= demo_out

.PHONY: venv demo test test-fast benchmarks models mutation browser-deps clean niivue

# niivue: copy NiiVue's browser bundle (npm @niivue/niivue, BSD-2-Clause) into reporting/static/niivue/ (needs npm;
# the viewer and `report --viewer` use the copy in the package and download nothing when they run)
niivue:
	$(PYTHON) scripts/fetch_niivue.py

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e ".[all,dev]"
	@touch $(STAMP)

venv: $(STAMP)

# demo: a generated CT phantom (HU) segmented by the embedded CT default model; prints the volumes
demo: $(STAMP)
	$(VENV)/bin/kidneyseg data synth --modality ct --n 1 --size 160 160 96 --seed 0 $(DEMO_OUT)/phantom
	$(VENV)/bin/kidneyseg predict $(DEMO_OUT)/phantom/case_00000/imaging.nii.gz -o $(DEMO_OUT)/prediction --threads 2
	@$(PY) -c 'import nibabel as nib, numpy as np; from kidneyseg.reporting.volumes import measure; \
	im = nib.load("$(DEMO_OUT)/phantom/case_00000/segmentation.nii.gz"); \
	m = measure(np.asarray(im.dataobj).astype(np.uint8), im.affine, labels={0: "background", 1: "kidney", 2: "tumor", 3: "cyst"}); \
	k, t, c = "kidney_ml", "tumor_ml", "cyst_ml"; \
	print("phantom truth: " + "; ".join(f"{s} kidney {v[k]:.1f} mL, tumour {v[t]:.1f} mL, cyst {v[c]:.1f} mL" for s, v in m["kidneys"].items()))'
	@echo "label map and volumes: $(DEMO_OUT)/prediction/imaging.nii.gz, $(DEMO_OUT)/prediction/imaging_volumes.json"

# models: retrain the embedded default models (CT, MR, US) from ../shared/data on 2 CPU cores,
# score them (case-level 5-fold cross-validation) and write their model cards
models: $(STAMP)
	$(PY) scripts/train_defaults.py --threads 2 --jobs 6

# lint (ruff), types (mypy on src/, config in pyproject.toml), then the suite
test: $(STAMP) browser-deps
	$(PY) -m ruff check src tests benchmarks scripts
	$(PY) -m mypy
	$(PY) -m pytest -q

# Debian's chromium + chromium-driver for tests/test_viewer_browser.py. A machine that can install them (apt-get,
# as root or with password-less sudo) must: a failed install fails `make test` rather than turning the browser
# test into a skip. Elsewhere (no apt-get, no root) the test is skipped with its reason;
# KIDNEYSEG_SKIP_BROWSER=1 skips it knowingly.
browser-deps:
	@if [ -n "$$KIDNEYSEG_SKIP_BROWSER" ]; then echo "KIDNEYSEG_SKIP_BROWSER is set: the browser test will be skipped"; exit 0; fi; \
	if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then echo "no apt-get here: the browser test will be skipped"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; \
	else echo "not root and no password-less sudo: the browser test will be skipped"; exit 0; fi; \
	echo "installing Debian's chromium and chromium-driver for the browser test"; \
	{ $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	|| { echo "error: apt-get could not install chromium and chromium-driver on a machine that should have them" \
	          "(set KIDNEYSEG_SKIP_BROWSER=1 to skip the browser test knowingly)" >&2; exit 1; }

benchmarks: $(STAMP)
	$(PY) benchmarks/run_all.py

# mutation check of the metrics, geometry, post-processing, ensembling and losses (not in CI: 20-40 min);
# prints the kill rate per module and writes the survivors' diffs to mutants/survivors.md (docs/mutation.md)
mutation: $(STAMP)
	$(PIP) install -q mutmut==3.8.1
	$(PY) scripts/mutation.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
