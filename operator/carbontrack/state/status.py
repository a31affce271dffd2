"""The one boundary between the operator's state and a CarbonTrackedJob's status.

Status is built from the status models and read back into them; nothing else assembles status dicts.
Each top-level field has one writer:

| writer                                   | fields                                                     |
|------------------------------------------|------------------------------------------------------------|
| telemetry writer (`telemetry_update`)    | steps, energy*, emissions*, powerWatts, intensity,         |
|                                          | telemetry, evidence, checkpoint                            |
| judgement (`core.rollout`, timer)        | phase*, replicas, targetReplicas, replicaSummary, selector,|
|                                          | promotion, gates, gateSummary, epsilon, epsilonClaimed,    |
|                                          | projected, efficiency, testsEvidence, measurements,        |
|                                          | decisions, halt, schedule (the deferred start,             |
|                                          | `deferral_update`, then its savings estimate),             |
|                                          | conditions*,                                               |
|                                          | observedGeneration                                         |

*phase and the Ready condition also change where the world decides rather than a judgement: a spec or
template that cannot run (`Invalid`, by the reconcile) and the Job's own end (`Succeeded`/`Failed`,
by the Job watcher, and again by any round that finds status without it: a round that read status
before the watcher's write can put its judged phase back). They go through `phase_update` here, so
every path builds one shape.
Everything the operator knows about a job is in these fields, so a restart or a failover resumes
from status alone: energy high-water marks, the promotion state, and the gates' evidence. The
per-pod records inside `telemetry` and `evidence` convert in state.telemetry_status.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from carbontrack.api.contract import LABEL_JOB, Phase
from carbontrack.api.crd import (
    MAX_STATUS_GPUS,
    MAX_UNMEASURED_PODS,
    CarbonTrackedJobSpec,
    CarbonTrackedJobStatus,
    CheckpointStatus,
    GpuStatus,
    IntensityStatus,
    PromotionStatus,
    RefusedCounts,
    ScheduleStatus,
    TelemetryStatus,
    TestsEvidence,
    UnmeasuredPod,
)
from carbontrack.api.wire import DPParams
from carbontrack.core.accounting.aggregation import JobAggregate
from carbontrack.core.accounting.emissions import kwh
from carbontrack.core.accounting.folding import Limits
from carbontrack.core.events import ConditionUpdate
from carbontrack.core.gates.judgement import CiResults
from carbontrack.core.rollout.coverage import RunningPod
from carbontrack.core.rollout.evaluation import Gauges, Plan
from carbontrack.core.rollout.promotion import State
from carbontrack.intensity.static import Intensity
from carbontrack.state.conditions import set_condition
from carbontrack.state.finite import finite_fields
from carbontrack.state.telemetry_status import (
    evidence_status,
    fold_from,
    fold_status,
    source_from,
    sources_from_compact,
    written_sources,
)

Patch = dict[str, Any]


def _set_fields(model: CarbonTrackedJobStatus) -> Patch:
    """The top-level fields the writer set, each whole with its defaults (as the apiserver stores it,
    so an unchanged field compares equal); None stays: in a merge patch it deletes the field. A field
    holding a non-finite number is left out (state.finite): status never receives one."""
    full = model.model_dump(by_alias=True, mode="json")
    fields = CarbonTrackedJobStatus.model_fields
    return finite_fields(
        {fields[name].alias or name: full[fields[name].alias or name] for name in model.model_fields_set}
    )


def _without_nulls(value: Any) -> Any:
    """Stored status never holds nulls (a merge patch deletes them), so compare without them."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def changed_fields(current: Mapping[str, Any], update: Patch) -> Patch:
    """The top-level fields of `update` whose value differs from the stored status: an idle job
    costs the apiserver nothing. Sub-objects are compared whole and written whole."""
    return {k: v for k, v in update.items() if _without_nulls(current.get(k)) != _without_nulls(v)}


