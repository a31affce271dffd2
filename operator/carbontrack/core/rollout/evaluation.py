"""One judgement of one job, as a pure function: what is known -> what to do, write and export.

The timer handler gathers (status, the live aggregate, the test evidence, epsilon computed off the
event loop), calls `evaluate`, and applies the `Plan`: the Job's scale, the status fields the
judgement owns, the Events and the gauges. Nothing here does I/O, so every decision is unit-tested
with exact values, and a restarted operator that gathers the same inputs from status decides the same.
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
from carbontrack.core.accounting.aggregation import JobAggregate, Verdict
from carbontrack.core.accounting.efficiency import efficiency
from carbontrack.core.events import ConditionUpdate, Event
from carbontrack.core.gates import metric_gates as analysis
from carbontrack.core.gates.judgement import CiResults, Evidence, Report, judge
from carbontrack.core.gates.privacy import Accountant, epsilon
from carbontrack.core.rollout import halting
from carbontrack.core.rollout.promotion import Decision, PersonDecision, State, step
from carbontrack.core.scheduling.deferral import with_savings


@dataclass(frozen=True)
class EpsilonQuery:
    """The accountant's inputs: epsilon now (at the global step) and projected to totalSteps.

    Computing it can take close to a second (PLD), so the handler runs `compute` in a thread; results
    are cached by these inputs (core.privacy.epsilon is memoised).
    """

    noise_multiplier: float
    sample_rate: float
    step_now: int
    total_steps: int
    delta: float
    accountant: Accountant

    def compute(self) -> tuple[float, float]:
        args = (self.noise_multiplier, self.sample_rate)
        now = epsilon(*args, self.step_now, self.delta, self.accountant)
        total = epsilon(*args, self.total_steps, self.delta, self.accountant)
        return now, total


def epsilon_query(spec: CarbonTrackedJobSpec, agg: JobAggregate) -> EpsilonQuery | None:
    """None when there is no privacy gate or no DP-SGD parameters yet. Steps are global steps."""
    privacy = spec.gates.privacy
    if privacy is None or agg.dp is None:
        return None
    return EpsilonQuery(
        agg.dp.noise_multiplier, agg.dp.sample_rate, agg.global_step, spec.total_steps,
        privacy.delta, privacy.accountant,
    )  # fmt: skip


@dataclass(frozen=True)
class Inputs:
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
    """Estimated emissions the deferral avoided (core.deferral.avoided_g)."""


@dataclass(frozen=True)
class Plan:
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
    """status.halt after this round (core.halting)."""
    workers_moved: bool = False
    """The workers stop or start again this round (a halt done, or a resume), not only a resize: under
    Kueue only this moves the Workload's active (a first scale must not reactivate a Workload that Kueue
    deactivated on a rejected admission check)."""
    efficiency: EfficiencyStatus | None = None
    """status.efficiency: energy per unit of the quality metric gained."""
    schedule: ScheduleStatus | None = None
    """status.schedule with the avoided-emissions estimate for the energy so far."""


def _over_budget(inputs: Inputs) -> str | None:
    """The budget exceeded so far (not projected): watched while Running."""
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
    return None


def _projection(inputs: Inputs) -> Projection | None:
    spec, agg = inputs.spec, inputs.aggregate
    energy = agg.projection(spec.total_steps, spec.carbon.pue, inputs.intensity_g_per_kwh)
    eps_total = round(inputs.epsilons[1], 6) if inputs.epsilons is not None else None
    if energy is None and eps_total is None:
        return None
    return Projection(
        energy_joules=energy[0] if energy else None,
        emissions_grams=energy[1] if energy else None,
        epsilon=eps_total,
    )


def evaluate(inputs: Inputs) -> Plan:
    """The promotion step with the gates judged lazily on what `inputs` hold, and what follows from it."""
    spec, agg = inputs.spec, inputs.aggregate
    projected = _projection(inputs)
    claimed = agg.dp.accountant_epsilon if agg.dp is not None else None
    per_point = efficiency(spec.gates.quality, agg)

    histories = analysis.by_name(inputs.metrics)
    metric_gates = [
        (
            g,
            analysis.current(
                histories.get(g.name), g.name, inputs.state.stage, inputs.state.stage_start_step
            ),
        )
        for g in spec.gates.metrics
    ]
    # Metric gates judge a stage's own measurements: a halted job re-judged by an edit leaves them to
    # the resumed stage, which measures them afresh before it is promoted.
    measuring = inputs.state.phase in (Phase.CANARY, Phase.PROMOTING)

    def judge_now() -> Report:
        evidence = Evidence(
            metrics={k: v for k, (_, v) in agg.evals.items()}, tests=inputs.tests,
            epsilon_projected=inputs.epsilons[1] if inputs.epsilons else None, epsilon_claimed=claimed,
            emissions_projected_g=projected.emissions_grams if projected else None,
            energy_measured=agg.energy_measured,
            emissions_projected_upper_g=agg.projection_upper_g(
                spec.total_steps, spec.carbon.pue, inputs.intensity_g_per_kwh
            ),
            shared_gpu_energy_j=agg.shared_energy_j, efficiency=per_point,
        )  # fmt: skip
        report = judge(spec, evidence)
        if not measuring:
            return report
        return Report((*report.results, *(analysis.verdict(g, h) for g, h in metric_gates)))

    decision = step(
        spec, inputs.state, global_step=agg.global_step, generation=inputs.generation,
        judge=judge_now, over_budget=lambda: _over_budget(inputs), person=inputs.person,
        collecting=measuring and any(analysis.collecting(g, h) for g, h in metric_gates),
    )  # fmt: skip
    held_before = suspended(spec, inputs.state.phase)
    was_stopped = halting.workers_stopped(held_before, inputs.halt)
    halt = halting.progress(
        wants_stop=decision.suspend or spec.suspend or inputs.grid_hold, stopped_before=held_before,
        halt=inputs.halt,
        checkpoint=inputs.checkpoint, grace_s=spec.halt.grace_period_seconds, now=inputs.now,
        step=agg.global_step,
    )  # fmt: skip
    scale = None
    if decision.replicas != inputs.replicas or halt.stop_workers != was_stopped:
        resume = was_stopped and not halt.stop_workers
        scale = JobScale(decision.replicas, halt.stop_workers, resume, inputs.checkpoint if resume else None)
    conditions: list[ConditionUpdate] = []
    if decision.events:
        last = decision.events[-1]
        ready = decision.state.phase not in (Phase.HALTED, Phase.PAUSED)
        conditions.append(ConditionUpdate("Ready", ready, last.reason, last.message))
    zone_conditions, zone_events = _zone(inputs)
    telemetry_conditions, telemetry_events = _telemetry(inputs)
    intensity_conditions, intensity_events = _intensity(inputs)
    report = decision.report
    shown = inputs.shown_energy_j if inputs.shown_energy_j is not None else agg.energy_j
    schedule = with_savings(inputs.schedule, shown, spec.carbon.pue) or inputs.schedule
    gauges = Gauges(
        phase=decision.state.phase,
        epsilon=inputs.epsilons[0] if inputs.epsilons else None,
        epsilon_budget=spec.gates.privacy.epsilon if spec.gates.privacy else None,
        emissions_budget_g=spec.carbon.budget_kg * 1000 if spec.carbon.budget_kg is not None else None,
        gates={r.name: r.passed for r in report.results} if report else {},
        deferred_s=inputs.schedule.deferred_seconds if inputs.schedule else None,
        emissions_avoided_g=schedule.emissions_avoided_grams_estimate if schedule else None,
    )
    return Plan(
        decision=decision, generation=inputs.generation, scale=scale, gauges=gauges,
        epsilon=inputs.epsilons[0] if inputs.epsilons else None, epsilon_claimed=claimed,
        projected=projected, tests_evidence=inputs.tests_evidence,
        conditions=(*conditions, *zone_conditions, *telemetry_conditions, *intensity_conditions),
        events=(*decision.events, *halt.events, *zone_events, *telemetry_events, *intensity_events),
        clear_decision=inputs.person is not None
        and decision.state.consumed_decision == inputs.person.token,
        measurements=_for_new_stage(metric_gates, decision.state) if metric_gates else None,
        halt=halt.halt, workers_moved=halt.stop_workers != was_stopped,
        efficiency=per_point,
        schedule=schedule,
    )  # fmt: skip


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


def _zone(inputs: Inputs) -> tuple[tuple[ConditionUpdate, ...], tuple[Event, ...]]:
    """ZoneResolved: a misspelt zone must not bill the world average with only a hint in a source.
    Shown while the zone is unknown, and turned True when it is fixed; absent for a job never warned."""
    if inputs.zone_known:
        if not inputs.zone_warned:
            return (), ()
        return (ConditionUpdate("ZoneResolved", True, "ZoneKnown", f"grid zone {inputs.zone}"),), ()
    message = (
        f"grid zone {inputs.zone!r} is in no intensity table: emissions use the world average, "
        f"{inputs.intensity_g_per_kwh:g} gCO2e/kWh; set spec.carbon.zone to a known zone"
    )
    condition = ConditionUpdate("ZoneResolved", False, "UnknownZone", message)
    return (condition,), () if inputs.zone_warned else (Event("Warning", "UnknownZone", message),)


def _intensity(inputs: Inputs) -> tuple[tuple[ConditionUpdate, ...], tuple[Event, ...]]:
    """IntensityResolved: a live provider whose key cannot be read (a 403 on the job's Secret) was once
    only a log line; the job then uses the static table's figure, and says so here."""
    if inputs.intensity_problem is None:
        if not inputs.intensity_warned:
            return (), ()
        ok = ConditionUpdate(
            "IntensityResolved", True, "ProviderKeyRead", "the intensity provider's key was read"
        )
        return (ok,), ()
    condition = ConditionUpdate("IntensityResolved", False, "SecretUnreadable", inputs.intensity_problem)
    if inputs.intensity_warned:
        return (condition,), ()
    return (condition,), (Event("Warning", "IntensitySecretUnreadable", inputs.intensity_problem),)


def _telemetry(inputs: Inputs) -> tuple[tuple[ConditionUpdate, ...], tuple[Event, ...]]:
    """TelemetryAccepted: status had no room for a pod or a source (core.folding), so the totals may miss
    its energy; said in a condition and once in an Event, not only in a counter. The message carries no
    count (status.telemetry.refused has them), so an ongoing refusal does not rewrite it every round."""
    refusals = inputs.aggregate.capacity_refusals()
    limits = inputs.aggregate.limits
    if not refusals:
        if not inputs.telemetry_warned:
            return (), ()
        return (
            ConditionUpdate("TelemetryAccepted", True, "AllAccepted", "status has room for telemetry"),
        ), ()
    parts = []
    if Verdict.TOO_MANY_PODS in refusals:
        parts.append(f"batches from pods beyond the {limits.pods_per_job} a job's status holds")
    if Verdict.STATUS_FULL in refusals:
        parts.append(
            f"new sources that would take status.telemetry past {limits.status_budget_bytes} bytes "
            "(of etcd's 1.5 MiB per object)"
        )
    reason = "PodLimit" if refusals.keys() == {Verdict.TOO_MANY_PODS} else "StatusSizeLimit"
    if len(refusals) > 1:
        reason = "StatusLimits"
    message = (
        f"telemetry refused for room: {' and '.join(parts)}; their energy is not in the totals "
        "(status.telemetry.refused counts the batches; their sidecars keep sending cumulative counters)"
    )
    condition = ConditionUpdate("TelemetryAccepted", False, reason, message)
    return (condition,), () if inputs.telemetry_warned else (Event("Warning", "TelemetryRefused", message),)


def job_outcome(conditions: list[dict[str, object]] | None) -> tuple[Phase, str] | None:
    """The Job's end as the CarbonTrackedJob's phase and the reason in words; None while it runs."""
    by_type = {c.get("type"): c for c in conditions or []}
    if by_type.get("Complete", {}).get("status") == "True":
        return Phase.SUCCEEDED, "the training Job completed"
    failed = by_type.get("Failed", {})
    if failed.get("status") == "True":
        return Phase.FAILED, f"the training Job failed: {failed.get('message', '')}".strip()
    return None
