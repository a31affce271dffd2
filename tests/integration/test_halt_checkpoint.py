"""A halt that checkpoints, on the real control plane: a failing gate -> the stop request reaches the
trainer's client.should_stop() through the real sidecar -> the trainer reports a checkpoint -> the Job
is suspended (not before) -> an edit resumes it -> the new pod's trainer is told where to resume and
its step numbers continue from the checkpoint."""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any

from hack.controlplane import ControlPlane

from carbontrack.trainer import client
from tests.cases.crs import manifest
from tests.cases.jobs import cluster_spec
from tests.integration.harness import (
    Operator,
    apply,
    running_pods,
    start_sidecar,
    status,
    train_until_asked_to_stop,
    wait,
)
from tests.integration.objects import job, pods, resolved_env


def gated(name: str, min_score: float, grace_s: int = 120) -> dict[str, Any]:
    """One worker behind a development quality gate; a halt waits up to `grace_s` for a checkpoint."""
    gates = {"context": "development", "quality": {"metric": "eval_accuracy", "minScore": min_score}}
    return manifest(name, cluster_spec(1, gates=gates, halt={"gracePeriodSeconds": grace_s}))


def test_a_gate_failure_asks_for_a_checkpoint_suspends_after_it_and_the_resume_continues_from_it(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cluster = operator.cluster
    assert apply(cluster, namespace, gated("ckpt", 0.8)).returncode == 0
    wait(lambda: status(cluster, namespace, "ckpt").get("phase") == "Canary", what="phase Canary")
    spec = job(cluster, namespace, "ckpt")["spec"]
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] == 120
    ((pod, uid),) = running_pods(cluster, namespace, "ckpt", 1)
    assert resolved_env(pods(cluster, namespace, "ckpt")["0"])["CARBONTRACK_RESUME_FROM"] == ""
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "ckpt", pod, uid)
    trainer = sidecar.client()
    for s in range(1, 11):
        trainer.step(s)
    trainer.report_checkpoint(10, "/ckpt/step-10")  # a periodic save: this trainer speaks the protocol
    for s in range(11, 13):
        trainer.step(s)
    trainer.report_eval({"eval_accuracy": 0.5}, step=12)  # under minScore 0.8: the quality gate fails

    # The halt asks first: phase Halted, the request in status, the Job still running.
    st = wait(
        lambda: (s := status(cluster, namespace, "ckpt")).get("phase") == "Halted" and s.get("halt") and s,
        what="phase Halted with a halt in status",
    )
    assert st["halt"]["step"] == 12 and "suspendedAt" not in st["halt"], st["halt"]
    step = train_until_asked_to_stop(trainer, 12, timeout_s=30)
    assert job(cluster, namespace, "ckpt")["spec"]["suspend"] is False  # still saving: not stopped yet
    assert sidecar.healthz()["stopRequested"] is True
    trainer.report_checkpoint(step, f"/ckpt/step-{step}")
    _suspended_after_the_checkpoint(cluster, namespace, step)
    sidecar.stop()
    # The fix: a lower bar. The edit re-judges, the Job resumes, and its new pod knows where from.
    patch = json.dumps({"spec": {"gates": {"quality": {"minScore": 0.4}}}})
    cluster.kubectl("patch", "ctj", "ckpt", "-n", namespace, "--type=merge", "-p", patch)
    _resumed_from_the_checkpoint(operator, namespace, (pod, uid), step, tmp_path)


def _suspended_after_the_checkpoint(cluster: ControlPlane, namespace: str, saved: int) -> None:
    """The halt is done once the trainer saved: status.checkpoint names it, the Job is suspended and its
    pods are gone."""
    st = wait(
        lambda: (s := status(cluster, namespace, "ckpt")).get("halt", {}).get("outcome") and s,
        what="the halt done",
    )
    assert st["halt"]["outcome"] == "Checkpointed", st["halt"]
    # the judgement reads the live aggregate; the telemetry writer's status.checkpoint follows within 1 s
    st = wait(
        lambda: (s := status(cluster, namespace, "ckpt")).get("checkpoint", {}).get("step") == saved and s,
        what="status.checkpoint",
    )
    assert st["checkpoint"]["uri"] == f"/ckpt/step-{saved}"
    wait(lambda: job(cluster, namespace, "ckpt")["spec"]["suspend"] is True, what="the Job suspended")
    wait(lambda: not pods(cluster, namespace, "ckpt"), what="the pods deleted by the suspension")


