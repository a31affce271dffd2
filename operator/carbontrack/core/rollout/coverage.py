"""Which running pods of a job are measured, as a pure function of the pods listed, the pods telemetry
accepted a batch from, and a moment.

A running pod *awaits* its first accepted batch for a grace period (`grace_s`: two status intervals
plus STARTUP_S) from when its containers, the sidecar among them, were initialized. Past the grace
with no batch accepted, the pod is *unmeasured*: the job's totals miss its energy and are a lower
bound. The staging and production carbon gates and budget watch then fail closed, naming it
(core.gates.judgement, core.rollout.evaluation), a stage is not judged while a pod still awaits its
first batch, and a projection never takes the reporting pods' rate for the whole job's
(`projection_scale`).

A running pod with a sidecar boot *held out* (refused a place in its pod for two live windows while other
boots of the pod stay live: core.accounting.boots) is unmeasured at once: telemetry was accepted from
it, but not from the sidecar that measures it now.

The grace also counts from when this operator process began watching the job (`watched_since`): after
a restart or a failover, a batch accepted but not yet in status comes again with the sidecar's next
cumulative batch, within the grace.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from carbontrack.api.contract import kube_time
from carbontrack.api.crd import CarbonTrackedJobSpec
from carbontrack.core.accounting.aggregation import JobAggregate
from carbontrack.core.gates.judgement import profile_for

STARTUP_S = 15.0
"""Beyond two status intervals: the sidecar process starting, reading its token and completing its
first TLS handshake, and its first batch's jitter (the sidecar sends within its interval of starting)."""
NAMED = 3
"""Pods a message names; more are counted."""


@dataclass(frozen=True)
class RunningPod:
    """A running pod of the job, as the judgement lists it."""

    name: str
    started_at: float
    """Unix time its containers were initialized (the sidecar had started): the grace counts from it."""


@dataclass(frozen=True)
class Coverage:
    """The job's running pods against the pods telemetry was accepted from."""

    running: int
    reporting: int
    """Running pods with at least one accepted batch."""
    awaiting: tuple[str, ...]
    """Running pods with no accepted batch yet, still within the grace period, by name."""
    unmeasured: tuple[RunningPod, ...]
    """Running pods with no accepted batch past the grace period, or held out, longest silent first."""
    grace_s: float
    held_out: tuple[str, ...] = ()
    """The unmeasured pods that are so because a sidecar boot of theirs is held out, by name."""

    def unmeasured_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.unmeasured)

    def projection_scale(self) -> float | None:
        """What the reporting pods' J/step is multiplied by to stand for every running pod: running /
        reporting (1 when all report, or no pod is listed); None when no running pod reports at all."""
        if self.reporting == self.running or self.running == 0:
            return 1.0
        return self.running / self.reporting if self.reporting else None


def grace_s(status_interval_s: float) -> float:
    """How long a running pod may go without an accepted batch before it is unmeasured."""
    return 2 * status_interval_s + STARTUP_S


def coverage(
    pods: Sequence[RunningPod],
    reported: Collection[str],
    *,
    now: float,
    grace_s: float,
    watched_since: float,
    held_out: Collection[str] = (),
) -> Coverage:
    """Each running pod reporting, awaiting its first batch, or unmeasured at `now` (unix time); a pod
    in `held_out` is unmeasured whatever it reported."""
    silent = [p for p in pods if p.name not in reported or p.name in held_out]

    def due(p: RunningPod) -> float:
        return now if p.name in held_out else max(p.started_at, watched_since) + grace_s

    unmeasured = sorted((p for p in silent if now >= due(p)), key=lambda p: (p.started_at, p.name))
    awaiting = sorted(p.name for p in silent if now < due(p))
    held = tuple(sorted(p.name for p in silent if p.name in held_out))
    return Coverage(len(pods), len(pods) - len(silent), tuple(awaiting), tuple(unmeasured), grace_s, held)


def named(pods: Sequence[str]) -> str:
    """`a, b and c` or `a, b, c and 4 more`: pods in a message a person reads."""
    if not pods:
        return "no pod"
    shown = list(pods[:NAMED])
    more = len(pods) - len(shown)
    if more:
        return f"{', '.join(shown)} and {more} more"
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"


def running_pod(pod: Mapping[str, Any]) -> RunningPod | None:
    """A listed pod object as a RunningPod; None unless it is Running and not terminating. It started
    when its Initialized condition turned True (native sidecars started), else at status.startTime."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if status.get("phase") != "Running" or meta.get("deletionTimestamp") or not meta.get("name"):
        return None
    initialized = [
        c.get("lastTransitionTime")
        for c in status.get("conditions") or []
        if c.get("type") == "Initialized" and c.get("status") == "True"
    ]
    started = kube_time(initialized[0]) if initialized else None
    started = started or kube_time(status.get("startTime")) or kube_time(meta.get("creationTimestamp"))
    return RunningPod(str(meta["name"]), started or 0.0)


@dataclass(frozen=True)
class Estimate:
    """The job's totals projected to spec.totalSteps."""

    energy_j: float
    emissions_g: float
    emissions_upper_g: float
    """Scaled by the stated uncertainty of the measurement so far (production judges it)."""


def projection(
    agg: JobAggregate, cov: Coverage | None, total_steps: int, pue: float, g_per_kwh: float
) -> Estimate | None:
    """The aggregate's projection (its recent J/step over the remaining steps) with the remaining part
    scaled to every running pod (`Coverage.projection_scale`); None when nothing can be projected."""
    scale = cov.projection_scale() if cov is not None else 1.0
    base = agg.projection(total_steps, pue, g_per_kwh)
    if base is None or scale is None:
        return None
    energy_j, emissions_g = base
    if scale != 1.0:
        energy_j = agg.energy_j + (energy_j - agg.energy_j) * scale
        emissions_g = agg.emissions_g + (emissions_g - agg.emissions_g) * scale
    upper_ratio = agg.energy_upper_bound_j / agg.energy_j if agg.energy_j > 0 else 1.0
    return Estimate(energy_j, emissions_g, emissions_g * upper_ratio)


def fails_closed(spec: CarbonTrackedJobSpec) -> bool:
    """The job's context fails closed on missing data (staging, production), or warns (development)."""
    return profile_for(spec.gates.context, spec.gates.thresholds).fail_closed


def awaited(cov: Coverage | None, spec: CarbonTrackedJobSpec) -> bool:
    """A carbon gate that fails closed is not judged while a running pod awaits its first batch."""
    carbon = spec.carbon.budget_kg is not None or spec.carbon.max_grams_per_metric_point is not None
    return cov is not None and bool(cov.awaiting) and carbon and fails_closed(spec)


def budget_unwatched(cov: Coverage | None, emissions_g: float, spec: CarbonTrackedJobSpec) -> str | None:
    """Why the carbon budget cannot be watched and the job stops (running pods unmeasured, in a context
    that fails closed), or None."""
    budget_kg = spec.carbon.budget_kg
    if cov is None or not cov.unmeasured or budget_kg is None or not fails_closed(spec):
        return None
    return (
        f"carbon budget not watched: {len(cov.unmeasured)} running pod(s) unmeasured "
        f"({named(cov.unmeasured_names())}), so {emissions_g / 1000:.3g} kg so far is a lower bound "
        f"of {budget_kg:g} kg: failing closed"
    )
