"""A judgement or deferral round that fails on the real control plane: condition Judged=False and a Warning
Event saying why, the round tried again every interval, and the job judged as usual once the cause is
gone. Never only a log line, never a timer that stops.

A halt the apiserver refuses is made real with a ValidatingAdmissionPolicy that forbids suspending the
namespace's Jobs; a computation error of the carbon-aware start with an admin's status edit that puts
the deferral's start in year 9999 (its deadline would overflow).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hack.controlplane import ControlPlane

from tests.cases.crs import manifest
from tests.cases.fake_electricitymaps import FakeElectricityMaps
from tests.cases.jobs import cluster_spec, elastic
from tests.integration.harness import Operator, apply, phase_is, running_pods, status, wait
from tests.integration.objects import events, job


def judged(cluster: ControlPlane, namespace: str, name: str, state: str, reason: str) -> dict[str, Any]:
    """The Judged condition once it has `state` and `reason`."""

    def found() -> dict[str, Any] | None:
        conditions = status(cluster, namespace, name).get("conditions") or []
        return next(
            (
                c
                for c in conditions
                if c["type"] == "Judged" and (c["status"], c["reason"]) == (state, reason)
            ),
            None,
        )

    return dict(wait(found, what=f"Judged={state} ({reason})"))


@pytest.fixture
def no_suspend(cluster: ControlPlane, namespace: str) -> Iterator[str]:
    """A policy that refuses to suspend this namespace's Jobs; yields its binding's name to delete."""
    name = f"no-suspend-{namespace}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": ["batch"], "apiVersions": ["v1"],
                                                    "operations": ["UPDATE"], "resources": ["jobs"]}]},
            "validations": [{
                "expression": "!(has(object.spec.suspend) && object.spec.suspend)"
                              " || (has(oldObject.spec.suspend) && oldObject.spec.suspend)",
                "message": "this namespace's Jobs may not be suspended (test policy)",
            }],
        },
    }  # fmt: skip
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {
                     "matchLabels": {"kubernetes.io/metadata.name": namespace}}}},
    }  # fmt: skip
    items = {"apiVersion": "v1", "kind": "List", "items": [policy, binding]}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(items))
    yield name
    cluster.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name, check=False)


def test_a_halt_the_apiserver_refuses_is_a_condition_and_an_event_until_it_can_be_applied(
    operator: Operator, namespace: str, no_suspend: str
) -> None:
    cluster = operator.cluster
    assert apply(cluster, namespace, elastic("stuck", 2)).returncode == 0
    phase_is(cluster, namespace, "stuck", "Canary")
    running_pods(cluster, namespace, "stuck", 1)

    def policy_active() -> bool:
        probe = cluster.kubectl(
            "patch", "job", "stuck", "-n", namespace, "--type=merge", "--dry-run=server",
            "-p", '{"spec": {"suspend": true}}', check=False,
        )  # fmt: skip
        return probe.returncode != 0 and "may not be suspended" in probe.stderr

    wait(policy_active, what="the test policy in force")
    cluster.kubectl(
        "patch", "ctj", "stuck", "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": true}}'
    )
    condition = judged(cluster, namespace, "stuck", "False", "HaltNotApplied")
    assert condition["message"].startswith("halting the Job stuck failed, its workers still run: "), condition
    assert "may not be suspended (test policy)" in condition["message"]
    assert "tried again every judgement round" in condition["message"]
    assert "HaltNotApplied" in events(cluster, namespace)
    assert job(cluster, namespace, "stuck")["spec"].get("suspend") is not True
    cluster.kubectl("delete", "validatingadmissionpolicybinding", no_suspend)
    wait(lambda: job(cluster, namespace, "stuck")["spec"].get("suspend") is True, what="the Job suspended")
    judged(cluster, namespace, "stuck", "True", "JudgementResumed")
    st = wait(lambda: (s := status(cluster, namespace, "stuck")).get("halt", {}).get("suspendedAt") and s)
    assert st["phase"] != "Canary", st["phase"]
    assert "JudgementResumed" in events(cluster, namespace)


def test_a_computation_error_of_the_carbon_aware_start_is_a_condition_not_a_log_line_every_second(
    operator: Operator, namespace: str, electricitymaps: FakeElectricityMaps
) -> None:
    cluster, zone = operator.cluster, namespace.upper()
    electricitymaps.intensity[zone] = 450.0  # above the threshold, no forecast: it waits
    secret = {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "em-key"},
        "data": {"apiKey": base64.b64encode(electricitymaps.api_key.encode()).decode()},
    }  # fmt: skip
    assert apply(cluster, namespace, secret).returncode == 0
    carbon = {
        "zone": zone,
        "intensity": {"provider": "electricitymaps", "secretName": "em-key"},
        "schedule": {"maxGramsPerKwh": 200, "maxDelay": "6h"},
    }
    assert apply(cluster, namespace, manifest("later", cluster_spec(1, carbon=carbon))).returncode == 0
    st = wait(
        lambda: (s := status(cluster, namespace, "later")).get("schedule", {}).get("deferredSince") and s
    )
    assert st["phase"] == "Deferred"
    since = st["schedule"]["deferredSince"]
    far = {"status": {"schedule": {"deferredSince": "9999-12-31T23:59:59Z"}}}
    cluster.kubectl("patch", "ctj", "later", "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps(far))  # fmt: skip
    condition = judged(cluster, namespace, "later", "False", "DeferralFailed")
    assert condition["message"].startswith("OverflowError: date value out of range"), condition
    assert "DeferralFailed" in events(cluster, namespace)
    back = {"status": {"schedule": {"deferredSince": since}}}
    cluster.kubectl("patch", "ctj", "later", "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps(back))  # fmt: skip
    judged(cluster, namespace, "later", "True", "JudgementResumed")
    assert status(cluster, namespace, "later")["phase"] == "Deferred"
