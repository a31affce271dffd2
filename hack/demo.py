"""The one-command demo: `make demo` (or `python hack/demo.py`).

Starts the local control plane, installs the CRD, runs the operator, creates a gated
CarbonTrackedJob, and for every pod the Job gets starts the real sidecar (simulated GPUs, with a
token bound to that pod) and a small simulated trainer that steps ten times a second and reports
its eval accuracy and DP-SGD parameters. It prints `kubectl get ctj` as the job goes
Canary -> Promoting -> Running, lets the trainers finish (Succeeded), and cleans everything up.

Each pod ends as the kubelet ends a pod with a native sidecar: its sidecar stops with its final flush,
then the pod completes. The finished job's totals are then final, and the demo checks that `kubectl get
ctj`, the summary line and the model card show the same figures (it fails loudly if they do not).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

if not __package__:  # run as `python hack/demo.py`: import hack/ and tests/ from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.cases.crs import manifest
from tests.cases.jobs import production_gates
from tests.integration.harness import Operator, pod_token, status
from tests.integration.sidecars import Sidecar, exit_pods

from hack.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE, NAME = "demo", "llama-lora"
JOB = manifest(
    NAME,
    {
        "replicas": 4,
        "totalSteps": 600,
        "canary": {"replicas": 1, "minSteps": 30, "stages": [50, 100]},
        "carbon": {"pue": 1.2, "budgetKg": 5},  # zone from the kwok nodes' region (eu-central-1 -> DE)
        "gates": production_gates(),
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
)  # fmt: skip


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


class Demo:
    """The control plane, the operator, and a sidecar per running pod of the job."""

    def __init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="carbontrack-demo-"))
        self.cluster = ControlPlane(self.work / "cluster")
        self.operator = Operator(self.cluster, self.work / "operator.log")
        self.sidecars: dict[str, Sidecar] = {}
        self.stop = threading.Event()
        self.step = [0]  # one global step counter: the replicas of a data-parallel job step together

    def start(self) -> None:
        """The control plane with the CRD, the operator, and the job applied."""
        cluster = self.cluster
        cluster.up(nodes=2)
        cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cluster.wait_established("crd/carbontrackedjobs.carbontrack.io")
        self.operator.start()
        cluster.kubectl("create", "namespace", NAMESPACE)
        cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(JOB))
        print(f"$ kubectl apply -f {NAME}.yaml   (4 workers, canary 1, stages 50% and 100%, every gate)\n")

    def attach_sidecars(self) -> None:
        """A sidecar for every running pod that has none; the first one gets the trainer."""
        out = self.cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "json").stdout
        for p in json.loads(out)["items"]:
            name, uid = p["metadata"]["name"], p["metadata"]["uid"]
            if p.get("status", {}).get("phase") != "Running" or name in self.sidecars:
                continue
            token = pod_token(self.cluster, NAMESPACE, name, uid)
            self.sidecars[name] = Sidecar(
                self.work, self.operator.url, token=token, CARBONTRACK_JOB_NAME=NAME, POD_NAMESPACE=NAMESPACE,
                POD_NAME=name, POD_UID=uid, CARBONTRACK_SIM_TRACE="bursty:7", CARBONTRACK_INTERVAL_S="1",
            )  # fmt: skip
            if len(self.sidecars) == 1:
                args = (self.sidecars[name], self.stop, self.step)
                threading.Thread(target=trainer, args=args, daemon=True).start()

    def run_until_promoted(self, timeout_s: float = 240) -> None:
        """Until the job runs at full size with 120 steps done, printing its row at each new phase."""
        deadline = time.monotonic() + timeout_s
        last_phase = None
        while time.monotonic() < deadline:
            self.attach_sidecars()
            phase = status(self.cluster, NAMESPACE, NAME).get("phase")
            if phase != last_phase:
                print(self.cluster.kubectl("get", "ctj", "-n", NAMESPACE).stdout)
                last_phase = phase
            if phase == "Running" and self.step[0] >= 120:
                return
            time.sleep(1)

    def finish(self) -> None:
        """The trainers stop and every pod exits 0, its sidecar's final flush first; waits up to a minute
        for Succeeded with every final flush in status."""
        self.stop.set()
        exit_pods(self.cluster, NAMESPACE, self.sidecars)
        for _ in range(60):
            st = status(self.cluster, NAMESPACE, NAME)
            sources = (st.get("telemetry") or {}).get("sources") or []
            flushed = len(sources) == len(self.sidecars) and all(s.get("final") for s in sources)
            if st.get("phase") == "Succeeded" and flushed:
                return
            time.sleep(1)

    def report(self) -> str | None:
        """Prints the final row, the job's Events, its totals and its model-card block, and checks that
        they agree; returns the job's phase, or None when they do not agree."""
        cluster = self.cluster
        table = cluster.kubectl("get", "ctj", "-n", NAMESPACE).stdout
        print(table)
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
        later = status(cluster, NAMESPACE, NAME)  # read last: the totals must not have moved meanwhile
        problems = disagreements(table, final, later, card.stdout)
        if problems:
            print("INCONSISTENT: the finished job shows different totals:\n  " + "\n  ".join(problems))
            return None
        print(
            f"consistent: {final['energyJoules']:.0f} J = {final['energyKwh']} kWh and "
            f"{final['emissionsGrams']:.3f} g = {final['emissionsKg']} kg: kubectl, the summary line and "
            "the model card agree"
        )
        return final.get("phase")

    def close(self) -> None:
        self.stop.set()
        for sc in self.sidecars.values():
            if sc.proc.poll() is None:
                sc.stop()
        self.operator.stop()
        self.cluster.down()


def column(table: str, name: str) -> str:
    """One column of the first row of `kubectl get` output (columns align under their headers)."""
    header, row = table.splitlines()[:2]
    start = header.index(name)
    end = start + len(name)
    while end < len(header) and header[end] == " ":
        end += 1
    return row[start:end].strip()


def disagreements(table: str, final: dict[str, object], later: dict[str, object], card: str) -> list[str]:
    """What differs between the figures `kubectl get ctj` printed, the status the summary line read, the
    status read after everything else, and the model card's emissions; empty when all agree."""
    energy_j, grams = float(final["energyJoules"]), float(final["emissionsGrams"])  # type: ignore[arg-type]
    shown = {
        "kubectl kWh": (float(column(table, "KWH")), round(energy_j / 3.6e6, 6)),
        "kubectl kg": (float(column(table, "KGCO2E")), round(grams / 1000, 6)),
        "model card g": (float(yaml.safe_load(card)["co2_eq_emissions"]["emissions"]), round(grams, 3)),
        "energy J, read again": (float(later["energyJoules"]), energy_j),  # type: ignore[arg-type]
        "emissions g, read again": (float(later["emissionsGrams"]), grams),  # type: ignore[arg-type]
    }
    return [
        f"{what}: {got} where the summary's {energy_j:.3f} J / {grams:.6f} g give {want}"
        for what, (got, want) in shown.items()
        if not math.isclose(got, want, rel_tol=0, abs_tol=1e-9)
    ]


def main() -> int:
    demo = Demo()
    try:
        demo.start()
        demo.run_until_promoted()
        demo.finish()
        return 0 if demo.report() == "Succeeded" else 1
    finally:
        demo.close()


if __name__ == "__main__":
    raise SystemExit(main())
