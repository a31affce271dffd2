"""Live per-job state in the operator, and the rate-limited status writer.

Each CarbonTrackedJob the operator hears about gets a JobState: its aggregate (rebuilt from the CR's
status the first time, so a restart resumes exactly), its spec, and one writer task. The writer
coalesces: however many batches arrive, it patches status at most once per interval, never with
more than one patch in flight for the object, and retries a failed patch with backoff.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from carbontrack.api.crd import (
    GROUP,
    MAX_STATUS_GPUS,
    PLURAL,
    VERSION,
    CarbonTrackedJobSpec,
    CarbonTrackedJobStatus,
)
from carbontrack.api.wire import TelemetryBatch
from carbontrack.controller import metrics
from carbontrack.controller.config import OperatorConfig
from carbontrack.core.aggregation import Applied, JobAggregate, Source, SourceGpu, Verdict
from carbontrack.core.emissions import kwh
from carbontrack.intensity.providers import ElectricityMaps, IntensityResolver, WattTime
from carbontrack.intensity.static import Intensity, lookup, zone_for

log = logging.getLogger("carbontrack.telemetry")


async def merge_patch_status(
    custom: client.CustomObjectsApi, namespace: str, name: str, body: dict[str, Any]
) -> None:
    """JSON merge patch of a CarbonTrackedJob's status: only the fields in `body` change."""
    await custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, body,
        _content_type="application/merge-patch+json",  # else the client picks JSON patch for a dict
    )  # type: ignore[call-arg]  # fmt: skip


def restore(status: CarbonTrackedJobStatus | None) -> JobAggregate:
    """The aggregate as the last status write left it."""
    agg = JobAggregate()
    if status is None or status.telemetry is None:
        return agg
    for s in status.telemetry.sources:
        agg.sources[(s.pod, s.boot_id)] = Source(
            pod=s.pod, boot_id=s.boot_id, seq=s.seq, energy_j=s.energy_joules,
            gpu_energy_j=dict(enumerate(s.gpu_energy_joules)), steps_seen=s.steps_seen,
            global_step=s.global_step, last_record_step=s.last_record_step, sent_at=s.sent_at,
            method=s.method, markers_dropped=s.markers_dropped, records_dropped=s.records_dropped,
            final=s.final,
        )  # fmt: skip
        # issue 13 (GPU sharing and uncertainty), for controller/status.py:
        src = agg.sources[(s.pod, s.boot_id)]
        src.uncertainty_j, src.shared_energy_j, src.method_reason = (
            s.uncertainty_joules,
            s.shared_energy_joules,
            s.method_reason,
        )
        src.gpus = [
            SourceGpu(i, u, sh, s.method)
            for i, (u, sh) in enumerate(zip(s.gpu_uuids, s.gpu_sharing, strict=False))
        ]
    agg.emissions_g = status.emissions_grams
    return agg


def status_patch(
    agg: JobAggregate, spec: CarbonTrackedJobSpec, intensity: Intensity, now: float
) -> dict[str, Any]:
    """The telemetry-owned part of status (merge patch): totals, projection, intensity, sources."""
    sources = [
        {
            "pod": s.pod, "bootId": s.boot_id, "seq": s.seq, "energyJoules": s.energy_j,
            "gpuEnergyJoules": [s.gpu_energy_j[i] for i in sorted(s.gpu_energy_j)], "stepsSeen": s.steps_seen,
            "globalStep": s.global_step, "lastRecordStep": s.last_record_step, "sentAt": s.sent_at,
            "method": s.method, "markersDropped": s.markers_dropped, "recordsDropped": s.records_dropped,
            "final": s.final,
            # issue 13 (GPU sharing and uncertainty), for controller/status.py:
            "uncertaintyJoules": s.uncertainty_j, "sharedEnergyJoules": s.shared_energy_j,
            "methodReason": s.method_reason[:300], "gpuUuids": [g.uuid for g in s.gpus][:64],
            "gpuSharing": [g.sharing for g in s.gpus][:64],
        }
        for s in sorted(agg.sources.values(), key=lambda s: (s.pod, s.boot_id))
    ]  # fmt: skip
    projection = agg.projection(spec.total_steps, spec.carbon.pue, intensity.g_per_kwh)
    per_step = agg.joules_per_step()
    rates = [r for s in agg.sources.values() if (r := s.steps_per_s()) is not None]
    return {
        "status": {
            "steps": agg.global_step,
            "energyJoules": agg.energy_j,
            "energyKwh": round(kwh(agg.energy_j), 6),
            "emissionsGrams": agg.emissions_g,
            "emissionsKg": round(agg.emissions_g / 1000, 6),
            # issue 13 (GPU sharing and uncertainty), for controller/status.py:
            "energyJoulesUpperBound": agg.energy_upper_bound_j,
            "sharedGpuEnergyJoules": agg.shared_energy_j,
            "gpus": [
                {
                    "uuid": g.uuid,
                    "index": g.index,
                    "pod": pod,
                    "sharing": g.sharing,
                    "method": g.method,
                    "foreignProcesses": g.foreign_processes,
                }
                for pod, g in agg.gpus(MAX_STATUS_GPUS)
            ],
            "powerWatts": round(agg.power_w(now), 3),
            "intensity": {
                "gramsPerKwh": intensity.g_per_kwh,
                "zone": intensity.zone,
                "source": intensity.source,
            },
            # merged into status.projected beside the epsilon the promotion timer writes; omitted, not
            # nulled, when there is no rate yet, so the epsilon is never wiped
            **(
                {"projected": {"energyJoules": projection[0], "emissionsGrams": projection[1]}}
                if projection
                else {}
            ),
            "telemetry": {
                "sources": sources,
                "lastBatchAt": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                "joulesPerStep": per_step,
                "stepsPerSecond": max(rates) if rates else None,
            },
        }
    }