def _resumed_from_the_checkpoint(
    operator: Operator, namespace: str, halted: tuple[str, str], saved: int, tmp_path: Path
) -> None:
    """The resumed canary counts from the checkpoint, its new pod starts from it, and it is promoted."""
    cluster, (pod, uid) = operator.cluster, halted
    wait(lambda: status(cluster, namespace, "ckpt").get("phase") == "Canary", what="resumed to Canary")
    resumed = status(cluster, namespace, "ckpt")
    assert "halt" not in resumed
    assert resumed["promotion"]["stageStartStep"] == saved  # the resumed canary counts from the checkpoint
    template = job(cluster, namespace, "ckpt")["spec"]["template"]
    assert template["metadata"]["annotations"]["carbontrack.io/resume-from"] == f"{saved} /ckpt/step-{saved}"
    ((pod2, uid2),) = running_pods(cluster, namespace, "ckpt", 1)
    assert uid2 != uid
    env = resolved_env(pods(cluster, namespace, "ckpt")["0"])
    resume = client.resume_from(env)
    assert resume == (saved, f"/ckpt/step-{saved}")
    sidecar2 = start_sidecar(tmp_path, operator, cluster, namespace, "ckpt", pod2, uid2)
    trainer2 = sidecar2.client()
    assert trainer2.should_stop() is False
    first = resume[0] + 1  # the trainer loads step `saved` and continues with the next one
    for s in range(first, first + 12):
        trainer2.step(s)
    trainer2.report_eval({"eval_accuracy": 0.6}, step=first + 11)
    st = wait(
        lambda: (s := status(cluster, namespace, "ckpt")).get("steps") == first + 11 and s,
        what="the resumed steps in status",
    )
    sources = {s["pod"]: s for s in st["telemetry"]["sources"]}
    assert sources[pod]["globalStep"] == saved  # the halted pod's last step: the checkpoint's
    assert sources[pod2]["globalStep"] == first + 11 and sources[pod2]["stepsSeen"] == 12
    # minSteps (10) counted from the checkpoint's step: the resumed canary is judged and promoted
    wait(
        lambda: status(cluster, namespace, "ckpt").get("phase") == "Running", what="promoted after the resume"
    )
    sidecar2.stop()


def test_the_sidecar_relays_the_jobs_totals_to_the_trainer_as_status_has_them(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """The trainer cannot read its CR: the operator's answers carry the job's totals, the real sidecar
    relays them, and `client.job_totals()` returns what status says, at most one status interval behind."""
    from carbontrack.api.model_card import hardware_used

    cluster = operator.cluster
    assert apply(cluster, namespace, gated("card", 0.8)).returncode == 0
    wait(lambda: status(cluster, namespace, "card").get("phase") == "Canary", what="phase Canary")
    ((pod, uid),) = running_pods(cluster, namespace, "card", 1)
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "card", pod, uid)
    trainer = sidecar.client()
    for s in range(1, 6):
        trainer.step(s)
        time.sleep(0.05)
    first = wait(lambda: (t := trainer.job_totals(timeout_s=1)) and t["energy_j"] > 0 and t, what="totals")
    before = status(cluster, namespace, "card")  # status lags the live aggregate the ack reads
    totals = trainer.job_totals(timeout_s=1)
    assert totals is not None and totals["energy_j"] >= first["energy_j"]
    assert totals["energy_j"] >= before.get("energyJoules", 0.0)
    assert totals["emissions_g"] >= before.get("emissionsGrams", 0.0)
    # within one status interval (1 s here) status has caught up with what the trainer was told
    after = wait(
        lambda: (s := status(cluster, namespace, "card")).get("energyJoules", 0) >= totals["energy_j"] and s,
        what="status at the relayed totals",
        timeout=5,
    )
    assert after["emissionsGrams"] >= totals["emissions_g"]
    assert totals["zone"] == after["intensity"]["zone"] == "DE"
    g_per_j = after["intensity"]["gramsPerKwh"] * 1.2 / 3.6e6  # the job's PUE, one intensity throughout
    assert abs(totals["emissions_g"] - totals["energy_j"] * g_per_j) <= 1e-9 * totals["emissions_g"]
    names = tuple(g["name"] for g in after["gpus"])
    assert sum(totals["gpus"].values()) == len(names) > 0
    assert hardware_used(totals["gpus"]) == hardware_used(dict(collections.Counter(names)))
    sidecar.stop()
