"""The AdmissionCheck controller's kopf handlers (registered by controller.registration, only where
Kueue's CRDs exist: Helm value kueue.admissionCheck, env CARBONTRACK_KUEUE_ADMISSION_CHECK).

Each one reads a Kueue object's event and answers through integrations.kueue.client. They need the
operator's Kubernetes client, configuration and clock, which kopf's memo carries as `services`
(controller.services.Services); `KueueServices` names the part they use.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Protocol

import kopf
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.core.scheduling import kueue as kp
from carbontrack.integrations.kueue.client import answer_workload, mark_active
from carbontrack.state.config import OperatorConfig


class KueueServices(Protocol):
    """What the Kueue handlers use of the operator's services."""

    @property
    def api(self) -> client.ApiClient: ...

    @property
    def config(self) -> OperatorConfig: ...

    @property
    def clock(self) -> Callable[[], dt.datetime]: ...


def _services(memo: kopf.Memo) -> KueueServices:
    services: KueueServices = memo.services
    return services


async def on_admission_check(body: kopf.Body, type: str, memo: kopf.Memo, **_: Any) -> None:
    """Mark carbontrack's AdmissionChecks Active: Kueue uses a check only while its controller says so."""
    if type == "DELETED" or (body.get("spec") or {}).get("controllerName") != kp.ADMISSION_CHECK_CONTROLLER:
        return
    services = _services(memo)
    await mark_active(services.api, dict(body), services.clock())


async def on_workload(body: kopf.Body, type: str, memo: kopf.Memo, **_: Any) -> None:
    """Answer a Workload's pending budget checks."""
    if type == "DELETED":
        return
    services = _services(memo)
    try:
        await answer_workload(services.api, services.config, dict(body), services.clock())
    except ApiException as exc:  # the next event or a retry answers it
        raise kopf.TemporaryError(f"budget check: {exc.status} {exc.reason}", delay=2) from exc
