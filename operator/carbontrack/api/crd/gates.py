"""The gates a job passes before each scale-up: quality, tests, privacy, metric queries against
Prometheus, carbon thresholds, and approvals by a person."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from carbontrack.api.base import KubeModel
from carbontrack.api.crd.schema import CONTEXTS, Context, StagePercent, with_rules


class QualityGate(KubeModel):
    """Model quality of the canary vs a threshold and vs the baseline model.

    A quality gate must judge its metric: `minScore` or `baseline` is required. There is no per-context
    default score, because the metric's scale is the user's (accuracy in 0..1, BLEU in 0..100, a loss
    where lower is better): any default would be a number that passes or fails for no reason.
    """

    model_config = with_rules(
        {
            "rule": "has(self.minScore) || has(self.baseline)",
            "message": "a quality gate needs minScore or baseline, else it judges nothing",
            "fieldPath": ".minScore",
            "reason": "FieldValueRequired",
        },
        {
            "rule": "!has(self.passScore) || has(self.minScore)",
            "message": "passScore needs minScore (the fail bound)",
            "fieldPath": ".passScore",
            "reason": "FieldValueRequired",
        },
        {
            "rule": "!has(self.passScore) || !has(self.minScore) || (self.higherIsBetter"
            " ? self.passScore >= self.minScore : self.passScore <= self.minScore)",
            "message": "passScore must be on the passing side of minScore (>= when higherIsBetter,"
            " <= otherwise)",
            "fieldPath": ".passScore",
            "reason": "FieldValueInvalid",
        },
    )

    metric: str = Field(min_length=1, max_length=128)
    """Name of the eval metric the trainer reports (e.g. eval_accuracy)."""
    higher_is_better: bool = True
    min_score: float | None = None
    """Absolute floor (or ceiling when higherIsBetter is false) for the metric: worse fails."""
    pass_score: float | None = None
    """Optional: the score that passes with confidence. A score between minScore and passScore is
    Inconclusive: the job pauses (phase Paused) until a person approves or rejects it."""
    baseline: float | None = None
    """The current production model's score on the same metric."""
    max_regression: float | None = Field(None, ge=0)
    """Largest allowed worsening vs baseline, in the metric's units; defaults from the context."""
    baseline_latency_ms: float | None = Field(None, gt=0)
    max_latency_increase: float | None = Field(None, ge=0)
    """Largest allowed relative latency increase vs baseline (0.1 = 10%); defaults from the context."""
    throughput_metric: str = Field("samples_per_second", min_length=1, max_length=128)
    """Eval metric holding the throughput in samples/s (Hugging Face: eval_samples_per_second)."""
    baseline_samples_per_second: float | None = Field(None, gt=0)
    """The baseline's throughput; set it to gate a throughput drop."""
    max_throughput_decrease: float | None = Field(None, ge=0, le=1)
    """Largest allowed relative throughput decrease vs baseline (0.1 = 10%); defaults from the context."""
    memory_metric: str = Field("peak_memory_mb", min_length=1, max_length=128)
    """Eval metric holding the peak accelerator memory in MB."""
    baseline_memory_mb: float | None = Field(None, gt=0)
    """The baseline's peak memory; set it to gate a memory increase."""
    max_memory_increase: float | None = Field(None, ge=0)
    """Largest allowed relative peak-memory increase vs baseline (0.1 = 10%); defaults from the context."""

    @model_validator(mode="after")
    def _judges_something(self) -> QualityGate:
        if self.min_score is None and self.baseline is None:
            raise ValueError(
                "quality.minScore: a quality gate needs minScore or baseline, else it judges nothing"
            )
        if self.pass_score is not None:
            if self.min_score is None:
                raise ValueError(f"quality.passScore: {_PASS_SCORE_NEEDS_MIN}")
            if (
                self.pass_score < self.min_score
            ) == self.higher_is_better and self.pass_score != self.min_score:
                raise ValueError(f"quality.passScore: {_PASS_SCORE_SIDE}")
        return self


_PASS_SCORE_NEEDS_MIN = "passScore needs minScore (the fail bound)"
_PASS_SCORE_SIDE = "passScore must be on the passing side of minScore (>= when higherIsBetter, <= otherwise)"


