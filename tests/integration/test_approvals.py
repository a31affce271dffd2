"""Inconclusive -> Paused -> a person decides, on the real control plane.

`carbontrack approve|reject` is run as a user runs it (a subprocess with the kubeconfig); the bare
`kubectl annotate` path is exercised too. Status history and Events must say who and why. With the
chart's admission policies applied: a decision naming anyone but its writer is refused at the
apiserver, a creator cannot approve a job that asks for a distinct approver, and every decision is
kept in the job's decision log, which an administrator's edit of status does not reach.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hack.controlplane import ControlPlane

from carbontrack.core.rollout.approvals import CREATED_BY_ANNOTATION, annotation_value
from tests.cases.jobs import gated
from tests.integration.harness import (
    Operator,
    apply,
    chart_identity,
    decide,
    operator_instead,
    phase_is,
    running_pods,
    start_sidecar,
    start_sidecars,
    status,
    train,
    wait,
    whoami,
)
from tests.integration.identities import (
    LOG_LABEL,
    chart_policies,
    decide_as,
    decision_log,
    patch_as,
    service_account,
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
    _paused_inconclusive(cluster, namespace)
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
    _annotation_approval_recorded(cluster, namespace, st, user)
    for each in sidecars.values():
        each.stop()


def _paused_inconclusive(cluster: ControlPlane, namespace: str) -> None:
    """Paused on an inconclusive score: the gate, the Ready condition and a canary that keeps training."""
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


def _annotation_approval_recorded(
    cluster: ControlPlane, namespace: str, st: dict[str, Any], user: str
) -> None:
    """The bare annotation's decision names its field manager, and Events tell both approvals."""
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


# --- with the chart's admission policies ------------------------------------------------------------


def test_a_forged_approval_is_refused_at_the_apiserver(crd_installed: ControlPlane, namespace: str) -> None:
    """A ServiceAccount that may only patch carbontrackedjobs, as a job's owner may, writes the approval
    naming someone else: the apiserver refuses it, naming who the writer is; naming itself it passes."""
    cluster = crd_installed
    job = unsure("target")
    job["spec"]["suspend"] = True  # nothing to run: only what the apiserver stores is under test
    assert apply(cluster, namespace, job).returncode == 0
    owner = service_account(cluster, namespace, "owner", "patch")
    token = cluster.kubectl("create", "token", "owner", "-n", namespace).stdout.strip()
    with chart_policies(cluster, namespace, "job-decisions"):
        for forged in (
            '{"by": "cto@example.com"}',  # as the issue wrote it
            annotation_value("cto@example.com", "ship it"),  # as the CLI would, for someone else
            "ship it",  # no one named: the field manager it would be recorded with is the writer's choice
        ):
            code, message = patch_as(cluster, token, namespace, "target", {APPROVE: forged})
            assert code == 403, (forged, code, message)
            assert f'must be {{"by":"{owner}","reason":"..."}}' in message, message
            assert APPROVE not in annotations(cluster, namespace, "target")
        own = annotation_value(owner, "my own name")
        assert patch_as(cluster, token, namespace, "target", {APPROVE: own}) == (200, "")
        assert (
            annotations(cluster, namespace, "target").get(APPROVE, own) == own
        )  # the operator may consume it


def test_an_owner_may_not_approve_their_own_job_when_the_spec_asks_for_another(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """gates.approval.distinctFrom: creator. The operator refuses the creator's approval (Refused, an
    Event) where no policy stands; with the chart's policy the apiserver refuses it, keeps the owner
    from lifting the requirement, and a second person's approval continues the promotion."""
    cluster = operator.cluster
    user = whoami(cluster)
    job = unsure("mine", approval={"stages": [100], "distinctFrom": "creator"})
    job["metadata"]["annotations"] = {CREATED_BY_ANNOTATION: user}
    assert apply(cluster, namespace, job).returncode == 0
    phase_is(cluster, namespace, "mine", "Canary")
    ((pod, uid),) = running_pods(cluster, namespace, "mine", 1)
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "mine", pod, uid)
    train(sidecar.client(), 1, 12, accuracy=0.86)
    phase_is(cluster, namespace, "mine", "Paused")
    # no admission policy: the operator refuses the creator's approval and says so
    out = decide_as(cluster.kubeconfig, "approve", "mine", "-n", namespace, "--reason", "trust me", "--wait")
    assert out.returncode == 1 and f"Refused by {user}; phase Paused" in out.stdout, out
    record = status(cluster, namespace, "mine")["decisions"][-1]
    assert (record["decision"], record["by"], record["reason"]) == ("Refused", user, "trust me")
    assert f"approval by {user} refused: {user} created this job and may not approve it" in events(
        cluster, namespace
    )
    approver = service_account(cluster, namespace, "approver", "get", "patch")
    with chart_policies(cluster, namespace, "job-decisions"):
        out = decide(cluster, "approve", "mine", "-n", namespace, "--reason", "trust me")
        assert out.returncode == 2, out
        assert f"{user} created this job and may not approve it" in out.stderr, out.stderr
        lifted = cluster.kubectl(
            "patch", "ctj", "mine", "-n", namespace, "--type=merge",
            "-p", '{"spec":{"gates":{"approval":{"distinctFrom":null}}}}', check=False,
        )  # fmt: skip
        assert lifted.returncode != 0 and "do not change while it exists" in lifted.stderr, lifted.stderr
        moved = cluster.kubectl("annotate", "--overwrite", "ctj", "mine", "-n", namespace,
                                f"{CREATED_BY_ANNOTATION}=somebody-else", check=False)  # fmt: skip
        assert moved.returncode != 0 and "never changes" in moved.stderr, moved.stderr
        second = cluster.service_account_kubeconfig(namespace, "approver")
        out = decide_as(second, "approve", "mine", "-n", namespace, "--reason", "checked it", "--wait")
        assert out.returncode == 0 and f"Approved by {approver}; phase Promoting" in out.stdout, out
    assert phase_is(cluster, namespace, "mine", "Promoting")["decisions"][-1]["by"] == approver
    sidecar.stop()


