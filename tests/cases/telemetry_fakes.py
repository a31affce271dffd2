"""What stands behind the telemetry server in the unit tests: an authenticator that knows one token
("good", bound to pod ns/p0) and a registry that knows one job (ns/j), and the body of that pod's
batch."""

from __future__ import annotations

import time
from typing import Any

from carbontrack.api.wire import TelemetryBatch
from carbontrack.core.accounting.aggregation import Applied, JobAggregate, Receipt
from carbontrack.intensity.static import Intensity
from carbontrack.telemetry.auth import AuthError, Identity
from carbontrack.telemetry.pod_facts import PodFacts
from tests.cases.bodies import batch_doc


class FakeAuth:
    def admit(self, token: str, source: str) -> None:
        """Every first contact is admitted (the limit has its own tests)."""

    async def identify(self, token: str) -> Identity:
        if token != "good":
            raise AuthError(401, "unauthenticated", "token refused")
        return Identity("ns", "default", "p0", "uid-0")

    async def authorize(self, identity: Identity, namespace: str, pod: str, job: str) -> PodFacts:
        if pod != identity.pod_name:
            raise AuthError(403, "wrong-pod", "token bound to another pod")
        return PodFacts(owner=job, started_at=time.time() - 3600, gpus=1)


class FakeRegistry:
    def __init__(self) -> None:
        self.aggregate = JobAggregate()
        self.stop = False  # JobState.stop: no halt recorded
        self.intensity = Intensity(g_per_kwh=100.0, zone="DE", source="static")
        self.gpu_models: dict[str, int] | None = None

    async def get(self, namespace: str, name: str) -> Any:
        return self if name == "j" else None

    async def apply(self, state: Any, batch: TelemetryBatch, receipt: Receipt) -> Applied:
        return self.aggregate.apply(batch, receipt, pue=1.0, intensity_g_per_kwh=100.0)


def body(seq: int = 1, **kw: Any) -> dict[str, Any]:
    """Batch `seq` of pod ns/p0 for job ns/j, sent now, its GPU counter at 10 J per seq; `kw` replaces
    wire fields."""
    doc = batch_doc("ns", "j", "p0", seq=seq, joules=10.0 * seq)
    doc.update(kw)
    return doc
