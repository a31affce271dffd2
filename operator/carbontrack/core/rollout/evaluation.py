"""One judgement of one job, as a pure function: what is known -> what to do, write and export.

The timer handler gathers (status, the live aggregate, the test evidence, the running pods, epsilon
computed off the event loop: core.rollout.accountant), calls `evaluate`, and applies the `Plan`: the
Job's scale, the status fields the judgement owns, the Events and the gauges. Nothing here does I/O,
so every decision is unit-tested with exact values, and a restarted operator that gathers the same
inputs from status decides the same.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from carbontrack.api.contract import Phase
from carbontrack.api.crd import (
    CarbonTrackedJobSpec,
    CheckpointStatus,
    EfficiencyStatus,
    HaltStatus,
    MetricGate,
    MetricHistory,
    Projection,
    ScheduleStatus,
    TestsEvidence,
)
from carbontrack.core.accounting.aggregation import JobAggregate
from carbontrack.core.accounting.efficiency import efficiency
from carbontrack.core.events import ConditionUpdate, Event
from carbontrack.core.gates import metric_gates as analysis
from carbontrack.core.gates.judgement import CiResults, Evidence, Report, judge
from carbontrack.core.rollout import coverage, halting
from carbontrack.core.rollout.conditions import (
    intensity_resolved,
    pods_measured,
    telemetry_accepted,
    zone_resolved,
)
from carbontrack.core.rollout.promotion import Decision, PersonDecision, State, step
from carbontrack.core.scheduling.deferral import with_savings


@dataclass(frozen=True)
class Inputs:
    """Everything one judgement of a job reads, gathered by the handler."""

    spec: CarbonTrackedJobSpec
    generation: int
    state: State
    """The promotion state as status holds it."""
    replicas: int | None
    """status.replicas: the scale the Job was last given."""
    aggregate: JobAggregate
    intensity_g_per_kwh: float
    tests: CiResults | None = None
    tests_evidence: TestsEvidence | None = None
    epsilons: tuple[float, float] | None = None
    """(now, projected) from EpsilonQuery.compute, or None."""
    zone: str = ""
    zone_known: bool = True
    """False: the zone is in no intensity table, and emissions use the world average."""
    zone_warned: bool = False
    """The ZoneResolved=False condition is already in status (its Event was posted)."""
    intensity_problem: str | None = None
    """Why the job's live intensity provider cannot be used (its key's Secret unreadable), or None."""
    intensity_warned: bool = False
    """The IntensityResolved=False condition is already in status (its Event was posted)."""
    telemetry_warned: bool = False
    """The TelemetryAccepted=False condition is already in status (its Event was posted)."""
    person: PersonDecision | None = None
    """The approve/reject annotation on the object, if any."""
    metrics: tuple[MetricHistory, ...] = ()
    """Each metric gate's counts for the current stage, this round's measurement included."""
    now: dt.datetime = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    """The handler's clock, for the halt's grace period."""
    halt: HaltStatus | None = None
    """status.halt: a halt under way or done."""
    checkpoint: CheckpointStatus | None = None
    """status.checkpoint: the newest checkpoint a trainer reported."""
    schedule: ScheduleStatus | None = None
    """status.schedule: the carbon-aware start, for the savings estimate once it started."""
    grid_hold: bool = False
    """spec.carbon.schedule.pauseAbove says pause (the grid stayed dirty past its limit): the workers stop
    through the checkpointing halt, as for spec.suspend; the handler then records the pause."""
    shown_energy_j: float | None = None
    """status.energyJoules as the telemetry writer last wrote it: the savings estimate is computed from
    it (not from the live aggregate, up to a status interval ahead), so the two agree on the page."""
    pods: tuple[coverage.RunningPod, ...] | None = None
    """The job's running pods as the handler listed them; None when not listed (a phase without
    workers, or the list failed): no pod is then judged unmeasured."""
    measurement_grace_s: float = 0.0
    """How long a running pod may go without an accepted batch (core.rollout.coverage.grace_s)."""
    watched_since: float = 0.0
    """Unix time this operator process began watching the job: the grace counts from it too."""
    pods_warned: str | None = None
    """The message of the PodsMeasured=False condition in status (its Event was posted), or None."""


@dataclass(frozen=True)
class JobScale:
    """The Job's parallelism and completions (always equal: an elastic Indexed Job) and suspend."""

    replicas: int
    suspend: bool
    resume: bool = False
    """A suspended Job starts again: its pod template (whose annotations may change only while it is
    suspended) gets the stage's world size and `resume_from`."""
    resume_from: CheckpointStatus | None = None


