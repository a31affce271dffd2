"""The one-command demo: `make demo` (or `python tests/cluster/demo.py`).

Starts the local control plane, installs the CRD, runs the operator, creates a gated
CarbonTrackedJob, and for every pod the Job gets starts the real sidecar (simulated GPUs, with a
token bound to that pod) and a small simulated trainer that steps ten times a second and reports
its eval accuracy and DP-SGD parameters. It prints `kubectl get ctj` as the job goes
Canary -> Promoting -> Running, lets the trainers finish (Succeeded), and cleans everything up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.cluster.controlplane import ControlPlane
from tests.integration.harness import Operator, pod_token, status
from tests.integration.sidecars import Sidecar

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE, NAME = "demo", "llama-lora"
JOB = {
    "apiVersion": "carbontrack.io/v1alpha1",
    "kind": "CarbonTrackedJob",
    "metadata": {"name": NAME},
    "spec": {
        "replicas": 4,
        "totalSteps": 600,
        "canary": {"replicas": 1, "minSteps": 30, "stages": [50, 100]},
        "carbon": {"pue": 1.2, "budgetKg": 5},  # zone from the kwok nodes' region (eu-central-1 -> DE)
        "gates": {
            "context": "production",
            "quality": {"metric": "eval_accuracy", "minScore": 0.8},
            "tests": {"passRate": 0.99, "coverage": 0.93, "security": {"critical": 0, "high": 0}},
            "privacy": {"epsilon": 8, "delta": 1e-5},
        },
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {"name": "trainer", "image": "ghcr.io/example/trainer:1.0",
                     "resources": {"limits": {"nvidia.com/gpu": 2}}}
                ],
            }
        },
    },
}  # fmt: skip


def trainer(sidecar: Sidecar, stop: threading.Event, step: list[int]) -> None:
    """A simulated trainer: ten steps a second, an evaluation and the DP parameters every 10 steps."""
    client = sidecar.client()
    while not stop.is_set():
        step[0] += 1
        client.step(step[0])
        if step[0] % 10 == 0:
            client.report_eval({"eval_accuracy": 0.85 + 0.0001 * step[0]})
            client.report_dp(noise_multiplier=1.1, sample_rate=0.001, delta=1e-5)
        time.sleep(0.1)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="carbontrack-demo-"))
    cluster = ControlPlane(work / "cluster")
    operator: Operator | None = None
    sidecars: dict[str, Sidecar] = {}
    stop = threading.Event()
    step = [0]  # one global step counter: the replicas of a data-parallel job step together
    try:
        cluster.up(nodes=2)
        cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cluster.wait_established("crd/carbontrackedjobs.carbontrack.io")
        operator = Operator(cluster, work / "operator.log")
        operator.start()
        cluster.kubectl("create", "namespace", NAMESPACE)
        cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(JOB))
        print(f"$ kubectl apply -f {NAME}.yaml   (4 workers, canary 1, stages 50% and 100%, every gate)\n")
        deadline = time.monotonic() + 240
        last_phase = None
        while time.monotonic() < deadline:
            pods = json.loads(cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "json").stdout)["items"]
            for p in pods:
                name, uid = p["metadata"]["name"], p["metadata"]["uid"]
                if p.get("status", {}).get("phase") == "Running" and name not in sidecars:
                    token = pod_token(cluster, NAMESPACE, name, uid)
                    sidecars[name] = Sidecar(
                        work, operator.url, token=token, CARBONTRACK_JOB_NAME=NAME, POD_NAMESPACE=NAMESPACE,
                        POD_NAME=name, POD_UID=uid, CARBONTRACK_SIM_TRACE="bursty:7",
                        CARBONTRACK_INTERVAL_S="1",
                    )  # fmt: skip
                    if len(sidecars) == 1:
                        threading.Thread(
                            target=trainer, args=(sidecars[name], stop, step), daemon=True
                        ).start()
            phase = status(cluster, NAMESPACE, NAME).get("phase")
            if phase != last_phase:
                print(cluster.kubectl("get", "ctj", "-n", NAMESPACE).stdout)
                last_phase = phase
            if phase == "Running" and step[0] >= 120:
                break
            time.sleep(1)
        stop.set()
        for name in list(sidecars):
            cluster.kubectl("annotate", "pod", name, "-n", NAMESPACE, "carbontrack.io/test-exit=0")
        for _ in range(60):
            if status(cluster, NAMESPACE, NAME).get("phase") == "Succeeded":
                break
            time.sleep(1)
        print(cluster.kubectl("get", "ctj", "-n", NAMESPACE).stdout)
        columns = "custom-columns=REASON:.reason,MESSAGE:.message"
        events = cluster.kubectl(
            "get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp", "-o", columns,
            "--field-selector", f"involvedObject.name={NAME}",
        )  # fmt: skip
        print(events.stdout)
        final = status(cluster, NAMESPACE, NAME)
        intensity = final.get("intensity", {})
        print(
            f"energy {final.get('energyJoules', 0):.0f} J,"
            f" emissions {final.get('emissionsGrams', 0):.2f} g CO2e"
            f" at {intensity.get('gramsPerKwh')} g/kWh ({intensity.get('source')})"
        )
        card = subprocess.run(
            [sys.executable, "-m", "carbontrack.cli", "report", NAME, "-n", NAMESPACE,
             "--format", "model-card"],
            env={**os.environ, **cluster.env()}, capture_output=True, text=True, check=False,
        )  # fmt: skip
        print(f"$ carbontrack report {NAME} --format model-card   (for the model card's metadata)")
        print(card.stdout or card.stderr)
        return 0 if final.get("phase") == "Succeeded" else 1
    finally:
        stop.set()
        for sc in sidecars.values():
            sc.stop()
        if operator is not None:
            operator.stop()
        cluster.down()


if __name__ == "__main__":
    raise SystemExit(main())
