"""CarbonTrackedJobs queued by a real Kueue manager (built from its pinned module, hack/kueue.py).

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
from hack import kueue
from hack.controlplane import ControlPlane

from tests.cases.crs import manifest
from tests.cases.jobs import cluster_spec, production_gates
from tests.integration.harness import (
    ROOT,
    Operator,
    apply,
    running_pods,
    start_sidecar,
    start_sidecars,
    status,
    train_until_asked_to_stop,
    wait,
)
from tests.integration.kueue_objects import (
    CHECK,
    FLAVOR,
    cluster_queue,
    condition,
    get,
    slices,
    workload,
    workloads,
    writes_by_client,
)
from tests.integration.objects import pods, resolved_env

pytestmark = [
    pytest.mark.own_control_plane(
        "Kueue's manager, CRDs and webhooks are cluster-scoped; an audit log of Job writes"
    ),
    pytest.mark.skipif(
        not kueue.present(), reason=f"no Kueue build in {kueue.DIR}: run `python hack/kueue.py build`"
    ),
]


@pytest.fixture(scope="module")
def kcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = ControlPlane(tmp_path_factory.mktemp("kueue-controlplane"))
    try:
        cp.up(nodes=2, audit=True, audit_level="Request")
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cp.wait_established("crd/carbontrackedjobs.carbontrack.io")
        kueue.start(cp, elastic=True)  # ElasticJobsViaWorkloadSlices: used only by annotated Jobs
        objs = [FLAVOR, CHECK, cluster_queue("plain", []), cluster_queue("budgeted", ["carbon-budget"])]
        cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}))
        yield cp
    finally:
        cp.down(remove=False)


@pytest.fixture(scope="module")
def kop(kcluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    op = Operator(
        kcluster, tmp_path_factory.mktemp("kueue-operator") / "operator.log",
        CARBONTRACK_KUEUE_ADMISSION_CHECK="true", CARBONTRACK_KUEUE_ELASTIC_JOBS="true",
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


def queued(
    name: str, queue: str, min_score: float = 0.8, replicas: int = 2, elastic: bool = False, **carbon: Any
) -> dict[str, Any]:
    annotations = {"kueue.x-k8s.io/elastic-job": "true"} if elastic else {}
    spec = cluster_spec(
        replicas,
        total_steps=2000,
        canary={"replicas": 1, "minSteps": 10, "stages": [50, 100]},
        carbon={"budgetKg": 50, **carbon},
        gates=production_gates(min_score),
    )
    return manifest(name, spec, labels={"kueue.x-k8s.io/queue-name": queue}, annotations=annotations)


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
    # both workers run their sidecars: a silent one would fail production's carbon gate closed too
    sidecars = start_sidecars(tmp_path, kop, cluster, kns, "weak", 2, {})
    sidecar = next(iter(sidecars.values()))
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
    for each in sidecars.values():
        each.stop()

    # The operator's own requests (its API client and kopf's): its patches never carry spec.suspend. Its
    # create is not judged by the logged body, which is after defaulting (batch/v1 defaults suspend to
    # false), but by what followed: Kueue's first write unsuspends the Job, so its webhook had suspended it.
    writes = writes_by_client(cluster, kns)
    assert writes.ours and writes.kueues, [(e["verb"], e.get("userAgent")) for e in writes.every]
    assert not writes.our_suspends(), f"carbontrack wrote spec.suspend: {writes.our_suspends()}"
    # Kueue unsuspended (admission), suspended (the halt) and unsuspended (the resume): all by its manager
    assert writes.kueue_suspends() == [False, True, False], writes.kueue_suspends()
    owners = [
        m["manager"] for m in json.loads(
            cluster.kubectl("get", "job", "weak", "-n", kns, "--show-managed-fields", "-o", "json").stdout
        )["metadata"]["managedFields"]
        if "f:suspend" in json.dumps(m.get("fieldsV1", {}))
    ]  # fmt: skip
    assert owners and all(o.startswith("kueue") for o in owners), owners


def test_a_queued_job_resumes_from_the_checkpoint_its_halt_saved(
    kop: Operator, kns: str, tmp_path: Path
) -> None:
    """While a halted Job's Workload is inactive, Kueue puts the Workload's copy of the pod template back
    on the Job on every pass: the resume point reaches that copy too, or the workers start from scratch."""
    cluster = kop.cluster
    assert apply(cluster, kns, queued("saved", "plain", min_score=0.9)).returncode == 0
    wait(lambda: status(cluster, kns, "saved").get("phase") == "Canary", what="phase Canary")
    sidecars = start_sidecars(tmp_path, kop, cluster, kns, "saved", 2, {})
    trainer = next(iter(sidecars.values())).client()
    train(trainer, 1, 12, accuracy=0.86)  # under minScore 0.9: the halt asks for a checkpoint first
    wait(lambda: status(cluster, kns, "saved").get("phase") == "Halted", what="phase Halted")
    step = train_until_asked_to_stop(trainer, 12)
    trainer.report_checkpoint(step, f"/ckpt/step-{step}")
    wait(lambda: get(cluster, "job", kns, "saved")["spec"]["suspend"] is True, what="Kueue suspends the Job")
    for each in sidecars.values():
        each.stop()
    cluster.kubectl("patch", "ctj", "saved", "-n", kns, "--type=merge",
                    "-p", json.dumps({"spec": {"gates": {"quality": {"minScore": 0.8}}}}))  # fmt: skip
    wait(
        lambda: get(cluster, "job", kns, "saved")["spec"]["suspend"] is False, what="Kueue unsuspends the Job"
    )
    running_pods(cluster, kns, "saved", 2)
    resume = f"{step} /ckpt/step-{step}"
    template = get(cluster, "job", kns, "saved")["spec"]["template"]["metadata"]["annotations"]
    assert template.get("carbontrack.io/resume-from") == resume, template
    assert {resolved_env(pod)["CARBONTRACK_RESUME_FROM"] for pod in pods(cluster, kns, "saved").values()} == {
        resume
    }


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


def grown(
    cluster: ControlPlane, kns: str, job: str, count: int
) -> list[tuple[str, int, bool, str, str]] | None:
    """The job's slices once exactly one is live, admitted, with `count` pods; else None."""
    s = slices(cluster, kns, job)
    live = [x for x in s if not x[3]]
    return s if len(live) == 1 and live[0][1:3] == (count, True) else None


