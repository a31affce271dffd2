"""Follows kopf's peering object and switches the telemetry path between active and standby.

Polling (one GET per interval per replica) rather than a watch: it needs no resume logic across
apiserver restarts, and the interval is far below the peer lifetime that bounds a takeover anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.ha.peering import is_active

log = logging.getLogger("carbontrack.peering")

PEERING_GROUP, PEERING_VERSION = "kopf.dev", "v1"


class PeeringMonitor:
    """Active while this replica holds kopf's peering in every peering object it takes part in."""

    def __init__(
        self,
        api: client.ApiClient,
        name: str,
        namespaces: list[str],
        identity: str,
        priority: int,
        on_change: Callable[[bool], Awaitable[None]],
        interval_s: float = 2.0,
    ) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.name = name
        self.namespaces = namespaces  # empty: cluster-wide (ClusterKopfPeering)
        self.identity = identity
        self.priority = priority
        self.on_change = on_change
        self.interval_s = interval_s
        self.active = False
        self._task: asyncio.Task[None] | None = None

    async def _peering_status(self, namespace: str | None) -> dict[str, object] | None:
        try:
            if namespace is None:
                obj = await self.custom.get_cluster_custom_object(
                    PEERING_GROUP, PEERING_VERSION, "clusterkopfpeerings", self.name
                )
            else:
                obj = await self.custom.get_namespaced_custom_object(
                    PEERING_GROUP, PEERING_VERSION, namespace, "kopfpeerings", self.name
                )
        except ApiException as exc:
            if exc.status == 404:
                log.warning(
                    "peering object missing: create it (the Helm chart does)",
                    extra={"peering": self.name, "namespace": namespace},
                )
                return None
            raise
        status = obj.get("status")
        return status if isinstance(status, dict) else {}

    async def holds_peering(self) -> bool:
        now = dt.datetime.now(dt.UTC)
        where: list[str | None] = list(self.namespaces) or [None]
        for namespace in where:
            status = await self._peering_status(namespace)
            if status is None or not is_active(status, self.identity, self.priority, now):
                return False
        return True

    async def _loop(self) -> None:
        while True:
            try:
                active = await self.holds_peering()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # apiserver unreachable: keep the last verdict, kopf does too
                log.warning("peering check failed: %s", exc)
                active = self.active
            if active != self.active:
                self.active = active
                log.info(
                    "this replica is now %s" % ("active" if active else "standby"),
                    extra={"identity": self.identity, "priority": self.priority},
                )
                await self.on_change(active)
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="peering monitor")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
