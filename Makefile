# The commands the README promises: `make setup` (install and build), `make test` (what CI runs) and
# `make check` (the inner loop).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Runs one stage of `make test` and says how long it took (.ci/run's closing table collects them).
STAGE := .ci/stage
# `make test` runs pytest in PYTEST_WORKERS processes (pytest-xdist). The control-plane tests mostly wait
# (on timers, restarts, sidecar intervals): one process keeps about one core busy, so three share two
# cores. `--dist loadfile` keeps a module's tests in one worker, so a module's own control plane (Kueue,
# shards) starts once; each worker starts its own session control plane (tests/integration/conftest.py).
PYTEST_WORKERS ?= 3
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist loadfile

.PHONY: setup python-env go-programs go-modules prometheus docker image e2e e2e-down demo check test unit \
	integration lint crd deploy dashboards cluster-up cluster-down bench docs

# Three jobs side by side: the machine's packages and the Python environment (apt and pip: downloads
# and unpacking, mostly waiting on the network and the disk); the Go builds (the Kubernetes programs,
# then Kueue: compilers that keep both cores busy, so one at a time under the Go build lock, as two
# compilers on two cores take longer together than one after the other); and a download of Kueue's Go
# modules while the Kubernetes programs compile. The Go jobs run on the machine's python3 (those
# scripts need only the standard library), so they do not wait for the venv.
setup:
	@$(MAKE) --no-print-directory -j3 python-env go-programs go-modules

# One after the other: apt takes a lock that a second apt-get fails on.
python-env:
	@$(MAKE) --no-print-directory prometheus
	@$(MAKE) --no-print-directory docker
	@$(MAKE) --no-print-directory $(VENV)/.installed

# Installed again only when pyproject.toml is newer than the venv's install (a fresh clone, as in CI,
# installs it all; pip's own cache keeps the downloaded wheels).
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,distributed,docs]'
	touch $@

go-programs:
	$(PY) hack/binaries.py build
	$(PY) hack/kueue.py build

go-modules:
	$(PY) hack/kueue.py prefetch

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

# Lint, the unit and control-plane tests, then the end-to-end tests on kind (they skip, saying why,
# without a Docker engine): three timed stages; two pytest runs, so no kind cluster idles beside the
# control-plane tests.
test:
	@$(STAGE) lint $(MAKE) --no-print-directory lint
	@$(STAGE) pytest $(BIN)/python -m pytest $(PYTEST_PARALLEL)
	@$(STAGE) e2e $(MAKE) --no-print-directory e2e

# The inner loop, in under 2 minutes: lint and the unit tests (`make -j2 check`: side by side).
check: lint unit

# Two processes: the unit tests are CPU-bound, one per core.
unit:
	$(BIN)/python -m pytest -m unit tests/unit -n 2 --dist loadfile

integration:
	$(BIN)/python -m pytest -m integration $(PYTEST_PARALLEL)

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
