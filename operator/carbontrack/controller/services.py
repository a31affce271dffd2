"""The operator's services: built once by the start-up handler, handed to every handler through kopf's memo.

kopf's memo is an untyped bag, so it carries two typed things only: `launch` (what the command line
decided, before kopf runs) and `services` (what the start-up handler built from it). Handlers read
them through `launch_of` and `services_of`. (With shards, controller.sharding keeps its claimer there
too.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import kopf
from kubernetes_asyncio import client

from carbontrack.api.contract import Phase
from carbontrack.controller.cluster_checks import ClusterChecks
from carbontrack.ha.leadership import PeeringMonitor
from carbontrack.ha.peering import PeeringArgs
from carbontrack.state.config import OperatorConfig
from carbontrack.state.metrics import JobCollector
from carbontrack.state.registry import Registry
from carbontrack.telemetry.auth import Authenticator
from carbontrack.telemetry.server import TelemetryServer
from carbontrack.telemetry.tls import TlsManager

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The wall clock in UTC, to the second: status timestamps carry whole seconds."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Launch:
    """What the command line decides before kopf runs."""

    config: OperatorConfig
    peering: PeeringArgs | None = None
    """Several replicas: kopf's peering object and this replica's place in it (None: standalone)."""
    namespaces: tuple[str, ...] = ()
    """The namespaces the operator watches (empty: all)."""


@dataclass(frozen=True)
class Services:
    """Everything a handler touches beyond what kopf passes it."""

    config: OperatorConfig
    api: client.ApiClient
    registry: Registry
    """The live per-job state the telemetry path and the judgement share."""
    authenticator: Authenticator
    server: TelemetryServer
    collector: JobCollector
    """The per-job metric series, read from `registry` at scrape time."""
    tls: TlsManager | None = None
    """The telemetry certificate and CA (None: telemetry over plain HTTP, an explicit opt-out)."""
    monitor: PeeringMonitor | None = None
    """Switches the telemetry server between active and standby (None: standalone)."""
    cluster: ClusterChecks | None = None
    """Whether Kueue's API is served and the watched namespaces exist, checked every cluster_check_s."""
    seen_jobs: set[tuple[str, str]] = field(default_factory=set)
    """(namespace, CR name) of the Jobs the watch has shown: the judgement waits for a job's Job."""
    ended_jobs: dict[tuple[str, str], tuple[Phase, str]] = field(default_factory=dict)
    """(namespace, CR name) -> the final phase and its reason, of the Jobs the watch has seen end: a
    round that finds its job not yet in that phase writes it (controller.job_watch)."""
    clock: Clock = utc_now


def launch_of(memo: kopf.Memo) -> Launch:
    found = memo.get("launch")
    if not isinstance(found, Launch):
        raise RuntimeError("kopf's memo carries no Launch: run the operator with `carbontrack operator`")
    return found


def services_of(memo: kopf.Memo) -> Services:
    found = memo.get("services")
    if not isinstance(found, Services):
        raise RuntimeError("the operator's services are not built: the start-up handler has not run")
    return found
