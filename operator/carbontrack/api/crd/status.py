"""The job's status: its phase and conditions, the gates' results, projections and intensity, the
evidence the gates judged, efficiency, schedule, promotion, measurements, decisions and the halt."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from carbontrack.api.base import KubeModel
from carbontrack.api.contract import Phase
from carbontrack.api.crd.telemetry import MAX_STATUS_GPUS, GpuStatus, TelemetryStatus


class Condition(KubeModel):
    """A Kubernetes-style condition (API conventions)."""

    type: str = Field(min_length=1, max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(min_length=1, max_length=1024)
    """CamelCase, machine-readable."""
    message: str = Field("", max_length=32768)
    """A sentence a person can act on."""
    last_transition_time: datetime
    observed_generation: int | None = Field(None, ge=0)


GateVerdict = Literal["Passed", "Failed", "Inconclusive", "Error"]


class GateResult(KubeModel):
    """One gate's verdict, with the numbers behind it. `passed` is `verdict == Passed`."""

    name: str
    passed: bool
    verdict: GateVerdict | None = None
    """Passed | Failed | Inconclusive (between a pass and a fail bound: a person decides) | Error
    (the evidence could not be read). Omitted: Passed or Failed, from `passed`."""
    observed: float | None = None
    threshold: float | None = None
    message: str = ""
    warning: bool = False
    """Passed only because the context allows missing data (development)."""

    @model_validator(mode="after")
    def _verdict_matches(self) -> GateResult:
        if self.verdict is None:
            self.verdict = "Passed" if self.passed else "Failed"
        elif self.passed != (self.verdict == "Passed"):
            raise ValueError(f"gate {self.name}: passed must equal verdict == Passed")
        return self


class Projection(KubeModel):
    """Totals projected to spec.totalSteps from the recent rate."""

    energy_joules: float | None = None
    emissions_grams: float | None = None
    epsilon: float | None = None


class IntensityStatus(KubeModel):
    """The grid intensity in force and where the figure came from."""

    grams_per_kwh: float
    zone: str
    source: str
    """e.g. static:ember-2023, electricitymaps, override."""
    updated_at: datetime | None = None


class EvalMetric(KubeModel):
    """The newest value the trainer reported for one eval metric, and at which global step."""

    name: str = Field(min_length=1, max_length=128)
    step: int = Field(ge=0)
    value: float


class DPStatus(KubeModel):
    """The newest DP-SGD parameters the trainer reported: the accountant's inputs."""

    step: int = Field(ge=0)
    noise_multiplier: float = Field(gt=0)
    sample_rate: float = Field(gt=0, le=1)
    delta: float = Field(gt=0, lt=1)
    accountant_epsilon: float | None = Field(None, ge=0)
    """What the job itself claims; shown beside the recomputed epsilon, never trusted alone."""


class FirstMetric(KubeModel):
    """The first report of an eval metric and the job's totals when it arrived: where gains count from."""

    name: str = Field(min_length=1, max_length=128)
    step: int = Field(ge=0)
    value: float
    energy_joules: float = Field(ge=0)
    emissions_grams: float = Field(ge=0)


class EvidenceStatus(KubeModel):
    """What the trainers reported for the gates, kept so a restarted operator judges the same evidence.

    The sidecar forgets a report once the operator acknowledged it, so this is the only copy.
    """

    metrics: list[EvalMetric] = Field(default_factory=list, max_length=64)
    first_metrics: list[FirstMetric] = Field(default_factory=list, max_length=64)
    """Each metric's first report, with the energy and emissions at that moment."""
    dp: DPStatus | None = None


class TestsEvidence(KubeModel):
    """The test and security evidence the last judgement used, and where it came from."""

    pass_rate: float | None = None
    coverage: float | None = None
    critical: int | None = None
    high: int | None = None
    medium: int | None = None
    low: int | None = None
    source: str = ""
    """spec, or configmap/NAME; a ConfigMap that cannot be read falls back to the last evidence."""


