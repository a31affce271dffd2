"""What the local control plane runs, as data: each program's command line, the kwok GPU nodes it
registers and the kubeconfig it writes. Pure functions of the ports and paths; hack/controlplane.py
starts the processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hack.binaries import BIN

HERE = Path(__file__).resolve().parent
REGION = "eu-central-1"
GPUS_PER_NODE = 8
NODE_RESOURCES = {"cpu": "96", "memory": "1Ti", "pods": "110", "ephemeral-storage": "1Ti"}


def etcd(workdir: Path, ports: dict[str, int]) -> list[str]:
    client, peer = f"http://127.0.0.1:{ports['etcd']}", f"http://127.0.0.1:{ports['etcd-peer']}"
    return [
        str(BIN / "etcd"),
        "--name=default",
        f"--data-dir={workdir / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        "--unsafe-no-fsync",  # test data: durability across power loss is not needed
        "--log-level=warn",
    ]


def apiserver(workdir: Path, ports: dict[str, int], flow_control: bool, audit: list[str]) -> list[str]:
    """`flow_control`: API Priority and Fairness; `audit`: the audit flags (audit_args)."""
    pki = workdir / "pki"
    return [
        str(BIN / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={ports['apiserver']}",
        f"--cert-dir={workdir / 'apiserver-certs'}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        "--service-cluster-ip-range=10.96.0.0/16",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--authorization-mode=RBAC",
        "--allow-privileged=true",
        "--endpoint-reconciler-type=none",  # 127.0.0.1 is not a valid Endpoints address
        f"--enable-priority-and-fairness={'true' if flow_control else 'false'}",
        "--profiling=false",
        "--v=1",
        *audit,
    ]


def controller_manager(workdir: Path, client_qps: int | None) -> list[str]:
    pki = workdir / "pki"
    return [
        str(BIN / "kube-controller-manager"),
        f"--kubeconfig={workdir / 'kubeconfig'}",
        "--bind-address=127.0.0.1",
        "--secure-port=0",
        "--leader-elect=false",
        "--controllers=*",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        "--use-service-account-credentials=false",
        "--concurrent-job-syncs=10",
        "--v=1",
        *qps_args(client_qps),
    ]


def scheduler(workdir: Path, client_qps: int | None) -> list[str]:
    return [
        str(BIN / "kube-scheduler"),
        f"--kubeconfig={workdir / 'kubeconfig'}",
        "--bind-address=127.0.0.1",
        "--secure-port=0",
        "--leader-elect=false",
        "--v=1",
        *qps_args(client_qps),
    ]


def kwok(workdir: Path, ports: dict[str, int]) -> list[str]:
    return [
        str(BIN / "kwok"),
        f"--kubeconfig={workdir / 'kubeconfig'}",
        "--node-lease-duration-seconds=40",  # kwok renews node Leases, as kubelets do
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        f"--server-address=127.0.0.1:{ports['kwok']}",
        f"--config={HERE / 'stages.yaml'}",
    ]


def qps_args(qps: int | None) -> list[str]:
    """A client rate limit for the controller manager and the scheduler (none: their defaults)."""
    return [f"--kube-api-qps={qps}", f"--kube-api-burst={2 * qps}"] if qps else []


def audit_args(workdir: Path, audit_log: Path, level: str) -> list[str]:
    """Writes an audit policy logging every request at `level`; the apiserver's flags that use it."""
    policy = workdir / "audit-policy.yaml"
    policy.write_text(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\n"
        f"omitStages: [RequestReceived, ResponseStarted]\nrules:\n  - level: {level}\n"
    )
    return [f"--audit-policy-file={policy}", f"--audit-log-path={audit_log}"]


def gpu_node(name: str, region: str = REGION, gpus: int = GPUS_PER_NODE) -> dict[str, Any]:
    """A kwok Node advertising `gpus` GPUs, labelled as a GPU node pool's kubelet would label it."""
    resources = {**NODE_RESOURCES, "nvidia.com/gpu": str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "topology.kubernetes.io/region": region,
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
            },
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "status": {"capacity": resources, "allocatable": resources},
    }


def kubeconfig(server: str, pki: Path, user: dict[str, str] | None = None) -> dict[str, Any]:
    """A kubeconfig for `server`: as the admin (client certificate), or as `user` (e.g. a token)."""
    admin = {"client-certificate": str(pki / "admin.crt"), "client-key": str(pki / "admin.key")}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "carbontrack-test",
                "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
            }
        ],
        "users": [{"name": "admin", "user": user or admin}],
        "contexts": [
            {"name": "carbontrack-test", "context": {"cluster": "carbontrack-test", "user": "admin"}}
        ],
        "current-context": "carbontrack-test",
    }
