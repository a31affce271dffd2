"""The test control plane is the real thing: pinned kube-apiserver, real controllers, kwok GPU nodes."""

from __future__ import annotations

import json
import time

from hack.binaries import KUBERNETES
from hack.components import GPUS_PER_NODE, REGION
from hack.controlplane import ControlPlane


def test_apiserver_reports_the_pinned_release(cluster: ControlPlane) -> None:
    assert cluster.get("/version")["gitVersion"] == KUBERNETES


def test_kwok_nodes_advertise_gpus_and_region(cluster: ControlPlane) -> None:
    nodes = cluster.get("/api/v1/nodes")["items"]
    assert len(nodes) >= 2
    for node in nodes:
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == str(GPUS_PER_NODE)
        assert node["metadata"]["labels"]["topology.kubernetes.io/region"] == REGION


def test_token_request_and_review_work(cluster: ControlPlane, namespace: str) -> None:
    cluster.kubectl("create", "serviceaccount", "trainer", "-n", namespace)
    token = cluster.kubectl(
        "create", "token", "trainer", "-n", namespace, "--audience=carbontrack", "--duration=10m"
    ).stdout.strip()
    review = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": ["carbontrack"]},
    }
    out = cluster.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review)).stdout
    status = json.loads(out)["status"]
    assert status["authenticated"] is True
    assert status["user"]["username"] == f"system:serviceaccount:{namespace}:trainer"
    assert status["audiences"] == ["carbontrack"]


def _wait_phase(cluster: ControlPlane, namespace: str, pod: str, phase: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = cluster.kubectl(
            "get", "pod", pod, "-n", namespace, "-o", "jsonpath={.status.phase}", check=False
        ).stdout
        if seen == phase:
            return
        time.sleep(0.3)
    raise AssertionError(f"pod {pod} phase {seen!r}, wanted {phase}")


def test_job_pods_run_on_kwok_and_complete_when_told(cluster: ControlPlane, namespace: str) -> None:
    """The real Job controller and scheduler place an Indexed Job on GPU nodes; kwok runs the pods."""
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train"},
        "spec": {
            "completionMode": "Indexed",
            "completions": 2,
            "parallelism": 2,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "initContainers": [
                        {"name": "sidecar", "image": "carbontrack:dev", "restartPolicy": "Always"}
                    ],
                    "containers": [
                        {
                            "name": "trainer",
                            "image": "trainer:dev",
                            "resources": {"limits": {"nvidia.com/gpu": 8}},
                        }
                    ],
                }
            },
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(job))
    deadline = time.monotonic() + 60
    pods: list[str] = []
    while time.monotonic() < deadline and len(pods) < 2:
        pods = cluster.kubectl(
            "get", "pods", "-n", namespace, "-l", "job-name=train", "-o", "name", check=False
        ).stdout.split()
        time.sleep(0.3)
    assert len(pods) == 2
    names = [p.split("/", 1)[1] for p in pods]
    for name in names:
        _wait_phase(cluster, namespace, name, "Running")
    nodes = {
        cluster.kubectl("get", "pod", n, "-n", namespace, "-o", "jsonpath={.spec.nodeName}").stdout
        for n in names
    }
    assert len(nodes) == 2, "8 GPUs each: the scheduler must spread them over two nodes"
    for name in names:
        cluster.kubectl("annotate", "pod", name, "-n", namespace, "carbontrack.io/test-exit=0")
    for name in names:
        _wait_phase(cluster, namespace, name, "Succeeded")
    cluster.kubectl("wait", "--for=condition=Complete", "--timeout=60s", "job/train", "-n", namespace)