def parse(raw: Mapping[str, Any] | None) -> CarbonTrackedJobStatus:
    """Stored status as the model; fields this version does not know are ignored, not fatal."""
    known = set(CarbonTrackedJobStatus.model_fields) | {
        f.alias for f in CarbonTrackedJobStatus.model_fields.values() if f.alias
    }
    return CarbonTrackedJobStatus.model_validate({k: v for k, v in (raw or {}).items() if k in known})


def restore(status: CarbonTrackedJobStatus, limits: Limits | None = None) -> JobAggregate:
    """The aggregate as the last status write left it: energy high-water marks, folds and the evidence."""
    agg = JobAggregate(emissions_g=status.emissions_grams, limits=limits or Limits())
    if status.telemetry is not None:
        for s in status.telemetry.sources:
            agg.sources[(s.pod, s.boot_id)] = source_from(s)
        compact = status.telemetry.compact
        for src in sources_from_compact(compact) if compact is not None else []:
            agg.sources[(src.pod, src.boot_id)] = src
        agg.folded = {f.pod: fold_from(f) for f in status.telemetry.folded}
        agg.refused = {reason: n for reason, n in status.telemetry.refused.model_dump().items() if n}
    if status.checkpoint is not None:
        ck = status.checkpoint
        agg.checkpoint = (ck.step, ck.uri, ck.at.timestamp())
    if status.evidence is not None:
        agg.evals = {m.name: (m.step, m.value) for m in status.evidence.metrics}
        agg.first_evals = {
            m.name: (m.step, m.value, m.energy_joules, m.emissions_grams)
            for m in status.evidence.first_metrics
        }
        dp = status.evidence.dp
        if dp is not None:
            agg.dp = DPParams(
                step=dp.step,
                noise_multiplier=dp.noise_multiplier,
                sample_rate=dp.sample_rate,
                delta=dp.delta,
                accountant_epsilon=dp.accountant_epsilon,
            )
    return agg


def _utc(ts: float | None = None) -> dt.datetime:
    moment = dt.datetime.now(dt.UTC) if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC)
    return moment.replace(microsecond=0)


def telemetry_update(
    agg: JobAggregate, intensity: Intensity, now: float, unmeasured: Sequence[RunningPod] = ()
) -> Patch:
    """The telemetry writer's fields, as a merge patch body (`{"status": ...}`); `unmeasured`: the
    running pods the last judgement found unmeasured (core.rollout.coverage)."""
    rates = [r for s in agg.sources.values() if (r := s.steps_per_s()) is not None]
    sources, compact = written_sources(agg)
    update = CarbonTrackedJobStatus(
        steps=agg.global_step,
        energy_joules=agg.energy_j,
        energy_kwh=round(kwh(agg.energy_j), 6),
        emissions_grams=agg.emissions_g,
        emissions_kg=round(agg.emissions_g / 1000, 6),
        energy_joules_upper_bound=agg.energy_upper_bound_j,
        shared_gpu_energy_joules=agg.shared_energy_j,
        gpus=[
            GpuStatus(
                uuid=g.uuid,
                index=g.index,
                pod=pod,
                sharing=g.sharing,
                method=g.method,
                foreign_processes=g.foreign_processes,
                name=g.name,
            )
            for pod, g in agg.gpus(MAX_STATUS_GPUS)
        ],
        power_watts=round(agg.power_w(now), 3),
        intensity=IntensityStatus(
            grams_per_kwh=intensity.g_per_kwh, zone=intensity.zone, source=intensity.source
        ),
        telemetry=TelemetryStatus(
            sources=sources,
            compact=compact,
            folded=[fold_status(f) for _, f in sorted(agg.folded.items())],
            last_batch_at=_utc(now),
            joules_per_step=agg.joules_per_step(),
            steps_per_second=max(rates) if rates else None,
            refused=RefusedCounts.model_validate(agg.refused),
            unmeasured_pods=[
                UnmeasuredPod(pod=p.name, started_at=_utc(p.started_at))
                for p in unmeasured[:MAX_UNMEASURED_PODS]
            ],
            unmeasured_pod_count=len(unmeasured),
        ),
        evidence=evidence_status(agg),
    )
    if agg.checkpoint is not None:
        update.checkpoint = checkpoint_status(agg)
    return {"status": _set_fields(update)}


