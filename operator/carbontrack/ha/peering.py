"""Which replica is active: kopf's peering rule, restated for the parts of the operator kopf does not run.

kopf pauses its handlers while a live peer in the peering object has a higher or the same priority
(same priority: every such replica pauses). The telemetry server and the status writer are not kopf
handlers, so they read the same peering object and apply the same rule; a standby replica refuses
telemetry with 503 and reports not-ready, so the Service sends sidecars to the active one only.

Priorities are by seniority: the replica that started first has the highest, so a new replica (a
rollout, a rescheduled pod) waits as a standby instead of taking over from a healthy leader, and two
replicas started in the same millisecond still differ by a random salt. Pure: no kopf, no client.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SALT = 1000


def own_identity(pod_name: str | None, hostname: str, pid: int) -> str:
    """The pod's name in a cluster (unique among live pods); host and pid elsewhere."""
    return pod_name or f"{hostname}/{pid}"


def seniority_priority(started_unix_s: float, salt: int | None = None) -> int:
    """Earlier start, higher priority; negative, so a dev operator (kopf --dev, 666) outranks them all."""
    s = random.randrange(SALT) if salt is None else salt % SALT
    return -int(started_unix_s * 1000) * SALT + s


@dataclass(frozen=True)
class PeeringArgs:
    """What the command line decided, handed to the startup handler through kopf's memo."""

    name: str
    namespaces: list[str]
    identity: str
    priority: int


@dataclass(frozen=True)
class Peer:
    identity: str
    priority: int
    deadline: dt.datetime


def parse_peers(status: Mapping[str, Any] | None) -> list[Peer]:
    """Peers from a kopf peering object's status ({identity: {priority, lifetime, lastseen}})."""
    peers = []
    for identity, info in (status or {}).items():
        if not isinstance(info, Mapping):
            continue
        try:
            lastseen = dt.datetime.fromisoformat(str(info["lastseen"]))
            if lastseen.tzinfo is None:
                lastseen = lastseen.replace(tzinfo=dt.UTC)
            lifetime = dt.timedelta(seconds=int(info.get("lifetime", 60)))
            peers.append(Peer(str(identity), int(info.get("priority", 0)), lastseen + lifetime))
        except (KeyError, TypeError, ValueError):
            continue  # a record we cannot read cannot block us (kopf would not parse it either)
    return peers


def blockers(peers: list[Peer], identity: str, priority: int, now: dt.datetime) -> list[Peer]:
    """Live peers that pause this replica: a higher or the same priority."""
    return [p for p in peers if p.identity != identity and p.deadline > now and p.priority >= priority]


def is_active(status: Mapping[str, Any] | None, identity: str, priority: int, now: dt.datetime) -> bool:
    """Active only when this replica has announced itself and no live peer blocks it."""
    peers = parse_peers(status)
    own = [p for p in peers if p.identity == identity and p.deadline > now]
    return bool(own) and not blockers(peers, identity, priority, now)
