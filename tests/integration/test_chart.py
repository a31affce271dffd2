"""The Helm chart and deploy/ manifests, linted, rendered and applied to the real apiserver."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.cases.crs import TEMPLATE
from tests.cluster.controlplane import BIN, ControlPlane
from tests.cluster.render import HEADER, render
from tests.integration.harness import Operator, status, wait

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "carbontrack"
ALL_ON = [
    "--set", "networkPolicy.enabled=true,serviceMonitor.enabled=true,prometheusRule.enabled=true",
    "--set", "carbon.secretName=intensity-key,replicaCount=2,watchNamespaces={ml,research}",
    "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
    "--api-versions", "monitoring.coreos.com/v1/PrometheusRule",
]  # fmt: skip


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "helm"), *args], capture_output=True, text=True, check=False)


def test_helm_lint_strict_passes() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


def test_values_schema_refuses_wrong_values() -> None:
    result = helm("template", "x", str(CHART), "--kube-version", "1.36.3", "--set", "sidecar.backend=magic")
    assert result.returncode != 0 and "sidecar" in result.stderr


def test_deploy_manifests_are_the_rendered_chart() -> None:
    assert (ROOT / "deploy" / "carbontrack.yaml").read_text() == HEADER + render(), "run `make deploy`"


def test_several_replicas_get_a_peering_object_and_an_identity_each() -> None:
    single = render("--set", "replicaCount=1", include_crds=False)
    assert "KopfPeering" not in single and "--peering" not in single
    clusterwide = render("--set", "replicaCount=2", include_crds=False)
    assert "kind: ClusterKopfPeering" in clusterwide and "--peering=carbontrack" in clusterwide
    assert "name: POD_NAME" in clusterwide  # kopf's identity per replica in the peering object
    namespaced = render("--set", "replicaCount=2,watchNamespaces={ml,research}", include_crds=False)
    assert namespaced.count("kind: KopfPeering") == 2 and "ClusterKopfPeering" not in namespaced
    crds = render(include_crds=True)
    assert "name: clusterkopfpeerings.kopf.dev" in crds and "name: kopfpeerings.kopf.dev" in crds
    peering_crds = "kopfpeerings.kopf.dev.yaml"
    assert (ROOT / "crds" / peering_crds).read_text() == (CHART / "crds" / peering_crds).read_text()


def restricted_namespace(cluster: ControlPlane, namespace: str) -> None:
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "--overwrite"
    )


def apply_manifests(cluster: ControlPlane, namespace: str, manifests: str) -> None:
    for mode in ("--dry-run=server", None):
        args = ["apply", "--server-side", "--force-conflicts", "-n", namespace, "-f", "-"]
        if mode:
            args.append(mode)
        result = cluster.kubectl(*args, input=manifests, check=False)
        assert result.returncode == 0, f"{mode or 'apply'}: {result.stderr}"


def deployment_pods(cluster: ControlPlane, namespace: str, count: int) -> list[dict]:
    def pods() -> list[dict] | None:
        out = cluster.kubectl(
            "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/name=carbontrack", "-o", "json"
        )
        items = json.loads(out.stdout)["items"]
        return items if len(items) >= count else None

    try:
        return list(wait(pods, what=f"{count} operator pods admitted"))
    except AssertionError as exc:
        events = cluster.kubectl("get", "deploy,rs,events", "-n", namespace).stdout
        raise AssertionError(f"{exc}\n{events}") from None


@pytest.mark.parametrize("options", [[], ALL_ON], ids=["defaults", "all-options"])
def test_rendered_chart_is_accepted_under_restricted_pod_security(
    cluster: ControlPlane, crd_installed: ControlPlane, namespace: str, options: list[str]
) -> None:
    restricted_namespace(cluster, namespace)
    # a release per test: cluster-scoped objects (ClusterRole, binding) are named after it
    manifests = render("--namespace", namespace, *options, include_crds=False, release=f"ct-{namespace}")
    if options:  # the Prometheus Operator's CRDs are not installed here: their objects are checked by lint
        docs = manifests.split("\n---\n")
        manifests = "\n---\n".join(
            d for d in docs if "monitoring.coreos.com" not in d and "kind: KopfPeering" not in d
        )
        # the replicas' KopfPeerings live in the watched namespaces, not the release's
        for watched in ("ml", "research"):
            cluster.kubectl("create", "namespace", watched, check=False)
        peerings = "\n---\n".join(d for d in docs if "kind: KopfPeering" in d)
        result = cluster.kubectl("apply", "--server-side", "-f", "-", input=peerings, check=False)
        assert result.returncode == 0, result.stderr
    apply_manifests(cluster, namespace, manifests)
    pods = deployment_pods(cluster, namespace, 2 if options else 1)
    assert pods[0]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_kustomize_deploy_builds_and_the_examples_validate(
    crd_installed: ControlPlane, namespace: str
) -> None:
    built = crd_installed.kubectl("kustomize", str(ROOT / "deploy"))
    assert built.returncode == 0 and "kind: Deployment" in built.stdout
    # a server-side dry run cannot create the namespace it then puts objects in: create that for real
    crd_installed.kubectl("apply", "--server-side", "-f", str(ROOT / "deploy" / "namespace.yaml"))
    dry = crd_installed.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "-f",
        "-",
        input=built.stdout,
        check=False,
    )
    assert dry.returncode == 0, dry.stderr
    for example in sorted((ROOT / "deploy" / "examples").glob("*.yaml")):
        result = crd_installed.kubectl(
            "apply", "--dry-run=server", "-n", namespace, "-f", str(example), check=False
        )
        assert result.returncode == 0, f"{example.name}: {result.stderr}"


def test_sidecar_injected_pods_are_accepted_under_restricted_pod_security(
    operator: Operator, namespace: str
) -> None:
    cluster = operator.cluster
    restricted_namespace(cluster, namespace)
    template = json.loads(json.dumps(TEMPLATE))
    template["spec"]["securityContext"] = {"runAsNonRoot": True, "runAsUser": 1000,
                                           "seccompProfile": {"type": "RuntimeDefault"}}  # fmt: skip
    template["spec"]["containers"][0]["securityContext"] = {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
    }  # fmt: skip
    ctj = {
        "apiVersion": "carbontrack.io/v1alpha1", "kind": "CarbonTrackedJob", "metadata": {"name": "strict"},
        "spec": {"replicas": 1, "totalSteps": 10, "template": template, "gates": {"allowEmpty": True}},
    }  # fmt: skip
    assert (
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(ctj), check=False).returncode
        == 0
    )
    wait(lambda: status(cluster, namespace, "strict").get("phase"), what="reconciled")
    deadline = time.monotonic() + 60
    pods: list[dict] = []
    while time.monotonic() < deadline and not pods:
        out = cluster.kubectl("get", "pods", "-n", namespace, "-l", "carbontrack.io/job=strict", "-o", "json")
        pods = json.loads(out.stdout)["items"]
        time.sleep(0.3)
    assert pods, cluster.kubectl("get", "events", "-n", namespace).stdout
    init = pods[0]["spec"]["initContainers"][0]
    assert init["name"] == "carbontrack-sidecar" and init["securityContext"]["runAsNonRoot"] is True
