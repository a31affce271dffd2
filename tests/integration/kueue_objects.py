"""Kueue's objects as the Kueue tests make and read them: the flavor, the carbon-budget AdmissionCheck and
a ClusterQueue; a Job's Workloads (one per slice for an elastic Job) and their conditions; and the writes
to Jobs that the apiserver's audit log (level Request) recorded, with their bodies and user agents."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hack.controlplane import ControlPlane

FLAVOR = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "gpu"}}
CHECK = {
    "apiVersion": "kueue.x-k8s.io/v1beta2",
    "kind": "AdmissionCheck",
    "metadata": {"name": "carbon-budget"},
    "spec": {"controllerName": "carbontrack.io/budget"},
}


def cluster_queue(name: str, checks: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "namespaceSelector": {},
        "resourceGroups": [
            {
                "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                "flavors": [
                    {
                        "name": "gpu",
                        "resources": [
                            {"name": "cpu", "nominalQuota": "100"},
                            {"name": "memory", "nominalQuota": "100Gi"},
                            {"name": "nvidia.com/gpu", "nominalQuota": "64"},
                        ],
                    }
                ],
            }
        ],
    }
    if checks:
        spec["admissionChecksStrategy"] = {"admissionChecks": [{"name": c} for c in checks]}
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "ClusterQueue",
        "metadata": {"name": name},
        "spec": spec,
    }


def get(cluster: ControlPlane, kind: str, namespace: str, name: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout))


def workloads(cluster: ControlPlane, namespace: str, job: str) -> list[dict[str, Any]]:
    """The Job's Workloads (with elastic Jobs, one per slice), oldest first."""
    uid = get(cluster, "job", namespace, job)["metadata"]["uid"]
    out = cluster.kubectl(
        "get", "workloads", "-n", namespace, "-l", f"kueue.x-k8s.io/job-uid={uid}", "-o", "json"
    )
    return sorted(json.loads(out.stdout)["items"], key=lambda w: w["metadata"]["creationTimestamp"])


def workload(cluster: ControlPlane, namespace: str, job: str) -> dict[str, Any] | None:
    items = workloads(cluster, namespace, job)
    return items[0] if items else None


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def job_writes(cluster: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    """Every create/update/patch of a Job in `namespace`, from the audit log (level Request)."""
    out = []
    for line in cluster.audit_log.read_text().splitlines():
        e = json.loads(line)
        ref = e.get("objectRef") or {}
        if ref.get("resource") == "jobs" and ref.get("namespace") == namespace and e["verb"] in (
            "create", "update", "patch",
        ) and not ref.get("subresource"):  # fmt: skip
            out.append(e)
    return out


def _sets(request: dict[str, Any] | None, field: str) -> bool:
    return field in ((request or {}).get("spec") or {})


@dataclass(frozen=True)
class JobWrites:
    """The writes to a namespace's Jobs, by who made them: carbontrack (its API client's and kopf's user
    agents) and Kueue's manager."""

    every: list[dict[str, Any]]

    @property
    def ours(self) -> list[dict[str, Any]]:
        return [e for e in self.every if e.get("userAgent", "").startswith(("OpenAPI-Generator", "kopf"))]

    @property
    def kueues(self) -> list[dict[str, Any]]:
        return [e for e in self.every if e.get("userAgent", "").startswith("kueue/")]

    def our_suspends(self) -> list[dict[str, Any]]:
        """carbontrack's writes (after the create) that set spec.suspend: none, for a queued Job."""
        return [
            e["requestObject"]
            for e in self.ours
            if e["verb"] != "create" and _sets(e.get("requestObject"), "suspend")
        ]

    def our_scales(self) -> list[int]:
        """The parallelism of each of carbontrack's writes after the create that set one."""
        return [
            e["requestObject"]["spec"]["parallelism"]
            for e in self.ours
            if e["verb"] != "create" and _sets(e.get("requestObject"), "parallelism")
        ]

    def kueue_suspends(self) -> list[bool]:
        """spec.suspend as Kueue's manager wrote it, in order."""
        return [
            e["requestObject"]["spec"]["suspend"]
            for e in self.kueues
            if _sets(e.get("requestObject"), "suspend")
        ]


def writes_by_client(cluster: ControlPlane, namespace: str) -> JobWrites:
    return JobWrites(job_writes(cluster, namespace))


def slices(cluster: ControlPlane, namespace: str, job: str) -> list[tuple[str, int, bool, str, str]]:
    """(name, pod count, admitted, the Finished reason or "", replacement-for) of each Workload slice,
    oldest first."""
    out = []
    for w in workloads(cluster, namespace, job):
        finished = condition(w, "Finished")
        out.append((
            w["metadata"]["name"],
            w["spec"]["podSets"][0]["count"],
            condition(w, "Admitted").get("status") == "True",
            finished.get("reason", "") if finished.get("status") == "True" else "",
            (w["metadata"].get("annotations") or {}).get("kueue.x-k8s.io/workload-slice-replacement-for", ""),
        ))  # fmt: skip
    return out