def live_provider(spec: CarbonTrackedJobSpec, config: OperatorConfig) -> tuple[str | None, str | None]:
    """The live provider and its key's Secret for a job: the spec's, else the operator's defaults.

    (None, None) means the static table: asked for, or a live provider without a key to call it with.
    """
    wanted = spec.carbon.intensity
    provider = wanted.provider or config.intensity_provider or "static"
    secret = wanted.secret_name or config.intensity_secret or None
    if provider == "static" or secret is None:
        return None, None
    return provider, secret


@dataclass
class JobState:
    namespace: str
    name: str
    spec: CarbonTrackedJobSpec
    aggregate: JobAggregate
    intensity: Intensity
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    writer: asyncio.Task[None] | None = None
    node_region: str | None = None
    announced: set[tuple[str, str, str]] = field(default_factory=set)
    """issue 13: GPU-sharing and unmeasured-energy Events already posted (JobAggregate.measurement_events)."""


class Registry:
    """All jobs the telemetry path knows, keyed by (namespace, name)."""

    def __init__(self, api: client.ApiClient, config: OperatorConfig) -> None:
        self.api = api
        self.config = config
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.jobs: dict[tuple[str, str], JobState] = {}
        self._loading: dict[tuple[str, str], asyncio.Lock] = {}
        self._resolvers: dict[tuple[str, str, str], IntensityResolver] = {}
        self.static = IntensityResolver()

    async def get(self, namespace: str, name: str) -> JobState | None:
        """The job's state, loading (and restoring from status) on first use; None if no such CR."""
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
            spec = CarbonTrackedJobSpec.model_validate(obj["spec"])
            raw_status = obj.get("status") or {}
            status = CarbonTrackedJobStatus.model_validate(raw_status) if raw_status else None
            zone = zone_for(spec.carbon.zone, self.config.default_zone or None)
            state = JobState(namespace, name, spec, restore(status), self.static_intensity(spec, zone))
            state.writer = asyncio.create_task(
                self._write_loop(state), name=f"status-writer {namespace}/{name}"
            )
            self.jobs[key] = state
            log.info(
                "telemetry state loaded",
                extra={"job": f"{namespace}/{name}", "restoredJ": state.aggregate.energy_j},
            )
            return state

    def static_intensity(self, spec: CarbonTrackedJobSpec, zone: str) -> Intensity:
        if spec.carbon.intensity.grams_per_kwh is not None:
            return Intensity(spec.carbon.intensity.grams_per_kwh, zone, "override")
        return lookup(zone)

    async def refresh_intensity(self, state: JobState, pod: str) -> None:
        """Zone from the spec, else the pod's node's region; value from the configured provider."""
        spec = state.spec
        if spec.carbon.intensity.grams_per_kwh is not None:
            return
        if not spec.carbon.zone and state.node_region is None:
            try:
                p = await self.core.read_namespaced_pod(pod, state.namespace)
                if p.spec.node_name:
                    node = await self.core.read_node(p.spec.node_name)
                    state.node_region = (node.metadata.labels or {}).get("topology.kubernetes.io/region", "")
            except ApiException:
                state.node_region = ""
        zone = zone_for(spec.carbon.zone, state.node_region or self.config.default_zone or None)
        resolver = await self._resolver(state)
        state.intensity = await resolver.current(zone)

    async def _resolver(self, state: JobState) -> IntensityResolver:
        provider, secret = live_provider(state.spec, self.config)
        if provider is None or secret is None:
            return self.static
        key = (state.namespace, provider, secret)
        if key not in self._resolvers:
            where = self.config.namespace or state.namespace
            data = (await self.core.read_namespaced_secret(secret, where)).data or {}

            def field_(name: str) -> str:
                return base64.b64decode(data.get(name, "")).decode()

            live = (
                ElectricityMaps(field_("apiKey"))
                if provider == "electricitymaps"
                else WattTime(field_("username"), field_("password"))
            )
            self._resolvers[key] = IntensityResolver(live)
        return self._resolvers[key]

    async def apply(self, state: JobState, batch: TelemetryBatch) -> Applied:
        async with state.lock:
            try:
                await self.refresh_intensity(state, batch.pod.name)
            except Exception as exc:  # intensity lookup must never lose energy: keep the last figure
                log.warning(
                    "intensity refresh failed: %s", exc, extra={"job": f"{state.namespace}/{state.name}"}
                )
            before_step = state.aggregate.global_step
            result = state.aggregate.apply(
                batch, pue=state.spec.carbon.pue, intensity_g_per_kwh=state.intensity.g_per_kwh
            )
        labels = (state.namespace, state.name)
        if result.verdict is Verdict.ACCEPTED:
            metrics.batches.labels(*labels).inc()
            metrics.energy.labels(*labels).inc(result.energy_j)
            metrics.emissions.labels(*labels).inc(result.emissions_g)
            metrics.steps.labels(*labels).inc(max(state.aggregate.global_step - before_step, 0))
            metrics.power.labels(*labels).set(state.aggregate.power_w(batch.sent_at))
            metrics.intensity.labels(*labels).set(state.intensity.g_per_kwh)
            state.dirty.set()
        return result

    async def _write_loop(self, state: JobState) -> None:
        interval = self.config.status_interval_s
        last = 0.0
        failures = 0
        while True:
            await state.dirty.wait()
            wait = last + interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # coalesce: everything that arrives meanwhile goes in one patch
            state.dirty.clear()
            async with state.lock:
                body = status_patch(state.aggregate, state.spec, state.intensity, time.time())
            try:
                await merge_patch_status(self.custom, state.namespace, state.name, body)
                failures = 0
                last = time.monotonic()
                metrics.status_patches.labels(state.namespace, state.name).inc()
            except ApiException as exc:
                if exc.status == 404:
                    self.jobs.pop((state.namespace, state.name), None)
                    return
                failures += 1
                state.dirty.set()
                last = time.monotonic()
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                log.warning(
                    "status patch failed; retrying", extra={"status": exc.status, "failures": failures}
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("status writer error")
                failures += 1
                state.dirty.set()
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))

    async def flush(self) -> None:
        """Write every pending status now (shutdown): the next operator resumes from it."""
        for state in list(self.jobs.values()):
            if state.writer:
                state.writer.cancel()
            if state.dirty.is_set():
                body = status_patch(state.aggregate, state.spec, state.intensity, time.time())
                try:
                    await merge_patch_status(self.custom, state.namespace, state.name, body)
                except ApiException as exc:
                    log.warning("final status patch failed", extra={"status": exc.status})

    async def release(self) -> None:
        """Hand the jobs over (this replica became a standby): write what is pending, keep nothing.

        The next active replica restores from status; a batch this flush misses is repaired by the
        next cumulative batch from the same source, so nothing is lost or counted twice.
        """
        await self.flush()
        self.jobs.clear()
        self._loading.clear()

    def forget(self, namespace: str, name: str) -> None:
        state = self.jobs.pop((namespace, name), None)
        if state and state.writer:
            state.writer.cancel()

    def update_spec(self, namespace: str, name: str, spec: CarbonTrackedJobSpec) -> None:
        state = self.jobs.get((namespace, name))
        if state is not None:
            state.spec = spec