@dataclass(frozen=True)
class Totals:
    """The cumulative figures a status write carried: what the exported counters may show, so that
    after a restart, a failover or a shard move (which resume from status) none goes back."""

    energy_j: float = 0.0
    emissions_g: float = 0.0
    steps: int = 0


def totals(st: CarbonTrackedJobStatus) -> Totals:
    """The totals stored status holds."""
    return Totals(st.energy_joules, st.emissions_grams, st.steps)


def written_totals(body: Patch, before: Totals) -> Totals:
    """The totals a telemetry patch (`telemetry_update`) carried, once the apiserver took it; a figure
    the patch does not carry stays as it was."""
    fields = body.get("status") or {}
    return Totals(
        float(fields.get("energyJoules", before.energy_j)),
        float(fields.get("emissionsGrams", before.emissions_g)),
        int(fields.get("steps", before.steps)),
    )


def unmeasured_pods(st: CarbonTrackedJobStatus) -> tuple[RunningPod, ...]:
    """status.telemetry.unmeasuredPods as the last write left them (kept until the next judgement)."""
    listed = st.telemetry.unmeasured_pods if st.telemetry else []
    return tuple(RunningPod(p.pod, p.started_at.timestamp()) for p in listed)


def ended_at(st: CarbonTrackedJobStatus) -> float | None:
    """When stored status says the job stopped training (unix time): a Halted job when its halt
    stopped the workers, a Succeeded or Failed one when its Ready condition turned so; else None."""
    if st.phase == Phase.HALTED:
        return st.halt.suspended_at.timestamp() if st.halt and st.halt.suspended_at else None
    if st.phase in (Phase.SUCCEEDED, Phase.FAILED):
        ready = [c.last_transition_time.timestamp() for c in st.conditions if c.type == "Ready"]
        return ready[0] if ready else None
    return None


def checkpoint_status(agg: JobAggregate) -> CheckpointStatus | None:
    if agg.checkpoint is None:
        return None
    step, uri, at = agg.checkpoint
    return CheckpointStatus(step=step, uri=uri, at=_utc(at))


# --- the judgement's fields ---------------------------------------------------------------------


def promotion_state(status: CarbonTrackedJobStatus) -> State:
    p = status.promotion or PromotionStatus()
    halted_from = Phase(p.halted_from) if p.halted_from else None
    return State(
        phase=status.phase or Phase.PENDING,
        stage=p.stage,
        stage_start_step=p.stage_start_step,
        halted_from=halted_from,
        halted_generation=p.halted_generation,
        paused_from=Phase(p.paused_from) if p.paused_from else None,
        pause_reason=p.pause_reason,
        consumed_decision=p.consumed_decision,
    )


def promotion_status(state: State) -> PromotionStatus:
    return PromotionStatus(
        stage=state.stage,
        stage_start_step=state.stage_start_step,
        halted_from=state.halted_from.value if state.halted_from else None,
        halted_generation=state.halted_generation,
        paused_from=state.paused_from.value if state.paused_from else None,
        pause_reason=state.pause_reason,
        consumed_decision=state.consumed_decision,
    )


def _with_condition(
    current: Mapping[str, Any], update: ConditionUpdate | None, generation: int | None
) -> Any:
    if update is None:
        return None
    return set_condition(
        current.get("conditions"), update.type, update.status, update.reason, update.message, generation
    )


