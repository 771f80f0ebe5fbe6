# Two commands for a fresh machine (Python >= 3.10, a C compiler):
#   make main ARGS="-P dataset=ml-100k"   set up .venv and run the whole pipeline
#   make test                             set up .venv and run every test (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=

.PHONY: main test lint

# rankfmc is built from source: its manylinux wheel fails to import and older wheels are slow.
# Installed by uv (pinned as in pyproject's test extra), not pip: on a fresh machine 43 s against
# pip's 72 s, 26 s with uv's cache; the same packages, rankfmc built from the same sdist. Compiled
# to bytecode at install, as pip does: where PYTHONDONTWRITEBYTECODE is set, no process would
# write it, and every step's process would compile mlflow afresh (CI took twice as long).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==0.13.9
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python --no-binary rankfmc -e '.[test]'
	touch $@

# The store first, under a lock: MLflow creates a new SQLite store's tables without one, so two
# `make main` started together on a fresh mlflow.db would race (recflow/tracking/store.py).
main: $(VENV)/.installed
	$(BIN)/python -m recflow.tracking.store
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/mlflow run . -e main --env-manager local $(ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo

# -m "" runs the slow end-to-end tests too; plain `pytest` skips them. One worker per core, a test
# file per worker (-n auto --dist loadfile, in pyproject.toml's addopts, so plain `pytest` runs so
# too: 146 s against 218 s in one process, on 2 cores half as fast as those that gave 111 s at
# ea81f30): most slow tests wait on servers and subprocesses, and a file's tests share its module
# fixtures. The longest files are handed out first (tests/conftest.py orders them;
# --no-loadscope-reorder keeps that order, where xdist would put the files with most tests first).
# Not --dist loadgroup: under pytest 9.2 it groups nothing (pytest-xdist #1386), so a file's tests
# and its module fixtures land on both workers. On 2 cores: 668 s against 940 s in one process.
test: lint
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest -m "" $(PYTEST_ARGS)
