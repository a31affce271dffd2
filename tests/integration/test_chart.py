"""The Helm chart and deploy/ manifests, linted, rendered and applied to the real apiserver."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hack.binaries import BIN
from hack.controlplane import ControlPlane
from hack.render import HEADER, render

from carbontrack.api.contract import LABEL_MANAGED
from carbontrack.state.config import MAX_CONNECTIONS, OperatorConfig
from tests.cases.crs import TEMPLATE, manifest, minimal_spec
from tests.integration.harness import Operator, status, wait

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "carbontrack"
ALL_ON = [
    "--set", "networkPolicy.enabled=true,serviceMonitor.enabled=true,prometheusRule.enabled=true",
    "--set", "carbon.secretName=intensity-key,replicaCount=2,watchNamespaces={ml,research}",
    "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
    "--api-versions", "monitoring.coreos.com/v1/PrometheusRule",
]  # fmt: skip


@pytest.fixture(autouse=True)
def no_lingering_admission_policies(request: pytest.FixtureRequest) -> Iterator[None]:
    """A release's ValidatingAdmissionPolicy is cluster-scoped and outlives the test's namespace: removed
    after each test, so it cannot refuse other tests' jobs (an empty carbon.jobSecretNames refuses every
    job that names a Secret)."""
    yield
    if "cluster" in request.fixturenames or "crd_installed" in request.fixturenames:
        cluster: ControlPlane = request.getfixturevalue("cluster")
        for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy"):
            cluster.kubectl("delete", kind, "-l", "app.kubernetes.io/name=carbontrack", check=False)


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
    ctj = manifest("strict", minimal_spec(template=template))
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


@pytest.mark.parametrize(
    ("typo", "key"),
    [
        ("replicaCont=2", "replicaCont"),
        ("carbon.defaultzone=DE", "defaultzone"),
        ("sidecar.resources.gpu=1", "gpu"),
        ("serviceMonitor.enable=true", "enable"),
        ("image.reposiotry=x", "reposiotry"),
    ],
)
def test_values_schema_refuses_unknown_keys(typo: str, key: str) -> None:
    """additionalProperties: false throughout: a misspelt value fails the render, naming the key."""
    result = helm("template", "x", str(CHART), "--kube-version", "1.36.3", "--set", typo)
    assert result.returncode != 0, f"{typo} rendered silently"
    assert key in result.stderr, result.stderr


def test_every_documented_value_is_in_the_schema() -> None:
    """The defaults themselves pass the closed schema, and so do the options users set."""
    extra = ["--set", "serviceAccount.annotations.a=b,service.annotations.a=b,podAnnotations.a=b",
             "--set", "nodeSelector.gpu=none,carbon.jobSecretNames={em-key}"]  # fmt: skip
    result = helm("template", "x", str(CHART), "--kube-version", "1.36.3", *ALL_ON, *extra)
    assert result.returncode == 0, result.stderr


def test_plain_helm_template_works_and_kube_version_still_means_something() -> None:
    """`helm template` as a user runs it, with no --kube-version: the project's helm assumes the
    pinned Kubernetes (it once assumed 1.20 and the chart's kubeVersion failed the render)."""
    plain = helm("template", "x", str(CHART))
    assert plain.returncode == 0, plain.stderr
    old = helm("template", "x", str(CHART), "--kube-version", "1.29.0")
    assert old.returncode != 0 and "kubeVersion" in old.stderr, old.stderr


def test_a_single_replica_is_replaced_not_rolled() -> None:
    """Without peering, a rolling update would briefly run two operators reconciling the same jobs."""
    single = render("--set", "replicaCount=1", include_crds=False)
    assert "strategy: {type: Recreate}" in single
    assert "Recreate" not in render("--set", "replicaCount=2", include_crds=False)


def test_the_operator_may_read_exactly_the_job_secrets_jobs_may_name(
    crd_installed: ControlPlane, namespace: str
) -> None:
    """RBAC and an admission policy from one value: a job's own provider key, in its namespace, by name."""
    cluster = crd_installed
    release = f"ct-{namespace}"
    only = [f"--show-only=templates/{t}.yaml" for t in ("serviceaccount", "rbac", "admissionpolicy")]
    values = ("--set", "carbon.jobSecretNames={em-key}")
    manifests = render("--namespace", namespace, *values, *only, include_crds=False, release=release)
    try:
        result = cluster.kubectl(
            "apply", "--server-side", "-n", namespace, "-f", "-", input=manifests, check=False
        )
        assert result.returncode == 0, result.stderr
        sa = f"system:serviceaccount:{namespace}:{release}-carbontrack"  # the release's full name
        jobs_ns = f"{namespace}-jobs"
        cluster.kubectl("create", "namespace", jobs_ns)

        def can(what: str) -> str:
            out = cluster.kubectl("auth", "can-i", "get", what, "-n", jobs_ns, "--as", sa, check=False)
            return out.stdout.strip()

        assert can("secret/em-key") == "yes" and can("secret/other") == "no" and can("secrets") == "no"

        def ctj(name: str, secret: str, *dry_run: str) -> str:
            intensity = {"provider": "electricitymaps", "secretName": secret}
            obj = manifest(name, minimal_spec(suspend=True, carbon={"intensity": intensity}))
            out = cluster.kubectl(
                "apply", *dry_run, "-n", jobs_ns, "-f", "-", input=json.dumps(obj), check=False
            )
            return "" if out.returncode == 0 else out.stderr

        def policy_ready() -> bool:
            # a server dry run: a probe stored before the policy was in force would make every later
            # probe an unchanged apply, which kubectl never sends (the wait then timed out in a full run)
            return "must be one of em-key" in ctj("probe", "other", "--dry-run=server")

        wait(policy_ready, what="the admission policy in force")
        assert ctj("mine", "em-key") == ""
        refused = ctj("theirs", "operator-tls")
        assert "spec.carbon.intensity.secretName must be one of em-key" in refused, refused
    finally:  # cluster-scoped: the namespace's deletion would leave them refusing other tests' jobs
        for kind in (
            "validatingadmissionpolicybinding",
            "validatingadmissionpolicy",
            "clusterrolebinding",
            "clusterrole",
        ):
            cluster.kubectl("delete", kind, "-l", f"app.kubernetes.io/instance={release}", check=False)
        cluster.kubectl("delete", "namespace", f"{namespace}-jobs", "--wait=false", check=False)


def test_deploy_is_a_documented_two_step_on_a_fresh_cluster(crd_installed: ControlPlane) -> None:
    """`kubectl apply -k deploy/` needs its namespace first: a server dry run cannot create it. The README's
    two steps (namespace.yaml, then the kustomization) pass a server dry run on a namespace that does not
    exist yet (a fresh name stands in for a fresh cluster)."""
    cluster = crd_installed
    fresh = f"fresh-{int(time.time() * 1000) % 10**8}"
    built = cluster.kubectl("kustomize", str(ROOT / "deploy")).stdout.replace("carbontrack-system", fresh)
    docs = built.split("\n---\n")
    namespace_doc = next(d for d in docs if "kind: Namespace" in d)
    rest = "\n---\n".join(d for d in docs if "kind: Namespace" not in d)
    # cluster-scoped names are per release; keep them from clashing with the other chart tests
    rest = rest.replace("name: carbontrack\n", f"name: {fresh}\n")
    one_step = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", "-", input=rest, check=False
    )
    assert one_step.returncode != 0 and "not found" in one_step.stderr  # why the README says two steps
    try:
        first = cluster.kubectl("apply", "-f", "-", input=namespace_doc, check=False)
        assert first.returncode == 0, first.stderr
        for mode in ("--dry-run=server", None):
            args = ["apply", "--server-side", "--force-conflicts", "-f", "-", *([mode] if mode else [])]
            second = cluster.kubectl(*args, input=rest, check=False)
            assert second.returncode == 0, f"{mode}: {second.stderr}"
    finally:  # everything but the CRDs, which the session's other tests use
        objects = "\n---\n".join(
            d for d in rest.split("\n---\n") if "kind: CustomResourceDefinition" not in d
        )
        cluster.kubectl("delete", "-f", "-", "--wait=false", input=objects, check=False)
        cluster.kubectl("delete", "namespace", fresh, "--wait=false", check=False)


