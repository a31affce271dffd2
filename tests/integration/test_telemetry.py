"""The operator on the real control plane: Jobs on kwok, real sidecars with pod-bound tokens, exact status.

The operator runs as a subprocess (`carbontrack operator`) against the test apiserver. For a pod of a
CarbonTrackedJob, the test starts the real sidecar process (simulated GPUs) with a token the
apiserver bound to that very pod (TokenRequest), as the projected volume would hold in a real pod.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from hack.controlplane import ControlPlane

from carbontrack.core.accounting.emissions import emissions_g
from tests.integration.harness import (
    DE_G_PER_KWH,
    PUE,
    Operator,
    apply,
    ctj,
    metric_value,
    pod_token,
    post_batch,
    published_ca,
    running_pods,
    start_sidecar,
    status,
    step_all,
    wait,
    wait_for_energy,
)


def test_status_is_exact_across_an_operator_kill(operator: Operator, namespace: str, tmp_path: Path) -> None:
    cluster = operator.cluster
    assert apply(cluster, namespace, ctj("llama", 2)).returncode == 0
    _job_owned_with_a_native_sidecar(cluster, namespace)
    pods = running_pods(cluster, namespace, "llama", 2)
    sidecars = [start_sidecar(tmp_path, operator, cluster, namespace, "llama", p, u) for p, u in pods]
    trainers = [s.client() for s in sidecars]
    step_all(trainers, 1, 20)
    _row_shows_energy_and_emissions(cluster, namespace)
    first = float(status(cluster, namespace, "llama")["energyJoules"])

    operator.kill()  # SIGKILL: no final status flush; the sidecars keep buffering
    step_all(trainers, 21, 40)
    operator.start()
    finals = [s.final_energy(s.stop()) for s in sidecars]
    expected_j = sum(finals)
    expected_g = emissions_g(expected_j, PUE, DE_G_PER_KWH)
    st = wait_for_energy(cluster, namespace, "llama", expected_j)
    assert expected_j > first > 0
    assert st["emissionsGrams"] == pytest.approx(expected_g, rel=1e-9)
    assert st["steps"] == 40
    assert st["intensity"] == {"gramsPerKwh": DE_G_PER_KWH, "zone": "DE", "source": "static:ember-2023"}
    assert len(st["telemetry"]["sources"]) == 2 and all(s["final"] for s in st["telemetry"]["sources"])
    _series_are_the_status_totals(operator, namespace, st)


def _job_owned_with_a_native_sidecar(cluster: ControlPlane, namespace: str) -> None:
    get_job = ("get", "job", "llama", "-n", namespace, "-o", "json")
    wait(lambda: cluster.kubectl(*get_job, check=False).returncode == 0, what="the Job created")
    job = json.loads(cluster.kubectl(*get_job).stdout)
    init = job["spec"]["template"]["spec"]["initContainers"][0]
    assert init["name"] == "carbontrack-sidecar" and init["restartPolicy"] == "Always"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CarbonTrackedJob"


def _row_shows_energy_and_emissions(cluster: ControlPlane, namespace: str) -> None:
    """kubectl get ctj shows energy and emissions growing while the sidecars run."""
    row = wait(
        lambda: (
            (r := cluster.kubectl("get", "ctj", "llama", "-n", namespace, "--no-headers").stdout.split())
            and int(r[3]) == 20
            and r
        ),
        what="STEPS column at 20",
    )
    assert float(row[4]) > 0 and float(row[5]) > 0  # kWh and kgCO2e


def _series_are_the_status_totals(operator: Operator, namespace: str, st: dict[str, Any]) -> None:
    """The totals Prometheus sees after the restart are the status totals: no reset, no double count;
    and again after a restart with no telemetry at all: the series come back from status alone."""
    metrics = operator.metrics()
    energy = metric_value(metrics, "carbontrack_gpu_energy_joules_total", namespace, "llama")
    grams = metric_value(metrics, "carbontrack_emissions_grams_total", namespace, "llama")
    assert energy == pytest.approx(st["energyJoules"], abs=1e-6)
    assert grams == pytest.approx(st["emissionsGrams"], rel=1e-12)
    operator.kill()
    operator.start()
    metrics = wait(
        lambda: (m := operator.metrics()) and "carbontrack_gpu_energy_joules_total{" in m and m,
        what="the job's series after a restart",
    )
    assert metric_value(metrics, "carbontrack_gpu_energy_joules_total", namespace, "llama") == pytest.approx(
        st["energyJoules"], abs=1e-6
    )
    assert metric_value(metrics, "carbontrack_emissions_grams_total", namespace, "llama") == pytest.approx(
        st["emissionsGrams"], rel=1e-12
    )


def test_status_patches_are_rate_limited(operator: Operator, namespace: str, tmp_path: Path) -> None:
    cluster = operator.cluster
    assert apply(cluster, namespace, ctj("rate", 1)).returncode == 0
    ((pod, uid),) = running_pods(cluster, namespace, "rate", 1)
    sc = start_sidecar(tmp_path, operator, cluster, namespace, "rate", pod, uid)
    trainer = sc.client()
    start = time.monotonic()
    for step in range(1, 61):  # 6 s of 10 steps/s, batches every 0.2 s
        trainer.step(step)
        time.sleep(0.1)
    sc.stop()
    elapsed = time.monotonic() - start
    time.sleep(1.5)
    labels = f'job_name="rate",namespace="{namespace}"'
    line = next(
        ln for ln in operator.metrics().splitlines()
        if ln.startswith("carbontrack_status_patches_total") and labels in ln
    )  # fmt: skip
    patches = float(line.split()[-1])
    batches = next(
        float(ln.split()[-1]) for ln in operator.metrics().splitlines()
        if ln.startswith("carbontrack_telemetry_batches_total") and labels in ln
    )  # fmt: skip
    assert batches >= 25  # ~5 batches a second arrived ...
    assert (
        patches <= elapsed / 1.0 + 3
    )  # ... but at most one status patch a second (interval 1 s), plus the tail


def test_a_misspelt_zone_is_a_warning_and_a_condition_naming_the_figure_used(
    operator: Operator, namespace: str
) -> None:
    cluster = operator.cluster
    job = ctj("typo", 1)
    job["spec"]["carbon"]["zone"] = "DE-TYPO"
    assert apply(cluster, namespace, job).returncode == 0
    ((pod, uid),) = running_pods(cluster, namespace, "typo", 1)
    code, text = post_batch(operator.url, pod_token(cluster, namespace, pod, uid), namespace, "typo", pod)
    assert code == 200, text

    def zone_condition() -> dict[str, Any] | None:
        conditions = status(cluster, namespace, "typo").get("conditions") or []
        return next((c for c in conditions if c["type"] == "ZoneResolved"), None)

    cond = wait(zone_condition, what="the ZoneResolved condition")
    assert (cond["status"], cond["reason"]) == ("False", "UnknownZone")
    assert "'DE-TYPO' is in no intensity table" in cond["message"] and "481 gCO2e/kWh" in cond["message"]
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "-o", "custom-columns=T:.type,R:.reason"
    ).stdout
    assert re.search(r"Warning\s+UnknownZone", events), events
    # fixed by the owner: the condition turns True
    cluster.kubectl("patch", "ctj", "typo", "-n", namespace, "--type=merge",
                    "-p", json.dumps({"spec": {"carbon": {"zone": "DE"}}}))  # fmt: skip
    code, text = post_batch(
        operator.url, pod_token(cluster, namespace, pod, uid), namespace, "typo", pod, seq=2
    )
    assert code == 200, text
    wait(lambda: (c := zone_condition()) and c["status"] == "True", what="ZoneResolved=True after the fix")


def _the_operators_ca_published(cluster: ControlPlane, namespace: str, tmp_path: Path) -> Path:
    """The job's pods mount the CA the operator published in their namespace, and it is the CA of the
    operator's serving certificate."""
    import base64

    job = json.loads(cluster.kubectl("get", "job", "tls", "-n", namespace, "-o", "json").stdout)
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["carbontrack-ca"]["configMap"]["name"] == "carbontrack-ca"
    secret = cluster.kubectl("get", "secret", "carbontrack-tls", "-n", "carbontrack-system", "-o",
                             "jsonpath={.data.ca\\.crt}").stdout  # fmt: skip
    ca_file = published_ca(cluster, namespace, tmp_path)
    assert ca_file.read_bytes() == base64.b64decode(secret)
    return ca_file


