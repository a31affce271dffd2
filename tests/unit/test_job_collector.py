"""The per-job metric series: read at scrape time from the job source the collector was given."""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from carbontrack.api.contract import Phase
from carbontrack.core.accounting.aggregation import JobAggregate
from carbontrack.core.rollout.evaluation import Gauges
from carbontrack.intensity.static import Intensity
from carbontrack.state import metrics
from carbontrack.state.metrics import JobCollector


@dataclass
class Job:
    namespace: str
    name: str
    aggregate: JobAggregate
    intensity: Intensity
    gauges: Gauges


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


def test_the_metrics_module_does_not_know_the_registry() -> None:
    tree = ast.parse(inspect.getsource(metrics))
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module is not None
    }
    assert not any(name.startswith("carbontrack.state.registry") for name in imported)