class SecurityCounts(KubeModel):
    """Findings of a security scan, by severity."""

    critical: int = Field(0, ge=0)
    high: int = Field(0, ge=0)
    medium: int = Field(0, ge=0)
    low: int | None = Field(None, ge=0)
    """Counted against thresholds.maxLow (unlimited unless set); omitted means not reported."""


class TestsGate(KubeModel):
    """Test and security-scan results, inline or from a ConfigMap that CI writes."""

    pass_rate: float | None = Field(None, ge=0, le=1)
    coverage: float | None = Field(None, ge=0, le=1)
    security: SecurityCounts | None = None
    from_config_map: str | None = Field(None, min_length=1, max_length=253)
    """ConfigMap in the job's namespace whose `results.json` holds the same fields."""


class PrivacyGate(KubeModel):
    """Differential-privacy budget; epsilon is recomputed by the operator, never taken on trust."""

    epsilon: float = Field(gt=0)
    """Largest allowed epsilon at totalSteps."""
    delta: float = Field(1e-5, gt=0, lt=1)
    accountant: Literal["rdp", "pld"] = "rdp"


class Thresholds(KubeModel):
    """Per-field overrides of the context profile's thresholds."""

    min_pass_rate: float | None = Field(None, ge=0, le=1)
    min_coverage: float | None = Field(None, ge=0, le=1)
    max_critical: int | None = Field(None, ge=0)
    max_high: int | None = Field(None, ge=0)
    max_medium: int | None = Field(None, ge=0)
    max_low: int | None = Field(None, ge=0)
    """Low findings allowed; unlimited in every context unless set."""
    max_regression: float | None = Field(None, ge=0)
    max_latency_increase: float | None = Field(None, ge=0)
    max_throughput_decrease: float | None = Field(None, ge=0, le=1)
    max_memory_increase: float | None = Field(None, ge=0)


_NO_ADDRESS = (
    "prometheus.address is not accepted: the operator queries only the Prometheus endpoints the cluster "
    "admin lists (chart value prometheus.endpoints); name one with prometheus.endpoint"
)


class PrometheusProvider(KubeModel):
    """An instant query (`GET URL/api/v1/query`) against one of the Prometheus endpoints the cluster admin
    lists for the operator (chart value prometheus.endpoints): a job names an endpoint, never a URL, so
    the operator contacts only the servers its admin chose, whoever may write a CarbonTrackedJob."""

    model_config = with_rules(
        {
            "rule": "!has(self.address)",
            "message": _NO_ADDRESS,
            "fieldPath": ".address",
            "reason": "FieldValueForbidden",
        },
    )

    endpoint: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """Name of one of the operator's Prometheus endpoints, e.g. main (ask your cluster admin, or see the
    chart's prometheus.endpoints)."""
    address: str | None = Field(None, max_length=512)
    """Refused: a URL in a job would let whoever writes one make the operator fetch it. Name an endpoint."""
    query: str = Field(min_length=1, max_length=4096)
    """PromQL that returns one sample: a scalar or a one-series vector (use sum/avg/max to get one)."""
    timeout_seconds: float = Field(5.0, gt=0, le=30)
    """A query that does not answer in time is an error (not a failure)."""

    @model_validator(mode="before")
    @classmethod
    def _no_address(cls, data: Any) -> Any:
        """A URL is refused before anything else, so the message says what to write instead."""
        if isinstance(data, dict) and data.get("address") is not None:
            raise ValueError(f"metrics.prometheus.address: {_NO_ADDRESS}")
        return data


_MIN_ABOVE_MAX = "max must be >= min (with min above max every measurement fails)"


