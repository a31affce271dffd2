"""The composition root: kopf's settings, and the services every handler uses, built once at start-up.

`startup` runs before kopf watches anything: it configures kopf (progress and diff-base in annotations
under carbontrack.io, Events from INFO), builds the Kubernetes client, the job registry and its metric
collector, the telemetry server with its authenticator and certificate, and, with several replicas, the
monitor that switches this one between active and standby, and the cluster checks (Kueue's API, the
watched namespaces: controller.cluster_checks). `cleanup` stops them in reverse.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import kopf
from kubernetes_asyncio import client, config

from carbontrack.controller.cluster_checks import ClusterChecks
from carbontrack.controller.services import Launch, Services, launch_of
from carbontrack.controller.tls import start_tls
from carbontrack.ha.leadership import PeeringMonitor
from carbontrack.state import metrics
from carbontrack.state.metrics import JobCollector
from carbontrack.state.registry import Registry
from carbontrack.telemetry import gc_tuning as heap
from carbontrack.telemetry.server import TelemetryServer

WATCH_TIMEOUT_S = 300
"""The apiserver ends each watch after this long, and kopf starts a new one."""

READ_BUFFER_BYTES = 2**21
"""aiohttp's read buffer for the Kubernetes client, as kubernetes_asyncio sets it: a watch event
carrying a large object (etcd takes up to 1.5 MiB) fits."""


async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Configure kopf and build the services (kept in `memo.services`)."""
    launch = launch_of(memo)
    configure(settings, launch)
    memo.services = await build_services(launch)
    # everything allocated so far lives as long as the process: frozen out of the collector's sight,
    # and the first generation's threshold raised (telemetry.gc_tuning)
    heap.settle()


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Stop the services: the status writers flush, so the next operator resumes from status."""
    services: Services | None = memo.get("services")
    if services is None:
        return
    if services.tls is not None and services.tls.task is not None:
        services.tls.task.cancel()  # its renewals would fail on the closed API session until exit
    if services.monitor is not None:
        await services.monitor.stop()
    if services.cluster is not None:
        await services.cluster.stop()
    await services.server.stop()
    await services.registry.close()
    metrics.REGISTRY.unregister(services.collector)
    await services.api.close()


def configure(settings: kopf.OperatorSettings, launch: Launch) -> None:
    """kopf's settings: its progress and last-handled spec in annotations under carbontrack.io."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="carbontrack.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="carbontrack.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = WATCH_TIMEOUT_S
    if launch.peering is not None:
        settings.peering.lifetime = launch.config.peering_lifetime_s


async def build_services(launch: Launch) -> Services:
    """Every service, wired; the telemetry server listening (HTTPS unless plain HTTP was chosen)."""
    cfg = launch.config
    api = await api_client()
    registry = Registry(api, cfg)
    collector = JobCollector(registry.states)
    metrics.REGISTRY.register(collector)
    server = TelemetryServer.from_config(registry, api, cfg)
    authenticator = server.auth
    monitor = _standby_monitor(api, launch, server, registry)
    tls = await start_tls(api, cfg)  # None only with the plain-HTTP opt-out
    checks = ClusterChecks(api, cfg)
    await checks.check()  # before kopf watches: the first reconcile knows whether Kueue is there
    checks.start()
    await server.start("0.0.0.0", cfg.telemetry_port, tls.context if tls else None)
    return Services(
        config=cfg,
        api=api,
        registry=registry,
        authenticator=authenticator,
        server=server,
        collector=collector,
        tls=tls,
        monitor=monitor,
        cluster=checks,
    )


async def api_client() -> client.ApiClient:
    """The Kubernetes client: in-cluster credentials, else the kubeconfig."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        await config.load_kube_config()
    api = client.ApiClient()
    ignore_environment(api)
    return api


def ignore_environment(api: client.ApiClient) -> None:
    """Rebuild the client's HTTP session on its own connector, without trusting the environment.

    kubernetes_asyncio's session trusts the environment, so every request hops to a thread to look
    for proxy settings and a ~/.netrc; in-cluster nothing there applies, and kopf's own client does
    not trust it either. `detach` hands the connector over without closing it."""
    session = api.rest_client.pool_manager
    connector = session.connector
    session.detach()
    api.rest_client.pool_manager = aiohttp.ClientSession(
        connector=connector, trust_env=False, read_bufsize=READ_BUFFER_BYTES
    )


def _standby_monitor(
    api: client.ApiClient, launch: Launch, server: TelemetryServer, registry: Registry
) -> PeeringMonitor | None:
    """With several replicas: the monitor that makes this one's telemetry server active or a standby
    (a standby until the peering object says otherwise; a replica that becomes one hands its jobs over)."""
    peer, cfg = launch.peering, launch.config
    if peer is None:
        return None
    server.active = False

    async def switch(active: bool) -> None:
        server.active = active
        if not active:
            await registry.release()

    monitor = PeeringMonitor(
        api, peer.name, peer.namespaces, peer.identity, peer.priority, switch, cfg.peering_poll_s
    )
    monitor.start()
    return monitor
