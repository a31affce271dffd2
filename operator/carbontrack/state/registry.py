"""Live per-job state in the operator: the cache the telemetry path and the judgement share.

Each CarbonTrackedJob the operator hears about gets a JobState: its aggregate and gauges (restored
from the CR's status the first time, so a restart resumes exactly), its spec, its intensity and one
status writer. The totals the metrics export are the ones the last successful status write carried
(`JobState.persisted`), never the live aggregate's, which is up to a status interval ahead: a restart,
a failover or a shard move resumes from status, so an exported counter never goes back.

A job that stopped training (Succeeded, Failed, or Halted with its workers stopped) takes its pods'
final flushes for a grace period (`flush_grace_s`), then refuses every batch (409 `finished`, counted
in status.telemetry.refused.finished): its totals stay final.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.api.contract import Phase
from carbontrack.api.crd import GROUP, PLURAL, VERSION, CarbonTrackedJobSpec, CarbonTrackedJobStatus
from carbontrack.api.wire import TelemetryBatch
from carbontrack.core.accounting.aggregation import Applied, JobAggregate, Receipt, Verdict
from carbontrack.core.accounting.plausibility import refusal_key
from carbontrack.core.rollout.coverage import RunningPod
from carbontrack.core.rollout.evaluation import Gauges
from carbontrack.intensity.static import Intensity
from carbontrack.state import metrics, status
from carbontrack.state.answers import status_gpu_models
from carbontrack.state.config import OperatorConfig
from carbontrack.state.intensity_resolution import IntensityResolution, initial_intensity
from carbontrack.state.kube_writes import write
from carbontrack.state.status_writer import StatusWriter

log = logging.getLogger("carbontrack.telemetry")

INTENSITY_REFRESH_S = 60.0
"""A job's grid intensity is resolved at most this often, not per batch: providers update their figure
hourly, while a large job sends hundreds of batches a second. A spec change resolves it at the next
batch."""
ENDED = (Phase.SUCCEEDED, Phase.FAILED)
"""Phases in which the job's training is over for good (a Halted job's ends when its workers stop)."""


class JsonReady(dict[str, Any]):
    """A body made with model_dump(mode="json"): JSON types only, so the client library need not walk it
    key by key (kubernetes_asyncio's sanitize_for_serialization, a large share of the operator's CPU
    under telemetry load; benchmarks/ingest.py profiles it with INGEST_PROFILE)."""


def skip_sanitizing_json_ready(api: client.ApiClient) -> None:
    """Let `api` send JsonReady bodies as they are (every other body is walked as before)."""
    walk = api.sanitize_for_serialization

    def sanitize(obj: Any) -> Any:
        return obj if isinstance(obj, JsonReady) else walk(obj)

    api.sanitize_for_serialization = sanitize  # type: ignore[method-assign]


async def merge_patch_status(
    custom: client.CustomObjectsApi, namespace: str, name: str, body: dict[str, Any]
) -> None:
    """JSON merge patch of a CarbonTrackedJob's status: only the fields in `body` change."""
    await write(
        custom.patch_namespaced_custom_object_status,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        body,
        _content_type="application/merge-patch+json",  # else the client picks JSON patch for a dict
    )


@dataclass
class JobState:
    namespace: str
    name: str
    spec: CarbonTrackedJobSpec
    aggregate: JobAggregate
    intensity: Intensity
    gauges: Gauges
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    writer: StatusWriter | None = None
    announced: set[tuple[str, str, str]] = field(default_factory=set)
    """GPU-sharing and unmeasured-energy Events already posted (core.accounting.measurement)."""
    intensity_at: float = -float("inf")
    """When the intensity was last resolved (monotonic): at most once per INTENSITY_REFRESH_S."""
    accepted: Any = None
    """This job's child of carbontrack_telemetry_batches_total, kept: a label lookup per batch is costly."""
    stop: bool = False
    """A halt is recorded (status.halt): every telemetry answer asks the trainers to checkpoint and stop."""
    gpu_models: dict[str, int] | None = None
    """GPU model -> count as status.gpus last listed them, for the ack's job totals (state.answers)."""
    persisted: status.Totals = field(default_factory=status.Totals)
    """The totals of the last status write the apiserver took (or of status when loaded): exported."""
    loaded_at: float = field(default_factory=time.time)
    """When this process began holding the job (unix time): an unmeasured pod's grace counts from it."""
    unmeasured: tuple[RunningPod, ...] = ()
    """Running pods the last judgement found unmeasured, for status.telemetry.unmeasuredPods."""
    ended_at: float | None = None
    """When the job stopped training (unix time; see `training_ended_at`), or None while it may train."""

    def training_ended_at(self, now: float) -> float | None:
        """When the job stopped training, or None: Succeeded or Failed from when status or this process
        first saw it so; Halted from when its halt stopped the workers (the judgement sets it)."""
        phase = self.gauges.phase
        if phase in ENDED and self.ended_at is None:
            self.ended_at = now
        elif phase not in ENDED and phase is not Phase.HALTED:
            self.ended_at = None
        return self.ended_at

    def flush_grace_s(self, status_interval_s: float) -> float:
        """How long after the end batches are still taken: two status intervals for a batch in flight
        (a completed pod's sidecar flushed before the pod completed), and for a halt, which stops pods
        that are still running, the pods' terminationGracePeriodSeconds too (the sidecar stops last)."""
        if self.gauges.phase is not Phase.HALTED:
            return 2 * status_interval_s
        template = (self.spec.template.get("spec") or {}).get("terminationGracePeriodSeconds") or 0
        return 2 * status_interval_s + max(self.spec.halt.grace_period_seconds, int(template))