class MetricGate(KubeModel):
    """A gate on a measured metric, as a progressive-delivery analysis does it: `count` measurements per
    stage, one per judgement round once `initialDelaySteps` of the stage have run, judged by bounds.

    A value below `min` or above `max` is a failed measurement; between `min` and `inconclusiveBelow`
    (or `inconclusiveAbove` and `max`) an Inconclusive one. A provider that cannot be read is an error:
    more than `consecutiveErrorLimit` errors in a row make the gate Error (the job halts), fewer never
    fail it. More than `failureLimit` failed measurements in a stage fail the gate.
    """

    model_config = with_rules(
        {
            "rule": "has(self.min) || has(self.max)",
            "message": "a metric gate needs min or max, else it judges nothing",
            "fieldPath": ".min",
            "reason": "FieldValueRequired",
        },
        {
            "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
            "message": _MIN_ABOVE_MAX,
            "fieldPath": ".max",
            "reason": "FieldValueInvalid",
        },
        {
            "rule": "!has(self.inconclusiveBelow) || has(self.min) && self.inconclusiveBelow >= self.min",
            "message": "inconclusiveBelow needs min and must be >= min",
            "fieldPath": ".inconclusiveBelow",
            "reason": "FieldValueInvalid",
        },
        {
            "rule": "!has(self.inconclusiveAbove) || has(self.max) && self.inconclusiveAbove <= self.max",
            "message": "inconclusiveAbove needs max and must be <= max",
            "fieldPath": ".inconclusiveAbove",
            "reason": "FieldValueInvalid",
        },
    )

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    """Shown as the gate `metric.NAME`."""
    prometheus: PrometheusProvider
    min: float | None = None
    max: float | None = None
    inconclusive_below: float | None = None
    inconclusive_above: float | None = None
    failure_limit: int = Field(0, ge=0, le=10)
    """Failed measurements allowed in a stage; one more fails the gate."""
    consecutive_error_limit: int = Field(4, ge=0, le=10)
    """Errors in a row allowed (unreachable provider, no sample); one more makes the gate Error."""
    initial_delay_steps: int = Field(0, ge=0)
    """Global steps into a stage before its first measurement."""
    count: int = Field(1, ge=1, le=10)
    """Measurements (not counting errors) per stage before the gate is judged."""

    @model_validator(mode="after")
    def _bounds(self) -> MetricGate:
        if self.min is None and self.max is None:
            raise ValueError("metrics.min: a metric gate needs min or max, else it judges nothing")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"metrics.max: {_MIN_ABOVE_MAX}")
        if self.inconclusive_below is not None and (self.min is None or self.inconclusive_below < self.min):
            raise ValueError("metrics.inconclusiveBelow: inconclusiveBelow needs min and must be >= min")
        if self.inconclusive_above is not None and (self.max is None or self.inconclusive_above > self.max):
            raise ValueError("metrics.inconclusiveAbove: inconclusiveAbove needs max and must be <= max")
        return self


class ApprovalSpec(KubeModel):
    """A person's approval before the named stages, even when every gate passes."""

    stages: list[StagePercent] = Field(
        min_length=1, max_length=10, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Percents of spec.canary.stages: the job pauses (phase Paused) before scaling to each of them
    until `carbontrack approve` (or the carbontrack.io/approve annotation); e.g. [100]."""
    required_for: list[Context] = Field(
        default_factory=lambda: list(CONTEXTS),
        min_length=1,
        max_length=3,
        json_schema_extra={
            "x-kubernetes-list-type": "set",
            "default": ["development", "staging", "production"],
        },
    )
    """Contexts in which the approval is asked (default: every context); e.g. [production]."""
    distinct_from: Literal["creator"] | None = None
    """creator: the job's creator (its carbontrack.io/created-by annotation, which the chart's admission
    policy lets only the creating user write) may not approve it; a rejection is still theirs to make."""


class GatesSpec(KubeModel):
    """What must hold before each scale-up."""

    context: Context = "production"
    """Threshold profile; production fails closed on missing data, development warns."""
    thresholds: Thresholds | None = None
    quality: QualityGate | None = None
    tests: TestsGate | None = None
    privacy: PrivacyGate | None = None
    metrics: list[MetricGate] = Field(
        default_factory=list,
        max_length=10,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Gates on measured metrics (a Prometheus query), judged in every stage."""
    approval: ApprovalSpec | None = None
    suspend_when_paused: bool = False
    """Suspend the Job while it waits in phase Paused; by default it keeps training at its stage."""
    allow_empty: bool = False
    """Run a production job with no gate at all (no quality, tests, privacy or carbon.budgetKg).
    Without it such a job is refused: a forgotten gates block must not promote on "0/0 passed"."""
