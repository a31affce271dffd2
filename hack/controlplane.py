"""A real Kubernetes control plane on this machine, for tests and for trying carbontrack by hand.

There is no Docker engine here, so instead of kind this runs the real programs as local processes:
etcd, kube-apiserver, kube-controller-manager (the real Job controller and garbage collector) and
kube-scheduler, all linked into one binary built from pinned Go modules (hack/kube, see
hack/binaries.py), plus kwok simulating GPU nodes, and kubectl and helm. Builds are cached under
~/.cache/carbontrack/ by version, so only the first run pays for compilation.

    python hack/controlplane.py build         # compile and cache the binaries
    python hack/controlplane.py up [--dir D]  # start; prints the env to use it
    python hack/controlplane.py env [--dir D] # print `export KUBECONFIG=... PATH=...`
    python hack/controlplane.py down [--dir D]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if not __package__:  # run as `python hack/controlplane.py`: import hack/ as the package it is
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hack import components
from hack.binaries import BIN, CACHE, KUBERNETES, build, log
from hack.components import GPUS_PER_NODE, REGION
from hack.pki import write_pki

DEFAULT_DIR = CACHE / "controlplane"
NODES_PER_APPLY = 100
"""Nodes registered per `kubectl apply` (add_gpu_nodes): a chunk finishes well within the 60 s timeout."""


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
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

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

    def start_process(self, name: str, args: list[str]) -> None:
        """Start one program of this control plane (stopped by down()); its output goes to logs/<name>.log."""
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

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float, proc: str | None = None) -> None:
        """Poll `check` until it is true; fails early when the program `proc` has exited."""
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
        ".status.conditions accessor error: <nil>" instead of waiting."""
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

    def _wait_apiserver(self) -> None:
        self.wait_for(
            "kube-apiserver /readyz", lambda: self.get("/readyz") == "ok", 90, proc="kube-apiserver"
        )

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
        self.start_process(name, self.args[name])
        if name == "kube-apiserver":
            self._wait_apiserver()

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
        write_pki(self.pki)
        self.ports = {n: free_port() for n in ("etcd", "etcd-peer", "apiserver", "kwok")}
        self._save()
        audit_flags = components.audit_args(self.workdir, self.audit_log, audit_level) if audit else []
        self.start_process("etcd", components.etcd(self.workdir, self.ports))
        self.start_process(
            "kube-apiserver", components.apiserver(self.workdir, self.ports, flow_control, audit_flags)
        )
        self._wait_apiserver()
        self._write_kubeconfig()
        self.start_process("kube-controller-manager", components.controller_manager(self.workdir, client_qps))
        self.start_process("kube-scheduler", components.scheduler(self.workdir, client_qps))
        self.start_process("kwok", components.kwok(self.workdir, self.ports))
        self.add_gpu_nodes(nodes)
        self._wait_until_usable(nodes)
        log(f"control plane {KUBERNETES} up in {time.monotonic() - start:.1f}s at {self.server}")
        return self

    def _wait_until_usable(self, nodes: int) -> None:
        """Until the default ServiceAccount exists and `nodes` nodes are Ready, with the scheduler alive."""
        self.wait_for(
            "service account controller (default ServiceAccount)",
            lambda: (
                self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0
            ),
            60,
            proc="kube-controller-manager",
        )
        self.wait_for("kwok nodes Ready", lambda: self._ready_nodes() >= nodes, 60, proc="kwok")
        self._check_alive("kube-scheduler")

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
        names = [f"kwok-gpu-{i}" for i in range(first, first + count)]
        docs = [components.gpu_node(name, region, gpus) for name in names]
        for at in range(0, len(docs), NODES_PER_APPLY):  # one apply of 1000 nodes outruns kubectl's 60 s
            items = docs[at : at + NODES_PER_APPLY]
            self.kubectl(
                "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
            )
        return names

    def _write_kubeconfig(self, path: Path | None = None, user: dict[str, str] | None = None) -> Path:
        path = path or self.kubeconfig
        path.write_text(json.dumps(components.kubeconfig(self.server, self.pki, user), indent=2))
        return path

    def service_account_kubeconfig(self, namespace: str, name: str) -> Path:
        """A kubeconfig that acts as a ServiceAccount (24 h token), as an in-cluster pod would."""
        token = self.kubectl("create", "token", name, "-n", namespace, "--duration=24h").stdout.strip()
        return self._write_kubeconfig(self.workdir / f"kubeconfig-{namespace}-{name}", {"token": token})

    def down(self, remove: bool = True) -> None:
        """Stop every process this control plane started (by pid, newest first) and clean up."""
        for name in reversed(list(self.pids)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pids[name], signal.SIGTERM)  # each runs in its own session: take its children
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


def print_env(cluster: ControlPlane) -> None:
    for key, value in cluster.env().items():
        print(f"export {key}={value}")


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
    running = (workdir / "state.json").exists()
    if args.command == "build":
        print(build())
    elif args.command == "up":
        if running:
            ControlPlane.load(workdir).down()
        print_env(ControlPlane(workdir).up(nodes=args.nodes))
    elif args.command == "env":
        print_env(ControlPlane.load(workdir))
    elif running:
        ControlPlane.load(workdir).down()
    else:
        log(f"nothing running under {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
