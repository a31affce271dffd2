"""Sidecar configuration, from the environment the operator injects (and the downward API)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from carbontrack.api.contract import CA_DIR, HEALTH_PORT, SIDECAR_ADDR, TOKEN_FILE

BackendName = Literal["trainer", "nvml", "simulated", "none"]
"""trainer: the trainer's own NVML samples (default, no GPU in the sidecar); nvml: the sidecar reads
NVML itself (opt-in, where the cluster gives it the GPUs); simulated: traces; none: no measurement."""


@dataclass(frozen=True)
class SidecarConfig:
    operator_url: str
    """e.g. http://carbontrack.carbontrack-system.svc:8443 ; empty = keep counting, ship nowhere."""
    job_namespace: str
    job_name: str
    pod_namespace: str
    pod_name: str
    pod_uid: str = ""
    listen: str = SIDECAR_ADDR
    """UDP address for the trainer's markers."""
    health_port: int = HEALTH_PORT
    health_host: str = "0.0.0.0"
    """The kubelet probes /healthz on the pod IP, so it listens there, not only on loopback."""
    backend: BackendName = "trainer"
    visible_devices: str | None = None
    """nvml mode: which GPUs to open (UUIDs or indices); normally the trainer's NVML inventory says.
    Either way the measured UUIDs must equal the trainer's, or nothing is measured."""
    allow_all_gpus: bool = False
    sim_trace: str = "square:350,120,2.0"
    sim_gpus: int = 1
    sim_counter: bool = True
    """False simulates a GPU without an energy counter (pre-Volta): power is sampled and integrated."""
    interval_s: float = 10.0
    """Seconds between batches (each drawn within +-10 %: sidecar.app); the first batch with a step and
    eval, DP and end reports go at once. 10 s: 100 step records a batch at 10 steps/s, few enough
    batches that one operator takes thousands of pods (benchmarks/RESULTS.md, "Telemetry ingest")."""
    sample_hz: float = 10.0
    token_file: str = TOKEN_FILE
    buffer_records: int = 10_000
    request_timeout_s: float = 5.0
    max_backoff_s: float = 30.0
    ca_file: str = f"{CA_DIR}/ca.crt"
    """CA bundle that signs the operator's certificate (an https operator URL): when the file changes
    (the ConfigMap it is mounted from follows the operator's CA) the kept-alive connection is closed and
    the next handshake verifies with the new bundle."""
    marker_wait_s: float = 2.0
    """trainer mode: how long a step marker waits for a reading at or after it before it is closed
    with the newest reading (a trainer that stopped sampling must not hold records forever)."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SidecarConfig:
        e = dict(os.environ if env is None else env)

        def get(name: str, default: str = "") -> str:
            return e.get(f"CARBONTRACK_{name}", default)

        backend = get("ENERGY_BACKEND", "trainer")
        if backend not in ("trainer", "nvml", "simulated", "none"):
            raise ValueError(f"CARBONTRACK_ENERGY_BACKEND={backend!r}: use trainer, nvml, simulated or none")
        return cls(
            operator_url=get("OPERATOR_URL"),
            job_namespace=get("JOB_NAMESPACE") or e.get("POD_NAMESPACE", ""),
            job_name=get("JOB_NAME"),
            pod_namespace=e.get("POD_NAMESPACE", ""),
            pod_name=e.get("POD_NAME", ""),
            pod_uid=e.get("POD_UID", ""),
            listen=get("SIDECAR_ADDR", SIDECAR_ADDR),
            health_port=int(get("HEALTH_PORT", str(HEALTH_PORT))),
            health_host=get("HEALTH_HOST", "0.0.0.0"),
            backend=backend,  # type: ignore[arg-type]
            visible_devices=get("VISIBLE_DEVICES") or None,
            allow_all_gpus=get("ALLOW_ALL_GPUS", "false").lower() == "true",
            sim_trace=get("SIM_TRACE", "square:350,120,2.0"),
            sim_gpus=int(get("SIM_GPUS", "1")),
            sim_counter=get("SIM_NO_COUNTER", "false").lower() != "true",
            interval_s=float(get("INTERVAL_S", "10")),
            sample_hz=float(get("SAMPLE_HZ", "10")),
            token_file=get("TOKEN_FILE", TOKEN_FILE),
            buffer_records=int(get("BUFFER_RECORDS", "10000")),
            max_backoff_s=float(get("MAX_BACKOFF_S", "30")),
            ca_file=get("CA_FILE", f"{CA_DIR}/ca.crt"),
            marker_wait_s=float(get("MARKER_WAIT_S", "2")),
        )