def test_telemetry_is_tls_verified_by_name_and_survives_rotation(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    """HTTPS only; the sidecar trusts the CA the operator published in the job's namespace and checks the
    server's name; the serving certificate rotates every ~9 s here and no batch is lost to it."""
    import http.client

    assert operator.tls and operator.url.startswith("https://localhost:")
    cluster = operator.cluster
    assert apply(cluster, namespace, ctj("tls", 1)).returncode == 0
    ((pod, uid),) = running_pods(cluster, namespace, "tls", 1)
    ca_file = _the_operators_ca_published(cluster, namespace, tmp_path)
    with pytest.raises((OSError, http.client.HTTPException)):  # plain HTTP is not served
        urllib.request.urlopen(f"http://127.0.0.1:{operator.port}/healthz", timeout=3)
    trusting = ssl.create_default_context(cafile=str(ca_file))

    def serving_serial(name: str = "localhost") -> int:
        with (
            socket.create_connection(("127.0.0.1", operator.port)) as raw,
            trusting.wrap_socket(raw, server_hostname=name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    with pytest.raises(ssl.SSLCertVerificationError):  # another name than the one in the URL
        serving_serial("carbontrack.elsewhere.svc")

    sc = start_sidecar(tmp_path, operator, cluster, namespace, "tls", pod, uid)
    assert sc.env["CARBONTRACK_CA_FILE"] == str(ca_file)
    trainer = sc.client()
    serials = {serving_serial()}
    deadline = time.monotonic() + 25
    step = 0
    while time.monotonic() < deadline or len(serials) < 3:
        step += 1
        trainer.step(step)
        serials.add(serving_serial())
        time.sleep(0.2)
        assert time.monotonic() < deadline + 30, f"only {len(serials)} certificates seen"
    log = sc.stop()
    assert "not delivered" not in log and "refused" not in log, log[-2000:]
    wait_for_energy(cluster, namespace, "tls", sc.final_energy(log))
    assert len(serials) >= 3  # two rotations at least, while batches flowed every 0.2 s
