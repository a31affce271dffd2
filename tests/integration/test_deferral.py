"""Carbon-aware start on the real control plane, against a local server in Electricity Maps' API shape.

A job with spec.carbon.schedule is created suspended in phase Deferred; it starts at the clean hour the
forecast names, at its deadline (with an Event), at once when the provider cannot be read (a Warning) or
when the figure is the static table's (which never defers); an edit while deferred re-decides.
Each test has its own grid zone (the namespace's name), so the fake provider's state is its own.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from hack.controlplane import ControlPlane

from tests.cases.crs import manifest
from tests.cases.fake_electricitymaps import FakeElectricityMaps
from tests.cases.jobs import cluster_spec
from tests.integration.harness import (
    Operator,
    apply,
    metric_value,
    running_pods,
    start_sidecar,
    status,
    train_until_asked_to_stop,
    wait,
)
from tests.integration.objects import job, pods, resolved_env


def deferred(
    name: str, zone: str, schedule: dict[str, Any], provider: str = "electricitymaps"
) -> dict[str, Any]:
    intensity = (
        {"provider": provider, "secretName": "em-key"} if provider != "static" else {"provider": "static"}
    )
    carbon = {"zone": zone, "intensity": intensity, "schedule": schedule}
    return manifest(name, cluster_spec(1, carbon=carbon))


def key_secret(cluster: ControlPlane, namespace: str, fake: FakeElectricityMaps) -> None:
    secret = {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "em-key"},
        "data": {"apiKey": base64.b64encode(fake.api_key.encode()).decode()},
    }  # fmt: skip
    assert apply(cluster, namespace, secret).returncode == 0


def job_suspended(cluster: ControlPlane, namespace: str, name: str) -> bool | None:
    out = cluster.kubectl("get", "job", name, "-n", namespace, "-o", "json", check=False)
    return bool(json.loads(out.stdout)["spec"].get("suspend")) if out.returncode == 0 else None


def events(cluster: ControlPlane, namespace: str) -> str:
    return cluster.kubectl(
        "get", "events", "-n", namespace, "-o", "custom-columns=T:.type,R:.reason,M:.message"
    ).stdout


def condition(st: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == kind), {})


def test_waits_for_the_clean_hour_the_forecast_names_and_shows_the_saving(
    operator: Operator, namespace: str, electricitymaps: FakeElectricityMaps, tmp_path: Path
) -> None:
    cluster, zone = operator.cluster, namespace.upper()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    clean_at = now + dt.timedelta(seconds=25)
    electricitymaps.forecast[zone] = [(now - dt.timedelta(minutes=5), 450.0), (clean_at, 120.0)]
    key_secret(cluster, namespace, electricitymaps)
    job = deferred("clean", zone, {"maxGramsPerKwh": 200, "maxDelay": "1h"})
    assert apply(cluster, namespace, job).returncode == 0
    _deferred_until(cluster, namespace, clean_at)
    _started_at_the_clean_hour(cluster, namespace, clean_at)
    ((pod, uid),) = running_pods(cluster, namespace, "clean", 1)
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "clean", pod, uid)
    trainer = sidecar.client()
    for s in range(1, 6):
        trainer.step(s)
    _saving_shown(operator, namespace)
    _model_card_names_the_zone_and_gpus(cluster, namespace, zone)


def _deferred_until(cluster: ControlPlane, namespace: str, clean_at: dt.datetime) -> None:
    """Deferred to the forecast's clean hour: status, condition, a suspended Job and the kubectl row."""
    st = wait(lambda: (s := status(cluster, namespace, "clean")).get("schedule", {}).get("reason") and s,
              what="a deferral decision")  # fmt: skip
    assert st["phase"] == "Deferred", st
    assert st["schedule"]["reason"] == "ForecastCleaner", st["schedule"]
    assert st["schedule"]["startAfter"] == clean_at.isoformat().replace("+00:00", "Z")
    assert st["schedule"]["plannedGramsPerKwh"] == 450.0
    assert condition(st, "Deferred")["status"] == "True"
    assert job_suspended(cluster, namespace, "clean") is True
    row = cluster.kubectl("get", "ctj", "clean", "-n", namespace).stdout
    assert "Deferred" in row and f"ForecastCleaner until {clean_at:%Y-%m-%dT%H:%M}Z" in row, row


