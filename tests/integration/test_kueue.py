"""CarbonTrackedJobs queued by a real Kueue manager (built from its pinned module, tests/cluster/kueue.py).

Runs on a control plane of its own (the session's operator would reconcile these jobs too, without the
AdmissionCheck controller), with the apiserver's audit log at level Request: every write to a Job is
recorded with its body and user agent, so the test proves that carbontrack never wrote `spec.suspend`
of a queued Job, and that Kueue's manager made every change of it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cases.crs import TEMPLATE
from tests.cluster import kueue
from tests.cluster.controlplane import ControlPlane
from tests.integration.conftest import ROOT, apply
from tests.integration.harness import Operator, running_pods, start_sidecar, status, wait

pytestmark = pytest.mark.skipif(
    not kueue.present(), reason=f"no Kueue build in {kueue.DIR}: run `python tests/cluster/kueue.py build`"
)

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


@pytest.fixture(scope="module")
def kcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = ControlPlane(tmp_path_factory.mktemp("kueue-controlplane"))
    try:
        cp.up(nodes=2, audit=True, audit_level="Request")
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cp.wait_established("crd/carbontrackedjobs.carbontrack.io")
        kueue.start(cp)
        objs = [FLAVOR, CHECK, cluster_queue("plain", []), cluster_queue("budgeted", ["carbon-budget"])]
        cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}))
        yield cp
    finally:
        cp.down(remove=False)


@pytest.fixture(scope="module")
def kop(kcluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    op = Operator(
        kcluster, tmp_path_factory.mktemp("kueue-operator") / "operator.log",
        CARBONTRACK_KUEUE_ADMISSION_CHECK="true",
    )  # fmt: skip
    op.start()
    yield op
    op.stop()


@pytest.fixture
def kns(kcluster: ControlPlane) -> Iterator[str]:
    name = f"k-{uuid.uuid4().hex[:8]}"
    kcluster.kubectl("create", "namespace", name)
    for lq, cq in (("plain", "plain"), ("budgeted", "budgeted")):
        local = {
            "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
            "metadata": {"name": lq, "namespace": name}, "spec": {"clusterQueue": cq},
        }  # fmt: skip
        kcluster.kubectl("apply", "-f", "-", input=json.dumps(local))
    yield name
    kcluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def queued(name: str, queue: str, min_score: float = 0.8, **carbon: Any) -> dict[str, Any]:
    return {
        "apiVersion": "carbontrack.io/v1alpha1",
        "kind": "CarbonTrackedJob",
        "metadata": {"name": name, "labels": {"kueue.x-k8s.io/queue-name": queue}},
        "spec": {
            "replicas": 2,
            "totalSteps": 2000,
            "template": TEMPLATE,
            "canary": {"replicas": 1, "minSteps": 10, "stages": [50, 100]},
            "carbon": {"zone": "DE", "pue": 1.2, "budgetKg": 50, **carbon},
            "gates": {
                "context": "production",
                "quality": {"metric": "eval_accuracy", "minScore": min_score},
                "tests": {"passRate": 0.99, "coverage": 0.93, "security": {"critical": 0, "high": 0}},
                "privacy": {"epsilon": 8, "delta": 1e-5},
            },
        },
    }


def get(cluster: ControlPlane, kind: str, namespace: str, name: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout))


def workload(cluster: ControlPlane, namespace: str, job: str) -> dict[str, Any] | None:
    uid = get(cluster, "job", namespace, job)["metadata"]["uid"]
    out = cluster.kubectl(
        "get", "workloads", "-n", namespace, "-l", f"kueue.x-k8s.io/job-uid={uid}", "-o", "json"
    )
    items = json.loads(out.stdout)["items"]
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


def suspend_in(request: dict[str, Any] | None) -> bool:
    return "suspend" in ((request or {}).get("spec") or {})


def train(trainer: Any, start: int, stop: int, accuracy: float) -> None:
    for s in range(start, stop + 1):
        trainer.step(s)
    trainer.report_eval({"eval_accuracy": accuracy}, step=stop)
    trainer.report_dp(noise_multiplier=1.1, sample_rate=0.001, delta=1e-5, accountant_epsilon=0.9, step=stop)


def test_a_gate_failure_halts_through_the_workload_and_never_writes_the_jobs_suspend(
    kop: Operator, kns: str, tmp_path: Path
) -> None:
    cluster = kop.cluster
    assert apply(cluster, kns, queued("weak", "plain", min_score=0.9)).returncode == 0
    st = wait(lambda: (s := status(cluster, kns, "weak")).get("phase") == "Canary" and s, what="phase Canary")
    canary = condition({"status": st}, "CanaryStages")
    assert (canary["status"], canary["reason"]) == ("False", "KueueNotElastic"), st
    job = get(cluster, "job", kns, "weak")
    assert (job["spec"]["parallelism"], job["spec"]["completions"]) == (2, 2)  # full size from the start
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "plain"
    # Kueue admits the Workload and unsuspends the Job: both workers run
    pods = running_pods(cluster, kns, "weak", 2)
    sidecar = start_sidecar(tmp_path, kop, cluster, kns, "weak", *pods[0])
    train(sidecar.client(), 1, 12, accuracy=0.86)
    st = wait(lambda: (s := status(cluster, kns, "weak")).get("phase") == "Halted" and s, what="phase Halted")
    assert st["gateSummary"] == "quality.score failed"
    wl = workload(cluster, kns, "weak")
    assert wl is not None and wl["spec"]["active"] is False
    wait(lambda: get(cluster, "job", kns, "weak")["spec"]["suspend"] is True, what="Kueue suspends the Job")
    # the owner lowers the bar: the operator reactivates the Workload, Kueue readmits and unsuspends
    cluster.kubectl("patch", "ctj", "weak", "-n", kns, "--type=merge",
                    "-p", json.dumps({"spec": {"gates": {"quality": {"minScore": 0.85}}}}))  # fmt: skip
    wait(lambda: status(cluster, kns, "weak").get("phase") == "Canary", what="resumed to Canary")
    wait(
        lambda: (w := workload(cluster, kns, "weak")) and w["spec"]["active"] is True, what="Workload active"
    )
    wait(
        lambda: get(cluster, "job", kns, "weak")["spec"]["suspend"] is False, what="Kueue unsuspends the Job"
    )
    sidecar.stop()

    # The operator's own requests (its API client and kopf's): its patches never carry spec.suspend. Its
    # create is not judged by the logged body, which is after defaulting (batch/v1 defaults suspend to
    # false), but by what followed: Kueue's first write unsuspends the Job, so its webhook had suspended it.
    writes = job_writes(cluster, kns)
    ours = [e for e in writes if e.get("userAgent", "").startswith(("OpenAPI-Generator", "kopf"))]
    kueues = [e for e in writes if e.get("userAgent", "").startswith("kueue/")]
    assert ours and kueues, [(e["verb"], e.get("userAgent")) for e in writes]
    wrote = [e["requestObject"] for e in ours if e["verb"] != "create" and suspend_in(e.get("requestObject"))]
    assert not wrote, f"carbontrack wrote spec.suspend: {wrote}"
    # Kueue unsuspended (admission), suspended (the halt) and unsuspended (the resume): all by its manager
    flips = [e["requestObject"]["spec"]["suspend"] for e in kueues if suspend_in(e.get("requestObject"))]
    assert flips == [False, True, False], flips
    owners = [
        m["manager"] for m in json.loads(
            cluster.kubectl("get", "job", "weak", "-n", kns, "--show-managed-fields", "-o", "json").stdout
        )["metadata"]["managedFields"]
        if "f:suspend" in json.dumps(m.get("fieldsV1", {}))
    ]  # fmt: skip
    assert owners and all(o.startswith("kueue") for o in owners), owners


def test_the_budget_admission_check_keeps_an_over_budget_job_out(kop: Operator, kns: str) -> None:
    cluster = kop.cluster
    # 2000 steps x 40 kJ x PUE 1.2 = 96 MJ = 26.7 kWh; DE's static intensity makes that well over 1 kg
    over = queued("greedy", "budgeted", budgetKg=1, expectedJoulesPerStep=40000)
    assert apply(cluster, kns, over).returncode == 0

    def rejected() -> dict[str, Any] | None:
        wl = (
            workload(cluster, kns, "greedy")
            if cluster.kubectl("get", "job", "greedy", "-n", kns, check=False).returncode == 0
            else None
        )
        checks = (wl or {}).get("status", {}).get("admissionChecks") or []
        return wl if any(c["state"] == "Rejected" for c in checks) else None

    wl = wait(rejected, timeout=90, what="the budget check Rejected on the Workload")
    check = next(c for c in wl["status"]["admissionChecks"] if c["name"] == "carbon-budget")
    assert "projected emissions" in check["message"] and "> budget 1 kg" in check["message"], check
    assert condition(wl, "Admitted").get("status") != "True"
    wait(lambda: (w := workload(cluster, kns, "greedy")) and w["spec"]["active"] is False, what="deactivated")
    st = wait(
        lambda: (s := status(cluster, kns, "greedy")) and condition({"status": s}, "BudgetAdmission") and s,
        what="BudgetAdmission on the CarbonTrackedJob",
    )
    cond = condition({"status": st}, "BudgetAdmission")
    assert (cond["status"], cond["reason"]) == ("False", "CheckRejected") and "> budget 1 kg" in cond[
        "message"
    ]
    assert get(cluster, "job", kns, "greedy")["spec"]["suspend"] is True
    pods = cluster.kubectl("get", "pods", "-n", kns, "-l", "carbontrack.io/job=greedy", "-o", "name").stdout
    assert pods.strip() == "", pods
    ac = json.loads(cluster.kubectl("get", "admissioncheck", "carbon-budget", "-o", "json").stdout)
    assert condition(ac, "Active").get("status") == "True", ac

    # within budget: admitted, the check Ready with its figures, the workers run
    fits = queued("frugal", "budgeted", budgetKg=50, expectedJoulesPerStep=1000)
    assert apply(cluster, kns, fits).returncode == 0
    running_pods(cluster, kns, "frugal", 2)
    wl = workload(cluster, kns, "frugal")
    assert wl is not None
    check = next(c for c in wl["status"]["admissionChecks"] if c["name"] == "carbon-budget")
    assert check["state"] == "Ready" and "within budget" in check["message"], check
