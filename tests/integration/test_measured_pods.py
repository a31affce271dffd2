"""The whole job is measured, or the totals say they are not, on the real control plane.

- A production canary of two pods whose second pod's sidecar never sends a batch (its pod runs, no
  sidecar process is started for it) was judged on the reporting pod alone and passed its carbon
  budget; it is halted now, naming the unmeasured pod.
- A finished job takes its pods' final flushes, then refuses every later batch (409 finished): its
  totals stop moving, however long a sidecar goes on sending.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from tests.cases.crs import manifest
from tests.cases.jobs import cluster_spec
from tests.integration.harness import (
    DE_G_PER_KWH,
    PRODUCTION_GATES,
    PUE,
    Operator,
    apply,
    ctj,
    metric_value,
    phase_is,
    report_evidence,
    running_pods,
    start_sidecar,
    status,
    wait,
)
from tests.integration.objects import events, job_spec
from tests.integration.sidecars import EXIT_ANNOTATION, Sidecar, exit_pods

TOTAL_STEPS, BUDGET_G = 15000, 100.0
"""The reporting pod steps at about 10 a second on its one GPU at 300 W: about 30 J/step, so its own
projection is about 57 g, and with the silent pod drawing the same, twice that."""


def trainer_loop(sidecar: Sidecar, stop: threading.Event) -> None:
    """Ten steps a second; the evidence PRODUCTION_GATES judge at step 30 (minSteps)."""
    trainer, step = sidecar.client(), 0
    while not stop.is_set():
        step += 1
        trainer.step(step)
        if step == 30:
            report_evidence(trainer, step)
        time.sleep(0.1)


def test_a_production_canary_with_a_silent_pod_is_halted_naming_it(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cluster = operator.cluster
    canary = {"replicas": 2, "minSteps": 30, "stages": [100]}
    spec = cluster_spec(3, total_steps=TOTAL_STEPS, canary=canary, carbon={"budgetKg": BUDGET_G / 1000},
                        gates=PRODUCTION_GATES)  # fmt: skip
    assert apply(cluster, namespace, manifest("half", spec)).returncode == 0
    phase_is(cluster, namespace, "half", "Canary")
    (reporting, uid), (silent, _) = running_pods(cluster, namespace, "half", 2)
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "half", reporting, uid)
    stop = threading.Event()
    threading.Thread(target=trainer_loop, args=(sidecar, stop), daemon=True).start()
    try:
        st = wait(
            lambda: (s := status(cluster, namespace, "half")).get("phase") in ("Halted", "Running") and s,
            timeout=90,
            what="the canary judged",
        )
    finally:
        stop.set()
    assert st["phase"] == "Halted", st.get("gates")
    assert job_spec(cluster, namespace, "half")["suspend"] is True and st["replicas"] == 2
    gate = next(g for g in st["gates"] if g["name"] == "carbon.budget")
    assert not gate["passed"] and gate["message"] == (
        f"1 running pod(s) unmeasured ({silent}): no telemetry counted from them, so the job's energy is a "
        "lower bound: failing closed"
    )
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "GateFailed" and silent in ready["message"]
    measured = next(c for c in st["conditions"] if c["type"] == "PodsMeasured")
    assert (measured["status"], measured["reason"]) == ("False", "PodsUnmeasured") and silent in measured[
        "message"
    ]
    ev = events(cluster, namespace)
    assert "PodsUnmeasured" in ev and f"1 running pod(s) unmeasured: {silent}:" in ev, ev
    listed = wait(
        lambda: (status(cluster, namespace, "half").get("telemetry") or {}).get("unmeasuredPods"),
        what="status.telemetry.unmeasuredPods",
    )
    assert [p["pod"] for p in listed] == [silent]
    # the hole: the reporting pod's rate taken for the whole job's stays within the budget; the
    # projection of the two pods does not
    rest = (TOTAL_STEPS - st["steps"]) * st["telemetry"]["joulesPerStep"] * PUE * DE_G_PER_KWH / 3.6e6
    alone = st["emissionsGrams"] + rest
    print(f"reporting pod alone: {alone:.1f} g; both pods: {st['projected']['emissionsGrams']:.1f} g")
    assert alone <= BUDGET_G < st["projected"]["emissionsGrams"]
    sidecar.stop()


def finished_refusals(operator: Operator) -> float:
    """carbontrack_telemetry_rejected_total{reason="finished"}: every job's, this operator process's."""
    text = operator.metrics()
    prefix = 'carbontrack_telemetry_rejected_total{reason="finished"} '
    return next((float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)), 0.0)


def test_a_finished_jobs_totals_stop_moving(operator: Operator, namespace: str, tmp_path: Path) -> None:
    """Pod A ends as the kubelet ends a pod (its sidecar's final flush first); pod B's sidecar is left
    running after its pod exits, as the demo's sidecars once were, and keeps sending."""
    cluster = operator.cluster
    assert apply(cluster, namespace, ctj("done", 2)).returncode == 0
    (a, uid_a), (b, uid_b) = running_pods(cluster, namespace, "done", 2)
    first, second = (start_sidecar(tmp_path, operator, cluster, namespace, "done", p, u)
                     for p, u in ((a, uid_a), (b, uid_b)))  # fmt: skip
    for step in range(1, 11):
        for sidecar in (first, second):
            sidecar.client().step(step)
        time.sleep(0.05)
    refused_before = finished_refusals(operator)
    (final_a,) = exit_pods(cluster, namespace, {a: first}).values()
    cluster.kubectl("annotate", "pod", b, "-n", namespace, f"{EXIT_ANNOTATION}=0")  # its sidecar goes on
    phase_is(cluster, namespace, "done", "Succeeded")

    def refused() -> dict[str, Any] | None:
        st = status(cluster, namespace, "done")
        return st if (st.get("telemetry") or {}).get("refused", {}).get("finished", 0) >= 1 else None

    st = wait(refused, what="a batch after the end refused and counted")
    energy = st["energyJoules"]
    assert energy > final_a
    time.sleep(3)  # 15 more batches from pod B's sidecar
    st = status(cluster, namespace, "done")
    assert st["energyJoules"] == energy and st["telemetry"]["refused"]["finished"] > 1
    assert finished_refusals(operator) > refused_before
    a_source = next(s for s in st["telemetry"]["sources"] if s["pod"] == a)
    assert a_source["final"] and abs(a_source["energyJoules"] - final_a) < 1e-6  # its final flush counted
    assert (
        metric_value(operator.metrics(), "carbontrack_gpu_energy_joules_total", namespace, "done") == energy
    )
    second.stop()
