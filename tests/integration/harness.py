"""The operator as a user runs it, for integration tests: a subprocess against the test apiserver."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hack.controlplane import ControlPlane

from carbontrack.intensity.static import lookup
from carbontrack.workload.jobbuilder import CA_CONFIGMAP
from tests.cases.bodies import batch_doc
from tests.cases.crs import manifest
from tests.cases.jobs import cluster_spec, production_gates
from tests.integration.sidecars import Sidecar, free_port, hold_port

ROOT = Path(__file__).resolve().parents[2]
PUE, DE_G_PER_KWH = 1.2, lookup("DE").g_per_kwh
TLS_NAMESPACE = "carbontrack-system"
_UNVERIFIED = ssl._create_unverified_context()  # only to see the operator come up, before its CA is known
TRUSTED = Path(tempfile.mkdtemp(prefix="carbontrack-ca-")) / "trusted.pem"


def trust(ca_pem: bytes) -> None:
    """Add a CA bundle to the one this process (and its children) verify HTTPS servers with."""
    have = TRUSTED.read_bytes() if TRUSTED.exists() else b""
    if ca_pem not in have:
        TRUSTED.write_bytes(have + ca_pem)
    os.environ["SSL_CERT_FILE"] = str(TRUSTED)


class Operator:
    def __init__(
        self, cluster: ControlPlane, logs: Path, args: tuple[str, ...] = (), standby: bool = False, **env: str
    ) -> None:
        """`args` go after `carbontrack operator`; `standby`: started as a peer, wait for /healthz only."""
        self.cluster = cluster
        self.args = args
        self.standby = standby
        self.extra_env = env
        self.port = free_port()
        self.tls = env.get("CARBONTRACK_TELEMETRY_PLAINTEXT") != "true"
        # sidecars verify the name in the URL, as they verify the Service's DNS name in a cluster
        self.url = f"https://localhost:{self.port}" if self.tls else f"http://127.0.0.1:{self.port}"
        self.logs = logs
        self.proc: subprocess.Popen[bytes] | None = None
        self.held: socket.socket | None = None
        """Keeps the port while the operator is stopped, so the restarted one finds it free."""

    def start(self, timeout_s: float = 30) -> None:
        if self.held is not None:
            self.held.close()
            self.held = None
        env = {
            **os.environ,
            **self.cluster.env(),
            "CARBONTRACK_TELEMETRY_PORT": str(self.port),
            "CARBONTRACK_OPERATOR_URL": self.url,
            "CARBONTRACK_STATUS_INTERVAL_S": "1",
            "CARBONTRACK_SIDECAR_BACKEND": "simulated",
            "CARBONTRACK_JUDGE_INTERVAL_S": "1",
            "CARBONTRACK_CLIENT_TIMEOUT_S": "3",
            "CARBONTRACK_TLS_SERVER_NAMES": "localhost,127.0.0.1",
            # the serving certificate lives 12 s and is renewed every ~9 s: every test runs across
            # rotations (test_telemetry_rotation counts them)
            "CARBONTRACK_TLS_SERVING_DAYS": str(12 / 86400),
            "CARBONTRACK_TLS_CHECK_S": "1",
            **self.extra_env,
        }
        if self.tls:  # the operator keeps its certificate in a Secret of its namespace
            self.cluster.kubectl("create", "namespace", TLS_NAMESPACE, check=False)
        out = self.logs.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "carbontrack.cli", "operator", *self.args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                probe = "/healthz" if self.standby else "/readyz"
                with urllib.request.urlopen(self.url + probe, timeout=1, context=_UNVERIFIED):
                    self.trust_ca()
                    return
            except OSError:
                assert self.proc.poll() is None, self.logs.read_text()[-3000:]
                time.sleep(0.2)
        raise TimeoutError("operator not ready")

    def trust_ca(self) -> None:
        """Trust the CA the operator put in its Secret, for every HTTPS request of this test process
        (SSL_CERT_FILE) and for sidecars started without an explicit CA file."""
        if not self.tls:
            return
        jsonpath = "jsonpath={.data.ca\\.crt}"
        out = self.cluster.kubectl("get", "secret", "carbontrack-tls", "-n", TLS_NAMESPACE, "-o", jsonpath)
        trust(base64.b64decode(out.stdout))

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.held = hold_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.held = hold_port(self.port)

    def ready(self) -> bool:
        """What the kubelet's readiness probe sees: a standby replica is not ready."""
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metrics(self, timeout: float = 5) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=timeout) as r:
            return str(r.read().decode())


