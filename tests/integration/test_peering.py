"""Two operator replicas with kopf peering: one reconciles and takes telemetry, the other waits, then
takes over when the first is SIGKILLed, with no energy lost or counted twice.

Runs on a control plane of its own (the session's operator is a standalone cluster-wide replica and
would reconcile these jobs too), as the chart's ServiceAccount with the chart's ClusterRole.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hack.controlplane import ControlPlane

from tests.integration.harness import (
    PRODUCTION_GATES,
    ROOT,
    Operator,
    apply,
    chart_identity,
    ctj,
    pod_token,
    post_batch,
    report_evidence,
    running_pods,
    start_sidecar,
    status,
    step_all,
    wait,
    wait_for_energy,
)
from tests.integration.service import ReadyService

LIFETIME_S = 6
PEERING = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "carbontrack"}}

pytestmark = pytest.mark.own_control_plane(
    "a ClusterKopfPeering and the chart's RBAC identity; operator replicas killed"
)


@pytest.fixture(scope="module")
def peer_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = ControlPlane(tmp_path_factory.mktemp("peering-controlplane"))
    try:
        cp.up(nodes=2)
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cp.wait_established()
        cp.kubectl("apply", "-f", "-", input=json.dumps(PEERING))
        cp.operator_kubeconfig = chart_identity(cp)  # type: ignore[attr-defined]
        yield cp
    finally:
        cp.down()


def replica(cluster: ControlPlane, logs: Path) -> Operator:
    op = Operator(
        cluster, logs, args=("--peering", "carbontrack"), standby=True,
        CARBONTRACK_PEERING_LIFETIME_S=str(LIFETIME_S), CARBONTRACK_PEERING_POLL_S="0.5",
        KUBECONFIG=str(cluster.operator_kubeconfig),  # type: ignore[attr-defined]  # the chart's RBAC
    )  # fmt: skip
    op.start()
    return op


def reconciled(op: Operator, name: str) -> bool:
    """kopf logs each handler's success with the object it ran for."""
    return bool(re.search(rf"Handler 'reconcile' succeeded.*{name}|{name}.*Handler 'reconcile' succeeded",
                          op.logs.read_text()))  # fmt: skip


def test_one_replica_is_active_and_the_other_takes_over_when_it_dies(
    peer_cluster: ControlPlane, tmp_path: Path
) -> None:
    cluster, ns = peer_cluster, "peers"
    cluster.kubectl("create", "namespace", ns)
    first = replica(cluster, tmp_path / "first.log")
    wait(first.ready, timeout=30, what="the first replica active")
    second = replica(cluster, tmp_path / "second.log")
    try:
        time.sleep(2 * 0.5 + 1)  # a few peering polls: the second must stay a standby
        assert first.ready() and not second.ready()
        peers = json.loads(cluster.kubectl("get", "clusterkopfpeering", "carbontrack", "-o", "json").stdout)
        assert len(peers["status"]) == 2  # both announce themselves; priorities differ by seniority

        # a production job with every kind of gate: the survivor must judge the evidence the first
        # replica acknowledged (it is in status, nowhere else) and promote, not halt
        assert apply(cluster, ns, ctj("shared", 2, gates=PRODUCTION_GATES)).returncode == 0
        pods = running_pods(cluster, ns, "shared", 2)
        wait(lambda: reconciled(first, "shared"), what="the active replica reconciled")
        assert not reconciled(second, "shared"), "the standby reconciled too"

        # a standby refuses telemetry with 503, so a sidecar retries (through the Service: elsewhere)
        token_pod, token_uid = pods[0]
        token = pod_token(cluster, ns, token_pod, token_uid)
        code, body = post_batch(second.url, token, ns, "shared", token_pod)
        assert code == 503 and "standby" in body
        assert 'carbontrack_telemetry_rejected_total{reason="standby"} 1.0' in second.metrics()
        step, finals, takeover = _train_through_a_takeover(first, second, ns, pods, tmp_path)
        st = wait_for_energy(cluster, ns, "shared", sum(finals), timeout=60)
        assert st["steps"] == step
        # the survivor runs the promotion too (kopf resumed its handlers and timers)
        st = wait(
            lambda: (s := status(cluster, ns, "shared")).get("phase") in ("Running", "Halted") and s,
            what="judged by the survivor",
        )
        assert st["phase"] == "Running" and st["gateSummary"] == "7/7 passed", st.get("gates")
        assert apply(cluster, ns, ctj("after", 1)).returncode == 0
        wait(lambda: reconciled(second, "after"), what="a new job reconciled by the survivor")
        assert takeover < LIFETIME_S + 3, f"takeover took {takeover:.1f} s"
    finally:
        first.stop()
        second.stop()


def _train_through_a_takeover(
    first: Operator, second: Operator, ns: str, pods: list[tuple[str, str]], tmp_path: Path
) -> tuple[int, list[float], float]:
    """Both pods step through the Service while the first replica is active, then on through its SIGKILL
    until the second takes over, and 20 steps more: (the last step, each sidecar's final energy, the
    seconds the takeover took)."""
    cluster = first.cluster
    with ReadyService(lambda: [first.url, second.url]) as service:
        sidecars = [start_sidecar(tmp_path, service, cluster, ns, "shared", p, u) for p, u in pods]  # type: ignore[arg-type]
        trainers = [s.client() for s in sidecars]
        step_all(trainers, 1, 5)
        report_evidence(trainers[0], 5)
        wait(lambda: status(cluster, ns, "shared").get("steps") == 5, what="steps via the first replica")
        wait(
            lambda: (status(cluster, ns, "shared").get("evidence") or {}).get("dp"),
            what="evidence in status",
        )
        first.kill()  # no goodbye: its keep-alive stays until it expires
        killed = time.monotonic()
        step = 5
        while not second.ready():
            step += 1
            for t in trainers:
                t.step(step)
            time.sleep(0.2)
            assert time.monotonic() - killed < LIFETIME_S + 10, second.logs.read_text()[-2000:]
        takeover = time.monotonic() - killed
        print(f"takeover after SIGKILL: {takeover:.1f} s (peer lifetime {LIFETIME_S} s)")
        step_all(trainers, step + 1, step + 20)
        step += 20
        finals = [s.final_energy(s.stop()) for s in sidecars]
        assert service.forwarded.get(second.url, 0) > 0
    return step, finals, takeover
