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

demo: $(STAMP)
	$(VENV)/bin/kidneyseg data synth --modality ct --n 1 --size 160 160 96 --seed 0 $(DEMO_OUT)/phantom
	$(VENV)/bin/kidneyseg info $(DEMO_OUT)/phantom/case_00000/imaging.nii.gz

test: $(STAMP) browser-deps
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
