"""Shards in the operator (only with CARBONTRACK_SHARDS above 1): kopf's watches narrowed to this
shard's jobs, and the claimer that labels the new jobs this shard wins.

`start_sharding` runs after `startup` (kopf runs start-up handlers one at a time, in the order they
are registered) and before kopf opens any watch: the apiserver then sends this shard only the
CarbonTrackedJobs labelled with it, and only the Jobs it built (ha.sharding), so a shard's cost does
not grow with the other shards' jobs. The handlers carry the same filter (controller.registration):
a watch that ever delivers more is still ignored.
"""

from __future__ import annotations

from typing import Any

import kopf

from carbontrack.api.contract import LABEL_MANAGED
from carbontrack.api.crd import GROUP, PLURAL
from carbontrack.controller.services import launch_of
from carbontrack.ha.claims import ShardClaimer
from carbontrack.ha.sharding import job_selector, managed_job_selector
from carbontrack.state.config import SHARD_LABEL, Sharding

CLAIMER = "shard_claimer"
"""The memo key of this shard's ShardClaimer."""


def owns_label(sharding: Sharding) -> Any:
    """A kopf label filter: whether a Job's shard label (None: built before sharding) is this shard's."""

    def owns(value: str | None, **_: Any) -> bool:
        return sharding.owns({} if value is None else {SHARD_LABEL: value})

    return owns


async def start_sharding(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Narrow kopf's watches to this shard and start claiming new jobs."""
    services = memo.get("services")
    if services is None:  # `startup` has not finished: kopf retries this handler
        raise kopf.TemporaryError("the operator's services are not built yet", delay=0.5)
    sharding = services.config.sharding
    settings.watching.label_selectors[GROUP, PLURAL] = job_selector(sharding)
    settings.watching.label_selectors["batch", "jobs"] = managed_job_selector(
        sharding, f"{LABEL_MANAGED}=true"
    )
    namespaces = list(launch_of(memo).namespaces)
    claimer = ShardClaimer(services.api, sharding, namespaces, lambda: bool(services.server.active))
    claimer.start()
    memo[CLAIMER] = claimer


async def stop_sharding(memo: kopf.Memo, **_: Any) -> None:
    """Stop claiming (before `cleanup` closes the Kubernetes client)."""
    claimer: ShardClaimer | None = memo.get(CLAIMER)
    if claimer is not None:
        await claimer.stop()
