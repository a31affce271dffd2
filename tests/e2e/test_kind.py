"""The installed product on a real cluster: what the control-plane tests cannot show.

kind runs real kubelets and containerd, so here pods run containers of the project image: the operator
as the chart deploys it (non-root, read-only root filesystem, restricted Pod Security), the sidecar as a
native sidecar under a real kubelet, a trainer that runs a CPU training loop with carbontrack.trainer.client,
and telemetry crossing the pod network to the operator's Service by its DNS name.
"""

from __future__ import annotations

import json
import subprocess
import threading
from typing import Any

from hack.binaries import BIN

from tests.e2e.cluster import JOBS_NS, OPERATOR_NS, RELEASE, ROOT, Kind, ctj, first_job, wait

KUBECTL = str(BIN / "kubectl")
SIDECAR = "carbontrack-sidecar"
SERVICE_URL = f"https://{RELEASE}.{OPERATOR_NS}.svc:8443"  # TLS, the chart's default


class PhaseWatch:
    """Every phase the CarbonTrackedJob's status takes, from a `kubectl get -w` started before it exists."""

    def __init__(self, c: Kind, name: str) -> None:
        template = "jsonpath={.metadata.name} {.status.phase}{'\\n'}"
        self.proc = subprocess.Popen(
            [KUBECTL, "get", "ctj", "-n", JOBS_NS, "--watch", "-o", template],
            stdout=subprocess.PIPE, text=True, env=c.env(),
        )  # fmt: skip
        self.name = name
        self.phases: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split()
            if len(parts) == 2 and parts[0] == self.name and (not self.phases or self.phases[-1] != parts[1]):
                self.phases.append(parts[1])

    def stop(self) -> list[str]:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        return self.phases


def status(c: Kind, name: str) -> dict[str, Any]:
    return c.get("ctj", name, "-n", JOBS_NS).get("status", {})


def job_pods(c: Kind, name: str) -> list[dict[str, Any]]:
    pods = c.get("pods", "-n", JOBS_NS, "-l", f"carbontrack.io/job={name}")["items"]
    return sorted(pods, key=lambda p: p["metadata"]["name"])


def sidecar_stops(c: Kind, pod: str, previous: bool = False) -> list[dict[str, Any]]:
    """The sidecar's "sidecar stopped" log lines (final counters) of its current or previous run."""
    args = ["logs", "-n", JOBS_NS, pod, "-c", SIDECAR, *(["--previous"] if previous else [])]
    out = c.kubectl(*args).stdout
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("msg") == "sidecar stopped"]


def boot_ids(c: Kind, pod: str, previous: bool = False) -> list[str]:
    args = ["logs", "-n", JOBS_NS, pod, "-c", SIDECAR, *(["--previous"] if previous else [])]
    out = c.kubectl(*args).stdout
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [line["bootId"] for line in lines if line.get("msg") == "sidecar started"]


def start_job(c: Kind, body: dict[str, Any]) -> None:
    manifest = c.kubectl(
        "create", "configmap", "trainer", "-n", JOBS_NS, f"--from-file={ROOT / 'tests/e2e/trainer.py'}",
        "--dry-run=client", "-o", "yaml",
    ).stdout  # fmt: skip
    c.kubectl("apply", "-f", "-", input=manifest)
    name = body["metadata"]["name"]
    # a kept cluster may still have this job from an earlier run: start from nothing
    c.kubectl("delete", "ctj", name, "-n", JOBS_NS, "--ignore-not-found", "--wait=true", "--timeout=120s")
    wait(lambda: not job_pods(c, name), 120, f"{name}'s old pods to go")
    c.kubectl("create", "-f", "-", input=json.dumps(body))


def test_operator_runs_in_cluster(installed: Kind) -> None:
    c = installed
    deploy = c.get("deployment", RELEASE, "-n", OPERATOR_NS)
    assert deploy["status"].get("readyReplicas") == 1
    pod = c.get("pods", "-n", OPERATOR_NS, "-l", "app.kubernetes.io/name=carbontrack")["items"][0]
    container = pod["spec"]["containers"][0]
    assert container["image"] == c.image
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    ns = c.get("namespace", OPERATOR_NS)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_job_lifecycle(installed: Kind) -> None:
    """Pending -> Canary -> Promoting -> Running -> Succeeded with real pods, sidecars and telemetry."""
    c, name = installed, "fit"
    watch = PhaseWatch(c, name)
    start_job(c, first_job(name, c.image))
    try:
        wait(lambda: status(c, name).get("phase") in ("Succeeded", "Failed", "Halted"), 420, "the job to end")
    finally:
        phases = watch.stop()
    final = status(c, name)
    assert final["phase"] == "Succeeded", (final, phases)
    assert [p for p in phases if p in ("Pending", "Canary", "Promoting", "Running", "Succeeded")] == [
        "Pending", "Canary", "Promoting", "Running", "Succeeded"
    ], phases  # fmt: skip

    pods = job_pods(c, name)
    assert len(pods) == 2
    total = 0.0
    for pod in pods:
        # the native sidecar: an init container with restartPolicy Always, started before the trainer
        # (the kubelet waits for its startup probe) and stopped after the trainer exited
        init = pod["spec"]["initContainers"][0]
        assert init["name"] == SIDECAR and init["restartPolicy"] == "Always"
        side = pod["status"]["initContainerStatuses"][0]["state"]["terminated"]
        main = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert main["exitCode"] == 0
        assert side["startedAt"] <= main["startedAt"] and side["finishedAt"] >= main["finishedAt"], (
            side,
            main,
        )
        env = {e["name"]: e.get("value") for e in init["env"]}
        assert env["CARBONTRACK_OPERATOR_URL"] == SERVICE_URL
        # telemetry reached the operator by the Service's DNS name: the final batch was accepted
        stops = sidecar_stops(c, pod["metadata"]["name"])
        assert len(stops) == 1 and stops[0]["finalStatus"] == 200, stops
        total += stops[0]["energyJ"]
    assert total > 0
    assert abs(final["energyJoules"] - total) < 1e-6, (final["energyJoules"], total)

    table = c.kubectl("get", "ctj", "-n", JOBS_NS, name).stdout
    header, row = table.splitlines()[:2]
    assert "PHASE" in header and name in row and "Succeeded" in row, table


