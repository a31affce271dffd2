"""What the operator made, read back with kubectl: the Job, its pods by completion index and the env the
kubelet would give their trainer, the job's `kubectl get ctj` row and the namespace's Events."""

from __future__ import annotations

import json
from typing import Any

from hack.controlplane import ControlPlane


def job(cluster: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    """The training Job the operator made for the CarbonTrackedJob `name`."""
    return dict(json.loads(cluster.kubectl("get", "job", name, "-n", namespace, "-o", "json").stdout))


def job_spec(cluster: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return dict(job(cluster, namespace, name)["spec"])


def pods(cluster: ControlPlane, namespace: str, job: str) -> dict[str, dict[str, Any]]:
    """The job's pods by completion index."""
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", f"carbontrack.io/job={job}", "-o", "json")
    items = json.loads(out.stdout)["items"]
    return {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p for p in items}


def resolved_env(pod: dict[str, Any], container: str = "trainer") -> dict[str, str]:
    """The trainer container's env as the kubelet would resolve it (values and fieldRefs on the pod)."""
    annotations = pod["metadata"].get("annotations") or {}
    c = next(c for c in pod["spec"]["containers"] if c["name"] == container)
    env = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        path = e["valueFrom"]["fieldRef"]["fieldPath"]
        if path.startswith("metadata.annotations['"):
            env[e["name"]] = annotations.get(path[len("metadata.annotations['") : -2], "")
        elif path == "metadata.name":
            env[e["name"]] = pod["metadata"]["name"]
    return env


def get_row(cluster: ControlPlane, namespace: str, name: str) -> str:
    """`kubectl get ctj <name>`: the columns a person watching sees."""
    return cluster.kubectl("get", "ctj", name, "-n", namespace).stdout


def events(cluster: ControlPlane, namespace: str) -> str:
    """The namespace's Events, one `reason message` line each."""
    return cluster.kubectl(
        "get", "events", "-n", namespace, "-o", "custom-columns=R:.reason,M:.message"
    ).stdout