@dataclass(frozen=True)
class Gauges:
    """The per-job gauge values this judgement exports."""

    phase: Phase
    epsilon: float | None = None
    epsilon_budget: float | None = None
    emissions_budget_g: float | None = None
    gates: dict[str, bool] = field(default_factory=dict)
    deferred_s: float | None = None
    """Time the carbon-aware start waited (None: the job has no deferral)."""
    emissions_avoided_g: float | None = None
    """Estimated emissions the deferral avoided (core.scheduling.deferral.avoided_g)."""


@dataclass(frozen=True)
class Plan:
    """What the handler applies after a judgement: the Job's scale, the status fields, Events, gauges."""

    decision: Decision
    generation: int
    scale: JobScale | None
    """None: the Job already has this scale."""
    gauges: Gauges
    epsilon: float | None = None
    epsilon_claimed: float | None = None
    projected: Projection | None = None
    tests_evidence: TestsEvidence | None = None
    conditions: tuple[ConditionUpdate, ...] = ()
    events: tuple[Event, ...] = ()
    clear_decision: bool = False
    """The approve/reject annotation has been acted on (status records its hash): remove it."""
    measurements: tuple[MetricHistory, ...] | None = None
    """status.measurements, when the spec has metric gates."""
    halt: HaltStatus | None = None
    """status.halt after this round (core.rollout.halting)."""
    workers_moved: bool = False
    """The workers stop or start again this round (a halt done, or a resume), not only a resize: under
    Kueue only this moves the Workload's active (a first scale must not reactivate a Workload that Kueue
    deactivated on a rejected admission check)."""
    efficiency: EfficiencyStatus | None = None
    """status.efficiency: energy per unit of the quality metric gained."""
    schedule: ScheduleStatus | None = None
    """status.schedule with the avoided-emissions estimate for the energy so far."""
    pod_coverage: coverage.Coverage | None = None
    """The running pods against the pods telemetry was accepted from (None: pods not listed)."""


def _over_budget(inputs: Inputs, cov: coverage.Coverage | None) -> str | None:
    """The budget exceeded so far (not projected), or a carbon budget that cannot be watched for an
    unmeasured pod (core.rollout.coverage.budget_unwatched): watched while Running."""
    spec, agg = inputs.spec, inputs.aggregate
    privacy = spec.gates.privacy
    if privacy is not None and inputs.epsilons is not None and inputs.epsilons[0] > privacy.epsilon:
        eps_now = inputs.epsilons[0]
        return (
            f"privacy budget exceeded: epsilon {eps_now:.3g} > {privacy.epsilon:g} at step {agg.global_step}"
        )
    budget = spec.carbon.budget_kg
    if budget is not None and agg.emissions_g > budget * 1000:
        return f"carbon budget exceeded: {agg.emissions_g / 1000:.3g} kg > {budget:g} kg"
    return coverage.budget_unwatched(cov, agg.emissions_g, spec)


def _coverage(inputs: Inputs) -> coverage.Coverage | None:
    if inputs.pods is None:
        return None
    now = inputs.now.timestamp()
    return coverage.coverage(
        inputs.pods,
        inputs.aggregate.pods(),
        now=now,
        grace_s=inputs.measurement_grace_s,
        watched_since=inputs.watched_since,
        held_out=inputs.aggregate.held_out_pods(now),
    )


def _projection(inputs: Inputs, estimate: coverage.Estimate | None) -> Projection | None:
    eps_total = round(inputs.epsilons[1], 6) if inputs.epsilons is not None else None
    if estimate is None and eps_total is None:
        return None
    return Projection(
        energy_joules=estimate.energy_j if estimate else None,
        emissions_grams=estimate.emissions_g if estimate else None,
        epsilon=eps_total,
    )