def _started_at_the_clean_hour(cluster: ControlPlane, namespace: str, clean_at: dt.datetime) -> None:
    st = wait(lambda: (s := status(cluster, namespace, "clean")).get("phase") == "Canary" and s,
              timeout=90, what="the start at the clean hour")  # fmt: skip
    sched = st["schedule"]
    started = dt.datetime.fromisoformat(sched["startedAt"].replace("Z", "+00:00"))
    assert clean_at <= started <= clean_at + dt.timedelta(seconds=10), sched
    assert (sched["reason"], sched["startGramsPerKwh"], sched["plannedGramsPerKwh"]) == (
        "GridClean",
        120.0,
        450.0,
    )
    assert 20 <= sched["deferredSeconds"] <= 40
    assert condition(st, "Deferred")["status"] == "False"
    assert job_suspended(cluster, namespace, "clean") is False


def _saving_shown(operator: Operator, namespace: str) -> None:
    """The avoided emissions estimate matches the measured energy once steps stop, in status and metrics."""
    cluster = operator.cluster

    def saving() -> dict[str, Any] | None:
        s = status(cluster, namespace, "clean")
        return (
            s if s.get("energyJoules", 0) > 0 and s["schedule"].get("emissionsAvoidedGramsEstimate") else None
        )

    wait(saving, timeout=60, what="the avoided emissions estimate")

    def settled() -> dict[str, Any] | None:
        """No more steps: the estimate (judgement, live energy) and energyJoules (telemetry writer) agree."""
        s = status(cluster, namespace, "clean")
        expected = s["energyJoules"] * 1.2 * (450 - 120) / 3.6e6
        return s if abs(s["schedule"]["emissionsAvoidedGramsEstimate"] - expected) <= 0.001 else None

    st = wait(settled, timeout=30, what="the estimate for the measured energy")
    assert st["schedule"]["emissionsAvoidedGramsEstimate"] > 0
    text = operator.metrics()
    assert (metric_value(text, "carbontrack_emissions_avoided_grams_estimate", namespace, "clean") or 0) > 0
    assert 20 <= (metric_value(text, "carbontrack_deferred_seconds", namespace, "clean") or 0) <= 40
    assert "StartGridClean" in events(cluster, namespace)


