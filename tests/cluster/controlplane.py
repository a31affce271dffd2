"""A real Kubernetes control plane on this machine, for tests and for trying carbontrack by hand.

There is no Docker engine here, so instead of kind this runs the real programs as local processes:
etcd, kube-apiserver, kube-controller-manager (the real Job controller and garbage collector) and
kube-scheduler, all linked into one binary built from pinned Go modules (tests/cluster/kube), plus
kwok simulating GPU nodes, and kubectl and helm. Builds are cached under ~/.cache/carbontrack/ by
version, so only the first run pays for compilation.

    python tests/cluster/controlplane.py build         # compile and cache the binaries
    python tests/cluster/controlplane.py up [--dir D]  # start; prints the env to use it
    python tests/cluster/controlplane.py env [--dir D] # print `export KUBECONFIG=... PATH=...`
    python tests/cluster/controlplane.py down [--dir D]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
KUBERNETES = "v1.36.3"  # pinned: tests assert the apiserver reports exactly this
ETCD = "v3.6.8"  # the etcd release k8s.io/kubernetes@KUBERNETES itself requires
KWOK = "v0.8.0"
HELM = "v3.21.4"
CACHE = Path(os.environ.get("CARBONTRACK_CACHE", "~/.cache/carbontrack")).expanduser()
BIN = CACHE / f"kubernetes-{KUBERNETES}_etcd-{ETCD}_kwok-{KWOK}_helm-{HELM}" / "bin"
KUBE_PROGRAMS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
DEFAULT_DIR = CACHE / "controlplane"
REGION = "eu-central-1"
GPUS_PER_NODE = 8
NODES_PER_APPLY = 100
"""Nodes registered per `kubectl apply` (add_gpu_nodes): a chunk finishes well within the 60 s timeout."""


def log(msg: str) -> None:
    print(f"[controlplane {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- build


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(CACHE / "go" / "mod"),
        GOCACHE=str(CACHE / "go" / "build"),
        GOFLAGS="-trimpath -buildvcs=false",
        GOTOOLCHAIN="local",
        CGO_ENABLED="0",
    )
    return env


@contextlib.contextmanager
def go_build_lock() -> Iterator[None]:
    """One Go build at a time on this machine: three concurrent cold builds on two cores took 38 min
    where one after another take about 15, and two builds of one target race on its .partial file."""
    path = CACHE / "go" / "build.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _go(args: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> None:
    env = _go_env() | (extra_env or {})
    log("go " + " ".join(args))
    with go_build_lock():
        subprocess.run(["go", *args], cwd=cwd, env=env, check=True)


def kube_ldflags() -> str:
    """The version stamps Kubernetes' own release build gives its programs (without them they report
    v0.0.0); one definition for the control-plane build and the kind node's."""
    minor = KUBERNETES.split(".")[1]
    return " ".join(
        [
            "-s -w",
            f"-X k8s.io/component-base/version.gitVersion={KUBERNETES}",
            "-X k8s.io/component-base/version.gitMajor=1",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
            f"-X k8s.io/client-go/pkg/version.gitVersion={KUBERNETES}",
        ]
    )


HELM_STAMP = "helm.kube-default"
"""Written beside helm once it is built with the pinned Kubernetes as its default (see build)."""


def binaries_present() -> bool:
    names = [*KUBE_PROGRAMS, "kube", "kwok", "helm"]
    return all((BIN / n).exists() for n in names)