def gauges_from(st: CarbonTrackedJobStatus, spec: CarbonTrackedJobSpec) -> Gauges:
    """The gauges as the last judgement left them in status."""
    return Gauges(
        phase=Phase(st.phase) if st.phase else Phase.PENDING,
        epsilon=st.epsilon,
        epsilon_budget=spec.gates.privacy.epsilon if spec.gates.privacy else None,
        emissions_budget_g=spec.carbon.budget_kg * 1000 if spec.carbon.budget_kg is not None else None,
        gates={g.name: g.passed for g in st.gates},
        deferred_s=st.schedule.deferred_seconds if st.schedule else None,
        emissions_avoided_g=st.schedule.emissions_avoided_grams_estimate if st.schedule else None,
    )


class ForeignJob(Exception):
    """The job is another shard's (state.config.Sharding): this operator neither loads nor serves it."""

    def __init__(self, namespace: str, name: str, owner: int | None) -> None:
        super().__init__(f"CarbonTrackedJob {namespace}/{name} is served by shard {owner}, not this one")
        self.owner = owner


class Registry:
    """All jobs the operator knows, keyed by (namespace, name)."""

    def __init__(self, api: client.ApiClient, config: OperatorConfig) -> None:
        self.config = config
        skip_sanitizing_json_ready(api)
        self.custom = client.CustomObjectsApi(api)
        self.intensity = IntensityResolution(api, config)
        self.jobs: dict[tuple[str, str], JobState] = {}
        self._loading: dict[tuple[str, str], asyncio.Lock] = {}

    def states(self) -> Iterable[JobState]:
        """Every job state held now (the metric collector's source)."""
        return self.jobs.values()

    async def get(self, namespace: str, name: str) -> JobState | None:
        """The job's state, loading (and restoring from status) on first use; None if no such CR.
        Raises ForeignJob for another shard's job, which is never loaded (nor exported as metrics)."""
        key = (namespace, name)
        if key in self.jobs:
            return self.jobs[key]
        lock = self._loading.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self.jobs:
                return self.jobs[key]
            try:
                obj = await self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            labels = obj["metadata"].get("labels")
            if not self.config.sharding.owns(labels):
                raise ForeignJob(namespace, name, self.config.sharding.owner(labels))
            spec = CarbonTrackedJobSpec.model_validate(obj["spec"])
            st = status.parse(obj.get("status"))
            aggregate = status.restore(st, self.config.limits)
            state = JobState(
                namespace, name, spec, aggregate, initial_intensity(spec, self.config), gauges_from(st, spec)
            )
            state.stop = st.halt is not None  # a restarted operator keeps asking the trainers to stop
            state.persisted = status.totals(st)
            state.unmeasured = status.unmeasured_pods(st)
            state.ended_at = status.ended_at(st)
            state.writer = self._writer(state)
            state.writer.start()
            self.jobs[key] = state
            log.info(
                "job state loaded",
                extra={"job": f"{namespace}/{name}", "restoredJ": state.aggregate.energy_j},
            )
            return state

    def _writer(self, state: JobState) -> StatusWriter:
        key = (state.namespace, state.name)

        def build() -> dict[str, Any]:
            state.gpu_models = status_gpu_models(state.aggregate)  # once per status interval
            return status.telemetry_update(state.aggregate, state.intensity, time.time(), state.unmeasured)

        def written(body: dict[str, Any]) -> None:
            state.persisted = status.written_totals(body, state.persisted)
            metrics.status_patches.labels(*key).inc()

        async def patch(body: dict[str, Any]) -> None:
            try:
                await merge_patch_status(self.custom, state.namespace, state.name, JsonReady(body))
            except ApiException as exc:
                if exc.status != 404 or not await self._exists(state.namespace, state.name):
                    raise
                # the object is there but its status is not served yet (a new CRD's storage
                # initialising): not gone, retried with backoff
                raise ApiException(status=503, reason="status not served yet") from exc

        def gone() -> None:
            if self.jobs.get(key) is state:
                self.jobs.pop(key, None)

        return StatusWriter(
            build,
            patch,
            self.config.status_interval_s,
            on_gone=gone,
            on_written=written,
            name=f"status-writer {key[0]}/{key[1]}",
        )

    async def _exists(self, namespace: str, name: str) -> bool:
        try:
            await self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    async def apply(self, state: JobState, batch: TelemetryBatch, receipt: Receipt) -> Applied:
        async with state.lock:
            result = self._after_the_end(state, receipt.received_at)
            if result is None:
                if (at := time.monotonic()) - state.intensity_at >= INTENSITY_REFRESH_S:
                    state.intensity_at = at
                    await self._resolve_intensity(state, batch.pod.name)
                pue, g_per_kwh = state.spec.carbon.pue, state.intensity.g_per_kwh
                result = state.aggregate.apply(batch, receipt, pue=pue, intensity_g_per_kwh=g_per_kwh)
        if result.verdict is Verdict.ACCEPTED:
            if state.accepted is None:
                state.accepted = metrics.batches.labels(state.namespace, state.name)
            state.accepted.inc()
        if result.verdict is not Verdict.DUPLICATE and state.writer is not None:
            state.writer.mark()  # a refusal is counted in status.telemetry.refused
        return result

    def _after_the_end(self, state: JobState, now: float) -> Applied | None:
        """The refusal of a batch that arrives after the job's end and its grace period, counted in
        status.telemetry.refused; None while the job takes batches."""
        ended = state.training_ended_at(now)
        if ended is None or now <= ended + state.flush_grace_s(self.config.status_interval_s):
            return None
        key = refusal_key(Verdict.FINISHED)
        state.aggregate.refused[key] = state.aggregate.refused.get(key, 0) + 1
        return Applied(
            Verdict.FINISHED,
            message=f"the job is {state.gauges.phase.value} and its final-flush grace period is over: its "
            "totals are final",
        )

    async def _resolve_intensity(self, state: JobState, pod: str) -> None:
        try:
            now = await self.intensity.current(state.namespace, state.name, state.spec, pod)
            if now is not None:
                state.intensity = now
        except Exception as exc:  # intensity lookup must never lose energy: keep the last figure
            log.warning("intensity refresh failed: %s", exc, extra={"job": f"{state.namespace}/{state.name}"})

    async def flush(self) -> None:
        """Write every pending status now (shutdown): the next operator resumes from it."""
        for state in list(self.jobs.values()):
            if state.writer is not None:
                await state.writer.stop(flush=True)

    async def release(self) -> None:
        """Hand the jobs over (this replica became a standby): write what is pending, keep nothing.

        The next active replica restores from status; a batch this flush misses is repaired by the
        next cumulative batch from the same source, so nothing is lost or counted twice.
        """
        await self.flush()
        self.jobs.clear()
        self._loading.clear()
        await self.intensity.close()

    async def close(self) -> None:
        await self.flush()
        await self.intensity.close()

    async def forget(self, namespace: str, name: str) -> None:
        """The CR is gone: its state, its writer and its metric series go too."""
        state = self.jobs.pop((namespace, name), None)
        self._loading.pop((namespace, name), None)
        self.intensity.forget(namespace, name)
        if state is not None and state.writer is not None:
            await state.writer.stop(flush=False)
        metrics.forget(namespace, name)

    def update_spec(self, namespace: str, name: str, spec: CarbonTrackedJobSpec) -> None:
        state = self.jobs.get((namespace, name))
        if state is not None:
            if spec.carbon != state.spec.carbon:
                state.intensity_at = -float("inf")  # the zone or provider changed: resolve at the next batch
            state.spec = spec
