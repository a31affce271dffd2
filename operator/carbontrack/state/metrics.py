"""Prometheus metrics: base units in names; labels namespace and job, never per step or per pod.

The per-job totals and gauges are not counters this process increments: a collector reads them from
the live job states at scrape time, and those are restored from status. So an operator restart or a
failover neither resets `carbontrack_gpu_energy_joules_total` to 0 (under-reporting dashboards, a
late budget alert) nor counts anything twice, and a deleted job's series go with its state.
Only what is about this process (batches accepted and refused, status patches) are process counters.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from carbontrack.api.contract import Phase

if TYPE_CHECKING:
    from prometheus_client import Metric

    from carbontrack.state.registry import JobState

REGISTRY = CollectorRegistry(auto_describe=True)
LABELS = ("namespace", "job_name")  # not `job`: Prometheus's own target label would rename it exported_job

rejected = Counter(
    "carbontrack_telemetry_rejected", "Telemetry batches refused, by reason.", ("reason",), registry=REGISTRY
)
batches = Counter("carbontrack_telemetry_batches", "Telemetry batches accepted.", LABELS, registry=REGISTRY)
status_patches = Counter(
    "carbontrack_status_patches", "Status patches written by the telemetry writer.", LABELS, registry=REGISTRY
)


def forget(namespace: str, name: str) -> None:
    """Remove a deleted job's process-counter series (the collector's go with the job state)."""
    for counter in (batches, status_patches):
        with contextlib.suppress(KeyError):  # no batch was ever accepted for it
            counter.remove(namespace, name)


class JobCollector(Collector):
    """Per-job series, read from the job states at scrape time."""

    def __init__(self) -> None:
        self.jobs: Callable[[], Iterable[JobState]] = lambda: ()

    def collect(self) -> Iterator[Metric]:
        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=(*LABELS, *extra))

        energy = CounterMetricFamily(
            "carbontrack_gpu_energy_joules",
            "GPU energy measured by the sidecars (before PUE).",
            labels=LABELS,
        )
        emissions = CounterMetricFamily(
            "carbontrack_emissions_grams",
            "Emissions: energy x PUE x grid intensity at the time.",
            labels=LABELS,
        )
        steps = CounterMetricFamily(
            "carbontrack_training_steps", "Global training steps observed.", labels=LABELS
        )
        power = gauge("carbontrack_gpu_power_watts", "Recent GPU power of the job, summed over pods.")
        intensity = gauge("carbontrack_grid_intensity_grams_per_kwh", "Grid intensity in force for the job.")
        epsilon = gauge("carbontrack_privacy_epsilon", "DP epsilon recomputed by the operator.")
        epsilon_budget = gauge("carbontrack_privacy_epsilon_budget", "The job's epsilon budget (spec).")
        emissions_budget = gauge(
            "carbontrack_emissions_budget_grams", "The job's carbon budget (spec), in grams."
        )
        gate = gauge("carbontrack_gate_passed", "1 if the gate passed at the last judgement.", ("gate",))
        phase = gauge("carbontrack_job_phase", "1 for the job's current phase.", ("phase",))
        deferred = gauge(
            "carbontrack_deferred_seconds", "Time the carbon-aware start waited for a clean grid (so far)."
        )
        avoided = gauge(
            "carbontrack_emissions_avoided_grams_estimate",
            "Estimated emissions the deferred start avoided: measured energy x PUE x (intensity at the "
            "planned start - at the actual start). An estimate; negative when waiting cost.",
        )
        now = time.time()
        for state in list(self.jobs()):
            labels = [state.namespace, state.name]
            agg, g = state.aggregate, state.gauges
            energy.add_metric(labels, agg.energy_j)
            emissions.add_metric(labels, agg.emissions_g)
            steps.add_metric(labels, agg.global_step)
            if agg.sources:
                power.add_metric(labels, agg.power_w(now))
                intensity.add_metric(labels, state.intensity.g_per_kwh)
            if g.epsilon is not None:
                epsilon.add_metric(labels, g.epsilon)
            if g.epsilon_budget is not None:
                epsilon_budget.add_metric(labels, g.epsilon_budget)
            if g.emissions_budget_g is not None:
                emissions_budget.add_metric(labels, g.emissions_budget_g)
            if g.deferred_s is not None:
                deferred.add_metric(labels, g.deferred_s)
            if g.emissions_avoided_g is not None:
                avoided.add_metric(labels, g.emissions_avoided_g)
            for name, passed in sorted(g.gates.items()):
                gate.add_metric([*labels, name], 1 if passed else 0)
            for p in Phase:
                phase.add_metric([*labels, p.value], 1 if p == g.phase else 0)
        yield from (energy, emissions, steps, power, intensity, epsilon, epsilon_budget, emissions_budget)
        yield from (gate, phase, deferred, avoided)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # unchecked collector: series come and go with jobs


jobs = JobCollector()
REGISTRY.register(jobs)