def chart_identity(cluster: ControlPlane) -> Path:
    """The chart's ServiceAccount and least-privilege ClusterRole, applied; a kubeconfig acting as it.

    An operator started with it (KUBECONFIG=...) proves the chart's RBAC is enough, not just admitted.
    """
    from hack.render import render

    only = ("--show-only", "templates/serviceaccount.yaml", "--show-only", "templates/rbac.yaml")
    manifests = render(*only, include_crds=False)
    cluster.kubectl("create", "namespace", "carbontrack-system", check=False)
    cluster.kubectl("apply", "--server-side", "-f", "-", input=manifests)
    return cluster.service_account_kubeconfig("carbontrack-system", "carbontrack")


def metric_value(text: str, name: str, namespace: str, job: str) -> float | None:
    """One job's sample of `name` in a /metrics exposition, or None when the series is absent."""
    prefix = f'{name}{{job_name="{job}",namespace="{namespace}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None


PRODUCTION_GATES: dict[str, Any] = production_gates(medium=1)


def report_evidence(trainer: Any, step: int, accuracy: float = 0.86) -> None:
    """What a trainer reports for PRODUCTION_GATES: an eval and its DP-SGD parameters."""
    trainer.report_eval({"eval_accuracy": accuracy}, step=step)
    trainer.report_dp(noise_multiplier=1.1, sample_rate=0.001, delta=1e-5, accountant_epsilon=0.9, step=step)


def train(trainer: Any, start: int, stop: int, accuracy: float) -> None:
    """The evidence PRODUCTION_GATES judge, reported at `stop`, then steps start..stop: the sidecar sends
    what it has each interval, so the step that makes a stage judgeable never arrives before the
    evidence (reported after it, an interval could fall between them, or between the eval and the DP
    parameters, and the stage be judged without them)."""
    report_evidence(trainer, stop, accuracy)
    for s in range(start, stop + 1):
        trainer.step(s)


def step_all(trainers: list[Any], first: int, last: int, pause_s: float = 0.05) -> None:
    """The pods of a data-parallel job step together: every trainer marks each step first..last."""
    for step in range(first, last + 1):
        for t in trainers:
            t.step(step)
        time.sleep(pause_s)


def train_until_asked_to_stop(trainer: Any, step: int, timeout_s: float = 60) -> int:
    """The training loop of a trainer that checkpoints on request: a step (ten a second), then the check,
    until the operator asks it to stop; the last step."""
    deadline = time.monotonic() + timeout_s
    while not trainer.should_stop():
        assert time.monotonic() < deadline, "the stop request did not reach the trainer"
        step += 1
        trainer.step(step)
        time.sleep(0.1)
    return step


def ctj(name: str, replicas: int, gates: dict[str, Any] | None = None) -> dict[str, Any]:
    """A job whose canary is already full size; telemetry tests: promotion is not what they judge,
    unless they name gates."""
    canary = {"replicas": replicas, "minSteps": 10, "stages": [100]}
    return manifest(name, cluster_spec(replicas, canary=canary, carbon={"pue": PUE}, gates=gates))


@contextlib.contextmanager
def operator_instead(session: Operator, logs: Path, **env: str) -> Iterator[Operator]:
    """An operator with `env`, not started, in place of the session's (which would judge the same
    objects): the session's is stopped first and started again after, on its own port."""
    session.stop()
    own = Operator(session.cluster, logs, **env)
    try:
        yield own
    finally:
        own.stop()
        session.start()


def apply(cluster: ControlPlane, namespace: str, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """kubectl apply one object; returns the completed process (check=False) so tests can read errors."""
    return cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False)


def wait(cond: Any, timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"{what} not met in {timeout}s (last: {last!r})")


def running_pods(cluster: ControlPlane, namespace: str, job: str, count: int) -> list[tuple[str, str]]:
    def pods() -> list[tuple[str, str]] | None:
        out = cluster.kubectl("get", "pods", "-n", namespace, "-l", f"carbontrack.io/job={job}", "-o", "json")
        items = [p for p in json.loads(out.stdout)["items"] if p.get("status", {}).get("phase") == "Running"]
        return [(p["metadata"]["name"], p["metadata"]["uid"]) for p in items] if len(items) == count else None

    return list(wait(pods, what=f"{count} running pods of {job}"))


