# The two commands the README promises: `make setup` (install and build) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test unit integration lint crd deploy dashboards cluster-up cluster-down

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

# deploy/carbontrack.yaml: the chart rendered with default values (a test checks it stays in sync)
deploy:
	$(BIN)/python tests/cluster/render.py > deploy/carbontrack.yaml

dashboards:
	$(BIN)/python helm/carbontrack/files/make_dashboards.py

cluster-up:
	$(BIN)/python tests/cluster/controlplane.py up

cluster-down:
	$(BIN)/python tests/cluster/controlplane.py down
