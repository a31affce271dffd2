# The two commands the README promises: `make setup` (install and build) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test unit integration lint crd cluster-up cluster-down

setup:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python tests/cluster/controlplane.py build

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/carbontrack crd --check

test: lint
	$(BIN)/python -m pytest

unit:
	$(BIN)/python -m pytest -m unit

integration:
	$(BIN)/python -m pytest -m integration

crd:
	$(BIN)/carbontrack crd

cluster-up:
	$(BIN)/python tests/cluster/controlplane.py up

cluster-down:
	$(BIN)/python tests/cluster/controlplane.py down