def pod_token(cluster: ControlPlane, namespace: str, pod: str, uid: str) -> str:
    """What the projected token volume holds: a token bound to this pod, audience carbontrack."""
    return cluster.kubectl(
        "create", "token", "default", "-n", namespace, "--audience=carbontrack", "--duration=1h",
        "--bound-object-kind=Pod", f"--bound-object-name={pod}", f"--bound-object-uid={uid}",
    ).stdout.strip()  # fmt: skip


def status(cluster: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "ctj", name, "-n", namespace, "-o", "json").stdout
    return dict(json.loads(out).get("status") or {})


def phase_is(cluster: ControlPlane, namespace: str, name: str, phase: str) -> Any:
    """The status once the job is in `phase`."""
    return wait(
        lambda: (s := status(cluster, namespace, name)).get("phase") == phase and s, what=f"phase {phase}"
    )


def wait_for_energy(
    cluster: ControlPlane, namespace: str, name: str, joules: float, timeout: float = 60
) -> dict[str, Any]:
    """The status once its energy equals `joules` (to a microjoule): the exactness invariant."""
    return dict(
        wait(
            lambda: (
                (s := status(cluster, namespace, name))
                and abs(s.get("energyJoules", 0) - joules) < 1e-6
                and s
            ),
            timeout=timeout,
            what=f"status energy of {name} = {joules} J",
        )
    )


def published_ca(cluster: ControlPlane, namespace: str, tmp: Path) -> Path:
    """The CA bundle the operator published in `namespace`, as the pod's ConfigMap volume holds it."""
    jsonpath = "jsonpath={.data.ca\\.crt}"

    def read() -> str | None:
        out = cluster.kubectl("get", "configmap", CA_CONFIGMAP, "-n", namespace, "-o", jsonpath, check=False)
        return out.stdout if out.returncode == 0 and out.stdout.strip() else None

    path = tmp / f"ca-{namespace}.crt"
    path.write_text(wait(read, what=f"the CA ConfigMap in {namespace}"))
    return path


def start_sidecar(
    tmp: Path, op: Operator, cluster: ControlPlane, ns: str, job: str, pod: str, uid: str
) -> Sidecar:
    """The sidecar of a pod of TEMPLATE, which holds one GPU: one simulated GPU (the operator refuses a
    batch listing more GPUs than its pod holds)."""
    tls = getattr(op, "tls", False)  # a ReadyService (test_peering) stands in plain HTTP before the replicas
    ca = {"CARBONTRACK_CA_FILE": str(published_ca(cluster, ns, tmp))} if tls else {}
    return Sidecar(
        tmp, op.url, token=pod_token(cluster, ns, pod, uid), CARBONTRACK_SIM_GPUS="1",
        CARBONTRACK_JOB_NAME=job, POD_NAMESPACE=ns, POD_NAME=pod, POD_UID=uid, **ca,
    )  # fmt: skip


def start_sidecars(
    tmp: Path, op: Operator, cluster: ControlPlane, ns: str, job: str, count: int, have: dict[str, Sidecar]
) -> dict[str, Sidecar]:
    """A sidecar for each of the job's `count` running pods that has none in `have` (added to it, and
    returned), as the kubelet starts each pod's native sidecar: a running pod that never reports is
    unmeasured, and fails a staging or production carbon gate closed (core.rollout.coverage)."""
    for pod, uid in running_pods(cluster, ns, job, count):
        if pod not in have:
            have[pod] = start_sidecar(tmp, op, cluster, ns, job, pod, uid)
    return have


def post(url: str, token: str, body: bytes | dict[str, Any]) -> tuple[int, str]:
    """POST a telemetry body as a sidecar would; (status, body), whatever the status."""
    import urllib.error

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        url + "/v1/telemetry", data=data, method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def post_batch(url: str, token: str, namespace: str, job: str, pod: str, seq: int = 1) -> tuple[int, str]:
    """POST one small, well-formed batch with the given token."""
    return post(url, token, batch_doc(namespace, job, pod, boot="manual", seq=seq))


def decide(cluster: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    """`carbontrack <args>` (approve, reject, ...) as a user runs it, with the cluster's kubeconfig."""
    return subprocess.run(
        [sys.executable, "-m", "carbontrack.cli", *args], env={**cluster.env()}, capture_output=True,
        text=True, timeout=90, check=False,
    )  # fmt: skip


def whoami(cluster: ControlPlane) -> str:
    return cluster.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout.strip()
