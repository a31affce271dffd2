"""What a user writes for the chart and on a job, checked where it enters: Helm values by the chart's
schema (`helm lint`, `helm template` and `helm install` refuse them before anything reaches the cluster),
annotations on a job by the chart's admission policy (the apiserver refuses them at apply)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hack.binaries import BIN
from hack.controlplane import ControlPlane
from hack.render import render

from tests.cases.crs import manifest, valid_spec
from tests.integration.harness import wait

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "carbontrack"
SCHEMA_ERROR = "values don't meet the specifications of the schema"
ENDPOINT = "prometheus.endpoints[0]"
BAD_VALUES = [  # (--set, the value's path in helm's schema error)
    ("operator.resources.limit.cpu=2", "/operator/resources"),  # `limits` misspelt: silently ignored before
    ("operator.resources.limits.cpu=lots", "/operator/resources/limits/cpu"),
    ("operator.resources.requests.memory=512m", "/operator/resources/requests/memory"),  # 0.512 bytes
    ("operator.resources.requests.gpu=1", "/operator/resources/requests"),
    ("sidecar.resources.memory=96 MB", "/sidecar/resources/memory"),  # every job's pods would be refused
    ("sidecar.resources.cpu=lots", "/sidecar/resources/cpu"),
    ("watchNamespaces={Team A}", "/watchNamespaces/0"),  # the operator would watch nothing
    ("watchNamespaces={ml,ml}", "/watchNamespaces"),
    ("image.tag= ", "/image/tag"),  # was a YAML parse error in the rendered Deployment
    ("peering=Team_A", "/peering"),
    ("carbon.jobSecretNames={em key}", "/carbon/jobSecretNames/0"),
    # a metric gate's endpoint: a DNS-label name and an http(s) URL without credentials
    (
        "prometheus.endpoints[0].name=Main,prometheus.endpoints[0].url=http://p:9090",
        "/prometheus/endpoints/0/name",
    ),
    (
        "prometheus.endpoints[0].name=m,prometheus.endpoints[0].url=http://u:pw@p:9090",
        "/prometheus/endpoints/0/url",
    ),
    ("prometheus.endpoints[0].name=m,prometheus.endpoints[0].url=p:9090", "/prometheus/endpoints/0/url"),
    ("prometheus.endpoints[0].name=m", "/prometheus/endpoints/0"),
]


def helm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "helm"), *args], capture_output=True, text=True, check=False, env=env)


def cluster_env(cluster: ControlPlane) -> dict[str, str]:
    return {**os.environ, **cluster.env()}


def _names_the_value(result: subprocess.CompletedProcess[str], path: str) -> None:
    out = result.stdout + result.stderr
    assert result.returncode != 0, f"{path}: accepted\n{out}"
    assert SCHEMA_ERROR in out and f"at '{path}'" in out, out


@pytest.mark.parametrize(("value", "path"), BAD_VALUES, ids=[v for v, _ in BAD_VALUES])
def test_helm_lint_and_template_refuse_a_value_kubernetes_would_refuse_later(value: str, path: str) -> None:
    _names_the_value(helm("lint", "--strict", str(CHART), "--set", value), path)
    _names_the_value(helm("template", "x", str(CHART), "--set", value), path)


@pytest.mark.parametrize(("value", "path"), BAD_VALUES, ids=[v for v, _ in BAD_VALUES])
def test_helm_install_refuses_the_value_before_creating_anything(
    cluster: ControlPlane, namespace: str, value: str, path: str
) -> None:
    release = f"ct-{namespace}"
    try:
        installed = helm(
            "install", release, str(CHART), "-n", namespace, "--set", value, env=cluster_env(cluster)
        )
        _names_the_value(installed, path)
        listed = helm("list", "-n", namespace, "-q", env=cluster_env(cluster))
        assert listed.stdout.strip() == "", listed.stdout
    finally:  # a release that did install must not leave its cluster-scoped admission policies behind
        helm("uninstall", release, "-n", namespace, "--ignore-not-found", env=cluster_env(cluster))


def test_helm_install_with_the_defaults_passes_the_same_checks(cluster: ControlPlane, namespace: str) -> None:
    """The same command with the default values gets past the schema (a server dry run creates nothing)."""
    args = ("install", f"ct-{namespace}", str(CHART), "-n", namespace, "--dry-run=server")
    result = helm(*args, env=cluster_env(cluster))
    assert result.returncode == 0, result.stderr


def test_the_values_users_write_stay_valid(tmp_path: Path) -> None:
    """Quantities as numbers and strings, a tag with a digest, the e2e install's sidecar size."""
    values = tmp_path / "values.yaml"
    values.write_text(
        "image: {tag: 1.2.3@sha256:" + "0" * 64 + "}\n"
        "watchNamespaces: [ml, research-2]\n"
        "operator:\n"
        "  resources:\n"
        "    requests: {cpu: 0.5, memory: 268435456, ephemeral-storage: 1Gi}\n"
        "    limits: {cpu: 2, memory: 1G}\n"
        "sidecar: {image: registry.local:5000/ct:dev, resources: {cpu: 500m, memory: 192Mi}}\n"
        "carbon: {secretName: intensity-key, jobSecretNames: [em-key, wt.key]}\n"
        "serviceAccount: {name: carbontrack-operator}\n"
        "prometheus: {endpoints: [{name: main, url: 'http://prometheus-operated.monitoring:9090'}]}\n"
    )
    result = helm("lint", "--strict", str(CHART), "-f", str(values))
    assert result.returncode == 0, result.stdout + result.stderr
    rendered = helm("template", "x", str(CHART), "-f", str(values))
    assert rendered.returncode == 0, rendered.stderr
    assert 'image: "ghcr.io/carbontrack/carbontrack:1.2.3@sha256:' in rendered.stdout
    endpoints = '[{\\"name\\":\\"main\\",\\"url\\":\\"http://prometheus-operated.monitoring:9090\\"}]'
    assert f'CARBONTRACK_PROMETHEUS_ENDPOINTS, value: "{endpoints}"' in rendered.stdout


