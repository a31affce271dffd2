"""The per-job metric series: read at scrape time from the job source the collector was given."""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from carbontrack.api.contract import Phase
from carbontrack.core.accounting.aggregation import JobAggregate
from carbontrack.core.rollout.evaluation import Gauges
from carbontrack.intensity.static import Intensity
from carbontrack.state import metrics
from carbontrack.state.metrics import JobCollector
from carbontrack.state.status import Totals
from tests.cases.evaluation import canary_aggregate


@dataclass
class Job:
    namespace: str
    name: str
    aggregate: JobAggregate
    intensity: Intensity
    gauges: Gauges
    persisted: Totals = field(default_factory=Totals)


def scrape(jobs: list[Job]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(JobCollector(lambda: jobs, clock=lambda: 0.0))
    return registry


def test_each_job_is_read_at_scrape_time_with_its_gauges() -> None:
    gates = {"carbon": True, "quality": False}
    gauges = Gauges(phase=Phase.CANARY, epsilon=1.5, gates=gates, deferred_s=60.0)
    jobs = [Job("ns", "a", JobAggregate(), Intensity(300.0, "DE", "static"), gauges)]
    registry = scrape(jobs)
    labels = {"namespace": "ns", "job_name": "a"}
    assert registry.get_sample_value("carbontrack_gpu_energy_joules_total", labels) == 0.0
    assert registry.get_sample_value("carbontrack_privacy_epsilon", labels) == 1.5
    assert registry.get_sample_value("carbontrack_deferred_seconds", labels) == 60.0
    assert registry.get_sample_value("carbontrack_privacy_epsilon_budget", labels) is None  # none in the spec
    assert registry.get_sample_value("carbontrack_gate_passed", {**labels, "gate": "quality"}) == 0.0
    assert registry.get_sample_value("carbontrack_job_phase", {**labels, "phase": "Canary"}) == 1.0
    assert registry.get_sample_value("carbontrack_job_phase", {**labels, "phase": "Running"}) == 0.0
    assert registry.get_sample_value("carbontrack_gpu_power_watts", labels) is None  # no source measured yet
    jobs.clear()  # the job is forgotten: its series go with it
    assert registry.get_sample_value("carbontrack_gpu_energy_joules_total", labels) is None


def test_the_counters_export_what_status_holds_not_the_live_aggregate() -> None:
    """The live aggregate runs up to a status interval ahead of status, and a restarted operator resumes
    from status: exporting the aggregate would make the counters go back across a restart."""
    live = canary_aggregate()  # 3600 J, 12 steps, 0.36 g, none of it in status yet
    job = Job("ns", "a", live, Intensity(300.0, "DE", "static"), Gauges(phase=Phase.CANARY))
    registry = scrape([job])
    labels = {"namespace": "ns", "job_name": "a"}
    counters = ("carbontrack_gpu_energy_joules_total", "carbontrack_emissions_grams_total")
    assert [registry.get_sample_value(name, labels) for name in counters] == [0.0, 0.0]
    assert registry.get_sample_value("carbontrack_training_steps_total", labels) == 0.0
    job.persisted = Totals(energy_j=2500.0, emissions_g=0.25, steps=9)  # a status write went through
    assert [registry.get_sample_value(name, labels) for name in counters] == [2500.0, 0.25]
    assert registry.get_sample_value("carbontrack_training_steps_total", labels) == 9.0


def test_the_metrics_module_does_not_know_the_registry() -> None:
    tree = ast.parse(inspect.getsource(metrics))
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module is not None
    }
    assert not any(name.startswith("carbontrack.state.registry") for name in imported)
