"""Operator configuration (environment; the Helm chart sets it)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from carbontrack.core.accounting.folding import LIVE_WINDOW_S, PODS_PER_JOB, STATUS_BUDGET_BYTES, Limits

# --- metric gates' Prometheus endpoints, and the cluster checks (Kueue's API, watched namespaces) -------

_ENDPOINT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENDPOINT_URL = re.compile(r"^https?://[^\s/?#@]+(/[^\s?#]*)?$")


@dataclass(frozen=True)
class PrometheusEndpoint:
    """A Prometheus the cluster admin lists (chart value prometheus.endpoints): a metric gate names one
    (spec.gates.metrics[].prometheus.endpoint), so the operator contacts only servers its admin chose."""

    name: str
    url: str


@dataclass(frozen=True)
class PrometheusSettings:
    endpoints: tuple[PrometheusEndpoint, ...] = ()
    max_response_bytes: int = 1 << 20
    """An answer past this is a measurement error, read no further (an instant query's is a few hundred
    bytes)."""

    def named(self, name: str) -> PrometheusEndpoint | None:
        return next((e for e in self.endpoints if e.name == name), None)


def prometheus_endpoints(text: str) -> tuple[PrometheusEndpoint, ...]:
    """CARBONTRACK_PROMETHEUS_ENDPOINTS: a JSON list of {name, url} (the chart writes it from its values).
    A malformed list stops the operator at start-up with the reason: a gate must never reach a server
    the admin did not mean."""
    where = "CARBONTRACK_PROMETHEUS_ENDPOINTS"
    try:
        items: Any = json.loads(text or "[]")
    except ValueError as exc:
        raise ValueError(f"{where}: not JSON: {exc}") from exc
    if not isinstance(items, list):
        raise ValueError(f"{where}: a JSON list of {{name, url}} objects")
    out: list[PrometheusEndpoint] = []
    for item in items:
        if not isinstance(item, dict) or set(item) != {"name", "url"}:
            raise ValueError(f"{where}: each entry is {{name, url}}, not {item!r}")
        name, url = item["name"], item["url"]
        if not isinstance(name, str) or len(name) > 63 or not _ENDPOINT_NAME.match(name):
            raise ValueError(f"{where}: name {name!r} is not a DNS label")
        if not isinstance(url, str) or len(url) > 512 or not _ENDPOINT_URL.match(url):
            raise ValueError(f"{where}: url {url!r} of {name} is not an http(s) URL without credentials")
        if any(e.name == name for e in out):
            raise ValueError(f"{where}: {name} is listed twice")
        out.append(PrometheusEndpoint(name, url))
    return tuple(out)


# -- Shards: which jobs this operator serves (ha.sharding chooses a new job's shard) ----------------

SHARD_LABEL = "carbontrack.io/shard"
"""On a CarbonTrackedJob and its Job: the shard that serves it, written once when a shard claims it."""

UNSHARDED_OWNER = 0
"""The shard of a job built before sharding was turned on: its sidecars report to the unsharded
operator's Service, which shard 0 keeps (the chart names shard 0's Service as before)."""


@dataclass(frozen=True)
class Sharding:
    """This operator's shard among `shards`; `draining` shards keep their jobs but take no new ones.

    One shard (the default) serves every job, labelled or not, exactly as an operator without shards."""

    shard: int = 0
    shards: int = 1
    draining: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if not 0 <= self.shard < self.shards:
            raise ValueError(f"CARBONTRACK_SHARD={self.shard} is not one of 0..{self.shards - 1}")
        if not self.draining <= set(range(self.shards)) or not self.accepting:
            raise ValueError(
                f"CARBONTRACK_SHARDS_DRAINING={sorted(self.draining)} must name shards of "
                f"0..{self.shards - 1} and leave at least one taking new jobs"
            )

    @property
    def enabled(self) -> bool:
        return self.shards > 1

    @property
    def accepting(self) -> tuple[int, ...]:
        """The shards a new job may land on, in id order."""
        return tuple(k for k in range(self.shards) if k not in self.draining)

    def owner(self, labels: Mapping[str, str] | None) -> int | None:
        """The shard a job's (or its Job's) labels give it: unlabelled means built before sharding;
        None for a label that names no shard."""
        value = (labels or {}).get(SHARD_LABEL)
        if value is None:
            return UNSHARDED_OWNER
        return int(value) if value.isdigit() else None

    def owns(self, labels: Mapping[str, str] | None) -> bool:
        """Whether this operator serves the job: every job without shards, else the jobs labelled with
        this shard (and, for shard 0, those built before sharding)."""
        return not self.enabled or self.owner(labels) == self.shard

    @classmethod
    def from_env(cls, get: Callable[[str, str], str]) -> Sharding:
        draining = frozenset(int(k) for k in get("SHARDS_DRAINING", "").split(",") if k.strip())
        return cls(int(get("SHARD", "0")), int(get("SHARDS", "1")), draining)


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
    live_boot_window_s: float = LIVE_WINDOW_S
    """A sidecar boot with a batch accepted within this is live and never folded for a new boot id, which
    is refused (429) instead (core.accounting.boots)."""

    # --- metric gates' Prometheus endpoints, and the cluster checks
    prometheus: PrometheusSettings = field(default_factory=PrometheusSettings)
    """The Prometheus endpoints metric gates may name, and the cap on an answer."""
    cluster_check_s: float = 30.0
    """How often the operator checks whether Kueue's API is served and the watched namespaces exist."""
    watch_namespaces: tuple[str, ...] = ()
    """The namespaces the operator watches (`--namespace`; empty: every namespace)."""
    pod_name: str = ""
    """The operator's own Pod (POD_NAME, set by the chart): its Events about the cluster go there."""
    sharding: Sharding = field(default_factory=Sharding)
    """This operator's shard (CARBONTRACK_SHARD, CARBONTRACK_SHARDS, CARBONTRACK_SHARDS_DRAINING)."""

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
            operator_url=get("OPERATOR_URL", url),
            sidecar_image=get("SIDECAR_IMAGE", cls.sidecar_image),
            sidecar_backend=get("SIDECAR_BACKEND", "trainer"),
            sidecar_cpu=get("SIDECAR_CPU", "50m"),
            sidecar_memory=get("SIDECAR_MEMORY", "96Mi"),
            status_interval_s=float(get("STATUS_INTERVAL_S", "10")),
            default_zone=get("DEFAULT_ZONE", ""),
            intensity_provider=get("INTENSITY_PROVIDER", "static"),
            intensity_secret=get("INTENSITY_SECRET", ""),
            electricitymaps_url=get("ELECTRICITYMAPS_URL", cls.electricitymaps_url),
            watttime_url=get("WATTTIME_URL", cls.watttime_url),
            intensity_ttl_s=float(get("INTENSITY_TTL_S", "300")),
            telemetry_plaintext=plaintext,
            **_telemetry_fields(get),
            **_operator_fields(get, e.get("POD_NAME", "")),
        )