def evaluate(inputs: Inputs) -> Plan:
    """The promotion step with the gates judged lazily on what `inputs` hold, and what follows from it."""
    spec, agg = inputs.spec, inputs.aggregate
    cov = _coverage(inputs)
    estimate = coverage.projection(agg, cov, spec.total_steps, spec.carbon.pue, inputs.intensity_g_per_kwh)
    projected = _projection(inputs, estimate)
    per_point = efficiency(spec.gates.quality, agg)
    metric_gates = _metric_gates(inputs)
    # Metric gates judge a stage's own measurements: a halted job re-judged by an edit leaves them to
    # the resumed stage, which measures them afresh before it is promoted.
    measuring = inputs.state.phase in (Phase.CANARY, Phase.PROMOTING)
    judged_gates = metric_gates if measuring else []
    decision = step(
        spec,
        inputs.state,
        global_step=agg.global_step,
        generation=inputs.generation,
        judge=lambda: _judge(inputs, estimate, per_point, judged_gates, cov),
        over_budget=lambda: _over_budget(inputs, cov),
        person=inputs.person,
        collecting=any(analysis.collecting(g, h) for g, h in judged_gates) or coverage.awaited(cov, spec),
    )
    held_before = suspended(spec, inputs.state.phase)
    was_stopped = halting.workers_stopped(held_before, inputs.halt)
    halt = _halt(inputs, decision, held_before)
    shown = inputs.shown_energy_j if inputs.shown_energy_j is not None else agg.energy_j
    schedule = with_savings(inputs.schedule, shown, spec.carbon.pue) or inputs.schedule
    updates, events = _conditions_and_events(inputs, decision, halt, cov)
    return Plan(
        decision=decision,
        generation=inputs.generation,
        scale=_scale(inputs, decision, halt, was_stopped),
        gauges=_gauges(inputs, decision, schedule),
        epsilon=inputs.epsilons[0] if inputs.epsilons else None,
        epsilon_claimed=_claimed_epsilon(agg),
        projected=projected,
        tests_evidence=inputs.tests_evidence,
        conditions=updates,
        events=events,
        clear_decision=inputs.person is not None and decision.state.consumed_decision == inputs.person.token,
        measurements=_for_new_stage(metric_gates, decision.state) if metric_gates else None,
        halt=halt.halt,
        workers_moved=halt.stop_workers != was_stopped,
        efficiency=per_point,
        schedule=schedule,
        pod_coverage=cov,
    )


def _metric_gates(inputs: Inputs) -> list[tuple[MetricGate, MetricHistory]]:
    """Each metric gate of the spec with its counts for the current stage."""
    histories = analysis.by_name(inputs.metrics)
    state = inputs.state
    return [
        (g, analysis.current(histories.get(g.name), g.name, state.stage, state.stage_start_step))
        for g in inputs.spec.gates.metrics
    ]


def _claimed_epsilon(agg: JobAggregate) -> float | None:
    """The epsilon the trainer's own accountant reports: shown beside the operator's, never judged."""
    return agg.dp.accountant_epsilon if agg.dp is not None else None


def _judge(
    inputs: Inputs,
    estimate: coverage.Estimate | None,
    per_point: EfficiencyStatus | None,
    metric_gates: list[tuple[MetricGate, MetricHistory]],
    cov: coverage.Coverage | None,
) -> Report:
    """The spec's gates on the evidence `inputs` hold, then the verdicts of the metric gates given."""
    spec, agg = inputs.spec, inputs.aggregate
    evidence = Evidence(
        metrics={k: v for k, (_, v) in agg.evals.items()},
        tests=inputs.tests,
        epsilon_projected=inputs.epsilons[1] if inputs.epsilons else None,
        epsilon_claimed=_claimed_epsilon(agg),
        emissions_projected_g=estimate.emissions_g if estimate else None,
        energy_measured=agg.energy_measured,
        emissions_projected_upper_g=estimate.emissions_upper_g if estimate else None,
        shared_gpu_energy_j=agg.shared_energy_j,
        efficiency=per_point,
        unmeasured_pods=cov.unmeasured_names() if cov else (),
    )
    report = judge(spec, evidence)
    if not metric_gates:
        return report
    return Report((*report.results, *(analysis.verdict(g, h) for g, h in metric_gates)))


def _halt(inputs: Inputs, decision: Decision, held_before: bool) -> halting.HaltProgress:
    """One round of the checkpointing halt: the job stops for the decision, spec.suspend or a dirty grid."""
    return halting.progress(
        wants_stop=decision.suspend or inputs.spec.suspend or inputs.grid_hold,
        stopped_before=held_before,
        halt=inputs.halt,
        checkpoint=inputs.checkpoint,
        grace_s=inputs.spec.halt.grace_period_seconds,
        now=inputs.now,
        step=inputs.aggregate.global_step,
    )


