"""One real control plane per test session (per pytest-xdist worker: `make test` runs three); each test
gets its own namespace. A test that stops or restarts a part of the control plane, or needs cluster-scoped
state to itself, is marked `own_control_plane` with the reason and starts its own (`own_operator`, or a
module's fixture)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hack.controlplane import ControlPlane

from tests.cases.fake_electricitymaps import FakeElectricityMaps
from tests.cases.fake_prometheus import FakePrometheus
from tests.integration.harness import ROOT, Operator, wait
from tests.integration.prometheus_server import query
from tests.integration.sidecars import free_port, stop_all


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    workdir = tmp_path_factory.mktemp("controlplane")
    cp = ControlPlane(workdir)
    try:
        cp.up(nodes=2)
        yield cp
    finally:
        keep = os.environ.get("CARBONTRACK_KEEP_LOGS")
        if keep:
            subprocess.run(["cp", "-r", str(workdir / "logs"), keep], check=False)
        cp.down()


@pytest.fixture(scope="session")
def crd_installed(cluster: ControlPlane) -> ControlPlane:
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cluster.wait_established("crd/carbontrackedjobs.carbontrack.io")
    return cluster


@pytest.fixture
def namespace(cluster: ControlPlane) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def electricitymaps() -> Iterator[FakeElectricityMaps]:
    """A local server in Electricity Maps' API shape; its state is per zone, so each test uses its own."""
    fake = FakeElectricityMaps().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def fake_prometheus() -> Iterator[FakePrometheus]:
    """A local server in Prometheus's query-API shape whose answers each test sets (listed as `fake`)."""
    fake = FakePrometheus().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def prometheus_port() -> int:
    """The port the `prometheus` fixture's server listens on, listed as the endpoint `main` before it runs."""
    return free_port()


def _endpoints(prometheus_port: int, fake_prometheus: FakePrometheus) -> str:
    """The Prometheus endpoints an operator of these tests lists, as CARBONTRACK_PROMETHEUS_ENDPOINTS."""
    return json.dumps([
        {"name": "main", "url": f"http://127.0.0.1:{prometheus_port}"},
        {"name": "down", "url": "http://127.0.0.1:1"},
        {"name": "fake", "url": fake_prometheus.url},
    ])  # fmt: skip


def _operator(
    cluster: ControlPlane, log: Path, electricitymaps: FakeElectricityMaps, endpoints: str
) -> Iterator[Operator]:
    op = Operator(
        cluster, log, CARBONTRACK_ELECTRICITYMAPS_URL=electricitymaps.url, CARBONTRACK_INTENSITY_TTL_S="1",
        CARBONTRACK_PROMETHEUS_ENDPOINTS=endpoints,
    )  # fmt: skip
    op.start()
    yield op
    op.stop()
    keep = os.environ.get("CARBONTRACK_KEEP_LOGS")
    if keep:
        subprocess.run(["cp", str(op.logs), keep], check=False)


@pytest.fixture(scope="session")
def operator(
    crd_installed: ControlPlane,
    tmp_path_factory: pytest.TempPathFactory,
    electricitymaps: FakeElectricityMaps,
    fake_prometheus: FakePrometheus,
    prometheus_port: int,
) -> Iterator[Operator]:
    """One operator for the session, cluster-wide, as a Deployment would run it (judging every second).
    Jobs that name the live provider electricitymaps reach the fake one; its figures are reused for 1 s.
    Metric gates may name the Prometheus endpoints `main` (the `prometheus` fixture), `down` (nothing
    listens there) and `fake` (answers set by the test)."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    yield from _operator(crd_installed, log, electricitymaps, _endpoints(prometheus_port, fake_prometheus))


@pytest.fixture
def own_operator(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    electricitymaps: FakeElectricityMaps,
    fake_prometheus: FakePrometheus,
    prometheus_port: int,
) -> Iterator[Operator]:
    """An operator like the session's, on a control plane of the test's own: for a test marked
    `own_control_plane` (it stops or restarts a part of the control plane, which the tests sharing the
    session's would feel)."""
    if request.node.get_closest_marker("own_control_plane") is None:
        raise pytest.UsageError(
            f"{request.node.nodeid} uses own_operator without the own_control_plane marker"
        )
    cp = ControlPlane(tmp_path_factory.mktemp("own-controlplane"))
    try:
        cp.up(nodes=1)
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cp.wait_established("crd/carbontrackedjobs.carbontrack.io")
        log = tmp_path_factory.mktemp("own-operator") / "operator.log"
        yield from _operator(cp, log, electricitymaps, _endpoints(prometheus_port, fake_prometheus))
    finally:
        cp.down()


@pytest.fixture(autouse=True)
def no_stray_sidecars() -> Iterator[None]:
    """A test that fails half-way must not leave sidecar processes behind."""
    yield
    stop_all()


@pytest.fixture
def prometheus(operator: Operator, tmp_path: Path, prometheus_port: int) -> Iterator[str]:
    """A real Prometheus scraping the session's operator every second, at the endpoint `main`; its URL."""
    port = prometheus_port
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: carbontrack\n    static_configs: [{{targets: ['127.0.0.1:{operator.port}']}}]\n"
        + (  # the operator serves HTTPS: scrape as a ServiceMonitor would, verifying its CA and name
            "    scheme: https\n"
            f"    tls_config: {{ca_file: '{os.environ['SSL_CERT_FILE']}', server_name: localhost}}\n"
            if operator.tls
            else ""
        )
    )
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait(lambda: query(url, "up") is not None, timeout=30, what="prometheus up")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
