# Every target sets itself up: a virtual environment in .venv with the package installed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
# A second environment with what Google Colab ships (tests/colab/pins.txt): tests/colab start
# their kernels with its Python, driven from the main one.
COLAB_VENV := .venv-colab
COLAB_PY := $(COLAB_VENV)/bin/python
COLAB_PINS := tests/colab/pins.txt
COLAB_STAMP := $(COLAB_VENV)/.installed

.PHONY: help venv colab-venv demo test test-reliability soak bench lint fmt lab docs dist screenshots clean

help:
	@echo "make demo   - start the sandbox, generate, and print where the results are"
	@echo "make test   - run the whole test suite"
	@echo "make colab-venv - build .venv-colab with Colab's pins (make test does it first)"
	@echo "make test-reliability - the fault matrix, stateful test and a scaled-down soak alone"
	@echo "make soak   - the full soak: 2,000 tasks with 10% mixed faults, 100 stateful examples"
	@echo "make bench  - every benchmark against its baseline; writes benchmarks/results.{md,json}"
	@echo "make lint   - ruff and mypy"
	@echo "make lab    - JupyterLab on 127.0.0.1 with a local sandbox (no key needed)"
	@echo "make docs   - regenerate docs/api/ and notebooks/ from the code and scripts"
	@echo "make dist   - build the wheel and sdist into dist/ and check them with twine"
	@echo "make screenshots - refresh docs/screenshots/panel.png and dark.png from the JupyterLab browser tests"

$(PY):
	@echo "== creating the virtual environment in $(VENV) (first run only)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Everything: the tests, the linters, JupyterLab and the browser driver.
$(STAMP): pyproject.toml | $(PY)
	@echo "== installing the package with its test and lint tools (first run only)"
	@set -o pipefail; $(PY) -m pip install --progress-bar off -e '.[test,lint]' 2>&1 \
		| { grep -E "^(Collecting|Successfully|ERROR)" || true; }
	@touch $(STAMP) $(DEMO_STAMP)

# Only what the demo needs (no JupyterLab, browser driver or linters): a quicker first run.
$(DEMO_STAMP): pyproject.toml | $(PY)
	@echo "== installing the package and what the demo needs (first run only)"
	@set -o pipefail; $(PY) -m pip install --progress-bar off -e '.[demo]' 2>&1 \
		| { grep -E "^(Collecting|Successfully|ERROR)" || true; }
	@touch $(DEMO_STAMP)

# The package from this checkout (editable, so the kernel runs the code under test) with its
# pandas extra and without the panel extra, as README tells Colab users, and Colab's pins.
$(COLAB_PY):
	$(PYTHON) -m venv $(COLAB_VENV)

$(COLAB_STAMP): pyproject.toml $(COLAB_PINS) | $(COLAB_PY)
	@echo "== installing Colab's pins ($(COLAB_PINS)) into $(COLAB_VENV) (first run only)"
	@set -o pipefail; $(COLAB_PY) -m pip install --progress-bar off -c $(COLAB_PINS) \
		-e '.[pandas]' $$(grep -oE '^[A-Za-z0-9_.-]+==' $(COLAB_PINS) | tr -d =) 2>&1 \
		| { grep -E "^(Successfully|ERROR)" || true; }
	@touch $(COLAB_STAMP)

venv: $(STAMP)

colab-venv: $(COLAB_STAMP)

demo: $(DEMO_STAMP)
	$(PY) scripts/run_demo.py

lab: $(STAMP)
	$(PY) scripts/run_lab.py

# The suite runs in 3 worker processes (pytest-xdist), a test file per worker at a time, so
# module fixtures (the browser's JupyterLab) start once. Most tests wait on servers, kernels
# and browsers, so 3 workers fit 2 cores: 18 min serial, about 8 min so. TEST_WORKERS=0: serial.
TEST_WORKERS ?= 3
# tests/colab run their kernels on $(COLAB_VENV) (they fail, not skip, when it is missing).
test: $(STAMP) $(COLAB_STAMP)
	NANOBANANA_COLAB_PYTHON=$(CURDIR)/$(COLAB_PY) $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

screenshots: $(STAMP)
	UPDATE_SCREENSHOTS=1 $(PY) -m pytest tests/browser -k "lab_panel or lab_dark"

test-reliability: $(STAMP)
	$(PY) -m pytest tests/reliability

soak: $(STAMP)
	NANOBANANA_SOAK_TASKS=2000 NANOBANANA_STATEFUL_EXAMPLES=100 $(PY) -m pytest \
		tests/reliability/test_soak.py tests/reliability/test_stateful.py --timeout 900 -s

bench: $(STAMP)
	$(PY) -m benchmarks.run

lint: $(STAMP)
	$(PY) -m ruff check nanobanana_jupyter tests scripts examples benchmarks
	$(PY) -m ruff format --check nanobanana_jupyter tests scripts examples benchmarks
	$(PY) -m mypy

fmt: $(STAMP)
	$(PY) -m ruff format nanobanana_jupyter tests scripts examples benchmarks
	$(PY) -m ruff check --fix nanobanana_jupyter tests scripts examples benchmarks

docs: $(STAMP)
	$(PY) scripts/build_api_docs.py
	$(PY) scripts/make_notebooks.py

dist: $(STAMP)
	rm -rf dist
	$(PY) -m build --wheel --sdist --outdir dist
	$(PY) -m twine check --strict dist/*

clean:
	rm -rf $(VENV) $(COLAB_VENV) build dist .pytest_cache .mypy_cache .ruff_cache
