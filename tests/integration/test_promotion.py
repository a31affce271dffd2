"""Canary promotion on the real control plane: gates pass -> the Job scales up; a gate fails -> suspended.

The sidecars and trainers are real processes (simulated GPUs); the gates read what the trainer
reported (eval metrics, DP-SGD parameters) and what CI wrote (test results inline in the spec).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hack.controlplane import ControlPlane

from tests.cases.jobs import gated
from tests.integration.harness import (
    Operator,
    apply,
    running_pods,
    start_sidecar,
    start_sidecars,
    status,
    train,
    wait,
)
from tests.integration.objects import events, get_row, job_spec
from tests.integration.sidecars import exit_pods

README_ROWS: list[str] = []


def test_gates_pass_and_the_job_is_promoted_to_full_scale(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cluster = operator.cluster
    assert apply(cluster, namespace, gated("llama", 0.8)).returncode == 0
    wait(lambda: status(cluster, namespace, "llama").get("phase") == "Canary", what="phase Canary")
    README_ROWS.append(get_row(cluster, namespace, "llama"))
    ((pod, uid),) = running_pods(cluster, namespace, "llama", 1)
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "llama", pod, uid)
    trainer = sidecar.client()
    train(trainer, 1, 12, accuracy=0.86)
    st = wait(
        lambda: (s := status(cluster, namespace, "llama")).get("phase") == "Promoting" and s,
        what="phase Promoting",
    )
    assert st["replicas"] == 2 and st["gateSummary"] == "8/8 passed", st
    assert job_spec(cluster, namespace, "llama")["parallelism"] == 2
    # every pod of the stage runs its sidecar, or it is unmeasured and production fails closed
    sidecars = start_sidecars(tmp_path, operator, cluster, namespace, "llama", 2, {pod: sidecar})
    README_ROWS.append(get_row(cluster, namespace, "llama"))
    train(trainer, 13, 25, accuracy=0.87)
    st = wait(
        lambda: (s := status(cluster, namespace, "llama")).get("phase") == "Running" and s,
        what="phase Running",
    )
    spec = job_spec(cluster, namespace, "llama")
    assert (spec["parallelism"], spec["completions"], st["replicaSummary"]) == (4, 4, "4/4")
    start_sidecars(tmp_path, operator, cluster, namespace, "llama", 4, sidecars)
    assert 0 < st["epsilon"] < st["projected"]["epsilon"] <= 8 and st["epsilonClaimed"] == 0.9
    privacy = next(g for g in st["gates"] if g["name"] == "privacy.epsilon")
    assert "claims 0.9" in privacy["message"]
    wait(lambda: status(cluster, namespace, "llama").get("energyJoules", 0) > 0, what="energy in status")
    README_ROWS.append(get_row(cluster, namespace, "llama"))
    _events_tell_the_promotion(cluster, namespace)
    # The Job completes when its pods do: every index exits 0 (its sidecar's final flush first) -> Succeeded.
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", "carbontrack.io/job=llama",
                                      "-o", "json").stdout)["items"]  # fmt: skip
    assert {p["metadata"]["name"] for p in pods} == set(sidecars)
    exit_pods(cluster, namespace, sidecars)
    wait(lambda: status(cluster, namespace, "llama").get("phase") == "Succeeded", what="phase Succeeded")
    README_ROWS.append(get_row(cluster, namespace, "llama"))
    print("\n".join(README_ROWS))  # the README's worked example comes from this output (pytest -s)
    _model_card_is_the_hubs_metadata(cluster, namespace)


def _events_tell_the_promotion(cluster: ControlPlane, namespace: str) -> None:
    ev = events(cluster, namespace)
    for reason in ("JobCreated", "CanaryStarted", "GatesPassed", "Promoted", "PhaseChanged"):
        assert reason in ev, ev
    assert "PodsUnmeasured" not in ev, ev


def _model_card_is_the_hubs_metadata(cluster: ControlPlane, namespace: str) -> None:
    """The finished job's model-card block, as `carbontrack report` prints it, is the Hub's metadata."""
    out = subprocess.run(
        [sys.executable, "-m", "carbontrack.cli", "report", "llama", "-n", namespace,
         "--format", "model-card"],
        env={**os.environ, **cluster.env()}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    print(out.stdout)
    block = yaml.safe_load(out.stdout)
    final = status(cluster, namespace, "llama")
    assert block["co2_eq_emissions"]["emissions"] == round(final["emissionsGrams"], 3) > 0
    assert block["co2_eq_emissions"]["source"] == "carbontrack"
    hub = pytest.importorskip("huggingface_hub")  # a dev dependency: present wherever the suite runs
    card = yaml.safe_load(hub.ModelCardData(**block).to_yaml())
    assert card["co2_eq_emissions"] == block["co2_eq_emissions"]


def test_a_failing_gate_halts_and_suspends_and_an_edit_resumes(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cluster = operator.cluster
    assert apply(cluster, namespace, gated("weak", 0.9)).returncode == 0
    wait(lambda: status(cluster, namespace, "weak").get("phase") == "Canary", what="phase Canary")
    ((pod, uid),) = running_pods(cluster, namespace, "weak", 1)
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "weak", pod, uid)
    trainer = sidecar.client()
    train(trainer, 1, 12, accuracy=0.86)
    st = wait(
        lambda: (s := status(cluster, namespace, "weak")).get("phase") == "Halted" and s, what="phase Halted"
    )
    assert job_spec(cluster, namespace, "weak")["suspend"] is True
    assert st["gateSummary"] == "quality.score failed"
    ready = st["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "GateFailed")
    assert "quality.score: eval_accuracy 0.86 < 0.9" in ready["message"]
    failed = next(g for g in st["gates"] if not g["passed"])
    assert (failed["observed"], failed["threshold"]) == (0.86, 0.9)
    assert "GateFailed" in events(cluster, namespace)
    print(get_row(cluster, namespace, "weak"))
    # The owner lowers the bar: a new generation is re-judged and the canary resumes.
    cluster.kubectl("patch", "ctj", "weak", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"gates": {"quality": {"minScore": 0.85}}}}))  # fmt: skip
    wait(lambda: status(cluster, namespace, "weak").get("phase") == "Canary", what="resumed to Canary")
    assert job_spec(cluster, namespace, "weak")["suspend"] is False
    assert "Resumed" in events(cluster, namespace)
    sidecar.stop()


def test_deleting_the_job_resource_deletes_its_job(operator: Operator, namespace: str) -> None:
    cluster = operator.cluster
    assert apply(cluster, namespace, gated("gone", 0.8)).returncode == 0
    wait(
        lambda: cluster.kubectl("get", "job", "gone", "-n", namespace, check=False).returncode == 0,
        what="Job",
    )
    cluster.kubectl("delete", "ctj", "gone", "-n", namespace)
    wait(lambda: cluster.kubectl("get", "job", "gone", "-n", namespace, check=False).returncode != 0,
         what="Job garbage-collected")  # fmt: skip


def test_test_results_from_a_configmap_written_by_ci(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """CI writes results.json into a ConfigMap; the gate reads it and fails closed on a low pass rate."""
    cluster = operator.cluster
    results = {"passRate": 0.90, "coverage": 0.95, "security": {"critical": 0, "high": 0, "medium": 0}}
    cluster.kubectl("create", "configmap", "ci-results", "-n", namespace,
                    f"--from-literal=results.json={json.dumps(results)}")  # fmt: skip
    job = gated("from-ci", 0.8)
    job["spec"]["gates"]["tests"] = {"fromConfigMap": "ci-results"}
    assert apply(cluster, namespace, job).returncode == 0
    wait(lambda: status(cluster, namespace, "from-ci").get("phase") == "Canary", what="phase Canary")
    ((pod, uid),) = running_pods(cluster, namespace, "from-ci", 1)
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "from-ci", pod, uid)
    train(sidecar.client(), 1, 12, accuracy=0.86)
    st = wait(lambda: (s := status(cluster, namespace, "from-ci")).get("phase") == "Halted" and s,
              what="phase Halted")  # fmt: skip
    failed = [(g["name"], g["observed"], g["threshold"]) for g in st["gates"] if not g["passed"]]
    assert failed == [("tests.passRate", 0.9, 0.98)]
    sidecar.stop()
