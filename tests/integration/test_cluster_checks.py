"""What the operator checks of the cluster, on the control plane without Kueue: a queue-labelled job is
Invalid (it would run unqueued), and a watched namespace that does not exist is a Warning Event and a
gauge while the operator stays Ready, until the namespace is created.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from hack.controlplane import ControlPlane

from tests.cases.crs import manifest
from tests.cases.jobs import cluster_spec
from tests.integration.harness import Operator, apply, phase_is, wait
from tests.integration.objects import events


def test_a_queue_labelled_job_without_kueue_is_invalid_not_run_unqueued(
    operator: Operator, namespace: str
) -> None:
    cluster = operator.cluster
    queued = manifest("queued", cluster_spec(2), labels={"kueue.x-k8s.io/queue-name": "team-a"})
    assert apply(cluster, namespace, queued).returncode == 0
    st = phase_is(cluster, namespace, "queued", "Invalid")
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "KueueNotInstalled")
    assert ready["message"].startswith(
        "labelled kueue.x-k8s.io/queue-name=team-a, but this cluster serves no Kueue API"
    ), ready
    assert "KueueNotInstalled" in events(cluster, namespace)
    jobs = cluster.kubectl("get", "jobs", "-n", namespace, "-o", "name").stdout
    assert jobs.strip() == "", "nothing runs unqueued"
    assert "carbontrack_kueue_api_served 0.0" in operator.metrics()


def gauge_line(namespace: str, value: int) -> str:
    return f'carbontrack_watched_namespace_missing{{namespace="{namespace}"}} {value}.0'


def test_a_watched_namespace_that_does_not_exist_is_an_event_and_a_gauge_and_the_operator_stays_ready(
    crd_installed: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    """An operator of its own, watching this test's namespace and one that does not exist yet. It is
    Ready (it serves the namespace that exists), says the other is missing, and sees it once created.
    Plain HTTP, so its certificate is not the session operator's."""
    cluster = crd_installed
    absent = f"t-absent-{uuid.uuid4().hex[:6]}"
    op = Operator(
        cluster, tmp_path / "operator.log", ("--namespace", namespace, "--namespace", absent),
        CARBONTRACK_TELEMETRY_PLAINTEXT="true", CARBONTRACK_CLUSTER_CHECK_S="1",
    )  # fmt: skip
    op.start()  # waits for /readyz
    try:
        assert op.ready()
        text = op.metrics()
        assert gauge_line(absent, 1) in text and gauge_line(namespace, 0) in text, text
        found = cluster.kubectl(
            "get", "events", "-n", "default", "--field-selector", "reason=WatchedNamespaceMissing",
            "-o", "custom-columns=T:.type,O:.involvedObject.name,M:.message",
        ).stdout  # fmt: skip
        assert f"Warning   {absent}   namespace {absent} does not exist" in found, found
        cluster.kubectl("create", "namespace", absent)
        wait(lambda: gauge_line(absent, 0) in op.metrics(), what="the namespace seen")
        assert op.ready()
    finally:
        op.stop()
        cluster.kubectl("delete", "namespace", absent, "--wait=false", check=False)
