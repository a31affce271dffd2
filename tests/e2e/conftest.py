"""The e2e session: a Docker engine, the project image, a kind cluster with it loaded, the chart installed.

Skipped, with the reason, where no Docker engine answers and none can be started (no dockerd, not
root), or where a part would have to be made by debootstrap without root. Everything is deleted at the
end (the kind cluster; dockerd if this session started it) unless CARBONTRACK_KEEP_CLUSTER=1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from hack import docker, images, kind, kindnode
from hack.binaries import binaries_present

from tests.e2e.cluster import JOBS_NS, OPERATOR_NS, RELEASE, RESTRICTED, ROOT, Kind


def _skip_reason() -> str | None:
    reason = docker.why_unavailable()
    if reason:
        return reason
    needs_debootstrap = not (
        os.environ.get("CARBONTRACK_BASE_IMAGE") and os.environ.get("CARBONTRACK_KIND_NODE_IMAGE")
    )
    if needs_debootstrap and os.geteuid() != 0:
        return (
            "building the local base and kind node images needs root (debootstrap); set"
            " CARBONTRACK_BASE_IMAGE and CARBONTRACK_KIND_NODE_IMAGE where a registry is reachable"
        )
    if not binaries_present():
        return "kubectl/helm not built: run `make setup`"
    return None


@pytest.fixture(scope="session")
def kind_cluster() -> Iterator[Kind]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    pid = docker.start()
    try:
        image = images.build_image()
        kubeconfig = kindnode.up()
        subprocess.run(
            [str(kind.kind_binary()), "load", "docker-image", image, "--name", kind.CLUSTER],
            check=True,
        )
        cluster = Kind(kubeconfig, image)
        cluster.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=300s")
        cluster.kubectl("-n", "kube-system", "rollout", "status", "deploy/coredns", "--timeout=300s")
        print(f"\n[e2e] cluster ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
        yield cluster
    finally:
        if os.environ.get("CARBONTRACK_KEEP_CLUSTER") != "1":
            kind.down()
            if pid is not None:
                docker.stop()


@pytest.fixture(scope="session")
def installed(kind_cluster: Kind) -> Kind:
    """The chart installed into a restricted namespace, as a user would (simulated GPUs: kind has none)."""
    c = kind_cluster
    for ns in (OPERATOR_NS, JOBS_NS):
        c.kubectl("create", "namespace", ns, check=False)
        c.kubectl("label", "--overwrite", "namespace", ns, *(f"{k}={v}" for k, v in RESTRICTED.items()))
    c.helm(
        "upgrade", "--install", RELEASE, str(ROOT / "helm" / "carbontrack"), "--namespace", OPERATOR_NS,
        "--set", "sidecar.backend=simulated",
        "--set", "sidecar.resources.cpu=500m", "--set", "sidecar.resources.memory=192Mi",
        "--set", "operator.judgeIntervalSeconds=2", "--set", "operator.statusIntervalSeconds=1",
        "--wait", "--timeout", "300s",
    )  # fmt: skip
    return c
