"""Claims new CarbonTrackedJobs for this shard: the label that sends them to its kopf watch.

Each shard's kopf watch asks the apiserver for the jobs labelled with its shard only, so a job nobody
has labelled yet reaches no shard's handlers. This loop lists and watches those unlabelled jobs (few at
any time: each is claimed within a request of its creation) and labels the ones this shard wins
(ha.sharding.claim). The label is a merge patch that carries the resourceVersion the decision was made
on, so the apiserver applies it only to that version: two shards that disagree on the shard count (a
rollout that adds one) can both try, and one label is written, once. Only an active replica claims; a
standby watches nothing and starts from a fresh list when it becomes active.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.api.crd import GROUP, PLURAL, VERSION
from carbontrack.ha.sharding import UNLABELLED_SELECTOR, claim
from carbontrack.state.config import SHARD_LABEL, Sharding
from carbontrack.state.kube_writes import write

log = logging.getLogger("carbontrack.sharding")


class ShardClaimer:
    """Labels the unlabelled jobs this shard wins, in each watched namespace (none: cluster-wide)."""

    def __init__(
        self,
        api: client.ApiClient,
        sharding: Sharding,
        namespaces: list[str],
        is_active: Callable[[], bool],
        watch_s: int = 60,
        retry_s: float = 2.0,
    ) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.sharding = sharding
        self.namespaces = namespaces
        self.is_active = is_active
        self.watch_s = watch_s
        """Each watch ends after this long and the loop lists again: a missed event costs at most this."""
        self.retry_s = retry_s
        self.claimed = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def claim(self, body: dict[str, Any]) -> bool:
        """Label the job with this shard if it wins it and nobody changed it since `body` was read."""
        if not self.is_active() or claim(body, self.sharding) != self.sharding.shard:
            return False
        meta = body["metadata"]
        label = {SHARD_LABEL: str(self.sharding.shard)}
        patch = {"metadata": {"labels": label, "resourceVersion": meta["resourceVersion"]}}  # a precondition
        try:
            await write(
                self.custom.patch_namespaced_custom_object,
                GROUP,
                VERSION,
                meta["namespace"],
                PLURAL,
                meta["name"],
                patch,
                _content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status in (404, 409):  # gone, or changed since: the watch brings the new version
                return False
            raise
        self.claimed += 1
        log.info(
            "job claimed", extra={"job": f"{meta['namespace']}/{meta['name']}", "shard": self.sharding.shard}
        )
        return True

    def _lister(self, namespace: str | None) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if namespace is None:
            return self.custom.list_cluster_custom_object, (GROUP, VERSION, PLURAL)
        return self.custom.list_namespaced_custom_object, (GROUP, VERSION, namespace, PLURAL)

    async def _round(self, namespace: str | None) -> None:
        """List the unlabelled jobs and claim; then watch for more until the watch ends."""
        lister, args = self._lister(namespace)
        listed = await lister(*args, label_selector=UNLABELLED_SELECTOR)
        for body in listed.get("items") or []:
            await self.claim(body)
        version = (listed.get("metadata") or {}).get("resourceVersion")
        stream = watch.Watch().stream(
            lister,
            *args,
            label_selector=UNLABELLED_SELECTOR,
            resource_version=version,
            timeout_seconds=self.watch_s,
        )
        async with stream:
            async for event in stream:
                if not self.is_active():
                    break
                if event["type"] in ("ADDED", "MODIFIED"):
                    await self.claim(event["raw_object"])

    async def _follow(self, namespace: str | None) -> None:
        while True:
            if not self.is_active():
                await asyncio.sleep(1.0)
                continue
            try:
                await self._round(namespace)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the apiserver away, a 410, a failed patch: list again shortly
                log.warning("claiming new jobs failed: %s", str(exc)[:200], extra={"namespace": namespace})
                await asyncio.sleep(self.retry_s)

    def start(self) -> None:
        where: list[str | None] = list(self.namespaces) or [None]
        self._tasks = [
            asyncio.create_task(self._follow(ns), name=f"shard claims {ns or '*'}") for ns in where
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
