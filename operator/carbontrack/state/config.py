"""Operator configuration (environment; the Helm chart sets it)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from carbontrack.core.accounting.folding import LIVE_WINDOW_S, PODS_PER_JOB, STATUS_BUDGET_BYTES, Limits


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
    live_boot_window_s: float = LIVE_WINDOW_S
    """A sidecar boot with a batch accepted within this is live and never folded for a new boot id, which
    is refused (429) instead (core.accounting.boots)."""

    @property
    def limits(self) -> Limits:
        return Limits(
            pods_per_job=self.max_pods_per_job,
            status_budget_bytes=self.status_budget_bytes,
            live_window_s=self.live_boot_window_s,
        )

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
            live_boot_window_s=float(get("LIVE_BOOT_WINDOW_S", str(LIVE_WINDOW_S))),
            kueue_admission_check=get("KUEUE_ADMISSION_CHECK", "false").lower() == "true",
            kueue_elastic_jobs=get("KUEUE_ELASTIC_JOBS", "false").lower() == "true",
            event_loop="uvloop" if get("EVENT_LOOP", "asyncio") == "uvloop" else "asyncio",
        )
