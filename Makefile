# kidneyseg: two commands on a fresh machine.
#   make demo   segments an example image the project generates (installs what it needs)
#   make test   runs the test suite (installs what it needs)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.kidneyseg-installed
DEMO_OUT ?= demo_out

.PHONY: venv demo test test-fast benchmarks models browser-deps clean

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

# Debian's chromium + chromium-driver for tests/test_viewer_browser.py (skipped where they are absent).
browser-deps:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  echo "installing Debian's chromium and chromium-driver for the browser test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  { $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	  || echo "warning: could not install chromium; the browser test will be skipped"; \
	fi

benchmarks: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