class EfficiencyStatus(KubeModel):
    """Energy and emissions per unit of the quality metric gained since its first report.

    `gain` is in the metric's own units, positive when it improved (lower is better: a fall). The rates
    are absent until the metric has gained (no gain: no finite rate; the gate says so)."""

    metric: str
    reference_step: int = Field(ge=0)
    reference_value: float
    step: int = Field(ge=0)
    value: float
    gain: float
    energy_joules: float = Field(ge=0)
    """GPU energy since the reference report."""
    emissions_grams: float = Field(ge=0)
    """Emissions (PUE included) since the reference report."""
    joules_per_metric_point: float | None = None
    grams_per_metric_point: float | None = None


class ScheduleStatus(KubeModel):
    """The carbon-aware start: why the job waits (or why it started), and what waiting saved."""

    deferred_since: datetime | None = None
    """When the deferral began (the planned start); the deadline counts from it across restarts."""
    deadline: datetime | None = None
    """deferredSince + maxDelay: it starts then at the latest."""
    start_after: datetime | None = None
    """The cleaner start the forecast names, while waiting for it."""
    reason: str = ""
    message: str = ""
    summary: str = ""
    """Why it waits and until when (kubectl get), or why it started."""
    planned_grams_per_kwh: float | None = None
    """Intensity at the planned start (when the deferral began)."""
    started_at: datetime | None = None
    start_grams_per_kwh: float | None = None
    """Intensity when it actually started."""
    deferred_seconds: float = Field(0, ge=0)
    emissions_avoided_grams_estimate: float | None = None
    """Measured energy x PUE x (planned - actual start intensity): an estimate, negative if waiting cost."""
    above_since: datetime | None = None
    """While Running with pauseAbove: since when the intensity has been above its limit."""
    pauses: int = Field(0, ge=0)
    """Pauses for a dirty grid so far (at most pauseAbove.maxPauses)."""
    paused_from: str | None = None
    """The phase a dirty-grid pause interrupted (Running); set while paused (phase Deferred)."""
    paused_at: datetime | None = None
    paused_seconds: float = Field(0, ge=0)
    """Time spent in dirty-grid pauses, all of them."""


class PromotionStatus(KubeModel):
    """Where the promotion state machine is, so a restarted operator continues from there."""

    stage: int = Field(-1, ge=-1)
    """-1 while on the canary; otherwise the index into spec.canary.stages."""
    stage_start_step: int = Field(0, ge=0)
    halted_from: str | None = None
    halted_generation: int | None = None
    paused_from: str | None = None
    """The phase a pause interrupted (Canary or Promoting)."""
    pause_reason: Literal["Inconclusive", "ApprovalRequired"] | None = None
    consumed_decision: str | None = Field(None, max_length=64)
    """Hash of the last approve/reject annotation the judgement acted on: each is used once."""


class Measurement(KubeModel):
    """One measurement of a metric gate."""

    stage: int = Field(ge=-1)
    step: int = Field(ge=0)
    """The global step it was taken at."""
    at: datetime
    verdict: GateVerdict
    value: float | None = None
    message: str = Field("", max_length=512)


class MetricHistory(KubeModel):
    """One metric gate's counts in the current stage (what it is judged on) and its last 10 measurements
    (what a person reads; a bounded window cannot be counted on once errors interleave)."""

    name: str
    stage: int = Field(-1, ge=-1)
    stage_start_step: int = Field(0, ge=0)
    """With `stage`, which stage the counts are for: a resumed stage starts counting afresh."""
    measured: int = Field(0, ge=0)
    """Measurements with a value (errors not counted)."""
    failed: int = Field(0, ge=0)
    inconclusive: int = Field(0, ge=0)
    errors: int = Field(0, ge=0)
    consecutive_errors: int = Field(0, ge=0)
    measurements: list[Measurement] = Field(default_factory=list, max_length=10)


class DecisionRecord(KubeModel):
    """A person's approval or rejection, as the judgement recorded it."""

    decision: Literal["Approved", "Rejected", "Ignored", "Refused"]
    """Ignored: the annotation came while the job was not Paused (it is consumed, not kept for later).
    Refused: an approval that gates.approval.distinctFrom rules out (the creator, or no recorded user)."""
    by: str = Field(max_length=512)
    """Who: the user `carbontrack approve|reject` read from a SelfSubjectReview, or, for a bare
    annotation, the field manager that set it (the apiserver does not record the user)."""
    reason: str = Field("", max_length=1024)
    at: datetime
    stage: str = Field(max_length=32)
    """canary, or the stage percent the job was in (e.g. 50%)."""
    phase: str = Field(max_length=32)
    """The phase the decision was made in."""


