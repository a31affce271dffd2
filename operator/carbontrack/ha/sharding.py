"""Which shard serves a job: rendezvous hashing of its uid, decided once and recorded as a label.

Rendezvous (highest random weight) hashing gives each (job uid, shard) pair a pseudo-random score and
the job to the shard with the highest. Adding a shard moves to it only the jobs it now wins, and taking
a shard out of the candidates (draining) moves only the jobs it would have won; every other job keeps its
shard. The choice is made once, for a job without a shard label, by the shard that wins it, and is then
fixed: the label never changes, and the job's pods carry that shard's address in their environment. So
a change of the shard count moves only jobs created after it.

The scores come from BLAKE2b (the standard library's, not Python's `hash`, which is salted per process),
so every replica of every shard computes the same winner. Pure: no client, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from carbontrack.state.config import SHARD_LABEL, UNSHARDED_OWNER, Sharding

DIFFBASE_ANNOTATION = "carbontrack.io/last-handled-configuration"
"""kopf's record of the spec it last handled (controller.startup configures its name): an operator has
reconciled the job."""


def score(job_uid: str, shard: int) -> int:
    """The pair's weight: the first 8 bytes of BLAKE2b over "uid/shard", as an unsigned integer."""
    digest = hashlib.blake2b(f"{job_uid}/{shard}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous(job_uid: str, shards: Iterable[int]) -> int:
    """The shard with the highest score for this job (ties, never seen in practice, to the lower id)."""
    candidates = list(shards)
    if not candidates:
        raise ValueError("no shard takes new jobs")
    return max(candidates, key=lambda k: (score(job_uid, k), -k))


def built_unsharded(annotations: Mapping[str, str] | None, status: Mapping[str, Any] | None) -> bool:
    """An unlabelled job that an operator without shards has reconciled already (kopf's record of it, or a
    phase in status): its pods report to the unsharded operator's Service."""
    return DIFFBASE_ANNOTATION in (annotations or {}) or bool((status or {}).get("phase"))


def claim(body: Mapping[str, Any], sharding: Sharding) -> int | None:
    """The shard to label an unlabelled CarbonTrackedJob with; None when it has a label already.

    A job built before sharding stays with shard 0, which serves the unsharded operator's Service; a new
    one goes to the rendezvous winner among the shards that take new jobs."""
    meta = body.get("metadata") or {}
    if SHARD_LABEL in (meta.get("labels") or {}):
        return None
    if built_unsharded(meta.get("annotations"), body.get("status")):
        return UNSHARDED_OWNER
    return rendezvous(str(meta.get("uid", "")), sharding.accepting)


def job_selector(sharding: Sharding) -> str:
    """The label selector of this shard's CarbonTrackedJobs: the apiserver sends it no other job's events."""
    return f"{SHARD_LABEL}={sharding.shard}"


def managed_job_selector(sharding: Sharding, managed: str) -> str:
    """The label selector of the Jobs this shard built (`managed` is the managed-Job selector). Shard 0
    also gets unlabelled Jobs, built before sharding: `notin` selects objects without the label."""
    if sharding.shard != UNSHARDED_OWNER:
        return f"{managed},{SHARD_LABEL}={sharding.shard}"
    others = ",".join(str(k) for k in range(1, sharding.shards))
    return f"{managed},{SHARD_LABEL} notin ({others})"


UNLABELLED_SELECTOR = f"!{SHARD_LABEL}"
"""The label selector of CarbonTrackedJobs no shard has claimed yet."""