def build() -> Path:
    """Compile whatever is missing into BIN; returns BIN. Idempotent and safe to interrupt."""
    BIN.mkdir(parents=True, exist_ok=True)
    if not (BIN / "kube").exists():
        tmp = BIN / "kube.partial"
        _go(["build", "-ldflags", kube_ldflags(), "-o", str(tmp), "."], cwd=HERE / "kube")
        tmp.rename(BIN / "kube")
    for name in KUBE_PROGRAMS:
        link = BIN / name
        if not link.exists():
            link.symlink_to("kube")
    for name, module in (
        ("kwok", f"sigs.k8s.io/kwok/cmd/kwok@{KWOK}"),
        ("helm", f"helm.sh/helm/v3/cmd/helm@{HELM}"),
    ):
        # a helm built before it knew its Kubernetes (no stamp) is rebuilt once, and replaced atomically
        if (BIN / name).exists() and (name != "helm" or (BIN / HELM_STAMP).exists()):
            continue
        with tempfile.TemporaryDirectory() as gobin:
            ldflags = "-s -w"
            if name == "helm":
                # as helm's own Makefile does for its release binaries: the Kubernetes version that
                # `helm template` assumes without a cluster (else v1.20, and kubeVersion >= 1.30 fails)
                minor = KUBERNETES.split(".")[1]
                ldflags += f" -X helm.sh/helm/v3/internal/version.version={HELM}"
                ldflags += " -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1"
                ldflags += f" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={minor}"
                ldflags += " -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1"
                ldflags += f" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={minor}"
            _go(["install", "-ldflags", ldflags, module], cwd=Path(gobin), extra_env={"GOBIN": gobin})
            shutil.move(str(Path(gobin) / name), BIN / f"{name}.partial")
            (BIN / f"{name}.partial").rename(BIN / name)  # atomic: a concurrent reader sees old or new
            if name == "helm":
                (BIN / HELM_STAMP).write_text(f"helm {HELM} defaults to Kubernetes {KUBERNETES}\n")
    return BIN


# ---------------------------------------------------------------------------------------- certs


