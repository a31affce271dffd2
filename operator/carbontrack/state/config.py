"""Operator configuration (environment; the Helm chart sets it)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from carbontrack.core.accounting.folding import PODS_PER_JOB, STATUS_BUDGET_BYTES, Limits

MAX_CONNECTIONS = 4096
"""The chart's default memory limit (512Mi) holds the operator with this many kept-alive connections
(benchmarks/RESULTS.md, "Connection floods")."""


@dataclass(frozen=True)
class OperatorConfig:
    telemetry_port: int = 8443
    """Port of the telemetry, metrics and health server."""
    operator_url: str = "https://carbontrack.carbontrack-system.svc:8443"
    """How sidecars reach the telemetry server (the Service's address); its host is the name they verify."""
    sidecar_image: str = "ghcr.io/carbontrack/carbontrack:0.1.0"
    sidecar_backend: str = "trainer"
    """trainer (default: the trainer's client measures, the sidecar needs no GPU), nvml (opt-in: the sidecar
    reads NVML and gets NVIDIA_VISIBLE_DEVICES=all), simulated or none."""
    sidecar_cpu: str = "50m"
    sidecar_memory: str = "96Mi"
    status_interval_s: float = 10.0
    """At most one status patch per object per interval."""
    token_cache_s: float = 300.0
    default_zone: str = ""
    intensity_provider: str = "static"
    intensity_secret: str = ""
    electricitymaps_url: str = "https://api.electricitymap.org"
    watttime_url: str = "https://api.watttime.org"
    """Provider base URLs: a proxy or mirror in an air-gapped cluster (and the tests' fake providers)."""
    intensity_ttl_s: float = 300.0
    """How long a live figure or forecast is reused before the provider is asked again."""
    max_body_bytes: int = 1 << 20
    client_timeout_s: float = 10.0
    """A telemetry request's headers, and then its body, must arrive within this (slow-loris)."""
    idle_timeout_s: float = 60.0
    """How long a kept-alive telemetry connection waits for its next request (above the sidecars' 10 s
    interval, so each sidecar keeps one connection)."""
    max_connections: int = MAX_CONNECTIONS
    """Open telemetry connections per process (0: no cap); one beyond it is closed at accept. A sidecar
    keeps one, so at least the pods this operator serves; each costs memory (telemetry.connections)."""
    first_request_timeout_s: float = 5.0
    """A new connection must complete TLS and send a request's head within this, or it is closed."""
    refused_token_cache_s: float = 30.0
    """How long a token the TokenReview refused is answered 401 without another review."""
    first_contacts_per_s: float = 5.0
    """New tokens (each a TokenReview) accepted per second from one client address, after a burst of
    `first_contact_burst`; beyond it 429 with Retry-After. 0: no limit."""
    first_contact_burst: int = 20
    namespace: str = ""
    """The operator's own namespace: provider API keys are read only from there (least privilege)."""
    peering_lifetime_s: int = 60
    """With several replicas: how long a silent peer counts as alive (bounds a takeover after a crash)."""
    peering_poll_s: float = 2.0
    judge_interval_s: float = 10.0
    """How often each job's gates and budgets are judged."""
    telemetry_plaintext: bool = False
    """Serve plain HTTP: only by explicit opt-out (CARBONTRACK_TELEMETRY_PLAINTEXT, chart tls.enabled)."""
    tls_secret: str = "carbontrack-tls"
    """Secret (operator's namespace) with tls.crt, tls.key and ca.crt."""
    tls_source: str = "self-signed"
    """self-signed: the operator issues and renews it; external: cert-manager (or you) writes the Secret."""
    tls_server_names: tuple[str, ...] = ()
    """Names in the serving certificate; default: operator_url's host (and its .cluster.local form)."""
    tls_check_s: float = 3600.0
    """How often the certificate is checked for renewal (and re-read from the Secret)."""
    tls_serving_days: float = 90.0
    """Lifetime of the serving certificate the operator issues (renewed with a third of it left)."""
    kueue_admission_check: bool = False
    """Answer Kueue AdmissionChecks with controllerName carbontrack.io/budget (needs Kueue's CRDs)."""
    kueue_elastic_jobs: bool = False
    """Kueue runs with ElasticJobsViaWorkloadSlices: a queued job annotated elastic-job scales in stages."""

    event_loop: Literal["uvloop", "asyncio"] = "asyncio"
    """asyncio's standard loop, or uvloop on request (telemetry.eventloop says why)."""

    max_pods_per_job: int = PODS_PER_JOB
    """Pods a job's status keeps (core.accounting.folding); a batch from one more is refused (422
    too-many-pods)."""
    status_budget_bytes: int = STATUS_BUDGET_BYTES
    """Estimated bytes of status.telemetry sources and folds; a new source past it is refused (422)."""

    @property
    def limits(self) -> Limits:
        return Limits(pods_per_job=self.max_pods_per_job, status_budget_bytes=self.status_budget_bytes)

    @property
    def server_names(self) -> list[str]:
        if self.tls_server_names:
            return list(self.tls_server_names)
        from urllib.parse import urlsplit

        host = urlsplit(self.operator_url).hostname or "localhost"
        return [host, f"{host}.cluster.local"] if host.endswith(".svc") else [host]

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorConfig:
        e = dict(os.environ if env is None else env)

        def get(name: str, default: str) -> str:
            return e.get(f"CARBONTRACK_{name}", default)

        plaintext = get("TELEMETRY_PLAINTEXT", "false").lower() == "true"
        url = cls.operator_url.replace("https://", "http://", 1) if plaintext else cls.operator_url
        return cls(
            telemetry_port=int(get("TELEMETRY_PORT", "8443")),
            operator_url=get("OPERATOR_URL", url),
            sidecar_image=get("SIDECAR_IMAGE", cls.sidecar_image),
            sidecar_backend=get("SIDECAR_BACKEND", "trainer"),
            sidecar_cpu=get("SIDECAR_CPU", "50m"),
            sidecar_memory=get("SIDECAR_MEMORY", "96Mi"),
            status_interval_s=float(get("STATUS_INTERVAL_S", "10")),
            token_cache_s=float(get("TOKEN_CACHE_S", "300")),
            default_zone=get("DEFAULT_ZONE", ""),
            intensity_provider=get("INTENSITY_PROVIDER", "static"),
            intensity_secret=get("INTENSITY_SECRET", ""),
            electricitymaps_url=get("ELECTRICITYMAPS_URL", cls.electricitymaps_url),
            watttime_url=get("WATTTIME_URL", cls.watttime_url),
            intensity_ttl_s=float(get("INTENSITY_TTL_S", "300")),
            max_body_bytes=int(get("MAX_BODY_BYTES", str(1 << 20))),
            client_timeout_s=float(get("CLIENT_TIMEOUT_S", "10")),
            idle_timeout_s=float(get("IDLE_TIMEOUT_S", "60")),
            max_connections=int(get("MAX_CONNECTIONS", str(MAX_CONNECTIONS))),
            first_request_timeout_s=float(get("FIRST_REQUEST_TIMEOUT_S", "5")),
            refused_token_cache_s=float(get("REFUSED_TOKEN_CACHE_S", "30")),
            first_contacts_per_s=float(get("FIRST_CONTACTS_PER_S", "5")),
            first_contact_burst=int(get("FIRST_CONTACT_BURST", "20")),
            namespace=get("NAMESPACE", ""),
            peering_lifetime_s=int(get("PEERING_LIFETIME_S", "60")),
            peering_poll_s=float(get("PEERING_POLL_S", "2")),
            judge_interval_s=float(get("JUDGE_INTERVAL_S", "10")),
            telemetry_plaintext=plaintext,
            tls_secret=get("TLS_SECRET", cls.tls_secret),
            tls_source=get("TLS_SOURCE", cls.tls_source),
            tls_server_names=tuple(n.strip() for n in get("TLS_SERVER_NAMES", "").split(",") if n.strip()),
            tls_check_s=float(get("TLS_CHECK_S", "3600")),
            tls_serving_days=float(get("TLS_SERVING_DAYS", "90")),
            max_pods_per_job=int(get("MAX_PODS_PER_JOB", str(PODS_PER_JOB))),
            status_budget_bytes=int(get("STATUS_BUDGET_BYTES", str(STATUS_BUDGET_BYTES))),
            kueue_admission_check=get("KUEUE_ADMISSION_CHECK", "false").lower() == "true",
            kueue_elastic_jobs=get("KUEUE_ELASTIC_JOBS", "false").lower() == "true",
            event_loop="uvloop" if get("EVENT_LOOP", "asyncio") == "uvloop" else "asyncio",
        )