def test_every_decision_outlives_an_admin_status_patch(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """The operator as the chart deploys it keeps each decision as an immutable ConfigMap the job owns,
    before acting on it. An administrator empties status.decisions; the log keeps every decision, past
    the 10 status shows, and no one but the operator can add to it."""
    cluster = operator.cluster
    identity = str(chart_identity(cluster))
    with (
        operator_instead(operator, tmp_path / "charted.log", KUBECONFIG=identity) as charted,
        chart_policies(cluster, namespace, "job-decisions", "decision-log"),
    ):
        charted.start()
        _decisions_outlive_a_status_patch(charted, namespace, tmp_path)


def _decisions_outlive_a_status_patch(charted: Operator, namespace: str, tmp_path: Path) -> None:
    cluster = charted.cluster
    assert apply(cluster, namespace, unsure("kept")).returncode == 0
    phase_is(cluster, namespace, "kept", "Canary")
    ((pod, uid),) = running_pods(cluster, namespace, "kept", 1)
    sidecar = start_sidecar(tmp_path, charted, cluster, namespace, "kept", pod, uid)
    try:
        train(sidecar.client(), 1, 12, accuracy=0.86)
        phase_is(cluster, namespace, "kept", "Paused")
        entry = _approval_logged(cluster, namespace)
        _log_outlives_status(cluster, namespace, entry["metadata"]["name"])
    finally:
        sidecar.stop()


def _approval_logged(cluster: ControlPlane, namespace: str) -> dict[str, Any]:
    """The owner's approval: an immutable ConfigMap the job owns, and a DecisionLogged condition."""
    user = whoami(cluster)
    out = decide(cluster, "approve", "kept", "-n", namespace, "--reason", "0.86 will do", "--wait")
    assert out.returncode == 0 and "phase Promoting" in out.stdout, out
    (entry,) = decision_log(cluster, namespace, "kept")
    job = json.loads(cluster.kubectl("get", "ctj", "kept", "-n", namespace, "-o", "json").stdout)
    assert entry["immutable"] is True
    assert [o["uid"] for o in entry["metadata"]["ownerReferences"]] == [job["metadata"]["uid"]]
    assert (entry["data"]["decision"], entry["data"]["by"], entry["data"]["reason"]) == (
        "Approved", user, "0.86 will do",
    )  # fmt: skip
    logged = next(
        c for c in status(cluster, namespace, "kept")["conditions"] if c["type"] == "DecisionLogged"
    )
    assert logged["status"] == "True" and f"{LOG_LABEL}=kept" in logged["message"]
    return entry


def _log_outlives_status(cluster: ControlPlane, namespace: str, name: str) -> None:
    """An administrator empties the status history; the log keeps every decision, and only the
    operator writes it."""
    user = whoami(cluster)
    cluster.kubectl("patch", "ctj", "kept", "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", '{"status":{"decisions":[]}}')  # fmt: skip
    assert not status(cluster, namespace, "kept").get("decisions")
    # eleven more decisions (the job is Promoting, so each is Ignored): status shows the last 10
    for i in range(11):
        cluster.kubectl("annotate", "--overwrite", "ctj", "kept", "-n", namespace,
                        f"{APPROVE}={annotation_value(user, f'late {i}')}")  # fmt: skip
        wait(
            lambda: APPROVE not in annotations(cluster, namespace, "kept"),
            what=f"decision {i} acted on",
        )
    shown = status(cluster, namespace, "kept")["decisions"]
    assert [d["reason"] for d in shown] == [f"late {i}" for i in range(1, 11)]
    log = decision_log(cluster, namespace, "kept")
    assert sorted(cm["data"]["reason"] for cm in log) == sorted(
        ["0.86 will do", *(f"late {i}" for i in range(11))]
    )
    assert [cm["data"]["decision"] for cm in log].count("Ignored") == 11
    # nobody else writes the log: not an entry of their own, not a change to one
    forged = {"apiVersion": "v1", "kind": "ConfigMap", "immutable": True,
              "metadata": {"name": "kept-decision-forged", "labels": {LOG_LABEL: "kept"}},
              "data": {"decision": "Approved", "by": "cto@example.com"}}  # fmt: skip
    refused = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(forged), check=False)
    assert refused.returncode != 0 and "created only by the carbontrack operator" in refused.stderr
    changed = cluster.kubectl("patch", "configmap", name, "-n", namespace, "--type=merge",
                              "-p", '{"data":{"by":"cto@example.com"}}', check=False)  # fmt: skip
    assert changed.returncode != 0 and "immutable" in changed.stderr, changed.stderr
    hidden = cluster.kubectl("label", "configmap", name, "-n", namespace, f"{LOG_LABEL}-", check=False)
    assert hidden.returncode != 0 and "does not change" in hidden.stderr, hidden.stderr