def _canary_of_one_in_stages(cluster: ControlPlane, kns: str) -> None:
    """An elastic queued job keeps its stages: the Job starts at the canary's size."""
    st = wait(lambda: (s := status(cluster, kns, "grow")).get("phase") == "Canary" and s, what="phase Canary")
    canary = condition({"status": st}, "CanaryStages")
    assert (canary["status"], canary["reason"]) == ("True", "KueueElastic"), st
    job = get(cluster, "job", kns, "grow")
    assert (job["spec"]["parallelism"], job["spec"]["completions"]) == (1, 1)  # the canary, not full size
    assert job["metadata"]["annotations"]["kueue.x-k8s.io/elastic-job"] == "true"


def _gated_by_kueue(cluster: ControlPlane, kns: str) -> None:
    """Kueue's webhook put its elastic-job scheduling gate on the template: a pod waits until its slice
    is admitted (Kueue lifts the gate then)."""
    gates = get(cluster, "job", kns, "grow")["spec"]["template"]["spec"].get("schedulingGates") or []
    assert {"name": "kueue.x-k8s.io/elastic-job"} in gates, gates


def test_an_elastic_queued_job_grows_stage_by_stage_through_workload_slices(
    kop: Operator, kns: str, tmp_path: Path
) -> None:
    cluster = kop.cluster
    assert apply(cluster, kns, queued("grow", "plain", replicas=4, elastic=True)).returncode == 0
    _canary_of_one_in_stages(cluster, kns)
    ((pod, uid),) = running_pods(cluster, kns, "grow", 1)
    first = wait(
        lambda: (s := slices(cluster, kns, "grow")) and s[0][2] and s, what="the first slice admitted"
    )
    assert [(c, a, f) for _, c, a, f, _ in first] == [(1, True, "")], first
    _gated_by_kueue(cluster, kns)
    sidecar = start_sidecar(tmp_path, kop, cluster, kns, "grow", pod, uid)
    trainer = sidecar.client()
    train(trainer, 1, 12, accuracy=0.86)

    # stage 50 %: the Job grows to 2; Kueue admits a new slice for 2 that replaces the first
    st = wait(lambda: (s := status(cluster, kns, "grow")).get("phase") == "Promoting" and s, what="Promoting")
    assert st["replicas"] == 2 and st["gateSummary"] == "8/8 passed", st
    assert get(cluster, "job", kns, "grow")["spec"]["parallelism"] == 2
    sidecars = start_sidecars(tmp_path, kop, cluster, kns, "grow", 2, {pod: sidecar})
    second = wait(lambda: grown(cluster, kns, "grow", 2), what="a slice of 2 admitted, the old one finished")
    print("slices after stage 50 %:", second)
    # the canary's slice is finished by Kueue's scheduler as it admits its replacement
    assert (second[0][0], second[0][3]) == (first[0][0], "WorkloadSliceReplaced"), second
    assert second[-1][4] == f"{kns}/{first[0][0]}", second  # the new slice replaces it
    train(trainer, 13, 25, accuracy=0.87)

    # stage 100 %: the Job grows to 4 in a third slice; the Job is never suspended on the way
    st = wait(lambda: (s := status(cluster, kns, "grow")).get("phase") == "Running" and s, what="Running")
    spec = get(cluster, "job", kns, "grow")["spec"]
    assert (spec["parallelism"], spec["completions"], spec["suspend"]) == (4, 4, False), spec
    after = running_pods(cluster, kns, "grow", 4)
    assert (pod, uid) in after, after  # the canary's worker (index 0) ran on through both scale-ups
    start_sidecars(tmp_path, kop, cluster, kns, "grow", 4, sidecars)
    third = wait(lambda: grown(cluster, kns, "grow", 4), what="a slice of 4 admitted")
    print("slices after stage 100 %:", third)
    assert third[-1][4] == f"{kns}/{second[-1][0]}" and third[-2][3] == "WorkloadSliceReplaced", third
    assert condition({"status": st}, "CanaryStages")["status"] == "True"
    for each in sidecars.values():
        each.stop()

    # carbontrack wrote the scale and never spec.suspend; Kueue unsuspended the Job once, on the first
    # admission, and never suspended it for a scale-up
    writes = writes_by_client(cluster, kns)
    # the canary's start (the size it was created with), then each stage
    assert writes.our_scales() == [1, 2, 4], writes.our_scales()
    assert not writes.our_suspends(), f"carbontrack wrote spec.suspend: {writes.our_suspends()}"
    assert writes.kueue_suspends() == [False], writes.kueue_suspends()


