"""The generated CRD, served by the real apiserver: valid objects in, malformed ones refused by field."""

from __future__ import annotations

import json

import pytest
from hack.controlplane import ControlPlane

from tests.cases.crs import MALFORMED, Malformed, manifest, ungated, valid_spec
from tests.integration.harness import ROOT, apply


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
    assert header == [
        "NAME", "PHASE", "REPLICAS", "STEPS", "KWH", "KGCO2E", "EPSILON", "GATES", "SCHEDULE", "AGE"
    ]  # fmt: skip
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


def test_kubectl_explain_shows_the_pod_template(crd_installed: ControlPlane) -> None:
    out = crd_installed.kubectl("explain", "ctj.spec.template.spec.containers.resources").stdout
    assert "limits" in out and "requests" in out, out
    out = crd_installed.kubectl("explain", "ctj.spec.template.spec.nodeSelector").stdout
    assert "map[string]string" in out, out


def test_the_crd_fits_a_client_side_apply(crd_installed: ControlPlane) -> None:
    """With the pod template's schema the CRD is large: it must still fit kubectl apply's
    last-applied-configuration annotation (256 KiB), which `kubectl apply -f crds/` writes."""
    crd = ROOT / "crds" / "carbontrackedjobs.carbontrack.io.yaml"
    result = crd_installed.kubectl("apply", "--dry-run=server", "-f", str(crd), check=False)
    assert result.returncode == 0, result.stderr


def test_a_pod_template_with_every_common_field_is_stored_verbatim(
    crd_installed: ControlPlane, namespace: str
) -> None:
    template = {
        "metadata": {"labels": {"team": "ml"}, "annotations": {"note": "x"}},
        "spec": {
            "restartPolicy": "Never", "nodeSelector": {"gpu": "h100"}, "priorityClassName": "high",
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}],
            "containers": [{
                "name": "trainer", "image": "i", "command": ["python", "train.py"],
                "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 29500}],
                "resources": {"limits": {"nvidia.com/gpu": 8, "cpu": "8", "memory": "64Gi"}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "readinessProbe": {"tcpSocket": {"port": 29500}},
            }],
        },
    }  # fmt: skip
    result = apply(crd_installed, namespace, manifest("full-template", valid_spec(template=template)))
    assert result.returncode == 0, result.stderr
    got = crd_installed.kubectl("get", "ctj", "full-template", "-n", namespace, "-o", "json").stdout
    assert json.loads(got)["spec"]["template"] == template


@pytest.mark.parametrize("duration", ["8760h", "525600m", "31536000s", "8759h59m60s", "1h30m"])
def test_a_duration_up_to_a_year_is_stored(
    crd_installed: ControlPlane, namespace: str, duration: str
) -> None:
    spec = valid_spec()
    pause = {"gramsPerKwh": 300, "after": duration}
    spec["carbon"]["schedule"] = {"maxDelay": duration, "window": duration, "pauseAbove": pause}
    result = apply(crd_installed, namespace, manifest("a-year", spec))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("metric-min-above-max", "max must be >= min"),
        ("max-delay-beyond-a-year", "must be at most 8760h (365 days)"),
        ("window-beyond-a-year", "must be at most 8760h (365 days)"),
        ("pause-after-beyond-a-year", "must be at most 8760h (365 days)"),
    ],
)
def test_a_refused_bound_says_what_would_pass(
    crd_installed: ControlPlane, namespace: str, case: str, message: str
) -> None:
    """The CEL rule's own message, not an evaluation error: a huge duration never reaches duration()."""
    malformed = next(m for m in MALFORMED if m.name == case)
    result = apply(crd_installed, namespace, manifest(case, malformed.spec))
    assert f"{malformed.field}: Invalid value" in result.stderr and message in result.stderr, result.stderr