def test_tls_is_on_by_default_with_cert_manager_behind_one_switch() -> None:
    default = render(include_crds=False)
    assert 'value: "https://carbontrack.carbontrack-system.svc:8443"' in default
    assert "scheme: HTTPS" in default and "CARBONTRACK_TELEMETRY_PLAINTEXT" not in default
    assert 'value: "self-signed"' in default and "cert-manager.io" not in default
    managed = render("--set", "tls.certManager.enabled=true", include_crds=False)
    assert managed.count("kind: Certificate\n") == 2 and managed.count("kind: Issuer\n") == 2
    assert "secretName: carbontrack-tls" in managed and 'value: "external"' in managed
    assert "- carbontrack.carbontrack-system.svc\n" in managed
    plain = render("--set", "tls.enabled=false", include_crds=False)
    assert 'value: "http://carbontrack.carbontrack-system.svc:8443"' in plain
    assert '{name: CARBONTRACK_TELEMETRY_PLAINTEXT, value: "true"}' in plain and "scheme: HTTP}" in plain


def network_policies(*values: str) -> list[dict[str, Any]]:
    docs = yaml.safe_load_all(render(*values, include_crds=False))
    return [d for d in docs if d and d["kind"] == "NetworkPolicy"]


def test_the_network_policy_is_on_by_default_for_injected_pods_and_prometheus_only() -> None:
    """The telemetry port admits the label every injected pod carries (in the watched namespaces when the
    chart names them), the monitoring namespace's Prometheus, and whatever `extraFrom` adds."""
    (policy,) = network_policies()
    (rule,) = policy["spec"]["ingress"]
    assert policy["spec"]["policyTypes"] == ["Ingress"] and rule["ports"] == [
        {"port": "http", "protocol": "TCP"}
    ]
    injected = {"podSelector": {"matchLabels": {LABEL_MANAGED: "true"}}, "namespaceSelector": {}}
    prometheus = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    assert rule["from"] == [injected, prometheus]
    (narrowed,) = network_policies(
        "--set", "watchNamespaces={ml,research}",
        "--set", "networkPolicy.extraFrom[0].ipBlock.cidr=10.0.0.0/16",
        "--set", "networkPolicy.metricsPodSelector=null",
    )  # fmt: skip
    watched = {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["ml", "research"]}
    assert narrowed["spec"]["ingress"][0]["from"] == [
        {"podSelector": injected["podSelector"], "namespaceSelector": {"matchExpressions": [watched]}},
        {"namespaceSelector": prometheus["namespaceSelector"]},
        {"ipBlock": {"cidr": "10.0.0.0/16"}},
    ]
    assert network_policies("--set", "networkPolicy.enabled=false") == []


def test_the_connection_limits_reach_the_operator_from_the_chart() -> None:
    rendered = render("--set", "operator.telemetry.maxConnections=9000", include_crds=False)
    for setting in (
        '{name: CARBONTRACK_MAX_CONNECTIONS, value: "9000"}',
        '{name: CARBONTRACK_FIRST_REQUEST_TIMEOUT_S, value: "5"}',
        '{name: CARBONTRACK_REFUSED_TOKEN_CACHE_S, value: "30"}',
        '{name: CARBONTRACK_FIRST_CONTACTS_PER_S, value: "5"}',
        '{name: CARBONTRACK_FIRST_CONTACT_BURST, value: "20"}',
    ):
        assert setting in rendered, setting
    assert OperatorConfig.from_env({"CARBONTRACK_MAX_CONNECTIONS": "9000"}).max_connections == 9000
    assert OperatorConfig.from_env({}).max_connections == MAX_CONNECTIONS == 4096
