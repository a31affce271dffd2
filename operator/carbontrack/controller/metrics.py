"""Prometheus metrics: base units in names; labels namespace and job, never per step or per pod."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry(auto_describe=True)
LABELS = ("namespace", "job_name")  # not `job`: Prometheus's own target label would rename it exported_job

energy = Counter(
    "carbontrack_gpu_energy_joules",
    "GPU energy measured by the sidecars (before PUE).",
    LABELS,
    registry=REGISTRY,
)
emissions = Counter(
    "carbontrack_emissions_grams",
    "Emissions: energy x PUE x grid intensity at the time.",
    LABELS,
    registry=REGISTRY,
)
power = Gauge(
    "carbontrack_gpu_power_watts", "Recent GPU power of the job, summed over pods.", LABELS, registry=REGISTRY
)
steps = Counter("carbontrack_training_steps", "Global training steps observed.", LABELS, registry=REGISTRY)
intensity = Gauge(
    "carbontrack_grid_intensity_grams_per_kwh",
    "Grid intensity in force for the job.",
    LABELS,
    registry=REGISTRY,
)
epsilon = Gauge(
    "carbontrack_privacy_epsilon", "DP epsilon recomputed by the operator.", LABELS, registry=REGISTRY
)
gate_passed = Gauge(
    "carbontrack_gate_passed",
    "1 if the gate passed at the last judgement.",
    (*LABELS, "gate"),
    registry=REGISTRY,
)
phase = Gauge(
    "carbontrack_job_phase", "1 for the job's current phase.", (*LABELS, "phase"), registry=REGISTRY
)
rejected = Counter(
    "carbontrack_telemetry_rejected", "Telemetry batches refused, by reason.", ("reason",), registry=REGISTRY
)
batches = Counter("carbontrack_telemetry_batches", "Telemetry batches accepted.", LABELS, registry=REGISTRY)
status_patches = Counter(
    "carbontrack_status_patches", "Status patches written by the telemetry writer.", LABELS, registry=REGISTRY
)
epsilon_budget = Gauge(
    "carbontrack_privacy_epsilon_budget", "The job's epsilon budget (spec).", LABELS, registry=REGISTRY
)
emissions_budget = Gauge(
    "carbontrack_emissions_budget_grams",
    "The job's carbon budget (spec), in grams.",
    LABELS,
    registry=REGISTRY,
)
