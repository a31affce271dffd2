"""Metric gates against a real Prometheus (Debian's package) scraping the operator's own /metrics.

The gate's query reads the job's own step counter, so the test controls the measured value: a job
through an Inconclusive measurement resumed by `carbontrack approve`, and an unreachable provider
that halts as Error (never as a failure) with the provider named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.cases.jobs import gated
from tests.integration.harness import (
    Operator,
    apply,
    decide,
    phase_is,
    running_pods,
    start_sidecar,
    status,
    train,
    whoami,
)
from tests.integration.objects import events, get_row
from tests.integration.prometheus_server import needs_prometheus

pytestmark = needs_prometheus


def with_metric(name: str, namespace: str, address: str, **gate: Any) -> dict[str, Any]:
    job = gated(name, 0.8)
    query = f'sum(carbontrack_training_steps_total{{namespace="{namespace}",job_name="{name}"}})'
    job["spec"]["gates"]["metrics"] = [
        {"name": "steps", "prometheus": {"address": address, "query": query, "timeoutSeconds": 2}, **gate}
    ]
    return job


def test_a_prometheus_gate_measures_pauses_on_inconclusive_and_approve_resumes(
    operator: Operator, namespace: str, tmp_path: Path, prometheus: str
) -> None:
    cluster = operator.cluster
    # steps >= 5 pass the fail bound; below 1000 is Inconclusive: the canary's 12 steps are
    job = with_metric("prom", namespace, prometheus, min=5, inconclusiveBelow=1000, count=2,
                      initialDelaySteps=10, consecutiveErrorLimit=10)  # fmt: skip
    assert apply(cluster, namespace, job).returncode == 0
    phase_is(cluster, namespace, "prom", "Canary")
    ((pod, uid),) = running_pods(cluster, namespace, "prom", 1)
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "prom", pod, uid)
    train(sidecar.client(), 1, 12, accuracy=0.86)
    st = phase_is(cluster, namespace, "prom", "Paused")
    print(get_row(cluster, namespace, "prom"))
    assert st["gateSummary"] == "metric.steps inconclusive", st["gates"]
    (history,) = st["measurements"]
    assert history["name"] == "steps" and history["measured"] == 2 and history["inconclusive"] == 2
    taken = [m for m in history["measurements"] if m["verdict"] != "Error"]
    assert [m["verdict"] for m in taken] == ["Inconclusive", "Inconclusive"]
    assert all(5 <= m["value"] <= 12 and m["step"] >= 10 for m in taken), taken
    gate = next(g for g in st["gates"] if g["name"] == "metric.steps")
    assert gate["verdict"] == "Inconclusive" and "between min 5 and 1000" in gate["message"]
    out = decide(cluster, "approve", "prom", "-n", namespace, "--reason", "step rate is fine", "--wait")
    assert out.returncode == 0 and "phase Promoting" in out.stdout, out
    st = status(cluster, namespace, "prom")
    assert st["replicas"] == 2 and st["decisions"][0]["by"] == whoami(cluster)
    # the new stage counts afresh: its counts are for stage 0
    assert st["measurements"][0]["stage"] == 0 and st["measurements"][0]["measured"] == 0
    print(get_row(cluster, namespace, "prom"))
    sidecar.stop()


def test_an_unreachable_provider_is_an_error_that_halts_naming_it(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cluster = operator.cluster
    job = with_metric("down", namespace, "http://127.0.0.1:1", min=5, consecutiveErrorLimit=2)
    assert apply(cluster, namespace, job).returncode == 0
    phase_is(cluster, namespace, "down", "Canary")
    ((pod, uid),) = running_pods(cluster, namespace, "down", 1)
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "down", pod, uid)
    train(sidecar.client(), 1, 12, accuracy=0.86)
    st = phase_is(cluster, namespace, "down", "Halted")
    gate = next(g for g in st["gates"] if g["name"] == "metric.steps")
    assert (gate["verdict"], gate["passed"], st["gateSummary"]) == ("Error", False, "metric.steps error")
    assert "3 errors in a row > consecutiveErrorLimit 2" in gate["message"], gate
    assert "http://127.0.0.1:1/api/v1/query unreachable" in gate["message"], gate
    (history,) = st["measurements"]
    assert (history["measured"], history["failed"], history["errors"]) == (0, 0, 3)
    assert "metric.steps" in events(cluster, namespace)
    print(get_row(cluster, namespace, "down"))
    sidecar.stop()
