"""Who acts on a job in the approval tests: the chart's admission policies in force for a block, a
ServiceAccount with chosen verbs, a patch with its token, the CLI under a user's kubeconfig, and the
decision log the operator writes."""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hack.controlplane import ControlPlane
from hack.render import render

from carbontrack.core.rollout.approvals import CREATED_BY_ANNOTATION
from tests.cases.jobs import gated
from tests.integration.harness import wait

LOG_LABEL = "carbontrack.io/decision-log"


@contextlib.contextmanager
def chart_policies(cluster: ControlPlane, namespace: str, *names: str) -> Iterator[None]:
    """The chart's admission policies `names` (job-decisions, decision-log) and their bindings, as the
    default release renders them (the operator is carbontrack-system's ServiceAccount carbontrack),
    in force until the block ends: they are cluster-scoped and would judge other tests' objects."""
    wanted = {f"carbontrack-{name}" for name in names}
    rendered = render("--show-only", "templates/admissionpolicy.yaml", include_crds=False)
    chosen = [d for d in yaml.safe_load_all(rendered) if d and d["metadata"]["name"] in wanted]
    listed = json.dumps({"apiVersion": "v1", "kind": "List", "items": chosen})
    try:
        cluster.kubectl("apply", "--server-side", "-f", "-", input=listed)
        for name in names:
            wait(
                lambda n=name: _refused_by(cluster, namespace, n),
                what=f"the {name} admission policy in force",
            )
        yield
    finally:
        for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy"):
            cluster.kubectl("delete", kind, *sorted(wanted), "--ignore-not-found", check=False)


def _refused_by(cluster: ControlPlane, namespace: str, policy: str) -> bool:
    """A server dry run of an object the policy refuses (a job whose creator is someone else, or a log
    entry the admin creates) is refused by it: the policy is in force."""
    if policy == "job-decisions":
        probe = gated("probe", 0.8)
        probe["metadata"]["annotations"] = {CREATED_BY_ANNOTATION: "somebody-else"}
    else:
        probe = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "probe", "labels": {LOG_LABEL: "x"}},
        }
    out = cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(probe), check=False
    )
    return f"carbontrack-{policy}" in out.stderr


def service_account(cluster: ControlPlane, namespace: str, name: str, *verbs: str) -> str:
    """A ServiceAccount that may do `verbs` on carbontrackedjobs in `namespace`, nothing else: its user."""
    cluster.kubectl("create", "serviceaccount", name, "-n", namespace)
    cluster.kubectl(
        "create", "role", name, "-n", namespace, f"--verb={','.join(verbs)}",
        "--resource=carbontrackedjobs.carbontrack.io",
    )  # fmt: skip
    cluster.kubectl(
        "create",
        "rolebinding",
        name,
        "-n",
        namespace,
        f"--role={name}",
        f"--serviceaccount={namespace}:{name}",
    )
    return f"system:serviceaccount:{namespace}:{name}"


def patch_as(
    cluster: ControlPlane, token: str, namespace: str, name: str, annotations: dict[str, str]
) -> tuple[int, str]:
    """A JSON merge patch of the job's annotations with a bearer token, as a client holding only the
    `patch` verb sends it (kubectl would GET first): the HTTP status and the apiserver's message."""
    url = f"{cluster.server}/apis/carbontrack.io/v1alpha1/namespaces/{namespace}/carbontrackedjobs/{name}"
    body = json.dumps({"metadata": {"annotations": annotations}}).encode()
    request = urllib.request.Request(url, data=body, method="PATCH", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json",
    })  # fmt: skip
    context = ssl.create_default_context(cafile=str(cluster.pki / "ca.crt"))
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            return answer.status, ""
    except urllib.error.HTTPError as refused:
        return refused.code, str(json.loads(refused.read()).get("message"))


def decide_as(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`carbontrack <args>` with a user's kubeconfig, in this process's environment (its PYTHONPATH)."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    return subprocess.run(
        [sys.executable, "-m", "carbontrack.cli", *args], env=env, capture_output=True, text=True, timeout=90,
        check=False,
    )  # fmt: skip


def decision_log(cluster: ControlPlane, namespace: str, job: str) -> list[dict[str, Any]]:
    """The job's decision log: its ConfigMaps, oldest first."""
    out = cluster.kubectl("get", "configmaps", "-n", namespace, "-l", f"{LOG_LABEL}={job}", "-o", "json")
    return sorted(json.loads(out.stdout)["items"], key=lambda cm: (cm["data"]["at"], cm["data"]["reason"]))