def _telemetry_fields(get: Callable[[str, str], str]) -> dict[str, Any]:
    """The telemetry server's settings: its port, limits, token caches and TLS."""
    return dict(
        telemetry_port=int(get("TELEMETRY_PORT", "8443")),
        token_cache_s=float(get("TOKEN_CACHE_S", "300")),
        max_body_bytes=int(get("MAX_BODY_BYTES", str(1 << 20))),
        client_timeout_s=float(get("CLIENT_TIMEOUT_S", "10")),
        idle_timeout_s=float(get("IDLE_TIMEOUT_S", "60")),
        max_connections=int(get("MAX_CONNECTIONS", str(MAX_CONNECTIONS))),
        first_request_timeout_s=float(get("FIRST_REQUEST_TIMEOUT_S", "5")),
        refused_token_cache_s=float(get("REFUSED_TOKEN_CACHE_S", "30")),
        first_contacts_per_s=float(get("FIRST_CONTACTS_PER_S", "5")),
        first_contact_burst=int(get("FIRST_CONTACT_BURST", "20")),
        tls_secret=get("TLS_SECRET", OperatorConfig.tls_secret),
        tls_source=get("TLS_SOURCE", OperatorConfig.tls_source),
        tls_server_names=tuple(n.strip() for n in get("TLS_SERVER_NAMES", "").split(",") if n.strip()),
        tls_check_s=float(get("TLS_CHECK_S", "3600")),
        tls_serving_days=float(get("TLS_SERVING_DAYS", "90")),
    )


def _operator_fields(get: Callable[[str, str], str], pod_name: str) -> dict[str, Any]:
    """How the operator runs: its namespace, peering, judgement, bounds, Kueue, metric gates, shards."""
    return dict(
        namespace=get("NAMESPACE", ""),
        peering_lifetime_s=int(get("PEERING_LIFETIME_S", "60")),
        peering_poll_s=float(get("PEERING_POLL_S", "2")),
        judge_interval_s=float(get("JUDGE_INTERVAL_S", "10")),
        max_pods_per_job=int(get("MAX_PODS_PER_JOB", str(PODS_PER_JOB))),
        status_budget_bytes=int(get("STATUS_BUDGET_BYTES", str(STATUS_BUDGET_BYTES))),
        live_boot_window_s=float(get("LIVE_BOOT_WINDOW_S", str(LIVE_WINDOW_S))),
        kueue_admission_check=get("KUEUE_ADMISSION_CHECK", "false").lower() == "true",
        kueue_elastic_jobs=get("KUEUE_ELASTIC_JOBS", "false").lower() == "true",
        event_loop="uvloop" if get("EVENT_LOOP", "asyncio") == "uvloop" else "asyncio",
        prometheus=PrometheusSettings(
            endpoints=prometheus_endpoints(get("PROMETHEUS_ENDPOINTS", "[]")),
            max_response_bytes=int(get("PROMETHEUS_MAX_RESPONSE_BYTES", str(1 << 20))),
        ),
        cluster_check_s=float(get("CLUSTER_CHECK_S", "30")),
        pod_name=pod_name,
        sharding=Sharding.from_env(get),
    )
