# The two commands the README promises: `make setup` (install and build) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup prometheus docker image e2e e2e-down demo test unit integration lint crd deploy dashboards cluster-up cluster-down bench docs

setup: prometheus docker
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,distributed,docs]'
	$(BIN)/python hack/controlplane.py build
	$(BIN)/python hack/kueue.py build

# Prometheus and promtool (Debian's package) for the scrape, dashboard and alert-rule tests;
# installed when missing and this is a Debian machine we are root on, else those tests are skipped.
prometheus:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	else echo "note: install Debian's prometheus package for the Prometheus tests (skipped without it)"; fi

# Debian's Docker engine (and debootstrap, for the base image made without a registry) for the image
# build and the kind e2e tests; installed when no engine answers and this is a Debian machine we are
# root on, else those tests are skipped. hack/docker.py starts dockerd when it is not running.
docker:
	@if docker info >/dev/null 2>&1 || command -v dockerd >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null; \
	else echo "note: install a Docker engine for the image build and the e2e tests (skipped without it)"; fi
	@if command -v debootstrap >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then :; \
	else DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; fi

# The operator/sidecar image, ghcr.io/carbontrack/carbontrack:<version> (starts dockerd if needed; the base
# is made by debootstrap unless CARBONTRACK_BASE_IMAGE names one, e.g. python:3.12-slim), then a smoke run.
image:
	$(BIN)/python hack/docker.py start
	$(BIN)/python hack/images.py image
	$(BIN)/python hack/images.py smoke

# End-to-end tests on kind (the last part of `make test`): the image, kind and its node image (built without a
# registry unless CARBONTRACK_KIND_NODE_IMAGE names one), a cluster, the chart; the cluster is deleted after.
e2e:
	$(BIN)/python -m pytest -m e2e tests/e2e

# Removes what the e2e tests leave when kept (CARBONTRACK_KEEP_CLUSTER=1) or interrupted: the kind
# cluster, and dockerd if hack/docker.py started it.
e2e-down:
	$(BIN)/python hack/kindnode.py down
	$(BIN)/python hack/docker.py stop

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/carbontrack crd --check
	$(BIN)/python hack/docs.py --check
	$(BIN)/mkdocs build --strict
	$(BIN)/hadolint Dockerfile

# Unit and control-plane tests, then the end-to-end tests on kind (they skip, saying why, without a
# Docker engine); two runs, so no kind cluster idles beside the control-plane tests.
test: lint
	$(BIN)/python -m pytest
	$(MAKE) e2e

unit:
	$(BIN)/python -m pytest -m unit

integration:
	$(BIN)/python -m pytest -m integration

crd:
	$(BIN)/carbontrack crd

# deploy/carbontrack.yaml: the chart rendered with default values (a test checks it stays in sync)
deploy:
	$(BIN)/python hack/render.py > deploy/carbontrack.yaml

dashboards:
	$(BIN)/python helm/carbontrack/files/make_dashboards.py

# The documentation site (mkdocs.yml, docs/): the generated reference pages, then the site in build/site/.
docs:
	$(BIN)/python hack/docs.py
	$(BIN)/mkdocs build --strict

# A gated CarbonTrackedJob through Canary -> Promoting -> Running -> Succeeded on the local control plane.
demo:
	$(BIN)/python hack/demo.py

# Every benchmark against its peers; rewrites the table in benchmarks/RESULTS.md (not part of `test`).
bench:
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/run_all

cluster-up:
	$(BIN)/python hack/controlplane.py up

cluster-down:
	$(BIN)/python hack/controlplane.py down
