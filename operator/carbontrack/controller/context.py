"""What a handler knows about the CarbonTrackedJob it was called for, in one typed value."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import kopf

from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.core.events import Event
from carbontrack.core.scheduling import kueue as kueue_policy
from carbontrack.state.config import OperatorConfig


@dataclass(frozen=True)
class JobCall:
    """One handler call about one CarbonTrackedJob: what kopf passed, and the spec the handler runs."""

    body: kopf.Body
    name: str
    namespace: str
    status: kopf.Status
    patch: kopf.Patch
    """The status and metadata changes kopf writes when the handler returns."""
    spec: CarbonTrackedJobSpec
    """The spec the promotion runs (core.scheduling.kueue.effective_spec)."""
    queued: kueue_policy.Queueing | None
    """How Kueue queues the job (None: it does not)."""
    generation: int | None

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    def post(self, events: Iterable[Event]) -> None:
        """Post Events on the CarbonTrackedJob."""
        for event in events:
            kopf.event(self.body, type=event.type, reason=event.reason, message=event.message)


def queueing_of(meta: kopf.Meta, config: OperatorConfig) -> kueue_policy.Queueing | None:
    """How Kueue queues the job, from its labels and annotations (None: it does not)."""
    return kueue_policy.queueing(meta.get("labels"), meta.get("annotations"), config.kueue_elastic_jobs)