def plan_update(current: Mapping[str, Any], spec: CarbonTrackedJobSpec, plan: Plan, name: str) -> Patch:
    """The judgement's fields that changed, as a merge patch of `status` (not wrapped)."""
    state = plan.decision.state
    replicas = plan.decision.replicas
    update = CarbonTrackedJobStatus(
        phase=state.phase,
        replicas=replicas,
        target_replicas=spec.replicas,
        replica_summary=f"{replicas}/{spec.replicas}",
        selector=f"{LABEL_JOB}={name}",
        promotion=promotion_status(state),
        observed_generation=plan.generation,
        halt=plan.halt,
    )
    if plan.epsilon is not None:
        update.epsilon = round(plan.epsilon, 6)
    if plan.epsilon_claimed is not None:
        update.epsilon_claimed = plan.epsilon_claimed
    if plan.projected is not None:
        update.projected = plan.projected
    if plan.efficiency is not None:
        update.efficiency = plan.efficiency
    if plan.schedule is not None:
        update.schedule = plan.schedule
    if plan.tests_evidence is not None:
        update.tests_evidence = plan.tests_evidence
    if plan.decision.report is not None:
        update.gates = list(plan.decision.report.results)
        update.gate_summary = plan.decision.report.summary()
    if plan.measurements is not None:
        update.measurements = list(plan.measurements)
    if plan.decision.record is not None:  # a bounded history: the last 10 decisions
        before = parse({"decisions": current.get("decisions") or []}).decisions
        update.decisions = [*before, plan.decision.record][-10:]
    out = changed_fields(current, _set_fields(update))
    conditions = current.get("conditions")
    for condition in plan.conditions:
        conditions = _with_condition({"conditions": conditions}, condition, plan.generation)
    if _without_nulls(conditions) != _without_nulls(current.get("conditions")):
        out["conditions"] = conditions
    return out


def phase_update(
    current: Mapping[str, Any], phase: Phase, condition: ConditionUpdate, generation: int | None
) -> Patch:
    """A phase the world decided (Invalid, Succeeded, Failed) with its Ready condition: status patch."""
    return {
        "phase": phase.value,
        "conditions": _with_condition(current, condition, generation),
    }


def deferral_update(
    current: Mapping[str, Any],
    schedule: ScheduleStatus,
    phase: Phase,
    condition: ConditionUpdate,
    generation: int | None,
) -> Patch:
    """A round of the carbon-aware start (phase Deferred, or Pending once it starts): status patch with
    the schedule, the phase and the Deferred condition."""
    out = changed_fields(current, _set_fields(CarbonTrackedJobStatus(phase=phase, schedule=schedule)))
    conditions = _with_condition(current, condition, generation)
    if _without_nulls(conditions) != _without_nulls(current.get("conditions")):
        out["conditions"] = conditions
    return out


def halt_cleared() -> Patch:
    """status.halt removed: a dirty-grid pause resumed (its halt was the judgement's, now over)."""
    return {"halt": None}


def ready_update(current: Mapping[str, Any], condition: ConditionUpdate, generation: int | None) -> Patch:
    """Only the Ready condition (the reconcile's verdict on the Job it created or could not)."""
    return {"conditions": _with_condition(current, condition, generation)}


def tests_evidence(results: CiResults, source: str) -> TestsEvidence:
    return TestsEvidence(
        pass_rate=results.pass_rate,
        coverage=results.coverage,
        critical=results.critical,
        high=results.high,
        medium=results.medium,
        low=results.low,
        source=source,
    )


def tests_results(evidence: TestsEvidence) -> CiResults:
    return CiResults(
        pass_rate=evidence.pass_rate,
        coverage=evidence.coverage,
        critical=evidence.critical,
        high=evidence.high,
        medium=evidence.medium,
        low=evidence.low,
    )


def with_phase(gauges: Gauges, phase: Phase) -> Gauges:
    return replace(gauges, phase=phase)


def merge_gauges(before: Gauges, plan: Gauges) -> Gauges:
    """A judgement that judged no gate (a stage still counting steps) keeps the last verdicts."""
    return plan if plan.gates else replace(plan, gates=before.gates)