def _write_pki(pki: Path) -> None:
    """A CA, the apiserver's serving cert, an admin client cert and the service-account key pair."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def save_key(k: ec.EllipticCurvePrivateKey, name: str) -> None:
        (pki / name).write_bytes(
            k.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = key()
    ca_name = name("carbontrack-test-ca")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (pki / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    save_key(ca_key, "ca.key")

    def leaf(
        file: str, subject: x509.Name, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]
    ) -> None:
        k = key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        (pki / f"{file}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        save_key(k, f"{file}.key")

    leaf(
        "apiserver",
        name("kube-apiserver"),
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(IPv4Address("127.0.0.1")),
        ],
    )
    leaf("admin", name("carbontrack-admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH, [])
    sa = key()
    save_key(sa, "sa.key")
    (pki / "sa.pub").write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


# ---------------------------------------------------------------------------------------- run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ControlPlane:
    """One running control plane; everything it owns lives under `workdir`."""

    workdir: Path
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    args: dict[str, list[str]] = field(default_factory=dict)

    # -- paths

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    def env(self) -> dict[str, str]:
        """Environment for a process that should use this cluster (kubectl, helm, the operator)."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    # -- state, so `down` in another process can find the pids

    def _save(self) -> None:
        state = {"ports": self.ports, "pids": self.pids}
        (self.workdir / "state.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, workdir: Path) -> ControlPlane:
        state = json.loads((workdir / "state.json").read_text())
        return cls(workdir=workdir, ports=state["ports"], pids=state["pids"])

    # -- processes

    def _start(self, name: str, args: list[str]) -> None:
        self.args[name] = args
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        out = (logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            env={**os.environ, **self.env()},
            start_new_session=True,  # a Ctrl-C to the test run must not kill etcd before teardown
        )
        out.close()
        self.pids[name] = proc.pid
        self._save()
        log(f"started {name} (pid {proc.pid})")

    def _alive(self, name: str) -> bool:
        pid = self.pids.get(name)
        if pid is None:
            return False
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child (started by another process): ask the kernel
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            return True
        return waited == 0

    def _check_alive(self, name: str) -> None:
        if not self._alive(name):
            tail = (self.workdir / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} exited during start-up; last log lines:\n{tail}")

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def get(self, path: str, timeout: float = 5.0) -> Any:
        """GET a path of the apiserver as the admin; JSON-decoded."""
        with urllib.request.urlopen(self.server + path, context=self._ssl(), timeout=timeout) as resp:
            body = resp.read()
        try:
            return json.loads(body)
        except ValueError:
            return body.decode()

    def _wait(self, what: str, check: Any, timeout: float, proc: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if proc:
                self._check_alive(proc)
            try:
                if check():
                    return
            except Exception as exc:  # the thing is not up yet; keep the reason for the error
                last = exc
            time.sleep(0.2)
        raise TimeoutError(f"{what} not ready after {timeout:.0f}s (last error: {last})")

    def wait_established(self, *crds: str, timeout: float = 60.0) -> None:
        """Wait for CRDs (`crd/<name>`; none: every CRD) to be Established. `kubectl wait` is not enough:
        on a CRD just created, before the apiserver wrote its first condition, it fails at once with
        ".status.conditions accessor error: <nil>" instead of waiting (3 tests in one loaded run)."""
        established = '{.status.conditions[?(@.type=="Established")].status}'
        deadline = time.monotonic() + timeout
        pending = list(crds)
        while time.monotonic() < deadline:
            if not crds:
                listed = self.kubectl("get", "crd", "-o", "name", check=False)
                pending = listed.stdout.split() if listed.returncode == 0 else ["crd"]
            pending = [
                c for c in pending
                if self.kubectl("get", c, "-o", f"jsonpath={established}", check=False).stdout != "True"
            ]  # fmt: skip
            if not pending:
                return
            time.sleep(0.2)
        raise RuntimeError(f"CRDs not Established within {timeout:g} s: {' '.join(pending)}")

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run our kubectl against this cluster; with check, a failure raises with kubectl's stderr."""
        result = subprocess.run(
            [str(BIN / "kubectl"), *args],
            input=input,
            capture_output=True,
            text=True,
            env={**os.environ, **self.env()},
            check=False,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def restart(self, name: str, down_s: float = 0.0) -> None:
        """Stop one program (SIGTERM, as a rolling upgrade would), wait down_s, start it again."""
        pid = self.pids.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] != 0:
                    break
            time.sleep(0.1)
        time.sleep(down_s)
        self._start(name, self.args[name])
        if name == "kube-apiserver":
            self._wait(
                "kube-apiserver /readyz", lambda: self.get("/readyz") == "ok", 90, proc="kube-apiserver"
            )

    def up(
        self,
        nodes: int = 2,
        audit: bool = False,
        client_qps: int | None = None,
        flow_control: bool = False,
        audit_level: str = "Metadata",
    ) -> ControlPlane:
        """Start everything and return once nodes are Ready and service accounts are minted.

        `audit`: log every request's user, verb and resource to `audit_log` (the scale benchmark
        attributes apiserver load to the operator with it); `audit_level` Request adds each request's
        body (the Kueue test proves with it who wrote a Job's suspend). `client_qps`: raise the controller
        manager's and the scheduler's client rate limits (thousands of pods in the scale benchmark).
        `flow_control`: API Priority and Fairness on, as in every real cluster (queues a burst instead
        of answering 429 past a fixed in-flight limit); off by default, which starts faster.
        """
        start = time.monotonic()
        build()
        self.workdir.mkdir(parents=True, exist_ok=True)
        _write_pki(self.pki)
        self.ports = {n: free_port() for n in ("etcd", "etcd-peer", "apiserver", "kwok")}
        self._save()
        p = self.ports
        pki = self.pki
        self._start(
            "etcd",
            [
                str(BIN / "etcd"),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{p['etcd']}",
                f"--advertise-client-urls=http://127.0.0.1:{p['etcd']}",
                f"--listen-peer-urls=http://127.0.0.1:{p['etcd-peer']}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{p['etcd-peer']}",
                f"--initial-cluster=default=http://127.0.0.1:{p['etcd-peer']}",
                "--unsafe-no-fsync",  # test data: durability across power loss is not needed
                "--log-level=warn",
            ],
        )
        self._start(
            "kube-apiserver",
            [
                str(BIN / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={p['apiserver']}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
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
                *self._audit_args(audit, audit_level),
            ],
        )
        self._wait("kube-apiserver /readyz", lambda: self.get("/readyz") == "ok", 90, proc="kube-apiserver")
        self._write_kubeconfig()
        self._start(
            "kube-controller-manager",
            [
                str(BIN / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--leader-elect=false",
                "--controllers=*",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=false",
                "--concurrent-job-syncs=10",
                "--v=1",
                *self._qps_args(client_qps),
            ],
        )
        self._start(
            "kube-scheduler",
            [
                str(BIN / "kube-scheduler"),
                f"--kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--leader-elect=false",
                "--v=1",
                *self._qps_args(client_qps),
            ],
        )
        self._start(
            "kwok",
            [
                str(BIN / "kwok"),
                f"--kubeconfig={self.kubeconfig}",
                "--node-lease-duration-seconds=40",  # kwok renews node Leases, as kubelets do
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--server-address=127.0.0.1:{p['kwok']}",
                f"--config={HERE / 'stages.yaml'}",
            ],
        )
        self.add_gpu_nodes(nodes)
        self._wait(
            "service account controller (default ServiceAccount)",
            lambda: (
                self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0
            ),
            60,
            proc="kube-controller-manager",
        )
        self._wait("kwok nodes Ready", lambda: self._ready_nodes() >= nodes, 60, proc="kwok")
        self._check_alive("kube-scheduler")
        log(f"control plane {KUBERNETES} up in {time.monotonic() - start:.1f}s at {self.server}")
        return self

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def _audit_args(self, audit: bool, level: str = "Metadata") -> list[str]:
        if not audit:
            return []
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\n"
            f"omitStages: [RequestReceived, ResponseStarted]\nrules:\n  - level: {level}\n"
        )
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}"]

    @staticmethod
    def _qps_args(qps: int | None) -> list[str]:
        return [f"--kube-api-qps={qps}", f"--kube-api-burst={2 * qps}"] if qps else []

    def _ready_nodes(self) -> int:
        items = self.get("/api/v1/nodes")["items"]
        return sum(
            1
            for n in items
            for c in n.get("status", {}).get("conditions", [])
            if c["type"] == "Ready" and c["status"] == "True"
        )

    def add_gpu_nodes(
        self, count: int, region: str = REGION, first: int = 0, gpus: int = GPUS_PER_NODE
    ) -> list[str]:
        """Register kwok nodes that advertise `gpus` GPUs each, as a GPU node pool's kubelets would."""
        names = []
        docs = []
        for i in range(first, first + count):
            name = f"kwok-gpu-{i}"
            names.append(name)
            resources = {
                "cpu": "96",
                "memory": "1Ti",
                "pods": "110",
                "ephemeral-storage": "1Ti",
                "nvidia.com/gpu": str(gpus),
            }
            docs.append(
                {
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
            )
        for at in range(0, len(docs), NODES_PER_APPLY):  # 1000 nodes in one apply outran kubectl's 60 s
            items = docs[at : at + NODES_PER_APPLY]
            self.kubectl(
                "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
            )
        return names

    def _write_kubeconfig(self, path: Path | None = None, user: dict[str, str] | None = None) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "carbontrack-test",
                    "cluster": {"server": self.server, "certificate-authority": str(self.pki / "ca.crt")},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": user
                    or {
                        "client-certificate": str(self.pki / "admin.crt"),
                        "client-key": str(self.pki / "admin.key"),
                    },
                }
            ],
            "contexts": [
                {"name": "carbontrack-test", "context": {"cluster": "carbontrack-test", "user": "admin"}}
            ],
            "current-context": "carbontrack-test",
        }
        path = path or self.kubeconfig
        path.write_text(json.dumps(config, indent=2))
        return path

    def service_account_kubeconfig(self, namespace: str, name: str) -> Path:
        """A kubeconfig that acts as a ServiceAccount (24 h token), as an in-cluster pod would."""
        token = self.kubectl("create", "token", name, "-n", namespace, "--duration=24h").stdout.strip()
        return self._write_kubeconfig(self.workdir / f"kubeconfig-{namespace}-{name}", {"token": token})

    def down(self, remove: bool = True) -> None:
        """Stop every process this control plane started (by pid, newest first) and clean up."""
        for name in reversed(list(self.pids)):
            pid = self.pids[name]
            try:
                os.killpg(pid, signal.SIGTERM)  # each runs in its own session: take its children too
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 10
        for name in reversed(list(self.pids)):
            while self._alive(name) and time.monotonic() < deadline:
                time.sleep(0.1)
            if self._alive(name):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pids[name], signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pids[name], os.WNOHANG)
        self.pids = {}
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            self._save()
        log("control plane stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["build", "up", "down", "env"])
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"working directory (default {DEFAULT_DIR})"
    )
    parser.add_argument("--nodes", type=int, default=2, help="kwok GPU nodes to register (default 2)")
    args = parser.parse_args(argv)
    workdir: Path = args.dir.expanduser().resolve()
    if args.command == "build":
        print(build())
    elif args.command == "up":
        if (workdir / "state.json").exists():
            ControlPlane.load(workdir).down()
        cp = ControlPlane(workdir).up(nodes=args.nodes)
        for key, value in cp.env().items():
            print(f"export {key}={value}")
    elif args.command == "env":
        for key, value in ControlPlane.load(workdir).env().items():
            print(f"export {key}={value}")
    else:
        if not (workdir / "state.json").exists():
            log(f"nothing running under {workdir}")
            return 0
        ControlPlane.load(workdir).down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