def test_an_elastic_job_halted_after_a_scale_up_stops_and_resumes_through_its_workload(
    kop: Operator, kns: str, tmp_path: Path
) -> None:
    cluster = kop.cluster
    assert apply(cluster, kns, queued("dip", "plain", replicas=4, elastic=True)).returncode == 0
    wait(lambda: status(cluster, kns, "dip").get("phase") == "Canary", what="phase Canary")
    ((pod, uid),) = running_pods(cluster, kns, "dip", 1)
    sidecar = start_sidecar(tmp_path, kop, cluster, kns, "dip", pod, uid)
    trainer = sidecar.client()
    train(trainer, 1, 12, accuracy=0.86)
    wait(lambda: status(cluster, kns, "dip").get("phase") == "Promoting", what="phase Promoting")
    sidecars = start_sidecars(tmp_path, kop, cluster, kns, "dip", 2, {pod: sidecar})
    wait(lambda: [x[1:3] for x in slices(cluster, kns, "dip") if not x[3]] == [(2, True)], what="slice of 2")
    # the metric falls at stage 50 %: the halt deactivates the Job's Workload, Kueue suspends the Job
    train(trainer, 13, 25, accuracy=0.70)
    st = wait(lambda: (s := status(cluster, kns, "dip")).get("phase") == "Halted" and s, what="phase Halted")
    assert st["gateSummary"] == "quality.score failed", st
    wait(lambda: get(cluster, "job", kns, "dip")["spec"]["suspend"] is True, what="Kueue suspends the Job")
    live = [w for w in workloads(cluster, kns, "dip") if condition(w, "Finished").get("status") != "True"]
    assert [w["spec"]["active"] for w in live] == [False], live
    # the owner lowers the bar: the interrupted stage resumes at its size, Kueue readmits the slice
    cluster.kubectl("patch", "ctj", "dip", "-n", kns, "--type=merge",
                    "-p", json.dumps({"spec": {"gates": {"quality": {"minScore": 0.6}}}}))  # fmt: skip
    wait(lambda: status(cluster, kns, "dip").get("phase") == "Promoting", what="resumed to Promoting")
    wait(lambda: get(cluster, "job", kns, "dip")["spec"]["suspend"] is False, what="Kueue unsuspends the Job")
    running_pods(cluster, kns, "dip", 2)
    print("slices after the resume:", slices(cluster, kns, "dip"))
    live_slices = [x for x in slices(cluster, kns, "dip") if not x[3]]
    assert [x[1:3] for x in live_slices] == [(2, True)], live_slices
    # the resumed stage's world size reached the pods, and Kueue named the readmitted slice on the template
    # (Kueue v0.17 left the first slice's name there and looped; v0.19 overwrites it)
    template = get(cluster, "job", kns, "dip")["spec"]["template"]["metadata"]["annotations"]
    assert template["carbontrack.io/world-size"] == "2", template
    assert template["kueue.x-k8s.io/workload"] == live_slices[0][0], template
    for each in sidecars.values():
        each.stop()

    writes = writes_by_client(cluster, kns)
    assert not writes.our_suspends(), f"carbontrack wrote spec.suspend: {writes.our_suspends()}"
    assert writes.kueue_suspends() == [False, True, False], writes.kueue_suspends()
