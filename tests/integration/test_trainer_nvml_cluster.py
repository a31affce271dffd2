"""Trainer-side NVML on the local control plane: kwok pods of a CarbonTrackedJob, the real sidecar
process with no GPU env (trainer mode) and a trainer process whose client reads the fake
libnvidia-ml.so.1. Status reports the trainer's exact per-step energy, and MIG board energy is
shown, announced and judged unmeasured in production.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from carbontrack.trainer.sampler import READ_WINDOW_NS
from tests.fakenvml import FakeGpu, FakeGpus, build, fake_env
from tests.integration.harness import (
    Operator,
    apply,
    ctj,
    pod_token,
    running_pods,
    status,
    wait,
    wait_for_energy,
)
from tests.integration.nvml_node import NODE, node_gpus, start_trainer, trainer_output
from tests.integration.objects import events
from tests.integration.sidecars import Sidecar

FAKE_NAME = FakeGpu("").name


def sidecar_for(tmp: Path, op: Operator, ns: str, job: str, pod: str, uid: str, **env: str) -> Sidecar:
    token = pod_token(op.cluster, ns, pod, uid)
    return Sidecar(
        tmp, op.url, token=token, CARBONTRACK_ENERGY_BACKEND="trainer", CARBONTRACK_JOB_NAME=job,
        POD_NAMESPACE=ns, POD_NAME=pod, POD_UID=uid, **env,
    )  # fmt: skip


def test_trainer_side_energy_reaches_status_exactly_and_mig_is_unmeasured_in_production(
    operator: Operator, namespace: str, tmp_path: Path
) -> None:
    cluster = operator.cluster
    lib = build()
    gpus = node_gpus(**{"6": {"mig": True, "mig_devices": ["MIG-6a"]}})
    cfg = FakeGpus(gpus).write(tmp_path / "node.conf")
    assert apply(cluster, namespace, _two_gpu_production_job("cdi")).returncode == 0
    pods = sorted(running_pods(cluster, namespace, "cdi", 2))
    job = json.loads(cluster.kubectl("get", "job", "cdi", "-n", namespace, "-o", "json").stdout)
    sidecar_env = {e["name"] for e in job["spec"]["template"]["spec"]["initContainers"][0]["env"]}
    assert "NVIDIA_VISIBLE_DEVICES" not in sidecar_env
    (pod_a, uid_a), (pod_b, uid_b) = pods
    a = sidecar_for(tmp_path, operator, namespace, "cdi", pod_a, uid_a)
    b = sidecar_for(tmp_path, operator, namespace, "cdi", pod_b, uid_b)
    # pod A: a CDI trainer given GPUs 2 and 5 of the node (375 W); pod B: GPU 6 in MIG mode (250 W)
    cdi = {"NVIDIA_VISIBLE_DEVICES": "void"}
    trainers = [
        start_trainer(a, {**fake_env(lib, cfg, visible="2,5"), **cdi}, steps=12),
        start_trainer(b, {**fake_env(lib, cfg, visible="6"), **cdi}, steps=12),
    ]  # together: the MIG pod's energy is there when the gates are judged at minSteps (10)
    out_a, out_b = (trainer_output(t) for t in trainers)
    finals = [s.final_energy(s.stop()) for s in (a, b)]
    wait_for_energy(cluster, namespace, "cdi", sum(finals))
    # J/step sums the pods that are still running, or all once all are final: wait for both final batches
    st = wait(
        lambda: (
            (s := status(cluster, namespace, "cdi"))
            and all(x["final"] for x in s["telemetry"]["sources"])
            and s
        ),
        what="both sidecars' final batches in status",
    )
    assert st["steps"] == 12
    _gpus_named_and_mig_shared(st, pod_a, pod_b, finals[1])
    # Exact per step: each pod's records telescope to its power x (its last marker - its GPUs' first
    # reading), so status J/step x 12 (the sum over pods: each works on every global step) must fall
    # between those bounds, to the counters' mJ and the readings' 50 us windows.
    (low_a, high_a), (low_b, high_b) = span_j(out_a, 375.0, 2), span_j(out_b, 250.0, 1)
    assert low_a + low_b <= st["telemetry"]["joulesPerStep"] * 12 <= high_a + high_b, (st["telemetry"], out_a)
    _mig_unmeasured_in_production(operator, namespace, pod_b)


def _two_gpu_production_job(name: str) -> dict[str, Any]:
    """Two pods of two GPUs each (a batch may list no more than its pod holds), production gates and a
    budget far above what the test burns."""
    obj: dict[str, Any] = ctj(name, 2)
    obj["spec"]["carbon"]["budgetKg"] = 1000
    obj["spec"]["template"] = copy.deepcopy(obj["spec"]["template"])
    obj["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": 2}}
    obj["spec"]["gates"] = {"context": "production"}
    return obj


def _gpus_named_and_mig_shared(st: dict[str, Any], pod_a: str, pod_b: str, mig_energy: float) -> None:
    """status.gpus carries the name NVML gives (it feeds the model card's hardware_used), MIG first;
    the MIG pod's board energy is shared energy, and the bound lies above the figure."""
    assert st["gpus"] == [
        {"uuid": NODE[6], "index": 0, "pod": pod_b, "sharing": "mig", "method": "energy-counter",
         "foreignProcesses": 0, "name": FAKE_NAME},
        {"uuid": NODE[2], "index": 0, "pod": pod_a, "sharing": "exclusive", "method": "energy-counter",
         "foreignProcesses": 0, "name": FAKE_NAME},
        {"uuid": NODE[5], "index": 1, "pod": pod_a, "sharing": "exclusive", "method": "energy-counter",
         "foreignProcesses": 0, "name": FAKE_NAME},
    ]  # fmt: skip
    assert st["sharedGpuEnergyJoules"] == pytest.approx(mig_energy, abs=1e-6)
    assert st["energyJoulesUpperBound"] > st["energyJoules"]
    source_a = next(s for s in st["telemetry"]["sources"] if s["pod"] == pod_a)
    assert (
        source_a["gpuUuids"] == [NODE[2], NODE[5]]
        and source_a["methodReason"] == "the trainer's NVML samples"
    )


def span_j(out: dict[str, Any], watts: float, gpus: int) -> tuple[float, float]:
    """The bounds of a pod's energy over its steps: its power x (its last marker - its GPUs' first
    reading), before and after the marker's reading, with the readings' windows and the counters' mJ."""
    before, after = out["last_step_ns"]
    slack = watts * 2 * READ_WINDOW_NS / 1e9 + 0.002 * gpus
    return watts * (before - out["first_ns"]) / 1e9 - slack, watts * (after - out["first_ns"]) / 1e9 + slack


def _mig_unmeasured_in_production(operator: Operator, namespace: str, pod_b: str) -> None:
    cluster = operator.cluster
    gate = wait(
        lambda: next(
            (g for g in status(cluster, namespace, "cdi").get("gates", []) if g["name"] == "carbon.budget"),
            None,
        ),
        what="the carbon gate judged",
    )
    assert not gate["passed"] and gate["message"].startswith("unmeasured: ")
    said = wait(
        lambda: (e := events(cluster, namespace)) and "MigGpuEnergy" in e and e, what="MigGpuEnergy Event"
    )
    assert f"GPU {NODE[6]} of pod {pod_b} is in MIG mode" in said
