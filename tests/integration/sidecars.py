"""Running the real sidecar process from tests, as the kubelet would run it in a pod, and a stand-in for
the operator's telemetry endpoint that records what it sends.

kwok runs no container: a test starts the sidecar of a pod itself, and ends the pod as the kubelet ends
one with a native sidecar (`exit_pods`): the trainer exits, the sidecar gets SIGTERM and sends its final
flush, and only then does the pod complete.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carbontrack.api.wire import TelemetryBatch
from carbontrack.trainer import client

if TYPE_CHECKING:
    from hack.controlplane import ControlPlane


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out for outgoing connections and bind(0)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


PORTS = range(15000, min(_ephemeral_low(), 32768))
"""Where servers the tests start listen: below the ephemeral range, so no outgoing connection of any
process (kubectl, the apiserver, a sidecar) takes a port an operator stopped by a test comes back on."""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port no one holds now, from PORTS (tried as the operator binds: every address)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.choice(PORTS)
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {PORTS}")


def hold_port(port: int) -> socket.socket | None:
    """A socket bound to `port` (not listening) that keeps others off it until closed; None if taken.
    SO_REUSEADDR: the stopped server's connections may linger in TIME_WAIT on it; free_port's test bind,
    without it, still fails."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("0.0.0.0", port))
    except OSError:
        s.close()
        return None
    return s


RUNNING: list[subprocess.Popen[str]] = []
"""Every sidecar a test started, so a failed test cannot leave one running (see conftest)."""


def stop_all() -> None:
    for proc in RUNNING:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    RUNNING.clear()


class Sidecar:
    """One sidecar process; `env` overrides the defaults (simulated 2 x 300 W GPUs, 0.2 s batches: fast
    tests; CARBONTRACK_INTERVAL_S="" leaves the sidecar's own default, 10 s)."""

    def __init__(self, tmp: Path, operator_url: str, token: str = "test-token", **env: str) -> None:
        self.udp = free_port(socket.SOCK_DGRAM)
        self.health = free_port()
        token_file = tmp / f"token-{self.udp}"
        token_file.write_text(token + "\n")
        self.env = {
            **os.environ,
            "CARBONTRACK_OPERATOR_URL": operator_url,
            "CARBONTRACK_JOB_NAME": "llama",
            "POD_NAMESPACE": "ml",
            "POD_NAME": "llama-0-abcde",
            "POD_UID": "uid-1",
            "CARBONTRACK_SIDECAR_ADDR": f"127.0.0.1:{self.udp}",
            "CARBONTRACK_HEALTH_PORT": str(self.health),
            "CARBONTRACK_ENERGY_BACKEND": "simulated",
            "CARBONTRACK_SIM_TRACE": "constant:300",
            "CARBONTRACK_SIM_GPUS": "2",
            "CARBONTRACK_INTERVAL_S": "0.2",
            "CARBONTRACK_MAX_BACKOFF_S": "1",
            "CARBONTRACK_TOKEN_FILE": str(token_file),
            # an https operator: the CA bundle the test trusts (harness.trust), unless env names one
            "CARBONTRACK_CA_FILE": os.environ.get("SSL_CERT_FILE", ""),
            **env,
        }
        if self.env["CARBONTRACK_INTERVAL_S"] == "":
            del self.env["CARBONTRACK_INTERVAL_S"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "carbontrack.sidecar"], env=self.env, stderr=subprocess.PIPE, text=True
        )
        RUNNING.append(self.proc)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                self.healthz()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("sidecar did not come up")

    def healthz(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health}/healthz", timeout=2) as r:
            return dict(json.loads(r.read()))

    def client(self) -> client.Client:
        return client.Client(f"127.0.0.1:{self.udp}")

    def stop(self) -> str:
        """SIGTERM (final flush) and return the sidecar's log."""
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        return err

    def final_energy(self, log: str) -> float:
        """Energy of the final batch, from the sidecar's structured 'sidecar stopped' line."""
        for line in log.splitlines():
            if '"sidecar stopped"' in line:
                return float(json.loads(line)["energyJ"])
        raise AssertionError(f"no final line in sidecar log:\n{log[-2000:]}")


EXIT_ANNOTATION = "carbontrack.io/test-exit"
"""kwok completes a pod that carries it (hack/stages.yaml): "0" Succeeded, any other code Failed."""


def exit_pods(
    cluster: ControlPlane, namespace: str, sidecars: Mapping[str, Sidecar], code: int = 0
) -> dict[str, float]:
    """Each pod's trainer exits with `code`: its sidecar stops with its final flush, then the pod
    completes, in that order, as the kubelet stops a native sidecar before the pod's phase is final.
    Returns each pod's final energy (joules) as its sidecar sent it."""
    finals = {}
    for pod, sidecar in sidecars.items():
        finals[pod] = sidecar.final_energy(sidecar.stop()) if sidecar.proc.poll() is None else 0.0
        cluster.kubectl("annotate", "pod", pod, "-n", namespace, f"{EXIT_ANNOTATION}={code}")
    return finals


class Receiver:
    """A stand-in for the operator's telemetry endpoint: records batches and acknowledges them."""

    def __init__(self, port: int) -> None:
        self.batches: list[TelemetryBatch] = []
        self.tokens: list[str] = []
        self.arrived: list[float] = []
        self.peers: list[tuple[str, int]] = []
        """The client address of each batch's connection (one address: one kept-alive connection)."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the operator's server

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                batch = TelemetryBatch.model_validate_json(body)
                outer.batches.append(batch)
                outer.arrived.append(time.monotonic())
                outer.peers.append(self.client_address)
                outer.tokens.append(self.headers.get("Authorization", ""))
                reply = json.dumps({"accepted": True, "seq": batch.seq}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def records(self) -> dict[int, float]:
        """Step -> energy, deduplicated by step as the operator does."""
        return {r.step: r.energy_joules for b in self.batches for r in b.steps}


def wait_for(cond: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")
