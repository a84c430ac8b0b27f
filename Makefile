# Every target sets itself up: a virtual environment in .venv with the package installed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help venv demo test lint fmt clean

help:
	@echo "make demo   - start the sandbox, generate, and print where the results are"
	@echo "make test   - run the whole test suite"
	@echo "make lint   - ruff and mypy"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test,lint]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m nanobanana_jupyter.demo

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check nanobanana_jupyter tests
	$(PY) -m ruff format --check nanobanana_jupyter tests
	$(PY) -m mypy

fmt: $(STAMP)
	$(PY) -m ruff format nanobanana_jupyter tests
	$(PY) -m ruff check --fix nanobanana_jupyter tests

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
