"""Prometheus metrics: base units in names; labels namespace and job, never per step or per pod.

The per-job totals and gauges are not counters this process increments: a collector reads them from
the live job states at scrape time. The counters (energy, emissions, steps) are the figures the last
status write the apiserver took carried (`MeasuredJob.persisted`), never the live aggregate's, which
runs up to a status interval ahead of status: a restart, a failover or a shard move resumes from
status, so after it every counter is at least what it was before (Prometheus reads any decrease as a
reset, and `increase()` would count the whole total again). So a restart neither resets
`carbontrack_gpu_energy_joules_total` to 0 (under-reporting dashboards, a late budget alert) nor
takes it back, and a deleted job's series go with its state.
Only what is about this process (batches accepted and refused, status patches) are process counters.
The collector is handed its job source when it is built (controller.startup: the job registry).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from carbontrack.api.contract import Phase

if TYPE_CHECKING:
    from prometheus_client import Metric

    from carbontrack.core.accounting.aggregation import JobAggregate
    from carbontrack.core.rollout.evaluation import Gauges
    from carbontrack.intensity.static import Intensity
    from carbontrack.state.status import Totals

REGISTRY = CollectorRegistry(auto_describe=True)
LABELS = ("namespace", "job_name")  # not `job`: Prometheus's own target label would rename it exported_job

rejected = Counter(
    "carbontrack_telemetry_rejected", "Telemetry batches refused, by reason.", ("reason",), registry=REGISTRY
)
batches = Counter("carbontrack_telemetry_batches", "Telemetry batches accepted.", LABELS, registry=REGISTRY)
status_patches = Counter(
    "carbontrack_status_patches", "Status patches written by the telemetry writer.", LABELS, registry=REGISTRY
)

watched_namespace_missing = Gauge(
    "carbontrack_watched_namespace_missing",
    "1 while a namespace the operator is told to watch does not exist (its jobs cannot be seen), else 0.",
    ("namespace",),
    registry=REGISTRY,
)
kueue_api_served = Gauge(
    "carbontrack_kueue_api_served",
    "1 while the cluster serves Kueue's API (kueue.x-k8s.io/v1beta2 workloads): queue-labelled jobs run.",
    registry=REGISTRY,
)


def forget(namespace: str, name: str) -> None:
    """Remove a deleted job's process-counter series (the collector's go with the job state)."""
    for counter in (batches, status_patches):
        with contextlib.suppress(KeyError):  # no batch was ever accepted for it
            counter.remove(namespace, name)


class MeasuredJob(Protocol):
    """What the collector reads of one job's live state (state.registry.JobState)."""

    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def aggregate(self) -> JobAggregate: ...

    @property
    def intensity(self) -> Intensity: ...

    @property
    def gauges(self) -> Gauges: ...

    @property
    def persisted(self) -> Totals: ...


JobSource = Callable[[], Iterable[MeasuredJob]]
"""The jobs the operator holds now, read at every scrape."""


def _gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=(*LABELS, *extra))


@dataclass(frozen=True)
class _Families:
    """One scrape's per-job series, in the order they are exported."""

    energy: CounterMetricFamily
    emissions: CounterMetricFamily
    steps: CounterMetricFamily
    power: GaugeMetricFamily
    intensity: GaugeMetricFamily
    epsilon: GaugeMetricFamily
    epsilon_budget: GaugeMetricFamily
    emissions_budget: GaugeMetricFamily
    gate: GaugeMetricFamily
    phase: GaugeMetricFamily
    deferred: GaugeMetricFamily
    avoided: GaugeMetricFamily

    @classmethod
    def empty(cls) -> _Families:
        return cls(
            energy=CounterMetricFamily(
                "carbontrack_gpu_energy_joules",
                "GPU energy measured by the sidecars (before PUE), as status last recorded it.",
                labels=LABELS,
            ),
            emissions=CounterMetricFamily(
                "carbontrack_emissions_grams",
                "Emissions: energy x PUE x grid intensity at the time, as status last recorded them.",
                labels=LABELS,
            ),
            steps=CounterMetricFamily(
                "carbontrack_training_steps",
                "Global training steps observed, as status last recorded them.",
                labels=LABELS,
            ),
            power=_gauge("carbontrack_gpu_power_watts", "Recent GPU power of the job, summed over pods."),
            intensity=_gauge(
                "carbontrack_grid_intensity_grams_per_kwh", "Grid intensity in force for the job."
            ),
            epsilon=_gauge("carbontrack_privacy_epsilon", "DP epsilon recomputed by the operator."),
            epsilon_budget=_gauge("carbontrack_privacy_epsilon_budget", "The job's epsilon budget (spec)."),
            emissions_budget=_gauge(
                "carbontrack_emissions_budget_grams", "The job's carbon budget (spec), in grams."
            ),
            gate=_gauge("carbontrack_gate_passed", "1 if the gate passed at the last judgement.", ("gate",)),
            phase=_gauge("carbontrack_job_phase", "1 for the job's current phase.", ("phase",)),
            deferred=_gauge(
                "carbontrack_deferred_seconds",
                "Time the carbon-aware start waited for a clean grid (so far).",
            ),
            avoided=_gauge(
                "carbontrack_emissions_avoided_grams_estimate",
                "Estimated emissions the deferred start avoided: measured energy x PUE x (intensity at the "
                "planned start - at the actual start). An estimate; negative when waiting cost.",
            ),
        )

    def add(self, job: MeasuredJob, now: float) -> None:
        """The job's samples."""
        labels = [job.namespace, job.name]
        agg, g, persisted = job.aggregate, job.gauges, job.persisted
        self.energy.add_metric(labels, persisted.energy_j)
        self.emissions.add_metric(labels, persisted.emissions_g)
        self.steps.add_metric(labels, persisted.steps)
        if agg.sources:
            self.power.add_metric(labels, agg.power_w(now))
            self.intensity.add_metric(labels, job.intensity.g_per_kwh)
        optional = (
            (self.epsilon, g.epsilon),
            (self.epsilon_budget, g.epsilon_budget),
            (self.emissions_budget, g.emissions_budget_g),
            (self.deferred, g.deferred_s),
            (self.avoided, g.emissions_avoided_g),
        )
        for family, value in optional:
            if value is not None:
                family.add_metric(labels, value)
        for name, passed in sorted(g.gates.items()):
            self.gate.add_metric([*labels, name], 1 if passed else 0)
        for p in Phase:
            self.phase.add_metric([*labels, p.value], 1 if p == g.phase else 0)

    def all(self) -> Iterator[Metric]:
        return (getattr(self, f.name) for f in fields(self))


class JobCollector(Collector):
    """Per-job series, read from the jobs `source` returns at scrape time."""

    def __init__(self, source: JobSource, clock: Callable[[], float] = time.time) -> None:
        self._source = source
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        families = _Families.empty()
        now = self._clock()
        for job in list(self._source()):
            families.add(job, now)
        yield from families.all()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # unchecked collector: series come and go with jobs
