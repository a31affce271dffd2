"""Inconclusive -> Paused -> a person decides, on the real control plane.

`carbontrack approve|reject` is run as a user runs it (a subprocess with the kubeconfig); the bare
`kubectl annotate` path is exercised too. Status history and Events must say who and why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hack.controlplane import ControlPlane

from tests.cases.jobs import gated
from tests.integration.harness import (
    Operator,
    apply,
    decide,
    phase_is,
    running_pods,
    start_sidecar,
    start_sidecars,
    status,
    train,
    wait,
    whoami,
)
from tests.integration.objects import events, get_row, job_spec

APPROVE, REJECT = "carbontrack.io/approve", "carbontrack.io/reject"


def unsure(name: str, approval: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fails below 0.8, passes from 0.9: the canary's 0.86 is Inconclusive."""
    job = gated(name, 0.8)
    job["spec"]["gates"]["quality"]["passScore"] = 0.9
    if approval is not None:
        job["spec"]["gates"]["approval"] = approval
    return job


def annotations(cluster: ControlPlane, namespace: str, name: str) -> dict[str, str]:
    obj = json.loads(cluster.kubectl("get", "ctj", name, "-n", namespace, "-o", "json").stdout)
    return dict(obj["metadata"].get("annotations") or {})


def test_inconclusive_pauses_and_approvals_continue_the_promotion(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cluster = operator.cluster
    user = whoami(cluster)
    job = unsure("unsure", approval={"stages": [100], "requiredFor": ["production"]})
    assert apply(cluster, namespace, job).returncode == 0
    phase_is(cluster, namespace, "unsure", "Canary")
    # not Paused yet: the CLI refuses rather than leave a decision to be ignored
    early = decide(cluster, "approve", "unsure", "-n", namespace, "--reason", "too early")
    assert early.returncode == 1 and "not Paused" in early.stderr, early
    ((pod, uid),) = running_pods(cluster, namespace, "unsure", 1)
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "unsure", pod, uid)
    trainer = sidecar.client()
    train(trainer, 1, 12, accuracy=0.86)
    st = phase_is(cluster, namespace, "unsure", "Paused")
    print(get_row(cluster, namespace, "unsure"))
    assert st["gateSummary"] == "quality.score inconclusive"
    assert st["promotion"]["pauseReason"] == "Inconclusive"
    score = next(g for g in st["gates"] if g["name"] == "quality.score")
    assert (score["verdict"], score["observed"], score["threshold"]) == ("Inconclusive", 0.86, 0.9)
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "GateInconclusive")
    spec = job_spec(cluster, namespace, "unsure")
    assert (spec["suspend"], spec["parallelism"]) == (False, 1)  # the canary keeps training
    # a person approves with the CLI: the promotion continues as if the gates passed
    out = decide(cluster, "approve", "unsure", "-n", namespace, "--reason", "0.86 is enough here", "--wait")
    assert out.returncode == 0, out
    assert f"Approved by {user}; phase Promoting" in out.stdout, out.stdout
    st = status(cluster, namespace, "unsure")
    assert st["replicas"] == 2 and job_spec(cluster, namespace, "unsure")["parallelism"] == 2
    first = st["decisions"][0]
    assert (first["decision"], first["by"], first["reason"], first["stage"], first["phase"]) == (
        "Approved",
        user,
        "0.86 is enough here",
        "canary",
        "Paused",
    )
    wait(lambda: APPROVE not in annotations(cluster, namespace, "unsure"), what="annotation removed")
    # every pod of the stage runs its sidecar, or it is unmeasured and production fails closed
    sidecars = start_sidecars(tmp_path, operator, cluster, namespace, "unsure", 2, {pod: sidecar})
    # the gates pass at 50%, but 100% needs an approval: Paused with the gates passed
    train(trainer, 13, 25, accuracy=0.95)
    st = phase_is(cluster, namespace, "unsure", "Paused")
    assert st["promotion"]["pauseReason"] == "ApprovalRequired" and st["gateSummary"] == "8/8 passed"
    assert job_spec(cluster, namespace, "unsure")["parallelism"] == 2
    print(get_row(cluster, namespace, "unsure"))
    # the bare kubectl equivalent: recorded with its field manager (the apiserver records no user)
    cluster.kubectl("annotate", "ctj", "unsure", "-n", namespace, f"{APPROVE}=full scale is fine")
    st = phase_is(cluster, namespace, "unsure", "Running")
    assert st["replicas"] == 4
    start_sidecars(tmp_path, operator, cluster, namespace, "unsure", 4, sidecars)
    second = st["decisions"][1]
    assert (second["decision"], second["reason"], second["stage"]) == (
        "Approved",
        "full scale is fine",
        "50%",
    )
    assert second["by"].startswith("kubectl-annotate (Update at ") and "user not recorded" in second["by"]
    print(get_row(cluster, namespace, "unsure"))
    print(json.dumps(st["decisions"]))
    ev = events(cluster, namespace)
    for text in ("GateInconclusive", "ApprovalRequired",
                 f"approved by {user} at stage canary: 0.86 is enough here",
                 "approved by kubectl-annotate"):  # fmt: skip
        assert text in ev, ev
    for each in sidecars.values():
        each.stop()


def test_a_rejected_pause_halts_and_suspends(operator: Operator, namespace: str, tmp_path: Path) -> None:
    cluster = operator.cluster
    user = whoami(cluster)
    assert apply(cluster, namespace, unsure("doubt")).returncode == 0
    phase_is(cluster, namespace, "doubt", "Canary")
    ((pod, uid),) = running_pods(cluster, namespace, "doubt", 1)
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "doubt", pod, uid)
    train(sidecar.client(), 1, 12, accuracy=0.86)
    phase_is(cluster, namespace, "doubt", "Paused")
    out = decide(
        cluster, "reject", "doubt", "-n", namespace, "--reason", "long-context eval regressed", "--wait"
    )
    assert out.returncode == 0 and f"Rejected by {user}; phase Halted" in out.stdout, out
    st = status(cluster, namespace, "doubt")
    assert job_spec(cluster, namespace, "doubt")["suspend"] is True
    (record,) = st["decisions"]
    assert (record["decision"], record["by"], record["reason"], record["stage"]) == (
        "Rejected",
        user,
        "long-context eval regressed",
        "canary",
    )
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Rejected")
    assert f"rejected by {user} at stage canary: long-context eval regressed" in events(cluster, namespace)
    wait(lambda: REJECT not in annotations(cluster, namespace, "doubt"), what="annotation removed")
    print(get_row(cluster, namespace, "doubt"))
    sidecar.stop()