class CheckpointStatus(KubeModel):
    """The newest checkpoint a trainer reported (`client.report_checkpoint`): a resume starts from it."""

    step: int = Field(ge=0)
    uri: str = Field(max_length=1024)
    at: datetime
    """When the operator received the report (its own clock)."""


class HaltStatus(KubeModel):
    """A halt in progress or done: the stop request to the trainers, and when the Job was suspended.

    Kept in status so a restarted operator continues the same halt (same deadline)."""

    requested_at: datetime
    deadline: datetime
    """requestedAt + spec.halt.gracePeriodSeconds: the Job is suspended then at the latest."""
    step: int = Field(0, ge=0)
    """The global step when the stop was requested."""
    suspended_at: datetime | None = None
    """None while the trainers are saving."""
    outcome: Literal["Checkpointed", "GraceExpired", "NoCheckpointing"] | None = None
    """Why the Job was suspended: a checkpoint reported after the request, the grace period over, or
    a job whose trainers never reported a checkpoint (nothing to wait for)."""


class CarbonTrackedJobStatus(KubeModel):
    """Observed state; written only by the operator."""

    phase: Phase | None = None
    replicas: int = Field(0, ge=0)
    """Workers the Job runs now (parallelism)."""
    target_replicas: int = Field(0, ge=0)
    selector: str | None = None
    """Label selector of the job's pods, for the scale subresource."""
    replica_summary: str | None = None
    """current/target, for kubectl get."""
    steps: int = Field(0, ge=0)
    """Highest global step reported."""
    energy_joules: float = Field(0, ge=0)
    energy_joules_upper_bound: float | None = Field(None, ge=0)
    """energyJoules plus the stated uncertainty of every method behind it (the carbon gate judges this in
    production)."""
    shared_gpu_energy_joules: float = Field(0, ge=0)
    """Part of energyJoules that is board energy of MIG or shared GPUs: not this job's alone."""
    gpus: list[GpuStatus] = Field(default_factory=list, max_length=MAX_STATUS_GPUS)
    """The GPUs measured (newest sidecar boot of each pod), MIG and shared ones first, at most 64."""
    energy_kwh: float = Field(0, ge=0)
    emissions_grams: float = Field(0, ge=0)
    emissions_kg: float = Field(0, ge=0)
    power_watts: float = Field(0, ge=0)
    intensity: IntensityStatus | None = None
    epsilon: float | None = None
    """Recomputed by the operator's accountant at the current step."""
    epsilon_claimed: float | None = None
    """What the job itself reported, shown beside the recomputed value."""
    projected: Projection | None = None
    schedule: ScheduleStatus | None = None
    """The carbon-aware start (spec.carbon.schedule)."""
    efficiency: EfficiencyStatus | None = None
    """Energy per quality: joules and grams per unit of the quality metric gained (judgement)."""
    telemetry: TelemetryStatus | None = None
    evidence: EvidenceStatus | None = None
    """Written by the telemetry writer with the energy it came with."""
    tests_evidence: TestsEvidence | None = None
    """Written by the judgement that used it."""
    promotion: PromotionStatus | None = None
    gates: list[GateResult] = Field(default_factory=list)
    gate_summary: str | None = None
    """e.g. 3/3 passed, or the name of the failing gate, for kubectl get."""
    measurements: list[MetricHistory] = Field(default_factory=list, max_length=10)
    """Per metric gate, the last 10 measurements."""
    decisions: list[DecisionRecord] = Field(default_factory=list, max_length=10)
    """The last 10 approvals and rejections, oldest first. Every one is also kept in the job's decision
    log (ConfigMaps labelled carbontrack.io/decision-log=NAME), which an edit of status does not touch."""
    checkpoint: CheckpointStatus | None = None
    """Written by the telemetry writer, from the trainer's reports."""
    halt: HaltStatus | None = None
    """Written by the judgement; cleared when the job resumes."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(None, ge=0)
