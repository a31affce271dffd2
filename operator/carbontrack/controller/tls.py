"""The telemetry certificate in the operator: start-up, the renewal loop, and the CA in job namespaces.

The start-up handler calls `start_tls`; `publish_ca` publishes the CA bundle into the namespace of every
CarbonTrackedJob it sees, before its pods need it (their sidecar's CA volume is not optional, so a pod
waits for the ConfigMap rather than run unverified).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import kopf
from kubernetes_asyncio import client

from carbontrack.controller.services import services_of
from carbontrack.state.config import OperatorConfig
from carbontrack.telemetry.tls import Lifetimes, TlsManager
from carbontrack.workload.jobbuilder import CA_CONFIGMAP

log = logging.getLogger("carbontrack.tls")
DEFAULT_NAMESPACE = "carbontrack-system"


async def start_tls(api: client.ApiClient, cfg: OperatorConfig) -> TlsManager | None:
    """The TLS manager with its certificate loaded and its renewal loop running; None for plain HTTP."""
    if cfg.telemetry_plaintext:
        log.warning("telemetry is served over plain HTTP (CARBONTRACK_TELEMETRY_PLAINTEXT=true)")
        return None
    manager = TlsManager(
        api,
        cfg.namespace or DEFAULT_NAMESPACE,
        cfg.tls_secret,
        cfg.server_names,
        external=cfg.tls_source == "external",
        configmap=CA_CONFIGMAP,
        lifetimes=Lifetimes(serving=dt.timedelta(days=cfg.tls_serving_days)),
    )
    delay = 1.0
    while True:  # an external Secret (cert-manager) may not be issued yet: wait for it, do not serve HTTP
        try:
            await manager.refresh()
            break
        except Exception as exc:
            log.warning("telemetry certificate not available yet: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
    manager.task = asyncio.create_task(_renew_loop(manager, cfg.tls_check_s), name="tls renewal")
    return manager


async def _renew_loop(manager: TlsManager, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            if await manager.refresh():
                log.info("telemetry certificate rotated")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep serving the current certificate; try again next round
            log.warning("telemetry certificate renewal failed: %s", exc)


async def publish_ca(namespace: str | None, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """The CA bundle in the job's namespace (once per namespace and bundle: a dict lookup otherwise)."""
    manager = services_of(memo).tls
    if manager is None or not namespace or type == "DELETED":
        return
    await manager.publish(namespace)
