"""The generated CRD, served by the real apiserver: valid objects in, malformed ones refused by field."""

from __future__ import annotations

import json

import pytest

from tests.cases.crs import MALFORMED, Malformed, manifest, ungated, valid_spec
from tests.cluster.controlplane import ControlPlane
from tests.integration.conftest import apply


def test_valid_job_is_stored_with_defaults(crd_installed: ControlPlane, namespace: str) -> None:
    spec = valid_spec()
    del spec["canary"]
    result = apply(crd_installed, namespace, manifest("llama-lora", spec))
    assert result.returncode == 0, result.stderr
    got = json.loads(crd_installed.kubectl("get", "ctj", "llama-lora", "-n", namespace, "-o", "json").stdout)
    assert got["spec"]["canary"] == {"replicas": 1, "minSteps": 200, "stages": [25, 50, 100]}
    assert got["spec"]["template"] == spec["template"], "the pod template must be preserved verbatim"
    assert got["spec"]["gates"]["privacy"]["accountant"] == "rdp"


def test_kubectl_get_ctj_prints_the_columns(crd_installed: ControlPlane, namespace: str) -> None:
    assert apply(crd_installed, namespace, manifest("cols", valid_spec())).returncode == 0
    out = crd_installed.kubectl("get", "ctj", "-n", namespace).stdout
    header = out.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "REPLICAS", "STEPS", "KWH", "KGCO2E", "EPSILON", "GATES", "AGE"]
    assert out.splitlines()[1].startswith("cols")


def test_status_and_scale_subresources(crd_installed: ControlPlane, namespace: str) -> None:
    assert apply(crd_installed, namespace, manifest("scaled", valid_spec())).returncode == 0
    crd_installed.kubectl("scale", "ctj", "scaled", "-n", namespace, "--replicas=4")
    got = json.loads(crd_installed.kubectl("get", "ctj", "scaled", "-n", namespace, "-o", "json").stdout)
    assert got["spec"]["replicas"] == 4
    status = {"status": {"phase": "Canary", "replicas": 1, "targetReplicas": 4, "replicaSummary": "1/4"}}
    crd_installed.kubectl(
        "patch",
        "ctj",
        "scaled",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    row = crd_installed.kubectl("get", "ctj", "scaled", "-n", namespace, "--no-headers").stdout.split()
    assert row[1:3] == ["Canary", "1/4"]


@pytest.mark.parametrize("case", MALFORMED, ids=lambda c: c.name)
def test_malformed_job_is_refused_naming_the_field(
    crd_installed: ControlPlane, namespace: str, case: Malformed
) -> None:
    result = apply(crd_installed, namespace, manifest(case.name, case.spec))
    assert result.returncode != 0, f"{case.name} was accepted"
    assert case.field in result.stderr, result.stderr
    missing = crd_installed.kubectl("get", "ctj", case.name, "-n", namespace, check=False)
    assert missing.returncode != 0


@pytest.mark.parametrize(
    ("context", "extra"),
    [("production", {"allowEmpty": True}), ("staging", {}), ("development", {})],
    ids=["production-allow-empty", "staging", "development"],
)
def test_a_job_without_gates_is_stored_when_allowed_or_not_production(
    crd_installed: ControlPlane, namespace: str, context: str, extra: dict[str, object]
) -> None:
    result = apply(crd_installed, namespace, manifest(f"ungated-{context}", ungated(context, extra)))
    assert result.returncode == 0, result.stderr
