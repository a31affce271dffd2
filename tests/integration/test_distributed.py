"""Distributed wiring on the real control plane: the headless Service, the torch env in the pods the
Job controller creates, and worker 0 kept across a scale-up (a watch sees its uid never change)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from hack.binaries import BIN
from hack.controlplane import ControlPlane

from tests.cases.jobs import elastic
from tests.integration.harness import Operator, apply, running_pods, start_sidecar, status, wait
from tests.integration.objects import pods, resolved_env


def watch_pods(cluster: ControlPlane, namespace: str, job: str) -> subprocess.Popen[str]:
    """`kubectl get pods --watch --output-watch-events -o json`: a stream of {type, object} documents."""
    args = [
        "get", "pods", "-n", namespace, "-l", f"carbontrack.io/job={job}", "--watch", "--output-watch-events",
        "-o", "json",
    ]  # fmt: skip
    return subprocess.Popen(
        [str(BIN / "kubectl"), *args], stdout=subprocess.PIPE, text=True, env={**os.environ, **cluster.env()}
    )


def watched(out: str) -> list[tuple[str, str, str]]:
    """(event type, uid, completion index) of each watch event."""
    decoder, events, at = json.JSONDecoder(), [], 0
    while (at := out.find("{", at)) >= 0:
        doc, at = decoder.raw_decode(out, at)
        meta = doc["object"]["metadata"]
        index = (meta.get("annotations") or {}).get("batch.kubernetes.io/job-completion-index", "")
        events.append((doc["type"], meta["uid"], index))
    return events


def test_workers_get_a_headless_service_the_torch_env_and_worker_zero_survives_promotion(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cluster = operator.cluster
    assert apply(cluster, namespace, elastic("ddp")).returncode == 0
    wait(lambda: status(cluster, namespace, "ddp").get("phase") == "Canary", what="phase Canary")
    svc = json.loads(cluster.kubectl("get", "service", "ddp", "-n", namespace, "-o", "json").stdout)
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"carbontrack.io/job": "ddp"}
    assert svc["metadata"]["ownerReferences"][0]["kind"] == "CarbonTrackedJob"
    ((pod0, uid0),) = running_pods(cluster, namespace, "ddp", 1)
    first = pods(cluster, namespace, "ddp")["0"]
    assert (first["spec"]["hostname"], first["spec"]["subdomain"]) == ("ddp-0", "ddp")
    env = resolved_env(first)
    names = ("PET_NNODES", "PET_RDZV_ENDPOINT", "PET_NODE_RANK", "RANK", "WORLD_SIZE")
    assert {k: env[k] for k in names} == {
        "PET_NNODES": "1:2", "PET_RDZV_ENDPOINT": "ddp-0.ddp:29400", "PET_NODE_RANK": "0", "RANK": "0",
        "WORLD_SIZE": "1",
    }  # fmt: skip
    assert (env["MASTER_ADDR"], env["MASTER_PORT"], env["CARBONTRACK_RESUME_FROM"]) == (
        "ddp-0.ddp",
        "29500",
        "",
    )

    watcher = watch_pods(cluster, namespace, "ddp")
    try:
        sidecar = start_sidecar(tmp_path, operator, cluster, namespace, "ddp", pod0, uid0)
        trainer = sidecar.client()
        for s in range(1, 13):
            trainer.step(s)
        wait(lambda: status(cluster, namespace, "ddp").get("phase") == "Running", what="phase Running")
        running_pods(cluster, namespace, "ddp", 2)
        sidecar.stop()
    finally:
        watcher.terminate()
        out, _ = watcher.communicate(timeout=10)
    events = watched(out)
    zero = [e for e in events if e[2] == "0"]
    assert zero and {e[1] for e in zero} == {uid0}, events  # one pod 0, never replaced
    assert not any(e[0] == "DELETED" for e in zero), events
    assert any(e[2] == "1" for e in events), events  # the watch saw the scale-up's new worker
    second = pods(cluster, namespace, "ddp")["1"]
    assert second["metadata"]["uid"] != uid0 and second["spec"]["hostname"] == "ddp-1"
    env1 = resolved_env(second)
    # the template is the canary's: WORLD_SIZE 1 for the new worker too (torchrun computes the real one)
    assert (env1["RANK"], env1["PET_NODE_RANK"], env1["WORLD_SIZE"]) == ("1", "1", "1")
