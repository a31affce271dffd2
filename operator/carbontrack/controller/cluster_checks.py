"""What the operator checks of the cluster beyond its jobs: whether Kueue's API is served, and whether the
namespaces it is told to watch exist. Checked by the start-up handler before kopf watches anything (so
the first reconcile knows), then every `cluster_check_s`, so Kueue or a namespace that comes later is seen.

A queue-labelled job is refused while Kueue's API is not served (core.scheduling.kueue.kueue_missing).

A watched namespace that does not exist is a Warning Event (`WatchedNamespaceMissing`, when it is found
missing) and the gauge `carbontrack_watched_namespace_missing{namespace}` = 1, not an operator that
refuses to be Ready: readiness gates the telemetry Service, so one absent namespace would cut off the
telemetry of every job in the namespaces that do exist, and a namespace created after the chart is
installed (the usual order) is served as soon as it exists, by the watch kopf already holds on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.integrations.kueue import discovery
from carbontrack.state import metrics
from carbontrack.state.config import OperatorConfig

log = logging.getLogger("carbontrack.operator")

UNANSWERED = (ApiException, aiohttp.ClientError, TimeoutError)
"""What an apiserver that does not answer raises: the last facts stand until the next check."""


@dataclass
class ClusterFacts:
    """The last answers of the checks."""

    kueue_served: bool | None = None
    """Kueue's Workloads API is served; None until a check has answered."""
    missing_namespaces: frozenset[str] = field(default_factory=frozenset)


class ClusterChecks:
    """The checks, run once by `check` and then every `cluster_check_s` by the task `start` makes."""

    def __init__(self, api: client.ApiClient, config: OperatorConfig) -> None:
        self.api, self.config = api, config
        self.facts = ClusterFacts()
        self._task: asyncio.Task[None] | None = None

    async def check(self) -> None:
        """Both checks once; one the apiserver does not answer keeps its last facts."""
        try:
            self._kueue(await discovery.workloads_served(self.api))
        except UNANSWERED as exc:
            log.warning("cannot tell whether Kueue's API is served: %s", exc)
        try:
            await self._namespaces(await self._missing())
        except UNANSWERED as exc:
            log.warning("cannot tell whether the watched namespaces exist: %s", exc)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="cluster-checks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.cluster_check_s)
            await self.check()

    def _kueue(self, served: bool) -> None:
        if served != self.facts.kueue_served:
            log.info(
                "Kueue's API %s", "is served" if served else "is not served: queue-labelled jobs are refused"
            )
        self.facts.kueue_served = served
        metrics.kueue_api_served.set(1 if served else 0)

    async def _missing(self) -> frozenset[str]:
        core = client.CoreV1Api(self.api)
        missing = set()
        for name in self.config.watch_namespaces:  # `list` by name: the chart grants list, not get
            found = await core.list_namespace(field_selector=f"metadata.name={name}")
            if not found.items:
                missing.add(name)
        return frozenset(missing)

    async def _namespaces(self, missing: frozenset[str]) -> None:
        for name in self.config.watch_namespaces:
            metrics.watched_namespace_missing.labels(name).set(1 if name in missing else 0)
        for name in sorted(self.facts.missing_namespaces - missing):
            log.info("watched namespace %s exists now", name)
        for name in sorted(missing - self.facts.missing_namespaces):
            message = (
                f"namespace {name} does not exist: the operator is told to watch it (--namespace, chart "
                "value watchNamespaces) and sees no job there until it is created"
            )
            log.warning(message)
            try:
                await _post_warning(self.api, self.config, name, message)
            except UNANSWERED as exc:
                log.warning("the WatchedNamespaceMissing Event was not posted: %s", exc)
        self.facts.missing_namespaces = missing


async def _post_warning(api: client.ApiClient, config: OperatorConfig, missing: str, message: str) -> None:
    """The Event, on the operator's Pod where it knows it (`kubectl describe pod`), else on the namespace."""
    if config.pod_name and config.namespace:
        where, involved = config.namespace, {"kind": "Pod", "namespace": config.namespace}
        involved["name"] = config.pod_name
    else:  # events about a cluster-scoped object live in `default`
        where, involved = "default", {"kind": "Namespace", "name": missing}
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    body: dict[str, Any] = {
        "metadata": {"generateName": "carbontrack-"},
        "involvedObject": {"apiVersion": "v1", **involved},
        "reason": "WatchedNamespaceMissing",
        "message": message,
        "type": "Warning",
        "source": {"component": "carbontrack"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    await client.CoreV1Api(api).create_namespaced_event(where, body)