def _model_card_names_the_zone_and_gpus(cluster: ControlPlane, namespace: str, zone: str) -> None:
    """The model-card block of this job, as `carbontrack report` prints it from the cluster."""
    out = subprocess.run(
        [sys.executable, "-m", "carbontrack.cli", "report", "clean", "-n", namespace, "--format",
         "model-card"],
        env={**os.environ, **cluster.env()}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    block = yaml.safe_load(out.stdout)["co2_eq_emissions"]
    assert block["source"] == "carbontrack" and block["geographical_location"] == f"grid zone {zone}"
    gpus = status(cluster, namespace, "clean")["gpus"]
    assert gpus and {g["name"] for g in gpus} == {
        "Simulated GPU"
    }  # the GPU's name, from the sidecar to status
    assert block["hardware_used"] == f"{len(gpus)} x Simulated GPU"
    assert isinstance(block["emissions"], float) and block["emissions"] > 0


def test_starts_at_the_deadline_with_an_event_when_nothing_cleaner_comes(
    operator: Operator, namespace: str, electricitymaps: FakeElectricityMaps
) -> None:
    cluster, zone = operator.cluster, namespace.upper()
    electricitymaps.intensity[zone] = 480.0  # no forecast for this zone: wait on the figure now
    key_secret(cluster, namespace, electricitymaps)
    assert (
        apply(
            cluster, namespace, deferred("late", zone, {"maxGramsPerKwh": 200, "maxDelay": "15s"})
        ).returncode
        == 0
    )
    st = wait(lambda: (s := status(cluster, namespace, "late")).get("schedule", {}).get("reason") and s,
              what="a deferral decision")  # fmt: skip
    assert (st["phase"], st["schedule"]["reason"]) == ("Deferred", "AboveThreshold"), st
    assert "at most until" in st["schedule"]["summary"]
    st = wait(lambda: (s := status(cluster, namespace, "late")).get("phase") == "Canary" and s,
              timeout=60, what="the start at the deadline")  # fmt: skip
    assert st["schedule"]["reason"] == "DeadlineReached"
    assert 15 <= st["schedule"]["deferredSeconds"] <= 25
    assert "StartDeadlineReached" in events(cluster, namespace)
    assert job_suspended(cluster, namespace, "late") is False


def test_an_unreachable_provider_starts_at_once_with_a_warning(
    operator: Operator, namespace: str, electricitymaps: FakeElectricityMaps
) -> None:
    cluster, zone = operator.cluster, namespace.upper()
    electricitymaps.down.add(zone)
    key_secret(cluster, namespace, electricitymaps)
    assert apply(cluster, namespace, deferred("blind", zone, {"maxDelay": "24h"})).returncode == 0
    st = wait(lambda: (s := status(cluster, namespace, "blind")).get("phase") == "Canary" and s,
              timeout=60, what="the start")  # fmt: skip
    assert st["schedule"]["reason"] == "ProviderUnavailable"
    assert "fallback" in st["schedule"]["message"]
    assert "Warning" in events(cluster, namespace) and "StartProviderUnavailable" in events(
        cluster, namespace
    )


def test_the_static_table_never_defers_and_says_so(operator: Operator, namespace: str) -> None:
    cluster = operator.cluster
    assert (
        apply(cluster, namespace, deferred("static", "DE", {"maxDelay": "24h"}, provider="static")).returncode
        == 0
    )
    st = wait(lambda: (s := status(cluster, namespace, "static")).get("phase") == "Canary" and s,
              timeout=60, what="the start")  # fmt: skip
    assert st["schedule"]["reason"] == "StaticIntensity"
    assert condition(st, "Deferred")["reason"] == "StaticIntensity"
    assert "never defers" in condition(st, "Deferred")["message"]


def test_an_edit_while_deferred_redecides(
    operator: Operator, namespace: str, electricitymaps: FakeElectricityMaps
) -> None:
    cluster, zone = operator.cluster, namespace.upper()
    electricitymaps.intensity[zone] = 300.0
    key_secret(cluster, namespace, electricitymaps)
    assert (
        apply(
            cluster, namespace, deferred("edit", zone, {"maxGramsPerKwh": 200, "maxDelay": "2h"})
        ).returncode
        == 0
    )
    st = wait(lambda: (s := status(cluster, namespace, "edit")).get("schedule", {}).get("reason") and s,
              what="a deferral decision")  # fmt: skip
    assert (st["phase"], st["schedule"]["reason"]) == ("Deferred", "AboveThreshold")
    since = st["schedule"]["deferredSince"]
    patch = {"spec": {"carbon": {"schedule": {"maxGramsPerKwh": 350}}}}
    cluster.kubectl("patch", "ctj", "edit", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    st = wait(lambda: (s := status(cluster, namespace, "edit")).get("phase") == "Canary" and s,
              timeout=60, what="the start after the edit")  # fmt: skip
    assert st["schedule"]["reason"] == "GridClean"
    assert st["schedule"]["deferredSince"] == since  # the deferral's start is kept across the edit
    assert job_suspended(cluster, namespace, "edit") is False


def test_a_dirty_grid_pauses_at_a_checkpoint_and_resumes_from_it_when_clean(
    operator: Operator, namespace: str, electricitymaps: FakeElectricityMaps, tmp_path: Path
) -> None:
    """pauseAbove goes through the checkpointing halt: the trainers are asked first, the Job is suspended
    only after the checkpoint, and the resume at the clean hour starts the new pod from it."""
    cluster, zone = operator.cluster, namespace.upper()
    electricitymaps.intensity[zone] = 100.0
    key_secret(cluster, namespace, electricitymaps)
    pause = {"gramsPerKwh": 300, "after": "1s", "maxPauses": 1}
    obj = deferred("dirty", zone, {"maxGramsPerKwh": 200, "maxDelay": "1h", "pauseAbove": pause})
    obj["spec"]["halt"] = {"gracePeriodSeconds": 120}
    assert apply(cluster, namespace, obj).returncode == 0
    wait(lambda: status(cluster, namespace, "dirty").get("phase") == "Canary", what="a clean start")
    ((pod, uid),) = running_pods(cluster, namespace, "dirty", 1)
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "dirty", pod, uid)
    trainer = sidecar.client()
    for s in range(1, 13):
        trainer.step(s)
    trainer.report_checkpoint(12, "/ckpt/step-12")  # a periodic save: this trainer speaks the protocol
    wait(lambda: status(cluster, namespace, "dirty").get("phase") == "Running", what="promoted to Running")

    electricitymaps.intensity[zone] = 500.0  # the grid turns dirty: ask first, stop after the checkpoint
    step = train_until_asked_to_stop(trainer, 12)
    st = status(cluster, namespace, "dirty")
    assert st["phase"] == "Running" and "suspendedAt" not in st["halt"], st
    assert job(cluster, namespace, "dirty")["spec"]["suspend"] is False  # still saving: not stopped yet
    trainer.report_checkpoint(step, f"/ckpt/step-{step}")
    st = wait(lambda: (s := status(cluster, namespace, "dirty")).get("phase") == "Deferred" and s,
              what="paused after the checkpoint")  # fmt: skip
    assert (st["schedule"]["reason"], st["schedule"]["pauses"]) == ("DirtyGrid", 1), st["schedule"]
    assert st["halt"]["outcome"] == "Checkpointed", st["halt"]
    assert job(cluster, namespace, "dirty")["spec"]["suspend"] is True
    assert "PausedDirtyGrid" in events(cluster, namespace)
    wait(lambda: not pods(cluster, namespace, "dirty"), what="the pods deleted by the pause")
    sidecar.stop()

    electricitymaps.intensity[zone] = 100.0  # clean again: resume from the checkpoint
    _resumed_from(operator, namespace, uid, step, tmp_path)


def _resumed_from(operator: Operator, namespace: str, uid: str, step: int, tmp_path: Path) -> None:
    """Running again with a new pod that starts from the checkpoint, and no stop request for it."""
    cluster = operator.cluster
    st = wait(lambda: (s := status(cluster, namespace, "dirty")).get("phase") == "Running" and s,
              timeout=60, what="resumed when clean")  # fmt: skip
    assert "halt" not in st
    template = job(cluster, namespace, "dirty")["spec"]["template"]
    assert template["metadata"]["annotations"]["carbontrack.io/resume-from"] == f"{step} /ckpt/step-{step}"
    ((pod2, uid2),) = running_pods(cluster, namespace, "dirty", 1)
    assert uid2 != uid
    assert resolved_env(pods(cluster, namespace, "dirty")["0"])["CARBONTRACK_RESUME_FROM"] == (
        f"{step} /ckpt/step-{step}"
    )
    sidecar2 = start_sidecar(tmp_path, operator, cluster, namespace, "dirty", pod2, uid2)
    assert sidecar2.client().should_stop() is False  # the pause's stop request is over
    sidecar2.stop()


def test_a_running_job_pauses_while_the_grid_is_dirty_and_resumes_at_most_max_pauses_times(
    operator: Operator, namespace: str, electricitymaps: FakeElectricityMaps, tmp_path: Path
) -> None:
    cluster, zone = operator.cluster, namespace.upper()
    electricitymaps.intensity[zone] = 100.0
    key_secret(cluster, namespace, electricitymaps)
    pause = {"gramsPerKwh": 300, "after": "2s", "maxPauses": 1}
    job = deferred("pausing", zone, {"maxGramsPerKwh": 200, "maxDelay": "1h", "pauseAbove": pause})
    assert apply(cluster, namespace, job).returncode == 0
    wait(lambda: status(cluster, namespace, "pausing").get("phase") == "Canary", what="phase Canary")
    ((pod, uid),) = running_pods(cluster, namespace, "pausing", 1)
    sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "pausing", pod, uid)
    trainer = sidecar.client()
    for s in range(1, 13):
        trainer.step(s)
    wait(lambda: status(cluster, namespace, "pausing").get("phase") == "Running", timeout=60, what="Running")
    sidecar.stop()

    electricitymaps.intensity[zone] = 400.0
    st = wait(lambda: (s := status(cluster, namespace, "pausing")).get("phase") == "Deferred" and s,
              timeout=30, what="the pause")  # fmt: skip
    sched = st["schedule"]
    assert (sched["reason"], sched["pauses"], sched["pausedFrom"]) == ("DirtyGrid", 1, "Running"), sched
    assert job_suspended(cluster, namespace, "pausing") is True
    assert "PausedDirtyGrid" in events(cluster, namespace)

    electricitymaps.intensity[zone] = 250.0  # under the pause limit (300), though over maxGramsPerKwh (200)
    st = wait(lambda: (s := status(cluster, namespace, "pausing")).get("phase") == "Running" and s,
              timeout=30, what="the resume")  # fmt: skip
    assert st["schedule"]["pausedSeconds"] > 0 and "pausedFrom" not in st["schedule"]
    assert job_suspended(cluster, namespace, "pausing") is False

    electricitymaps.intensity[zone] = 400.0  # dirty again: one pause was allowed, it was taken
    wait(lambda: status(cluster, namespace, "pausing").get("schedule", {}).get("aboveSince"), timeout=20,
         what="the dirty streak timed")  # fmt: skip
    time.sleep(5)  # well past `after`
    st = status(cluster, namespace, "pausing")
    assert (st["phase"], st["schedule"]["pauses"]) == ("Running", 1), st["schedule"]