def _scale(
    inputs: Inputs, decision: Decision, halt: halting.HaltProgress, was_stopped: bool
) -> JobScale | None:
    """The Job's new scale and suspend, or None when it already has them."""
    if decision.replicas == inputs.replicas and halt.stop_workers == was_stopped:
        return None
    resume = was_stopped and not halt.stop_workers
    return JobScale(decision.replicas, halt.stop_workers, resume, inputs.checkpoint if resume else None)


def _gauges(inputs: Inputs, decision: Decision, schedule: ScheduleStatus | None) -> Gauges:
    spec, report = inputs.spec, decision.report
    return Gauges(
        phase=decision.state.phase,
        epsilon=inputs.epsilons[0] if inputs.epsilons else None,
        epsilon_budget=spec.gates.privacy.epsilon if spec.gates.privacy else None,
        emissions_budget_g=spec.carbon.budget_kg * 1000 if spec.carbon.budget_kg is not None else None,
        gates={r.name: r.passed for r in report.results} if report else {},
        deferred_s=inputs.schedule.deferred_seconds if inputs.schedule else None,
        emissions_avoided_g=schedule.emissions_avoided_grams_estimate if schedule else None,
    )


def _conditions_and_events(
    inputs: Inputs, decision: Decision, halt: halting.HaltProgress, cov: coverage.Coverage | None
) -> tuple[tuple[ConditionUpdate, ...], tuple[Event, ...]]:
    """Ready from the decision's last Event, then ZoneResolved, TelemetryAccepted, IntensityResolved and
    PodsMeasured; the decision's and the halt's Events, then those of the four conditions."""
    ready: tuple[ConditionUpdate, ...] = ()
    if decision.events:
        last = decision.events[-1]
        is_ready = decision.state.phase not in (Phase.HALTED, Phase.PAUSED)
        ready = (ConditionUpdate("Ready", is_ready, last.reason, last.message),)
    zone_conditions, zone_events = zone_resolved(
        inputs.zone, inputs.zone_known, inputs.zone_warned, inputs.intensity_g_per_kwh
    )
    telemetry_conditions, telemetry_events = telemetry_accepted(inputs.aggregate, inputs.telemetry_warned)
    intensity_conditions, intensity_events = intensity_resolved(
        inputs.intensity_problem, inputs.intensity_warned
    )
    pod_conditions, pod_events = pods_measured(cov, coverage.fails_closed(inputs.spec), inputs.pods_warned)
    updates = (*ready, *zone_conditions, *telemetry_conditions, *intensity_conditions, *pod_conditions)
    signalled = (*zone_events, *telemetry_events, *intensity_events, *pod_events)
    return updates, (*decision.events, *halt.events, *signalled)


def _for_new_stage(
    metric_gates: list[tuple[MetricGate, MetricHistory]], state: State
) -> tuple[MetricHistory, ...]:
    """The histories as status should show them after this decision: a promotion (or a resume into a
    new stage) starts fresh counts in the same write, so no reader sees the old stage's counts beside
    the new phase."""
    return tuple(analysis.current(h, h.name, state.stage, state.stage_start_step) for _, h in metric_gates)


def suspended(spec: CarbonTrackedJobSpec, phase: Phase | None) -> bool:
    """Whether the Job is held suspended in this phase (a halt, a deferred start, or a pause the spec
    asks to suspend)."""
    return phase in (Phase.HALTED, Phase.DEFERRED) or (
        phase == Phase.PAUSED and spec.gates.suspend_when_paused
    )


def job_outcome(conditions: list[dict[str, object]] | None) -> tuple[Phase, str] | None:
    """The Job's end as the CarbonTrackedJob's phase and the reason in words; None while it runs."""
    by_type = {c.get("type"): c for c in conditions or []}
    if by_type.get("Complete", {}).get("status") == "True":
        return Phase.SUCCEEDED, "the training Job completed"
    failed = by_type.get("Failed", {})
    if failed.get("status") == "True":
        return Phase.FAILED, f"the training Job failed: {failed.get('message', '')}".strip()
    return None