ANNOTATION_RULES = [  # (annotation, a value that means nothing, the values that do)
    ("carbontrack.io/training-type", "pretraining", ["pre-training", "fine-tuning"]),
    ("kueue.x-k8s.io/elastic-job", "yes", ["true", "false"]),
]


def test_job_annotations_outside_their_values_are_refused_at_apply(
    crd_installed: ControlPlane, namespace: str
) -> None:
    """The report's training type and Kueue's elastic-job switch: a value that means nothing is refused
    naming the annotation; one stored before the policy existed does not block other updates."""
    cluster = crd_installed
    release = f"ct-{namespace}"

    def job(name: str, annotations: dict[str, str], *dry_run: str) -> str:
        obj = manifest(name, valid_spec(suspend=True))  # nothing to run if the session's operator sees it
        obj["metadata"]["annotations"] = annotations
        out = cluster.kubectl(
            "apply", *dry_run, "-n", namespace, "-f", "-", input=json.dumps(obj), check=False
        )
        return "" if out.returncode == 0 else out.stderr

    def annotate(name: str, key: str, value: str) -> str:
        out = cluster.kubectl(
            "annotate", "--overwrite", "ctj", name, "-n", namespace, f"{key}={value}", check=False
        )
        return "" if out.returncode == 0 else out.stderr

    assert job("stored-before", {key: bad for key, bad, _ in ANNOTATION_RULES}) == ""
    only = "--show-only=templates/admissionpolicy.yaml"
    policy = render("--namespace", namespace, only, include_crds=False, release=release)
    try:
        applied = cluster.kubectl("apply", "--server-side", "-f", "-", input=policy, check=False)
        assert applied.returncode == 0, applied.stderr
        key, bad, _ = ANNOTATION_RULES[0]
        wait(
            lambda: key in job("probe", {key: bad}, "--dry-run=server"), what="the admission policy in force"
        )
        for index, (key, bad, good) in enumerate(ANNOTATION_RULES):
            refused = job(f"bad-{index}", {key: bad})
            assert f"metadata.annotations[{key}] must be {' or '.join(good)}" in refused, refused
            for value in good:
                assert job(f"good-{value}", {key: value}) == ""
            assert key in annotate("stored-before", key, bad + "2"), "a new meaningless value was accepted"
        assert annotate("stored-before", "note", "unrelated") == "", (
            "an unchanged stored value blocked an update"
        )
    finally:  # cluster-scoped: left behind, they would judge other tests' jobs
        for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy"):
            cluster.kubectl("delete", kind, "-l", f"app.kubernetes.io/instance={release}", check=False)
