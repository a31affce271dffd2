"""Faults on the real control plane: what must hold is an exact energy total, no crash, a clear log.

These run against the session's operator and control plane; the apiserver restart is last in the
file because it disturbs everyone's watches (they must recover, which is the point).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tests.integration.harness import (
    Operator,
    apply,
    ctj,
    pod_token,
    post_batch,
    running_pods,
    start_sidecar,
    status,
    step_all,
    wait,
    wait_for_energy,
)
from tests.integration.sidecars import Sidecar


def drive(trainer: object, first: int, last: int, pause: float = 0.02) -> None:
    for step in range(first, last + 1):
        trainer.step(step)  # type: ignore[attr-defined]
        time.sleep(pause)


def test_a_restarted_sidecar_keeps_its_earlier_energy_and_adds_on(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cluster = operator.cluster
    assert apply(cluster, namespace, ctj("restart", 1)).returncode == 0
    ((pod, uid),) = running_pods(cluster, namespace, "restart", 1)
    first = start_sidecar(tmp_path, operator, cluster, namespace, "restart", pod, uid)
    drive(first.client(), 1, 10)
    before = first.final_energy(first.stop())
    second = start_sidecar(tmp_path, operator, cluster, namespace, "restart", pod, uid)  # new boot id
    drive(second.client(), 11, 20)
    after = second.final_energy(second.stop())
    st = wait_for_energy(cluster, namespace, "restart", before + after)
    sources = st["telemetry"]["sources"]
    assert len(sources) == 2 and len({s["bootId"] for s in sources}) == 2
    assert st["steps"] == 20


def test_an_unreachable_operator_for_60s_loses_nothing(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """Sidecars buffer while the operator is down for a minute and deliver afterwards; totals exact.

    One sidecar has room for everything; the other may hold only 20 step records, so it drops the
    oldest, counts them, and the count reaches status. Energy is cumulative, so neither loses a joule.
    """
    cluster = operator.cluster
    assert apply(cluster, namespace, ctj("outage", 2)).returncode == 0
    (pod, uid), (pod2, uid2) = running_pods(cluster, namespace, "outage", 2)
    roomy = start_sidecar(tmp_path, operator, cluster, namespace, "outage", pod, uid)
    token2 = pod_token(cluster, namespace, pod2, uid2)
    tight = Sidecar(
        tmp_path, operator.url, token=token2, CARBONTRACK_JOB_NAME="outage",
        POD_NAMESPACE=namespace, POD_NAME=pod2, POD_UID=uid2, CARBONTRACK_BUFFER_RECORDS="20",
        CARBONTRACK_SIM_GPUS="1",  # the pod holds one GPU
    )  # fmt: skip
    trainers = [roomy.client(), tight.client()]
    step_all(trainers, 1, 5, pause_s=0.02)
    wait(lambda: status(cluster, namespace, "outage").get("steps") == 5, what="first batches in status")
    operator.kill()
    down_until = time.monotonic() + 60
    step = 5
    while time.monotonic() < down_until:  # the trainers go on while the operator is away
        step += 1
        for t in trainers:
            t.step(step)
        time.sleep(0.5)
    assert roomy.healthz()["pending"] > 20
    dropped = tight.healthz()["recordsDropped"]
    assert dropped > 0
    operator.start()
    wait(lambda: roomy.healthz()["pending"] == 0 and tight.healthz()["pending"] == 0, timeout=60,
         what="buffers drained")  # fmt: skip
    finals = [s.final_energy(s.stop()) for s in (roomy, tight)]
    st = wait_for_energy(cluster, namespace, "outage", sum(finals))
    assert st["steps"] == step
    by_pod = {src["pod"]: src for src in st["telemetry"]["sources"]}
    assert by_pod[pod]["recordsDropped"] == 0 and by_pod[pod]["markersDropped"] == 0
    assert by_pod[pod2]["recordsDropped"] >= dropped  # counted by the sidecar, reported in status


@pytest.mark.own_control_plane("stops the kube-apiserver for 5 s, which every test beside it would feel")
def test_kube_apiserver_restart_under_the_operator(own_operator: Operator, tmp_path: Path) -> None:
    """Watches recover and status catches up; no handler is left stuck (the new job is reconciled)."""
    operator, cluster, namespace = own_operator, own_operator.cluster, "survivors"
    cluster.kubectl("create", "namespace", namespace)
    assert apply(cluster, namespace, ctj("survivor", 1)).returncode == 0
    ((pod, uid),) = running_pods(cluster, namespace, "survivor", 1)
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "survivor", pod, uid)
    trainer = sidecar.client()
    drive(trainer, 1, 10)
    fresh = pod_token(cluster, namespace, pod, uid)  # not yet reviewed: needs the apiserver
    answers: list[tuple[int, str]] = []

    def post_while_down() -> None:
        time.sleep(2.5)  # inside the 5 s the apiserver is away
        answers.append(post_batch(operator.url, fresh, namespace, "survivor", pod))

    poster = threading.Thread(target=post_while_down)
    poster.start()
    cluster.restart("kube-apiserver", down_s=5)
    poster.join()
    # a batch that cannot be authorized now is deferred (503, retry), never a 500 or a refusal
    assert answers[0][0] == 503 and "apiserver" in answers[0][1], answers
    drive(trainer, 11, 20)
    final = sidecar.final_energy(sidecar.stop())
    wait_for_energy(cluster, namespace, "survivor", final, timeout=90)  # caught up after the restart
    assert apply(cluster, namespace, ctj("after-restart", 1)).returncode == 0
    wait(
        lambda: status(cluster, namespace, "after-restart").get("phase"),
        timeout=90,
        what="new job reconciled",
    )
    running_pods(cluster, namespace, "after-restart", 1)


def test_a_concurrent_status_writer_is_not_overwritten(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """Another controller adds its own condition and field to status; the operator's phase changes and
    telemetry writes keep them (merge patches of our own fields; conditions merged by type)."""
    cluster = operator.cluster
    assert apply(cluster, namespace, ctj("shared", 1)).returncode == 0
    wait(lambda: status(cluster, namespace, "shared").get("phase") == "Canary", what="phase Canary")
    other = {"type": "DataValidated", "status": "True", "reason": "Checked",
             "message": "by another controller", "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip
    current = status(cluster, namespace, "shared").get("conditions", [])
    patch = {"status": {"conditions": [*current, other]}}
    cluster.kubectl("patch", "ctj", "shared", "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps(patch))  # fmt: skip
    ((pod, uid),) = running_pods(cluster, namespace, "shared", 1)
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "shared", pod, uid)
    drive(sidecar.client(), 1, 15)
    final = sidecar.final_energy(sidecar.stop())
    st = wait_for_energy(cluster, namespace, "shared", final)
    st = wait(
        lambda: (s := status(cluster, namespace, "shared")).get("phase") == "Running" and s, what="Running"
    )
    types = {c["type"]: c for c in st["conditions"]}
    assert types["DataValidated"] == other
    assert types["Ready"]["status"] == "True"