def test_faults_on_real_pods(installed: Kind) -> None:
    """The operator pod deleted mid-run (its Deployment starts a new one) and then the sidecar's process
    killed (the kubelet restarts the container, a new boot id): the job's total stays exact."""
    c, name = installed, "faults"
    canary = {"replicas": 1, "minSteps": 20, "stages": [100]}
    start_job(c, ctj(name, c.image, replicas=1, steps=900, canary=canary))
    wait(lambda: status(c, name).get("energyJoules", 0) > 0, 240, "energy in status")
    selector = "app.kubernetes.io/name=carbontrack"
    old = c.get("pods", "-n", OPERATOR_NS, "-l", selector)["items"][0]["metadata"]["name"]
    c.kubectl("delete", "pod", "-n", OPERATOR_NS, old, "--wait=false")

    def new_operator_ready() -> bool:
        pods = c.get("pods", "-n", OPERATOR_NS, "-l", selector)["items"]
        return any(
            p["metadata"]["name"] != old
            and any(s.get("ready") for s in p.get("status", {}).get("containerStatuses", []))
            for p in pods
        )

    wait(new_operator_ready, 180, "a new operator pod Ready")
    before = status(c, name).get("energyJoules", 0)
    wait(lambda: status(c, name).get("energyJoules", 0) > before, 120, "energy from the new operator")

    pod = job_pods(c, name)[0]["metadata"]["name"]
    c.kubectl("exec", "-n", JOBS_NS, pod, "-c", SIDECAR, "--", "sh", "-c", "kill 1")

    def restarted() -> bool:
        statuses = c.get("pod", pod, "-n", JOBS_NS)["status"].get("initContainerStatuses", [])
        return bool(statuses) and statuses[0].get("restartCount", 0) >= 1 and bool(statuses[0].get("ready"))

    wait(restarted, 120, "the sidecar's restart")
    # the kubelet removes the dead container (and its log) once the pod has finished: read it now
    first_boot, first_stop = boot_ids(c, pod, previous=True), sidecar_stops(c, pod, previous=True)
    assert phase_of(c, pod) == "Running", "the trainer finished before the sidecar restarted"
    wait(lambda: status(c, name).get("phase") in ("Succeeded", "Failed", "Halted"), 420, "the job to end")
    final = status(c, name)
    assert final["phase"] == "Succeeded", final

    second_boot, second_stop = boot_ids(c, pod), sidecar_stops(c, pod)
    assert len(first_boot) == 1 and len(second_boot) == 1 and first_boot != second_boot
    stops = first_stop + second_stop
    assert len(stops) == 2 and all(s["finalStatus"] == 200 for s in stops), stops
    assert stops[0]["energyJ"] > 0 and stops[1]["energyJ"] > 0
    total = sum(s["energyJ"] for s in stops)
    assert abs(final["energyJoules"] - total) < 1e-6, (final["energyJoules"], stops)


def phase_of(c: Kind, pod: str) -> str:
    return str(c.get("pod", pod, "-n", JOBS_NS)["status"].get("phase"))


def test_uninstall_leaves_only_the_crd(installed: Kind) -> None:
    c = installed
    c.kubectl("delete", "ctj", "--all", "-n", JOBS_NS, "--wait=true", "--timeout=120s")
    c.helm("uninstall", RELEASE, "--namespace", OPERATOR_NS, "--wait", "--timeout", "180s")
    selector = f"app.kubernetes.io/instance={RELEASE}"
    # the operator's pod takes its grace period to stop (helm's --wait does not wait for it)
    wait(lambda: not c.get("pods", "-A", "-l", selector)["items"], 120, "the operator pod to go")
    kinds = (
        "deployments,services,serviceaccounts,configmaps,secrets,roles,rolebindings,poddisruptionbudgets,pods"
    )
    left = c.get(kinds, "-A", "-l", selector)["items"]
    cluster_left = c.get("clusterroles,clusterrolebindings", "-l", selector)["items"]
    assert left == [] and cluster_left == [], [
        i["kind"] + "/" + i["metadata"]["name"] for i in left + cluster_left
    ]
    crds = [i["metadata"]["name"] for i in c.get("crd")["items"]]
    assert "carbontrackedjobs.carbontrack.io" in crds
