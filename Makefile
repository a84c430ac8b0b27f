# Every target sets itself up: a virtual environment in .venv with the package installed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: help venv demo test test-reliability soak bench lint fmt lab docs dist screenshots clean

help:
	@echo "make demo   - start the sandbox, generate, and print where the results are"
	@echo "make test   - run the whole test suite"
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

venv: $(STAMP)

demo: $(DEMO_STAMP)
	$(PY) scripts/run_demo.py

lab: $(STAMP)
	$(PY) scripts/run_lab.py

# The suite runs in 3 worker processes (pytest-xdist), a test file per worker at a time, so
# module fixtures (the browser's JupyterLab) start once. Most tests wait on servers, kernels
# and browsers, so 3 workers fit 2 cores: 18 min serial, about 8 min so. TEST_WORKERS=0: serial.
TEST_WORKERS ?= 3
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

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
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
